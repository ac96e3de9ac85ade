"""Transfer benchmark: fine-tune one base model on a few-shot target with several methods and seeds.

Every method gets the same steps, batch and seeds. Every ``eval_every`` steps the EMA checkpoint is
scored against held-out real target images (FD/KID under the domain classifier, class fidelity) at
each guidance scale; the base model itself is step 0. Outputs: ``results.json``, PNG plots and a
Markdown report (see :mod:`bench.transfer_report`). A finished run is reused when the benchmark
is started again on the same folder.

Class-conditional bases (DiT) tune on class folders and are sampled per class label; text-to-image
bases (``digits-sd3``: an SD3-architecture flow-matching model) tune on captioned images and are
sampled per class with the class's prompt (``TransferSetup.prompt_template``); the held-out
reference images are class folders either way.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.demo import BaseModelSize
from bench.transfer_stats import FEATURES_FILE, REAL_FEATURES_FILE
from contract.families import family_of_pipeline
from contract.train_config import TrainConfig, dump_config, parse_config
from models.distributed import default_device
from models.evaluation.sample_quality import Evaluator, build_evaluator, class_prompt
from models.families import Family, family_class
from models.run import run_training

Say = Callable[[str], None]

# Named methods: TrainConfig overrides on top of the benchmark's base config.
METHODS: dict[str, dict[str, Any]] = {
    "standard": {"method": "standard"},
    "difftune": {"method": "difftune"},
    "difftune_source": {"method": "difftune", "bank_label": "source"},
    "power_only": {"method": "difftune", "bank_share": 0.0},
    "p2": {"method": "standard", "loss_weighting": "p2"},
    "min_snr": {"method": "standard", "loss_weighting": "min_snr"},
    "difffit": {"method": "standard", "peft": "difffit"},
    "difftune_difffit": {"method": "difftune", "peft": "difffit"},
}


def parse_method(spec: str) -> dict[str, Any]:
    """``name[:field=value:...]`` -> TrainConfig overrides; dotted fields nest (``bank.size=256``)."""
    name, *pairs = spec.split(":")
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r}; choose from {', '.join(METHODS)}")
    overrides = json.loads(json.dumps(METHODS[name]))
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"method: expected field=value in {spec!r}, got {pair!r}")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return overrides


@dataclass
class TransferSetup:
    """One benchmark: data, base model, methods, budget and evaluation sizes."""

    source: Path | None
    target: Path
    heldout: Path
    out: Path
    base: Path | None = None
    methods: list[str] = field(default_factory=lambda: ["standard", "difftune"])
    seeds: int = 3
    steps: int = 1000
    eval_every: int = 250
    per_class: int = 40
    guidances: tuple[float, ...] = (1.0, 4.0)
    train: dict[str, Any] = field(default_factory=dict)  # base TrainConfig fields (resolution, lr, bank...)
    prompt_template: str | None = None  # text-to-image bases: a class's prompt (class_prompt), "a photo of a {name}"
    target_classes: Path | None = None  # the target as class folders (the classifier's check) when it is captioned
    guidance_mode: str = "cfg"  # evaluation samples guided by cfg, domain (Domain Guidance from the base) or both

    def config(self, spec: str, seed: int):
        """The TrainConfig of one (method, seed) run."""
        values = {**self.train, "seed": seed, "max_steps": self.steps, "checkpoint_every": self.eval_every,
                  "sample_every": self.steps, "keep_checkpoints": 1, "base_model": str(self.base)}
        for key, value in parse_method(spec).items():
            values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
        return parse_config(values)


@dataclass(frozen=True)
class DigitsPreset:
    """A digits transfer preset: image size, base model size and the benchmark's default budget."""

    resolution: int
    shots: int
    held_out: int
    base_steps: int
    vae_steps: int
    base_size: BaseModelSize
    train: dict[str, Any]  # TrainConfig overrides of the tuning runs
    defaults: dict[str, Any]  # CLI defaults: seeds, steps, eval_every, per_class
    hardware: str
    family: str = "dit"  # the base model's family: dit (class folders) or sd3 (captioned copies of them)
    prompt_template: str | None = None  # text families: the caption of a class folder (class_prompt)
    source_glyphs: int = 0  # > 0: the base pre-trains on this many rendered glyphs per class (bench.glyphs), not digits


