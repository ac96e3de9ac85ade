"""ControlNet conditions and the convergence metric, in pure torch (no OpenCV).

Extractors map images in [0, 1] (N, 3, H, W) to control images in [0, 1] (N, 3, H, W):
``canny`` (white edges on black, relative hysteresis thresholds) and ``grayscale``. The metric is
the F1 of the edges of a generated image against the condition's edges, pixel-exact, so a perfect
copy scores 1 and unrelated images score near 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EXTRACTORS = ("canny", "grayscale")


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) with ITU-R 601 weights."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    k = torch.exp(-torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved by (dy, dx) with zero fill: out[i, j] = x[i - dy, j - dx]."""
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return padded[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


@torch.no_grad()
def canny_edges(images: torch.Tensor, low: float = 0.1, high: float = 0.2, sigma: float = 1.0) -> torch.Tensor:
    """Binary Canny edge maps (N, 1, H, W) of images in [0, 1]; thresholds are fractions of the
    image's strongest gradient."""
    gray = _gaussian_blur(luminance(images.float()), sigma)  # (N, 1, H, W)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, sobel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, sobel.t().contiguous().view(1, 1, 3, 3))
    mag = torch.hypot(gx, gy)  # (N, 1, H, W)
    mag = mag / mag.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    sector = torch.round(torch.atan2(gy, gx) / (math.pi / 4)).long() % 4  # 0: x, 1: diag, 2: y, 3: anti-diag
    keep = torch.zeros_like(mag, dtype=torch.bool)
    for s, (dy, dx) in enumerate([(0, 1), (1, 1), (1, 0), (1, -1)]):
        local_max = (mag >= _shift(mag, dy, dx)) & (mag >= _shift(mag, -dy, -dx))
        keep |= (sector == s) & local_max
    thin = mag * keep
    weak, edges = thin >= low, thin >= high
    for _ in range(max(images.shape[-2:])):  # hysteresis: grow strong edges through weak pixels
        grown = weak & (F.max_pool2d(edges.float(), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges.float()


def extract_control(images: torch.Tensor, kind: str) -> torch.Tensor:
    """Control images (N, 3, H, W) in [0, 1] computed from images in [0, 1]."""
    if kind == "canny":
        return canny_edges(images).expand(-1, 3, -1, -1).contiguous()
    if kind == "grayscale":
        return luminance(images).expand(-1, 3, -1, -1).contiguous()
    raise ValueError(f"control_extractor: unknown extractor {kind!r}; choose from {', '.join(EXTRACTORS)}")


def condition_edges(controls: torch.Tensor, kind: str) -> torch.Tensor:
    """Reference edge maps (N, 1, H, W) of control images: canny controls are edge maps already."""
    if kind == "canny":
        return (controls.float().mean(1, keepdim=True) > 0.5).float()
    return canny_edges(controls)


def edge_f1(predicted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image F1 (N,) of binary edge maps (N, 1, H, W); 1 when both are empty."""
    if predicted.shape != reference.shape:
        raise ValueError(f"edge F1: generated edges {tuple(predicted.shape[-2:])} and condition edges "
                         f"{tuple(reference.shape[-2:])} differ in size; resize the condition to the image")
    p, r = predicted.flatten(1) > 0.5, reference.flatten(1) > 0.5  # (N, HW)
    hits = (p & r).sum(1).float()
    precision = hits / p.sum(1).clamp_min(1)
    recall = hits / r.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-8)
    return torch.where((p.sum(1) == 0) & (r.sum(1) == 0), torch.ones_like(f1), f1)


def canny_f1(generated: torch.Tensor, controls: torch.Tensor, kind: str = "canny") -> float:
    """Mean edge F1 between generated images and their conditions (both (N, 3, H, W) in [0, 1])."""
    if generated.shape[-2:] != controls.shape[-2:]:
        raise ValueError(f"canny F1: generated images are {tuple(generated.shape[-2:])} but conditions are "
                         f"{tuple(controls.shape[-2:])}; they must be the same size")
    return float(edge_f1(canny_edges(generated), condition_edges(controls, kind)).mean())
