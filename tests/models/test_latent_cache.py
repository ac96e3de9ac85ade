"""Target latents are encoded once and cached under a content key."""

from __future__ import annotations

import torch

from models.data import scan_image_folder
from models.families import load_family
from models.latents import encode_image_folder

from .conftest import write_class_folder


def test_latents_are_cached_by_content(make_config, image_folder, tmp_path):
    family = load_family(make_config())
    folder = scan_image_folder(image_folder, resolution=16)
    first = encode_image_folder(family, folder, resolution=16, flip=True, cache_dir=tmp_path)
    assert first.mean.shape == (12, 2, 4, 8, 8) and first.labels.tolist() == folder.labels
    assert not torch.equal(first.mean[:, 0], first.mean[:, 1])  # the mirror image is encoded too
    files = list((tmp_path / "latents").iterdir())
    assert len(files) == 1
    calls = []
    family.encode_images = lambda x: calls.append(x) or (_ for _ in ()).throw(AssertionError("re-encoded"))
    again = encode_image_folder(family, folder, resolution=16, flip=True, cache_dir=tmp_path)
    assert torch.equal(first.mean, again.mean) and not calls
    write_class_folder(image_folder, {"cat": 5}, seed=1)  # overwrite images: new content, new key
    changed = scan_image_folder(image_folder, resolution=16)
    del family.encode_images
    encode_image_folder(family, changed, resolution=16, flip=True, cache_dir=tmp_path)
    assert len(list((tmp_path / "latents").iterdir())) == 2


def test_sampling_draws_posterior_samples_and_flips(make_config, image_folder):
    family = load_family(make_config())
    folder = scan_image_folder(image_folder, resolution=16)
    latents = encode_image_folder(family, folder, resolution=16, flip=True, cache_dir=None)
    gen = torch.Generator().manual_seed(0)
    a = latents.sample(torch.tensor([0, 0, 0, 0]), gen)
    assert a.shape == (4, 4, 8, 8)
    assert not torch.equal(a[0], a[1])  # fresh noise each draw
