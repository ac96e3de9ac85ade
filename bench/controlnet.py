"""ControlNet convergence benchmark: how soon does a new ControlNet follow its condition, per method?

The paper reports that Diff-Tuning makes ControlNet's "sudden convergence" come 24% sooner. This
trains a ControlNet on a frozen SD base with each method and several seeds, scores it every
``eval_every`` steps on held-out (prompt, control) pairs by the canny-edge F1 of the generated images
against their conditions, and records the first step each run reaches ``threshold``.

Methods: ``standard``; ``difftune`` (bank images paired with controls extracted from them the same
way as the target's); ``difftune_blank`` (bank rows get a blank control); the ablations
``power_only`` (Diff-Tuning's target timesteps, no bank), ``bank_only`` (uniform target
timesteps, the bank kept with extracted controls) and its control ``bank_as_data`` (the bank's
pairs as plain extra data: uniform t, their prompts, per-row weight like a target row), and
``bank_as_data_low_t`` (the same with the bank rows' low-noise timesteps), ``bank_only_prompt``
(``bank_only`` with bank rows on their own prompts instead of the empty prompt). The CPU
preset pre-trains a tiny SD on digits 0-4 (captions ``digit 3``) and trains the ControlNet on canny
edges of few digits 5-9.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from contract.train_config import parse_config
from models.control import canny_f1, extract_control

Say = Callable[[str], None]
METHODS: dict[str, dict[str, Any]] = {
    "standard": {"method": "standard", "control_extractor": "canny"},
    "difftune": {"method": "difftune", "control_extractor": "canny"},
    "difftune_blank": {"method": "difftune", "control_extractor": "none"},
    # Ablations that separate Diff-Tuning's two parts:
    "power_only": {"method": "difftune", "bank_share": 0.0, "control_extractor": "canny"},  # t ∝ t+1, no bank
    "bank_only": {"method": "difftune", "target_power": 0.0, "bank_power": 1.0,  # uniform target t, bank kept
                  "control_extractor": "canny"},
    # Control for bank_only: the same bank pairs as plain extra training data (uniform t, their own prompts,
    # weight 0.25 ≈ a bank row counting like a target row at share 0.2), so any gain of bank_only beyond
    # this is not just "more (image, control) pairs".
    "bank_as_data": {"method": "difftune", "target_power": 0.0, "bank_power": 0.0, "bank_loss_weight": 0.25,
                     "bank_label": "prompt", "control_extractor": "canny"},
    # bank_only with bank rows on the prompts they were drawn with instead of the empty prompt (bank_label)
    "bank_only_prompt": {"method": "difftune", "target_power": 0.0, "bank_power": 1.0, "bank_label": "prompt",
                         "control_extractor": "canny"},
    # bank_as_data with the bank rows' low-noise timesteps (t ∝ T-t) put back: does that alone recover bank_only?
    "bank_as_data_low_t": {"method": "difftune", "target_power": 0.0, "bank_power": 1.0, "bank_loss_weight": 0.25,
                           "bank_label": "prompt", "control_extractor": "canny"},
}
DEFAULT_METHODS = ("standard", "difftune", "difftune_blank")  # the ablations run only when asked for
THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)  # crossing steps are also reported at these (not only ``threshold``)


# ----------------------------------------------------------------------------------------------
# Data and the base model (CPU preset)
# ----------------------------------------------------------------------------------------------


def write_captioned_digits(root: Path, classes: tuple[int, ...], per_class: int | None, *, offset: int = 0,
                           resolution: int = 32) -> Path:
    """Digits as a captioned dataset (``digit 3``) whose conditioning files are their canny edges."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "conditioning").mkdir(exist_ok=True)
    lines = []
    for digit in classes:
        rows = np.flatnonzero(digits.target == digit)[offset:]
        for i in rows[:per_class] if per_class else rows:
            pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (8, 8)
            img = Image.fromarray(pixels, mode="L").resize((resolution, resolution), Image.BICUBIC).convert("RGB")
            img.save(root / "images" / f"{i:04d}.png")
            tensor = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            edges = (extract_control(tensor, "canny")[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            Image.fromarray(edges).save(root / "conditioning" / f"{i:04d}.png")
            lines.append(json.dumps({"file_name": f"images/{i:04d}.png", "text": f"digit {digit}",
                                     "conditioning_file_name": f"conditioning/{i:04d}.png"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def build_sd_base(work: Path, source: Path, *, steps: int, vae_steps: int, resolution: int, say: Say) -> Path:
    """Pre-train a tiny SD (VAE, then UNet under a frozen random text encoder) on ``source``; cached."""
    from diffusers import StableDiffusionPipeline

    from bench.demo import train_vae
    from models.captions import scan_caption_folder
    from models.data import load_image
    from models.run import run_training
    from models.tiny import sd_scheduler, tiny_text_encoder, tiny_tokenizer, tiny_unet

    base = work / "base_model"
    if (base / "model_index.json").exists():
        say(f"base model: reusing {base}")
        return base
    folder = scan_caption_folder(source, resolution=resolution)
    say(f"base model: training a small VAE on {len(folder)} source digits")
    vae = train_vae(torch.stack([load_image(p, resolution) for p in folder.files]), steps=vae_steps, say=say)
    torch.manual_seed(0)
    init = work / "base_init"
    StableDiffusionPipeline(vae=vae, text_encoder=tiny_text_encoder(), tokenizer=tiny_tokenizer(work / "tokenizer"),
                            unet=tiny_unet(sample_size=resolution // 2), scheduler=sd_scheduler(),
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(init, safe_serialization=True)
    say(f"base model: pre-training the SD UNet on the source for {steps} steps")
    config = parse_config({"family": "sd", "method": "standard", "base_model": str(init), "resolution": resolution,
                           "batch_size": 32, "learning_rate": 1e-3, "max_steps": steps, "ema_decay": 0.999,
                           "ema_warmup": True, "checkpoint_every": steps, "sample_every": steps, "log_every": 250,
                           "sample_steps": 25, "validation_prompts": [f"digit {d}" for d in range(5)]})
    result = run_training(config, data_dir=source, out_dir=work / "pretrain", cache_dir=work / "cache",
                          on_progress=lambda p: p.step % 250 == 0 and say(
                              f"  pretrain step {p.step}/{p.total_steps} loss {p.loss:.4f}"))
    result.fit.last_checkpoint.rename(base)
    return base


# ----------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------


@dataclass
class ControlNetSetup:
    """Base SD, target and held-out captioned datasets with conditioning files, methods and budget."""

    base: Path
    target: Path
    heldout: Path
    out: Path
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: int = 3
    steps: int = 600
    eval_every: int = 50
    threshold: float = 0.5
    guidance: float = 3.0
    sample_steps: int = 20
    train: dict[str, Any] = field(default_factory=dict)

    def config(self, method: str, seed: int):
        if method not in METHODS:
            raise ValueError(f"method: unknown {method!r}; choose from {', '.join(METHODS)}")
        return parse_config({**self.train, **METHODS[method], "family": "controlnet", "base_model": str(self.base),
                             "seed": seed, "max_steps": self.steps, "checkpoint_every": self.eval_every,
                             "sample_every": self.steps, "keep_checkpoints": 1, "eval_every": self.eval_every,
                             "log_every": self.eval_every,
                             "convergence_threshold": self.threshold, "sample_steps": self.sample_steps,
                             "validation_guidance_scale": self.guidance})


def digits_setup(out: Path, *, base: Path | None = None, shots: int = 20, held_out: int = 8,
                 resolution: int = 32, base_steps: int = 2000, vae_steps: int = 400, say: Say = print,
                 **options: Any) -> ControlNetSetup:
    """The CPU preset: a tiny SD pre-trained on digits 0-4; ControlNet on canny edges of digits 5-9."""
    data = out / "data"
    if not (data / "ready.json").exists():
        write_captioned_digits(data / "source", (0, 1, 2, 3, 4), None, resolution=resolution)
        write_captioned_digits(data / "target", (5, 6, 7, 8, 9), shots, resolution=resolution)
        write_captioned_digits(data / "heldout", (5, 6, 7, 8, 9), held_out, offset=shots, resolution=resolution)
        (data / "ready.json").write_text(json.dumps({"shots": shots, "held_out": held_out}))
    if base is None:
        base = build_sd_base(out, data / "source", steps=base_steps, vae_steps=vae_steps, resolution=resolution,
                             say=say)
    train = {"resolution": resolution, "batch_size": 16, "learning_rate": 1e-3, "ema_decay": 0.0,
             "bank": {"size": 256, "batch_size": 64, "num_inference_steps": 20},
             "bank_prompts": [f"digit {d}" for d in range(5)]}
    return ControlNetSetup(base=base, target=data / "target", heldout=data / "heldout", out=out, train=train,
                           **options)


class HeldoutScorer:
    """Canny F1 of a ControlNet's samples for every held-out (prompt, control) pair, fixed noise."""

    def __init__(self, setup: ControlNetSetup):
        from models.captions import scan_caption_folder
        from models.data import load_image
        from models.families import load_family

        self.setup = setup
        config = setup.config(setup.methods[0], 0)
        folder = scan_caption_folder(setup.heldout, resolution=config.resolution, require_conditioning=True)
        self.prompts = folder.captions
        self.controls = (torch.stack([load_image(p, config.resolution) for p in folder.controls]) + 1) / 2
        self.family = load_family(config)

    def score(self, controlnet: torch.nn.Module, seed: int) -> float:
        images = self.family.generate_images(controlnet, self.prompts, guidance=self.setup.guidance,
                                             steps=self.setup.sample_steps, controls=self.controls,
                                             generator=torch.Generator().manual_seed(seed))
        return canny_f1(images, self.controls)

    def score_checkpoint(self, path: Path, seed: int) -> float:
        from diffusers import ControlNetModel

        return self.score(ControlNetModel.from_pretrained(path / "controlnet").to(self.family.device), seed)


def first_crossing(history: list[list[float]], threshold: float) -> int | None:
    """The first step whose score reaches ``threshold`` (None: never)."""
    return next((int(step) for step, value in history if value >= threshold), None)


def run_one(setup: ControlNetSetup, method: str, seed: int, scorer: HeldoutScorer, *, say: Say,
            on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train one (method, seed), scoring each checkpoint on the held-out pairs; cached in ``run.json``."""
    from contract.train_config import dump_config
    from models.run import run_training

    config = setup.config(method, seed)
    run_dir = setup.out / "runs" / f"{method}_seed{seed}"
    done = run_dir / "run.json"
    record = json.loads(done.read_text()) if done.exists() else {}
    settings = {"guidance": setup.guidance, "sample_steps": setup.sample_steps, "heldout": str(setup.heldout)}
    if record.get("config") == dump_config(config) and record.get("evaluation") == settings:
        say(f"[{method} seed {seed}] reusing {done}")
        return record
    history = [[0, scorer.score(scorer.family.denoiser, seed)]]  # zero convs: the base SD alone
    start, eval_seconds = time.perf_counter(), 0.0

    def on_artifact(kind: str, step: int, path: Path) -> None:
        nonlocal eval_seconds
        if kind == "checkpoint":
            t0 = time.perf_counter()
            history.append([step, scorer.score_checkpoint(Path(path), seed)])
            eval_seconds += time.perf_counter() - t0
            say(f"[{method} seed {seed}] step {step}: held-out canny F1 {history[-1][1]:.3f}")

    result = run_training(config, data_dir=setup.target, out_dir=run_dir, cache_dir=setup.out / "cache",
                          on_artifact=on_artifact, on_progress=lambda p: on_step and on_step(p.step))
    record = {"method": method, "seed": seed, "config": dump_config(config), "evaluation": settings,
              "history": history, "train_rows_history": _job_metric_history(result.fit.last_checkpoint),
              "converged_at_step": first_crossing(history, setup.threshold),
              "seconds": {"total": time.perf_counter() - start, "eval": eval_seconds}}
    done.write_text(json.dumps(record, indent=2))
    return record


def _job_metric_history(checkpoint: Path | None) -> list:
    """The trainer's own convergence history (raw weights, first training rows), as a job reports it."""
    if checkpoint is None:
        return []
    meta = json.loads((Path(checkpoint) / "meta.json").read_text())
    return ((meta.get("metrics") or {}).get("evaluation") or {}).get("history", [])


def summarize(runs: list[dict[str, Any]], setup: ControlNetSetup) -> dict[str, Any]:
    """Per method: mean ± sd of the crossing step and of F1 at each evaluated step."""
    out: dict[str, Any] = {}
    for method in setup.methods:
        mine = [r for r in runs if r["method"] == method]
        crossings = [r["converged_at_step"] for r in mine]
        reached = [c for c in crossings if c is not None]
        steps = [s for s, _ in mine[0]["history"]]
        curve = {str(s): [r["history"][i][1] for r in mine] for i, s in enumerate(steps)}
        out[method] = {
            "converged_at_step": crossings,
            "converged_runs": f"{len(reached)}/{len(mine)}",
            "mean_converged_at_step": statistics.fmean(reached) if reached else None,
            "f1": {s: {"mean": statistics.fmean(v), "sd": statistics.pstdev(v)} for s, v in curve.items()},
            "crossings": {f"{t:g}": [first_crossing(r["history"], t) for r in mine] for t in THRESHOLD_GRID},
        }
    standard = out.get("standard")
    for method, cell in out.items():
        cell["sooner_than_standard"], cell["sooner_bound"] = (
            _sooner(cell["converged_at_step"], standard["converged_at_step"], setup.steps)
            if standard is not None and method != "standard" else (None, None))
    return out


def _sooner(mine: list[int | None], standard: list[int | None], budget: int) -> tuple[float | None, str | None]:
    """``1 - mean(mine) / mean(standard)`` over crossing steps, with a run that never crossed counted at
    the training budget (a lower bound on its crossing step), and which way that makes the result a bound:
    ``"at_most"`` when only ``mine`` has such runs, ``"at_least"`` when only standard has; None when both do.
    """
    mine_censored, standard_censored = None in mine, None in standard
    if mine_censored and standard_censored:
        return None, None
    mine_mean, standard_mean = (statistics.fmean(budget if x is None else x for x in xs) for xs in (mine, standard))
    if standard_mean == 0:  # standard already meets the threshold before training
        return None, None
    value = 1 - mine_mean / standard_mean
    return value, "at_most" if mine_censored else "at_least" if standard_censored else None


def run_benchmark(setup: ControlNetSetup, *, say: Say = print, on_step: Callable[[int], None] | None = None) -> dict:
    """Every (method, seed); writes ``results.json``, ``f1_vs_step.png`` and ``report.md`` to ``setup.out``."""
    from bench.controlnet_report import write_outputs

    scorer = HeldoutScorer(setup)
    say(f"held-out set: {len(scorer.prompts)} (prompt, canny) pairs from {setup.heldout}")
    runs = []
    for method in setup.methods:
        for seed in range(setup.seeds):
            offset = len(runs) * setup.steps
            runs.append(run_one(setup, method, seed, scorer, say=say,
                                on_step=on_step and (lambda step, offset=offset: on_step(offset + step))))
    results = {"setup": {"base": str(setup.base), "target": str(setup.target), "heldout": str(setup.heldout),
                         "methods": setup.methods, "seeds": setup.seeds, "steps": setup.steps,
                         "eval_every": setup.eval_every, "threshold": setup.threshold, "guidance": setup.guidance,
                         "sample_steps": setup.sample_steps, "heldout_pairs": len(scorer.prompts),
                         "train": setup.train},
               "runs": runs, "summary": summarize(runs, setup)}
    write_outputs(results, setup.out)
    return results
