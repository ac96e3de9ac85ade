"""Aspect-ratio buckets: the sizes a run trains at and which one each image goes to (pure arithmetic).

Every bucket holds about ``resolution²`` pixels with sides that are multiples of ``step`` and an aspect
ratio of at most ``max_aspect`` (long side over short). An image goes to the bucket whose aspect ratio
is closest to its own (in log scale), is resized to cover the bucket and centre-cropped: the least
cropping any bucket allows. The crop geometry here is the one ``models/data.py`` applies to pixels, so
SDXL's micro-conditioning records the crop that was taken. This module imports nothing heavy: the
service computes a dataset's bucket histogram from its stored image sizes with it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

Size = tuple[int, int]  # (height, width) in pixels


def bucket_sizes(resolution: int, step: int, max_aspect: float) -> list[Size]:
    """The (height, width) buckets of area ≤ resolution², sides multiples of ``step``, each the widest
    for its height (and its transpose), sorted from tallest to widest."""
    if not 0 < step <= resolution:
        raise ValueError(f"bucket_step: {step}px must be between 1 and the resolution {resolution}px")
    side = resolution // step * step
    area, sizes = resolution * resolution, {(side, side)}  # the square: there is always one bucket
    for height in range(step, area // step + 1, step):
        width = (area // height) // step * step
        if width >= step and max(height, width) <= max_aspect * min(height, width):
            sizes |= {(height, width), (width, height)}  # portrait and landscape alike
    return sorted(sizes, key=lambda s: s[1] / s[0])


def nearest_bucket(width: int, height: int, sizes: list[Size]) -> Size:
    """The bucket whose aspect ratio is closest to the image's (ties: the larger bucket)."""
    ratio = math.log(width / height)
    return min(sizes, key=lambda s: (abs(math.log(s[1] / s[0]) - ratio), -s[0] * s[1]))


def covers(width: int, height: int, size: Size) -> bool:
    """Whether the image reaches the bucket without upscaling."""
    return width >= size[1] and height >= size[0]


def crop_geometry(width: int, height: int, size: Size) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop top, crop left) of fitting an image to ``size``: halve
    while both sides are at least twice the bucket's (ADM's box downsampling), scale so the image
    covers the bucket, take the centre. A square bucket is ADM/DiT's ``center_crop_arr``."""
    target_h, target_w = size
    while width >= 2 * target_w and height >= 2 * target_h:
        width, height = width // 2, height // 2
    scale = max(target_w / width, target_h / height)
    width, height = max(target_w, round(width * scale)), max(target_h, round(height * scale))
    return width, height, (height - target_h) // 2, (width - target_w) // 2


def assign(image_sizes: Iterable[tuple[int, int]], resolution: int, step: int, max_aspect: float) -> list[Size]:
    """The bucket of each image, given as (width, height)."""
    sizes = bucket_sizes(resolution, step, max_aspect)
    return [nearest_bucket(w, h, sizes) for w, h in image_sizes]


def histogram(buckets: Iterable[Size]) -> dict[str, int]:
    """Images per bucket as {"WxH": count}, widest last."""
    counts = Counter(buckets)
    return {f"{w}x{h}": counts[(h, w)] for h, w in sorted(counts, key=lambda s: s[1] / s[0])}


def expand_sizes(counts: dict[str, int]) -> list[tuple[int, int]]:
    """{"WxH": count} (as a dataset's stats record them) -> one (width, height) per image."""
    sizes = []
    for key, count in counts.items():
        width, _, height = key.partition("x")
        sizes += [(int(width), int(height))] * int(count)
    return sizes


def bucket_report(image_sizes: list[tuple[int, int]], *, resolution: int, bucket_step: int,
                  bucket_max_aspect: float) -> dict:
    """What ``aspect_buckets`` would do with images of these (width, height) sizes: the settings, the
    histogram and how many images are smaller than their bucket (refused unless upscaled)."""
    assigned = assign(image_sizes, resolution, bucket_step, bucket_max_aspect)
    smaller = sum(not covers(w, h, size) for (w, h), size in zip(image_sizes, assigned, strict=True))
    return {"resolution": resolution, "bucket_step": bucket_step, "bucket_max_aspect": bucket_max_aspect,
            "histogram": histogram(assigned), "smaller_than_bucket": smaller}
