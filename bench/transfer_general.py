"""``bench transfer``'s general form: a user's own folders and base model, checked before any heavy work.

Everything that can be inferred is (the resolution from the base model), everything else the user left
out gets benchmark defaults sized to the step budget (not the production defaults: an EMA of 0.9999
over a 1,500-step run leaves every method's EMA weights at the base model, so all methods would score
the same), and every input is checked — folders, classes, the base model's family and sizes, each
method's config — before the domain classifier or any run trains, each problem a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.transfer import TransferSetup, load_base_family
from contract.train_config import dump_config, load_config
from models.data import scan_image_folder

EMA_HORIZON_SHARE = 2 / 3  # the EMA averages over at most two thirds of the run (1,000 of the preset's 1,500)


def benchmark_defaults(steps: int) -> dict[str, Any]:
    """TrainConfig fields a comparison of ``steps``-step runs on a 2-core CPU needs (the digits preset's)."""
    horizon = max(10, min(1000, int(steps * EMA_HORIZON_SHARE)))
    return dict(batch_size=32, learning_rate=3e-4, ema_decay=round(1 - 1 / horizon, 6), ema_warmup=True,
                log_every=20, sample_steps=25, bank={"size": 512, "batch_size": 128, "num_inference_steps": 25})


def _classes(name: str, path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_dir():
        raise ValueError(f"{name}: {path} is not a folder")
    return scan_image_folder(path, resolution=1, upscale_small_images=True).class_names


def general_setup(out: Path, *, source: Path | None, target: Path | None, heldout: Path | None,
                  base: Path | None, config: Path | None, base_steps: int, options: dict[str, Any],
                  say=print) -> TransferSetup:
    """The TransferSetup of the general form; ``ValueError`` naming the option at the first problem."""
    if target is None or heldout is None or (source is None and base is None):
        raise ValueError("give --preset, or --target and --heldout with --base or --source")
    classes = {name: _classes(name, path) for name, path in (("target", target), ("heldout", heldout),
                                                              ("source", source))}
    if classes["target"] != classes["heldout"]:
        raise ValueError(f"heldout: its classes {classes['heldout']} differ from the target's {classes['target']}")
    user = load_config(config) if config else None
    given = {k: v for k, v in dump_config(user).items() if k in user.model_fields_set} if user else {}
    if base is None:
        from bench.demo import build_base_model

        base = build_base_model(out, source, out / "cache", steps=base_steps,
                                resolution=int(given.get("resolution", 16)), say=say)
    elif not (base / "model_index.json").is_file():
        raise ValueError(f"base: {base} is not a diffusers pipeline folder (no model_index.json)")
    family = load_base_family(base)
    if family.name != "dit":
        raise ValueError(f"base: {base} is a {family.name} model; the general form compares class-conditional DiT "
                         "bases (text-to-image: --preset digits-sd3)")
    resolution = int(given.get("resolution", family.image_size))
    if problem := family.resolutions().problem(resolution):
        raise ValueError(f"resolution: {problem} (leave it out of --config to use the base model's)")
    steps = options["steps"]
    train = {**benchmark_defaults(steps), **given, "resolution": resolution, "upscale_small_images": True}
    horizon = 1 / max(1e-12, 1 - float(train["ema_decay"]))
    if horizon > steps and not train["ema_warmup"]:
        say(f"warning: ema_decay {train['ema_decay']} averages over ~{horizon:.0f} steps, more than the {steps} "
            "of each run: every method's EMA weights will stay near the base model and score alike")
    return TransferSetup(source=source, target=target, heldout=heldout, out=out, base=base, train=train, **options)
