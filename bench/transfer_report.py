"""Plots and the Markdown report of the transfer benchmark.

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``), which renders with
the Agg canvas and touches no global backend state; entry points may still select Agg themselves.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from bench.transfer_stats import markdown_table
from models.evaluation.sample_quality import DOMAIN_SUFFIX, guidance_order
from models.grid import to_pil_grid
from models.plots import save_figure


def _final_step(summary: dict[str, Any]) -> str:
    steps = {int(s) for per_g in summary.values() for per_step in per_g.values() for s in per_step}
    return str(max(steps))


def setting_title(key: str) -> str:
    """``guidance 4`` for a CFG score, ``guidance 4, Domain Guidance`` for a ``4/dg`` one."""
    scale = key.removesuffix(DOMAIN_SUFFIX)
    return f"guidance {scale}" + (", Domain Guidance" if key.endswith(DOMAIN_SUFFIX) else "")


def pm(cell: dict[str, float], digits: int = 2) -> str:
    """``mean ± std [min, max]`` of a summary cell."""
    return (f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f} "
            f"[{cell['min']:.{digits}f}, {cell['max']:.{digits}f}]")


#################################################################################
#                                  Figures                                      #
#################################################################################


def plot_fd_curves(summary: dict[str, Any], path: Path) -> Path:
    """FD vs step, one panel per guidance scale: mean over seeds with the min-max band."""
    guidances = sorted({g for per_g in summary.values() for g in per_g}, key=guidance_order)
    fig = Figure(figsize=(5.2 * len(guidances), 3.8))
    for i, g in enumerate(guidances):
        ax = fig.add_subplot(1, len(guidances), i + 1)
        for k, (method, per_g) in enumerate(summary.items()):
            steps = sorted(per_g[g], key=int)
            x = [int(s) for s in steps]
            fd = [per_g[g][s]["fd"] for s in steps]
            color = colormaps["tab20"](k % 20) if len(summary) > 10 else f"C{k}"
            line = ax.plot(x, [c["mean"] for c in fd], marker="o", ms=3, label=method, color=color)[0]
            ax.fill_between(x, [c["min"] for c in fd], [c["max"] for c in fd], color=line.get_color(), alpha=0.2)
        ax.set_title(setting_title(g))
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("FD (domain features) ↓")
        ax.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.3)
    fig.axes[0].legend(fontsize=7)
    return save_figure(fig, path)


def plot_sample_grids(grids: dict[str, dict[str, torch.Tensor]], num_classes: int, path: Path,
                      per_class: int = 6) -> Path:
    """Rows: models; columns: guidance scales. Each cell shows ``per_class`` samples of every class."""
    names = list(grids)
    guidances = sorted({g for imgs in grids.values() for g in imgs}, key=guidance_order)
    fig = Figure(figsize=(2.6 * len(guidances), 2.4 * len(names)))
    for r, name in enumerate(names):
        for c, g in enumerate(guidances):
            ax = fig.add_subplot(len(names), len(guidances), r * len(guidances) + c + 1)
            ax.axis("off")
            images = grids[name].get(g)
            if images is None:
                continue
            n = images.shape[0] // num_classes
            pick = torch.cat([torch.arange(k * n, k * n + min(per_class, n)) for k in range(num_classes)])
            ax.imshow(np.asarray(to_pil_grid(images[pick], nrow=min(per_class, n))))
            ax.set_title("\n".join(textwrap.wrap(f"{name} · {setting_title(g)}", 36)), fontsize=7)
    return save_figure(fig, path)


#################################################################################
#                                  Report                                       #
#################################################################################


def markdown_report(results: dict[str, Any]) -> str:
    """A short report: setup, the final-step table per method and guidance, timing, caveats."""
    summary, setup = results["summary"], results["setup"]
    final = _final_step(summary)
    lines = [
        "# Transfer benchmark", "",
        f"Methods {', '.join(setup['methods'])}; {setup['seeds']} seed(s); {setup['steps']} steps; "
        f"evaluation every {setup['eval_every']} steps with {setup['per_class']} samples per class.", "",
        "FD and KID use features of a small domain classifier **trained on the real held-out target "
        "images** (not Inception); values are comparable only within this benchmark. "
        f"Classifier: {json.dumps({k: results['extractor'].get(k) for k in ('val_accuracy', 'real_images')})}.", "",
        f"## Step {final} (mean ± std [min, max] over seeds)", "",
        "| method | guidance | FD | KID | class fidelity |", "|---|---|---|---|---|",
    ]
    for method, per_g in summary.items():
        for g, per_step in sorted(per_g.items(), key=lambda kv: guidance_order(kv[0])):
            cell = per_step[final]
            lines.append(f"| {method} | {g} | {pm(cell['fd'])} | {pm(cell['kid_mean'], 3)} | "
                         f"{pm(cell['class_fidelity'])} |")
    lines += [""] + markdown_table(results.get("paired", {}))
    lines += ["", f"Step 0 is the base model. Wall time {results['seconds']['total']:.0f} s "
              f"({results['torch_threads']} torch threads, {results['device']}).", "",
              "![FD vs step](fd_vs_step.png)", "", "![samples](samples.png)", ""]
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], grids: dict[str, dict[str, torch.Tensor]], out: Path) -> None:
    """results.json, fd_vs_step.png, samples.png and report.md under ``out``."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_fd_curves(results["summary"], out / "fd_vs_step.png")
    num_classes = len(results["extractor"]["classes"])
    plot_sample_grids(grids, num_classes, out / "samples.png")
    (out / "report.md").write_text(markdown_report(results))
