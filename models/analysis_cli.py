"""CLI commands for the evidence tools: ``difftune bench transfer`` and ``difftune analyze forgetting``.

Mounted by :mod:`models.cli`. Entry points: they set torch threads and the Agg backend here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

analyze_app = typer.Typer(help="Diagnostics on tuned models (chain-of-forgetting probe).", no_args_is_help=True)
console = Console(stderr=True)
ThreadsOpt = Annotated[int, typer.Option(min=1, help="torch intra-op threads (1 is fastest for tiny models "
                                                     "on a shared CPU).")]


def _entry(threads: int) -> None:
    import matplotlib
    import torch

    matplotlib.use("Agg")
    torch.set_num_threads(threads)


def _guidances(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected numbers like 1,4; got {value!r}") from None


def _say(line: str) -> None:
    console.print(line, soft_wrap=True, highlight=False, markup=False)


def transfer(
    out: Annotated[Path, typer.Option(help="Output folder (results.json, plots, report.md, runs/).")],
    preset: Annotated[str | None, typer.Option(
        help="`digits`: the CPU preset (digits 0-4 → few shots of 5-9, 16 px); `digits-large`: the same "
             "transfer at 32 px with a DiT-S-sized model, for one GPU.")] = None,
    source: Annotated[Path | None, typer.Option(help="Source image folder (pre-trains the base when no --base).")] = None,
    target: Annotated[Path | None, typer.Option(help="Few-shot target image folder (class sub-folders).")] = None,
    heldout: Annotated[Path | None, typer.Option(help="Held-out real target images (class sub-folders).")] = None,
    base: Annotated[Path | None, typer.Option(help="Existing base model (diffusers DiT folder).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with base TrainConfig fields (general form).")] = None,
    method: Annotated[list[str] | None, typer.Option(
        help="Repeatable: standard, difftune, difftune_source, power_only, p2, min_snr, difffit, "
             "difftune_difffit; add overrides as name:field=value[:...], e.g. difftune:bank.size=256.")] = None,
    seeds: Annotated[int | None, typer.Option(min=1, help="Seeds per method [preset's; else 3].")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Fine-tuning steps per run [preset's; else 1500].")] = None,
    eval_every: Annotated[int | None, typer.Option(min=1, help="Evaluate every K steps [preset's; else 250].")] = None,
    per_class: Annotated[int | None, typer.Option(
        min=2, help="Generated samples per class per evaluation [preset's; else 40].")] = None,
    guidance: Annotated[str, typer.Option(help="Comma-separated guidance scales to evaluate.")] = "1,4",
    base_steps: Annotated[int | None, typer.Option(
        help="Pre-training steps when the base is built here [preset's; else 1500].")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Transfer benchmark: standard vs Diff-Tuning (and baselines) on a few-shot target, several seeds."""
    from models.distributed import default_device
    from models.transfer import PRESETS, digits_preset, run_transfer, with_preset_defaults

    _entry(threads)
    methods = method or ["standard", "difftune"]
    try:
        options = dict(methods=methods, seeds=seeds, steps=steps, eval_every=eval_every, per_class=per_class,
                       guidances=_guidances(guidance))
        if preset is not None:
            if preset in PRESETS and PRESETS[preset].hardware == "gpu" and default_device() == "cpu":
                _say(f"warning: preset {preset} is sized for one GPU and none is visible; on CPU it takes days")
            setup = digits_preset(out, preset=preset, base=base, say=_say, base_steps=base_steps, **options)
        else:
            setup = _general_setup(out, source, target, heldout, base, config,
                                   base_steps or PRESETS["digits"].base_steps, with_preset_defaults(options))
        for spec in methods:  # every method's config is valid before anything trains
            setup.config(spec, seed=0)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    total = len(methods) * setup.seeds * setup.steps
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=total)
        run_transfer(setup, say=_say, on_step=lambda done: bar.update(task, completed=done))
    print(out / "report.md")