PRESETS: dict[str, DigitsPreset] = {
    # 2-core CPU: 16 px, a 0.65M-parameter DiT; ~18 min for 2 methods x 5 seeds. Five seeds resolve the
    # guidance-1 differences (2-4 seeds suffice for 5%) and 10-20% ones at guidance 4, where a 5% difference
    # needs 25-70 seeds at 40 samples per class (docs/RESULTS.md, "Choosing the default recipe").
    "digits": DigitsPreset(
        resolution=16, shots=10, held_out=150, base_steps=1500, vae_steps=400, base_size=BaseModelSize(),
        train={}, defaults={"seeds": 5, "steps": 1500, "eval_every": 250, "per_class": 40}, hardware="cpu"),
    # One GPU: 32 px, a DiT-S-sized model (12 blocks, width 384, ~33M parameters) pre-trained 20k steps,
    # every held-out digit as reference, 160 samples per class, DDIM 50 and 5 seeds.
    "digits-large": DigitsPreset(
        resolution=32, shots=10, held_out=160, base_steps=20000, vae_steps=3000,
        base_size=BaseModelSize(vae_channels=(32, 64), dit_layers=12, dit_heads=6, dit_head_dim=64,
                                batch_size=128, learning_rate=3e-4),
        train={"batch_size": 64, "learning_rate": 1e-4, "sample_steps": 50,
               "bank": {"size": 2048, "batch_size": 256, "num_inference_steps": 50}},
        defaults={"seeds": 5, "steps": 5000, "eval_every": 500, "per_class": 160}, hardware="gpu"),
    # 2-core CPU, text-to-image flow matching: the digits transfer with an SD3-architecture MMDiT (4 blocks,
    # width 64) under two random frozen CLIP encoders (no T5), captions "a handwritten digit 3" (docs/RESULTS.md).
    "digits-sd3": DigitsPreset(
        resolution=16, shots=10, held_out=150, base_steps=3000, vae_steps=400, base_size=BaseModelSize(),
        train={"max_sequence_length": 1}, family="sd3", prompt_template="a handwritten {name}",
        defaults={"seeds": 3, "steps": 1500, "eval_every": 250, "per_class": 40}, hardware="cpu"),
    # 2-core CPU, a stronger base: the same DiT pre-trained 6,000 steps on 21,600 printed glyphs (0-9, A-Z in
    # 20 font faces, random size, rotation, offset, stroke and blur), then the same few shots of handwritten 5-9.
    "glyphs": DigitsPreset(
        resolution=16, shots=10, held_out=150, base_steps=6000, vae_steps=800, base_size=BaseModelSize(),
        train={}, defaults={"seeds": 5, "steps": 1500, "eval_every": 250, "per_class": 40}, hardware="cpu",
        source_glyphs=600),
}


def with_preset_defaults(options: dict[str, Any], preset: str = "digits") -> dict[str, Any]:
    """``options`` (TransferSetup fields) with the ones left at None taken from ``preset``'s defaults."""
    return {**PRESETS[preset].defaults, **{k: v for k, v in options.items() if v is not None}}


def digits_preset(out: Path, *, preset: str = "digits", base: Path | None = None, say: Say = print,
                  base_steps: int | None = None, vae_steps: int | None = None, **options: Any) -> TransferSetup:
    """A digits preset: base pre-trained on digits 0-4 (or rendered glyphs) cached under ``out``, target = shots
    of handwritten 5-9.

    ``options`` are TransferSetup fields (methods, seeds, steps...); missing ones take the preset's defaults.
    Text presets train on captioned copies of the source and target class folders (``data/*_captioned``).
    """
    from bench.demo import build_base_model, build_sd3_base_model, demo_config, prepare_domains

    if preset not in PRESETS:
        raise ValueError(f"preset: unknown {preset!r} (available: {', '.join(PRESETS)})")
    spec = PRESETS[preset]
    domains = prepare_domains(out / "data", shots=spec.shots, held_out=spec.held_out, resolution=spec.resolution)
    if spec.source_glyphs:
        from bench.glyphs import write_glyphs

        say(f"source: rendering {spec.source_glyphs} glyphs per class")
        domains["source"] = write_glyphs(out / "data" / "glyph_source", per_class=spec.source_glyphs,
                                         resolution=spec.resolution)
    train = {**spec.train, **_text_fields(spec, domains)}
    data = _captioned(spec, domains)
    if base is None:
        build = build_base_model if spec.family == "dit" else partial(build_sd3_base_model, train=spec.train)
        base = build(out, data["source"], out / "cache", say=say, resolution=spec.resolution,
                     steps=base_steps or spec.base_steps, vae_steps=vae_steps or spec.vae_steps, size=spec.base_size)
    config = demo_config(str(base), resolution=spec.resolution, **train)
    train = {k: v for k, v in dump_config(config).items()
             if k not in ("base_model", "seed", "max_steps", "checkpoint_every", "sample_every")}
    return TransferSetup(source=data["source"], target=data["target"], heldout=domains["target_heldout"],
                         out=out, base=base, train=train, prompt_template=spec.prompt_template,
                         target_classes=domains["target"], **with_preset_defaults(options, preset))


