"""Figures the library writes (the forgetting probe's curves), with matplotlib's object API.

``matplotlib.figure.Figure`` renders with the Agg canvas and touches no global backend state, so
importing this module has no side effects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from PIL import Image


def save_figure(fig: Figure, path: Path) -> Path:
    """Write a PNG with a 256-colour palette (plots and digit grids stay small enough to commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(256)
    small.save(path, optimize=True)
    return path


def plot_probe(result: dict[str, Any], path: Path) -> Path:
    """FD against the swap step t*, one line per direction (and guidance)."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for direction, per_g in result["curves"].items():
        for g, points in per_g.items():
            ax.plot([p["t_star"] for p in points], [p["fd"] for p in points], marker="o", ms=3,
                    label=f"{direction} (g={g})")
    ax.set_xlabel("swap step t* (first model for t ≥ t*, second below)")
    ax.set_ylabel("FD to target data ↓")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