def controlnet(
    out: Annotated[Path, typer.Option(help="Output folder (results.json, f1_vs_step.png, report.md, runs/).")],
    preset: Annotated[str | None, typer.Option(
        help="`digits`: tiny SD pre-trained on digits 0-4, ControlNet on canny edges of digits 5-9 (CPU).")] = None,
    base: Annotated[Path | None, typer.Option(help="SD base (diffusers folder); the preset builds one when omitted.")] = None,
    target: Annotated[Path | None, typer.Option(help="Training set: metadata.jsonl with conditioning_file_name.")] = None,
    heldout: Annotated[Path | None, typer.Option(help="Held-out (prompt, control) pairs, same layout.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML with TrainConfig fields (general form).")] = None,
    method: Annotated[list[str] | None, typer.Option(
        help="Repeatable: standard, difftune (bank controls extracted like the target's), difftune_blank; "
             "ablations power_only (no bank), bank_only (uniform target t), bank_as_data (bank pairs as plain "
             "extra data), bank_as_data_low_t, bank_only_prompt. Default: the first three.")] = None,
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    steps: Annotated[int, typer.Option(min=1, help="ControlNet training steps per run.")] = 400,
    eval_every: Annotated[int, typer.Option(min=1, help="Score on the held-out pairs every K steps.")] = 40,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Canny F1 that counts as converged.")] = 0.5,
    guidance: Annotated[float, typer.Option(min=1.0, help="CFG scale of the evaluation samples.")] = 3.0,
    sample_steps: Annotated[int, typer.Option(min=2, help="DDIM steps of the evaluation samples.")] = 20,
    base_steps: Annotated[int, typer.Option(help="Pre-training steps when the preset builds the base.")] = 1500,
    threads: ThreadsOpt = 1,
) -> None:
    """ControlNet convergence benchmark: the step each method's ControlNet first follows the held-out
    conditions (canny F1 ≥ threshold), several seeds."""
    from contract.train_config import dump_config, load_config
    from models.controlnet_bench import DEFAULT_METHODS, ControlNetSetup, digits_setup, run_benchmark

    _entry(threads)
    options = dict(methods=method or list(DEFAULT_METHODS), seeds=seeds, steps=steps, eval_every=eval_every,
                   threshold=threshold, guidance=guidance, sample_steps=sample_steps)
    try:
        if preset == "digits":
            setup = digits_setup(out, base=base, base_steps=base_steps, say=_say, **options)
        elif preset is not None:
            raise ValueError(f"preset: unknown {preset!r} (available: digits)")
        elif base is None or target is None or heldout is None:
            raise ValueError("give --preset digits, or --base, --target and --heldout")
        else:
            train = dump_config(load_config(config)) if config else {}
            setup = ControlNetSetup(base=base, target=target, heldout=heldout, out=out, train=train, **options)
        for name in setup.methods:  # every method's config is valid before anything trains
            setup.config(name, 0)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=len(setup.methods) * seeds * steps)
        run_benchmark(setup, say=_say, on_step=lambda done: bar.update(task, completed=done))
    print(out / "report.md")


def _general_setup(out, source, target, heldout, base, config, base_steps, options):
    from contract.train_config import dump_config, load_config
    from models.demo import build_base_model
    from models.transfer import TransferSetup

    if target is None or heldout is None or (source is None and base is None):
        raise ValueError("give --preset, or --target and --heldout with --base or --source")
    train = dump_config(load_config(config)) if config else {}
    if base is None:
        resolution = int(train.get("resolution", 16))
        base = build_base_model(out, source, out / "cache", steps=base_steps, resolution=resolution, say=_say)
    if "resolution" not in train:
        from models.families.dit import DiTFamily

        train["resolution"] = DiTFamily.from_pretrained(str(base)).image_size
    train.update(upscale_small_images=True)
    return TransferSetup(source=source, target=target, heldout=heldout, out=out, base=base, train=train, **options)


@analyze_app.command("forgetting")
def forgetting(
    base: Annotated[Path, typer.Option(help="Base model M0 (diffusers DiT folder).")],
    tuned: Annotated[Path, typer.Option(help="Tuned model M1 (checkpoint folder).")],
    data: Annotated[Path, typer.Option(help="Real target images (class sub-folders).")],
    out: Annotated[Path, typer.Option(help="Output folder for probe.json and probe.png.")],
    points: Annotated[int, typer.Option(min=2, help="Swap steps spread over 0..T.")] = 11,
    per_class: Annotated[int, typer.Option(min=2)] = 40,
    guidance: Annotated[str, typer.Option(help="Comma-separated guidance scales.")] = "1",
    steps: Annotated[int, typer.Option(help="DDIM steps.")] = 25,
    classifier: Annotated[Path | None, typer.Option(help="Saved domain classifier to reuse.")] = None,
    seed: int = 0,
    threads: ThreadsOpt = 1,
) -> None:
    """Chain-of-forgetting probe: FD against t* when swapping base and tuned models along the chain."""
    from models.probe import run_probe

    _entry(threads)
    run_probe(base, tuned, data, out, points=points, per_class=per_class, guidances=_guidances(guidance),
              steps=steps, seed=seed, classifier=classifier, say=_say)
    print(out / "probe.json")
