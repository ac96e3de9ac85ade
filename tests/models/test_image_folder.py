"""Dataset validation: every problem is named with its file, before any training starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import DatasetError, load_image, scan_image_folder

from .conftest import write_class_folder


def test_valid_folder_lists_files_and_classes(tmp_path):
    root = write_class_folder(tmp_path / "d", {"b_cls": 2, "a_cls": 3})
    (root / "a_cls" / ".DS_Store").write_text("junk")  # hidden files are ignored
    folder = scan_image_folder(root, resolution=16)
    assert folder.class_names == ["a_cls", "b_cls"]
    assert folder.labels == [0, 0, 0, 1, 1]
    assert len(folder) == 5


def test_every_problem_is_reported_with_its_file(tmp_path):
    root = write_class_folder(tmp_path / "d", {"ok": 2, "broken": 1})
    (root / "broken" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "broken" / "notes.txt").write_text("hello")
    (root / "empty").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "ok" / "tiny.png")
    (root / "stray.png").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        scan_image_folder(root, resolution=16)
    text = str(err.value)
    assert "corrupt.png: not a readable image" in text
    assert "notes.txt: not an image file" in text
    assert "empty: class folder is empty" in text
    assert "tiny.png: image is 8x8, smaller than the training resolution 16" in text
    assert "stray.png: file outside a class folder" in text
    assert len(err.value.problems) == 5


def test_small_images_can_be_upscaled_on_request(tmp_path):
    root = write_class_folder(tmp_path / "d", {"a": 1}, size=8)
    with pytest.raises(DatasetError, match="upscale_small_images"):
        scan_image_folder(root, resolution=16)
    folder = scan_image_folder(root, resolution=16, upscale_small_images=True)
    assert load_image(folder.files[0], 16).shape == (3, 16, 16)


def test_missing_folder_and_no_classes(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_image_folder(tmp_path / "nope", resolution=16)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        scan_image_folder(tmp_path / "flat", resolution=16)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    gray = tmp_path / "g.png"
    Image.fromarray(np.full((20, 20), 255, np.uint8), mode="L").save(gray)
    rgba = tmp_path / "t.png"
    transparent = np.zeros((20, 20, 4), np.uint8)  # fully transparent black -> white background
    Image.fromarray(transparent, mode="RGBA").save(rgba)
    for path in (gray, rgba):
        x = load_image(path, 16)
        assert x.shape == (3, 16, 16)
        assert torch.allclose(x, torch.ones_like(x))  # white in [-1, 1]


def test_center_crop_keeps_the_middle(tmp_path):
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, 16:48] = 255  # white centre square, black sides
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 16)
    assert x.shape == (3, 16, 16)
    assert x.mean().item() > 0.9  # the crop is the white middle