def _class_prompts(spec: DigitsPreset, classes: Path) -> list[str]:
    return [class_prompt(spec.prompt_template, d.name) for d in sorted(classes.iterdir()) if d.is_dir()]


def _text_fields(spec: DigitsPreset, domains: dict[str, Path]) -> dict[str, Any]:
    """TrainConfig fields of a text preset: its family, the target prompts in sample grids, and a knowledge
    bank drawn with the source prompts (what the base knows, as a DiT's bank draws the base's classes)."""
    if spec.family == "dit":
        return {}
    return {"family": spec.family, "validation_labels": None,
            "validation_prompts": _class_prompts(spec, domains["target"]),
            "bank_prompts": _class_prompts(spec, domains["source"])}


def _captioned(spec: DigitsPreset, domains: dict[str, Path]) -> dict[str, Path]:
    """The source and target a preset trains on: the class folders, or captioned copies next to them."""
    from bench.demo import caption_class_folders

    if spec.family == "dit":
        return domains
    return {name: caption_class_folders(domains[name], domains[name].with_name(f"{name}_captioned"),
                                        spec.prompt_template) for name in ("source", "target")}


#################################################################################
#                                  Runs                                         #
#################################################################################


def load_base_family(path: Path, config: TrainConfig | None = None) -> Family:
    """A base or checkpoint folder as the family its ``model_index.json`` names; ``config`` gives the
    settings a text family samples with (resolution, ``max_sequence_length``), as in training."""
    index = json.loads((Path(path) / "model_index.json").read_text())
    spec = family_of_pipeline(index.get("_class_name", ""))
    if spec is None:
        raise ValueError(f"base: {path} is a {index.get('_class_name')!r} pipeline, which no model family loads")
    return family_class(spec.name).from_pretrained(str(path), config=config, device=default_device())


def run_one(setup: TransferSetup, spec: str, seed: int, evaluator: Evaluator, step0: dict, *,
            say: Say, on_step: Callable[[int], None] | None = None,
            images: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train one (method, seed) and evaluate it every ``eval_every`` steps; cached in ``evals.json``.

    ``images`` receives the last evaluation's samples per guidance (for the side-by-side grids).
    A finished run is reused only when its TrainConfig and evaluation settings are the same.
    """
    config = setup.config(spec, seed)
    evaluation = {"eval_every": setup.eval_every, "per_class": setup.per_class,
                  "guidances": list(setup.guidances), "guidance_mode": setup.guidance_mode}
    run_dir = setup.out / "runs" / f"{spec.replace(':', '_').replace('=', '-')}_seed{seed}"
    done = run_dir / "evals.json"
    record = json.loads(done.read_text()) if done.exists() else {}
    if record.get("config") == dump_config(config) and record.get("evaluation") == evaluation:
        say(f"[{spec} seed {seed}] reusing {done}")
        if images is not None:
            images.update(evaluator.evaluate(load_base_family(Path(record["checkpoint"]), config), seed)[1])
        return record
    shutil.rmtree(run_dir, ignore_errors=True)
    evals, timing = [{"step": 0, "metrics": step0}], {"eval": 0.0}

    def on_artifact(kind: str, step: int, path: Path) -> None:
        if kind != "checkpoint":
            return
        start = time.perf_counter()
        scored = evaluator.run(load_base_family(path, config), seed)
        metrics = scored.metrics
        if images is not None:
            images.update(scored.images)
        if step == setup.steps:  # the final evaluation's features, for the paired bootstrap
            torch.save({k: v.float() for k, v in scored.features.items()}, run_dir / FEATURES_FILE)
        timing["eval"] += time.perf_counter() - start
        evals.append({"step": step, "metrics": metrics})
        say(f"[{spec} seed {seed}] step {step}: " + "  ".join(
            f"FD@g{g} {m['fd']:.2f}" for g, m in metrics.items()))

    def on_progress(p) -> None:
        if on_step:
            on_step(p.step)

    start = time.perf_counter()
    result = run_training(config, data_dir=setup.target, out_dir=run_dir,
                          cache_dir=setup.out / "cache", on_progress=on_progress, on_artifact=on_artifact)
    total = time.perf_counter() - start
    record = {"method": spec, "seed": seed, "evals": evals, "checkpoint": str(result.fit.last_checkpoint),
              "config": dump_config(config), "evaluation": evaluation,
              "seconds": {"total": total, "eval": timing["eval"], "train": total - timing["eval"]}}
    done.write_text(json.dumps(record, indent=2))
    return record


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, guidance and step: mean, std, min and max over seeds of every metric."""
    table: dict[str, Any] = {}
    for run in runs:
        for ev in run["evals"]:
            for g, metrics in ev["metrics"].items():
                cell = table.setdefault(run["method"], {}).setdefault(g, {}).setdefault(str(ev["step"]), {})
                for name, value in metrics.items():
                    cell.setdefault(name, []).append(value)
    for per_g in table.values():
        for per_step in per_g.values():
            for cell in per_step.values():
                for name, values in cell.items():
                    cell[name] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                                  "std": statistics.pstdev(values), "n": len(values)}
    return table


