"""The chain-of-forgetting probe: swap models part-way along the reverse chain.

For a swap step t*, the first model denoises every timestep t ≥ t* and the second model every
t < t*, from the same starting noise (DDIM, deterministic). Direction ``tuned→base`` with t* = 0 is
the tuned model alone and with t* = T the base alone; ``base→tuned`` is the mirror. If knowledge at
low noise transfers (the paper's claim), handing the last steps (small t*) to the base model costs
little and the cost grows with t*.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from models.evaluation.sample_quality import Evaluator, model_labels
from models.families.dit import DiTFamily

DIRECTIONS = ("tuned→base", "base→tuned")


def _predict(family: DiTFamily, labels: torch.Tensor, guidance: float, base: DiTFamily | None = None):
    """The guided prediction of ``family``: CFG, or Domain Guidance from ``base`` (when given and not itself)."""
    labels = model_labels(family, labels).to(family.device)
    if base is None or base is family:
        return family._predict_fn(family.denoiser.eval(), labels, family.null_label, guidance)
    return family._predict_fn(family.denoiser.eval(), labels, family.null_label, guidance,
                              base=base.denoiser.eval(), base_null=base.null_label)


@torch.no_grad()
def swap_sample(first: DiTFamily, second: DiTFamily, labels: torch.Tensor, t_star: int, *, guidance: float,
                steps: int, generator: torch.Generator, domain_base: DiTFamily | None = None) -> torch.Tensor:
    """Latents denoised by ``first`` for t ≥ ``t_star`` and by ``second`` below (DDIM, ``steps`` steps).

    With ``domain_base``, the tuned model's steps use Domain Guidance (its unconditional branch from that base)."""
    fn_first = _predict(first, labels, guidance, domain_base)
    fn_second = _predict(second, labels, guidance, domain_base)
    return first.sample_chain(lambda t: fn_first if t >= t_star else fn_second, len(labels), steps=steps,
                              sampler="ddim", generator=generator, per_step=True)


def swap_grid(num_timesteps: int, points: int) -> list[int]:
    """``points`` swap steps spread evenly over 0..T (both ends included)."""
    return sorted({round(i * num_timesteps / (points - 1)) for i in range(points)})


def forgetting_curves(base: DiTFamily, tuned: DiTFamily, evaluator: Evaluator, *, t_stars: list[int],
                      seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """FD (and KID, class fidelity) against the evaluator's real images for every t*, both directions.

    The evaluator's ``guidance_mode`` "domain" guides the tuned model's steps with the base (Domain Guidance)."""
    domain_base = base if evaluator.guidance_mode == "domain" else None
    curves: dict[str, dict[str, list]] = {}
    labels = evaluator.labels
    start = time.perf_counter()
    for direction in DIRECTIONS:
        first, second = (tuned, base) if direction == DIRECTIONS[0] else (base, tuned)
        for g in evaluator.guidances:
            points = curves.setdefault(direction, {}).setdefault(f"{g:g}", [])
            for t_star in t_stars:
                latents = swap_sample(first, second, labels, t_star, guidance=g, steps=evaluator.sample_steps,
                                      generator=torch.Generator().manual_seed(seed), domain_base=domain_base)
                metrics = evaluator.score(tuned.decode_latents(latents), labels)
                points.append({"t_star": t_star, **metrics})
                if progress:
                    progress(f"{direction} g={g:g} t*={t_star}: FD {metrics['fd']:.2f}")
    return {"curves": curves, "t_stars": t_stars, "seed": seed, "guidances": list(evaluator.guidances),
            "guidance_mode": evaluator.guidance_mode,
            "sample_steps": evaluator.sample_steps, "samples": len(labels),
            "seconds": time.perf_counter() - start}


def load_tuned(checkpoint: Path, device: str = "cpu") -> DiTFamily:
    """A tuned checkpoint as a family; an unmerged LoRA in ``lora/`` is attached to the base weights."""
    from models.lora import LORA_DIR, is_merged, load_lora

    family = DiTFamily.from_pretrained(str(checkpoint), device=device)
    lora = Path(checkpoint) / LORA_DIR
    if lora.is_dir() and not is_merged(lora):
        load_lora(family.denoiser, lora)
    return family


def run_probe(base: Path, tuned: Path, data: Path, out: Path, *, points: int = 11, per_class: int = 40,
              guidances: tuple[float, ...] = (1.0,), steps: int = 25, seed: int = 0,
              classifier: Path | None = None, device: str = "cpu", say: Callable[[str], None] = print,
              on_point: Callable[[str], None] | None = None, guidance_mode: str = "cfg") -> dict[str, Any]:
    """Load both models, train (or load) the domain features on ``data``, write probe.json and probe.png.

    ``on_point`` (default ``say``) is called once per (direction, guidance, t*) point as it is scored.
    """
    import json

    from models.evaluation.sample_quality import build_evaluator
    from models.plots import plot_probe

    base_family = DiTFamily.from_pretrained(str(base), device=device)
    tuned_family = load_tuned(Path(tuned), device)
    say(f"probe: features from a domain classifier on real images of {data}")
    evaluator, meta = build_evaluator(data, tuned_family.image_size, classifier_dir=classifier or out / "domain_classifier",
                                      per_class=per_class, guidances=guidances, sample_steps=steps,
                                      guidance_mode=guidance_mode)
    result = forgetting_curves(base_family, tuned_family, evaluator, seed=seed, progress=on_point or say,
                               t_stars=swap_grid(tuned_family.num_timesteps, points))
    result.update(base=str(base), tuned=str(tuned), data=str(data), extractor=meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2))
    plot_probe(result, out / "probe.png")
    return result

