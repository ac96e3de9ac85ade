"""Outputs of the ControlNet convergence benchmark: results.json, the F1-vs-step plot, report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from models.plots import save_figure


def plot_f1_curves(results: dict[str, Any], path: Path) -> Path:
    """Held-out canny F1 vs step per method: mean over seeds with a ±1 sd band and the threshold."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for k, (method, cell) in enumerate(results["summary"].items()):
        steps = sorted(cell["f1"], key=int)
        x = [int(s) for s in steps]
        mean = [cell["f1"][s]["mean"] for s in steps]
        sd = [cell["f1"][s]["sd"] for s in steps]
        line = ax.plot(x, mean, marker="o", ms=3, label=method, color=f"C{k}")[0]
        ax.fill_between(x, [m - s for m, s in zip(mean, sd, strict=True)],
                        [m + s for m, s in zip(mean, sd, strict=True)], color=line.get_color(), alpha=0.2)
    ax.axhline(results["setup"]["threshold"], color="grey", ls="--", lw=1, label="threshold")
    ax.set_xlabel("ControlNet training step")
    ax.set_ylabel("held-out canny-edge F1 ↑")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def markdown_report(results: dict[str, Any]) -> str:
    """A short table: crossing steps per seed, their mean, how much sooner than standard, final F1."""
    setup = results["setup"]
    lines = [
        "# ControlNet convergence benchmark", "",
        f"{setup['seeds']} seeds × {setup['steps']} steps per method; held-out canny F1 on "
        f"{setup['heldout_pairs']} (prompt, control) pairs every {setup['eval_every']} steps "
        f"(guidance {setup['guidance']}, DDIM {setup['sample_steps']}); threshold {setup['threshold']}.", "",
        "| method | step reaching the threshold (per seed) | mean of those reaching it | sooner than standard "
        "| final F1 |",
        "|---|---|---|---|---|",
    ]
    bound = {"at_most": "≤ ", "at_least": "≥ ", None: ""}
    for method, cell in results["summary"].items():
        final = cell["f1"][max(cell["f1"], key=int)]
        mean = cell["mean_converged_at_step"]
        sooner = cell["sooner_than_standard"]
        sooner_text = "—" if sooner is None else f"{bound[cell.get('sooner_bound')]}{sooner:+.0%}"
        lines.append(f"| {method} | {', '.join('never' if c is None else str(c) for c in cell['converged_at_step'])} "
                     f"({cell['converged_runs']}) | {'—' if mean is None else f'{mean:.0f}'} | "
                     f"{sooner_text} | {final['mean']:.3f} ± {final['sd']:.3f} |")
    lines += ["", "A run that never reaches the threshold counts at the step budget in \"sooner than standard\" "
              "(a lower bound on its crossing step), which makes that figure a bound (≤ or ≥)."]
    return "\n".join(lines) + "\n"


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_f1_curves(results, out / "f1_vs_step.png")
    (out / "report.md").write_text(markdown_report(results))
