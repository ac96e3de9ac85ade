"""The glyph source of the stronger-base preset: rendered, varied, deterministic, cached, used by the preset."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from bench.glyphs import GLYPHS, font_paths, write_glyphs


def _pixels(folder, name: str) -> np.ndarray:
    with Image.open(folder / name) as img:
        return np.asarray(img.convert("L"), dtype=np.float32)


def test_glyphs_are_rendered_per_class_varied_and_deterministic(tmp_path):
    root = write_glyphs(tmp_path / "a", per_class=6, resolution=16)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(f"glyph_{c}" for c in GLYPHS) and len(folders) == 36
    images = [_pixels(root / "glyph_7", f"{i:05d}.png") for i in range(6)]
    assert all(img.shape == (16, 16) for img in images)
    assert all(img.max() > 150 and img[0].mean() < 60 for img in images)  # a light glyph on a dark ground
    assert min(np.abs(a - b).mean() for i, a in enumerate(images) for b in images[i + 1:]) > 1  # all differ
    assert np.abs(_pixels(root / "glyph_7", "00000.png") - _pixels(root / "glyph_A", "00000.png")).mean() > 5
    again = write_glyphs(tmp_path / "b", per_class=6, resolution=16)
    assert all((root / f).read_bytes() == (again / f).read_bytes()
               for f in ("glyph_7/00003.png", "glyph_Z/00005.png"))  # same seed, same pixels
    assert len(font_paths()) == 20
    assert not list(root.glob("*.json")) and (tmp_path / "a.ready.json").exists()  # nothing but class folders


def test_glyph_source_is_cached_and_rewritten_on_new_settings(tmp_path):
    root = write_glyphs(tmp_path / "g", per_class=2, resolution=16)
    stamp = (root / "glyph_0" / "00000.png").stat().st_mtime_ns
    write_glyphs(tmp_path / "g", per_class=2, resolution=16)
    assert (root / "glyph_0" / "00000.png").stat().st_mtime_ns == stamp  # reused
    write_glyphs(tmp_path / "g", per_class=3, resolution=16)
    assert len(list((root / "glyph_0").iterdir())) == 3


def test_glyphs_preset_pretrains_on_glyphs_and_tunes_on_handwritten_digits(tmp_path, tiny_base, monkeypatch):
    from bench import transfer

    small = dataclasses.replace(transfer.PRESETS["glyphs"], source_glyphs=2)
    monkeypatch.setitem(transfer.PRESETS, "glyphs", small)
    setup = transfer.digits_preset(tmp_path, preset="glyphs", base=tiny_base, say=lambda line: None)
    assert setup.source == tmp_path / "data" / "glyph_source"
    assert len(list((setup.source / "glyph_Q").iterdir())) == 2
    assert sorted(p.name for p in setup.target.iterdir() if p.is_dir()) == [f"digit_{d}" for d in range(5, 10)]
    assert transfer.PRESETS["glyphs"] is small and transfer.PRESETS["glyphs"].base_steps == 6000