def paired_vs_baseline(runs: list[dict[str, Any]], out: Path, baseline: str = "standard") -> dict[str, Any]:
    """Paired differences of every method against ``baseline`` at the final step (bench.transfer_stats)."""
    from bench.transfer_stats import collect, paired_analysis

    real, features = collect(runs, out)
    if real is None or baseline not in features:
        return {}
    return paired_analysis(real, features, baseline=baseline)


def run_transfer(setup: TransferSetup, *, say: Say = print, on_step: Callable[[int], None] | None = None,
                 ) -> dict[str, Any]:
    """Run every (method, seed), write ``results.json``, plots and ``report.md`` under ``setup.out``.

    ``on_step(done)`` reports training steps done over all runs (of ``len(methods) * seeds * steps``).
    """
    from bench.transfer_report import write_outputs

    started = time.perf_counter()
    setup.out.mkdir(parents=True, exist_ok=True)
    resolution = int(setup.train["resolution"])
    say(f"evaluation: training the domain classifier on real held-out target images ({setup.heldout})")
    evaluator, extractor_meta = build_evaluator(
        setup.heldout, resolution, classifier_dir=setup.out / "domain_classifier",
        val_dir=setup.target_classes or setup.target,
        per_class=setup.per_class, guidances=setup.guidances, sample_steps=int(setup.train.get("sample_steps", 25)),
        prompt_template=setup.prompt_template, device=default_device(), guidance_mode=setup.guidance_mode)
    torch.save(evaluator.real_features.float(), setup.out / REAL_FEATURES_FILE)
    runs, grids, base_seconds = [], {}, 0.0
    report = on_step or (lambda done: None)
    for seed in range(setup.seeds):
        start = time.perf_counter()
        base = evaluator.base = load_base_family(setup.base, setup.config(setup.methods[0], seed))
        step0, base_images = evaluator.evaluate(base, seed)  # the base itself: plain CFG
        base_seconds += time.perf_counter() - start
        if seed == 0:
            grids["base model"] = base_images
        for spec in setup.methods:
            grid = grids.setdefault(spec, {}) if seed == 0 else None
            offset = len(runs) * setup.steps
            runs.append(run_one(setup, spec, seed, evaluator, step0, say=say, images=grid,
                                on_step=lambda step, offset=offset: report(offset + step)))
            report(len(runs) * setup.steps)
    results = {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(setup).items()},
        "extractor": extractor_meta,
        "runs": runs,
        "summary": summarize(runs),
        "paired": paired_vs_baseline(runs, setup.out),
        "seconds": {"total": time.perf_counter() - started, "base_evaluation": base_seconds},
        "device": evaluator.device, "torch_threads": torch.get_num_threads(),
    }
    write_outputs(results, grids, setup.out)
    say(f"wrote {setup.out / 'results.json'} and {setup.out / 'report.md'}")
    return results
