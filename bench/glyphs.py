"""A larger, more varied source domain: printed glyphs rendered from the fonts matplotlib ships.

The ``glyphs`` transfer preset pre-trains its base on these (digits 0-9 and letters A-Z in 20 font faces,
each drawn at a random size, rotation, position and stroke, tens of thousands of images) and transfers to a
few shots of *handwritten* digits 5-9: a base that is a broad denoiser of small glyphs, closer to the
paper's premise than a base that has only seen 901 handwritten digits 0-4. Rendering is deterministic for a
given seed and font set, so the cached source is the same on every machine with the same matplotlib.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

GLYPHS = string.digits + string.ascii_uppercase
# Text faces among matplotlib's bundled fonts (mpl-data/fonts/ttf); symbol and math-extension fonts are left out.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf",
)


def font_paths() -> list[Path]:
    """The bundled font files that exist in this matplotlib (an error if none does)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    paths = [root / name for name in FONT_FILES if (root / name).exists()]
    if not paths:
        raise FileNotFoundError(f"glyphs: none of matplotlib's fonts found under {root}")
    return paths


def render_glyph(char: str, font: Path, rng: np.random.Generator, resolution: int, oversample: int = 4,
                 ) -> Image.Image:
    """One light-on-dark glyph: random size (55-90% of the side), rotation (±20°), offset and stroke."""
    side = resolution * oversample
    size = int(side * rng.uniform(0.55, 0.9))
    face = ImageFont.truetype(str(font), size)
    canvas = Image.new("L", (side * 2, side * 2), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = int(rng.integers(0, 2)) * max(1, oversample // 2)
    draw.text((side, side), char, font=face, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
    shift = rng.uniform(-0.08, 0.08, size=2) * side
    left, top = int(side / 2 + shift[0]), int(side / 2 + shift[1])
    glyph = canvas.crop((left, top, left + side, top + side))
    if rng.random() < 0.3:
        glyph = glyph.filter(ImageFilter.GaussianBlur(oversample * rng.uniform(0.3, 0.8)))
    return glyph.resize((resolution, resolution), Image.LANCZOS)


def write_glyphs(root: Path, *, per_class: int, resolution: int, seed: int = 0,
                 glyphs: str = GLYPHS) -> Path:
    """Class folders ``glyph_<c>`` of ``per_class`` rendered images each (cached by settings)."""
    fonts = font_paths()
    settings = {"per_class": per_class, "resolution": resolution, "seed": seed, "glyphs": glyphs,
                "fonts": [f.name for f in fonts]}
    ready = root.with_name(f"{root.name}.ready.json")  # beside the folder: a file inside is not an image
    if ready.exists() and json.loads(ready.read_text()) == settings:
        return root
    shutil.rmtree(root, ignore_errors=True)
    ready.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    for char in glyphs:
        folder = root / f"glyph_{char}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            render_glyph(char, fonts[i % len(fonts)], rng, resolution).save(folder / f"{i:05d}.png")
    ready.write_text(json.dumps(settings))
    return root
