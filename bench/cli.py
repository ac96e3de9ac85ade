"""The lab's commands: ``difftune bench throughput | transfer | controlnet``, ``library-demo`` and ``demo``.

Mounted by :mod:`cli.main`. Entry points: they set torch threads and the Agg backend here.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.cli import ThreadsOpt, console, entry_threads, fail, guidance_scales, say

bench_app = typer.Typer(help="Benchmarks: throughput (JSON), transfer quality, ControlNet convergence.",
                        no_args_is_help=True)


@bench_app.command("throughput")
def throughput(
    model: Annotated[str, typer.Option(help="DiT-S/2, DiT-B/2, DiT-L/2, DiT-XL/2, DiT-tiny/2, SD-1.5, SD-tiny, "
                                            "SD-1.5+ControlNet, SD-tiny+ControlNet, SDXL, SD3.5-medium, "
                                            "Flux.1-dev, SDXL-tiny, SD3-tiny or Flux-tiny.")] = "DiT-XL/2",
    resolution: int = 256,
    method: Annotated[str, typer.Option(help="difftune or standard.")] = "difftune",
    batch: int = 32,
    compile: Annotated[bool, typer.Option("--compile/--no-compile")] = False,
    gradient_checkpointing: bool = False,
    peft: Annotated[str, typer.Option(help="full, difffit or lora.")] = "full",
    optimizer: Annotated[str, typer.Option(help="adamw or adamw_8bit.")] = "adamw",
    base_precision: Annotated[str, typer.Option(help="fp32, bf16, fp8 (needs --gradient-checkpointing) or nf4 "
                                                     "(lora only): the frozen base under lora/difffit.")] = "fp32",
    ema_device: Annotated[str, typer.Option(help="auto or cpu.")] = "auto",
    steps: int = 20,
    warmup: int = 5,
    device: Annotated[str | None, typer.Option(help="cpu or cuda [default: cuda if available]")] = None,
    bank: Annotated[bool, typer.Option(help="Also time knowledge-bank generation (DDIM 50, CFG).")] = False,
    bank_images: int = 64,
    baseline: Annotated[bool, typer.Option(help="SD and SDXL models: also time diffusers' own script's step "
                                                "(train_text_to_image[_sdxl].py defaults, fp16 mixed "
                                                "precision) on the same batch.")] = False,
) -> None:
    """Training images/s, step time, peak memory and MFU; prints one JSON object per line."""
    from bench.throughput import BenchSetup, bench_bank, bench_diffusers_baseline, bench_training
    from models.distributed import default_device

    if device is None and default_device() == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    setup = BenchSetup(model=model, resolution=resolution, method=method, batch=batch, compile=compile,
                       gradient_checkpointing=gradient_checkpointing, peft=peft, optimizer=optimizer,
                       base_precision=base_precision, ema_device=ema_device, steps=steps, warmup=warmup,
                       device=device or default_device())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(json.dumps(bench_training(setup, Path(tmp))), flush=True)
            if bank:
                print(json.dumps(bench_bank(setup, images=bank_images)), flush=True)
            if baseline:
                print(json.dumps(bench_diffusers_baseline(setup)), flush=True)
        except ValueError as err:
            fail(str(err))


@bench_app.command("transfer")
def transfer(
    out: Annotated[Path, typer.Option(help="Output folder (results.json, plots, report.md, runs/).")],
    preset: Annotated[str | None, typer.Option(
        help="`digits`: the CPU preset (digits 0-4 → few shots of 5-9, 16 px); `digits-large`: the same "
             "transfer at 32 px with a DiT-S-sized model, for one GPU; `digits-sd3`: the same transfer "
             "text-to-image, a tiny SD3-architecture flow-matching model on captions 'a handwritten digit 7' "
             "(CPU); `glyphs`: a stronger base, pre-trained on 21,600 printed glyphs (0-9, A-Z, 20 fonts), "
             "tuned on the same handwritten 5-9 (CPU).")] = None,
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
    guidance_mode: Annotated[str, typer.Option(help="cfg; domain: evaluation samples guided by the base model "
                                                    "(Domain Guidance); both: each scale above 1 scored both ways "
                                                    "(keys 4 and 4/dg).")] = "cfg",
    base_steps: Annotated[int | None, typer.Option(
        help="Pre-training steps when the base is built here [preset's; else 1500].")] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Transfer benchmark: standard vs Diff-Tuning (and baselines) on a few-shot target, several seeds."""
    from bench.transfer import PRESETS, digits_preset, run_transfer, with_preset_defaults
    from models.distributed import default_device
    from models.evaluation.sample_quality import GUIDANCE_MODES

    entry_threads(threads)
    methods = method or ["standard", "difftune"]
    try:
        if guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance-mode: {guidance_mode!r} is not one of {', '.join(GUIDANCE_MODES)}")
        options = dict(methods=methods, seeds=seeds, steps=steps, eval_every=eval_every, per_class=per_class,
                       guidances=guidance_scales(guidance), guidance_mode=guidance_mode)
        if preset is not None:
            if preset in PRESETS and PRESETS[preset].hardware == "gpu" and default_device() == "cpu":
                say(f"warning: preset {preset} is sized for one GPU and none is visible; on CPU it takes days")
            setup = digits_preset(out, preset=preset, base=base, say=say, base_steps=base_steps, **options)
        else:
            from bench.transfer_general import general_setup

            setup = general_setup(out, source=source, target=target, heldout=heldout, base=base, config=config,
                                  base_steps=base_steps or PRESETS["digits"].base_steps,
                                  options=with_preset_defaults(options), say=say)
        for spec in methods:  # every method's config is valid before anything trains
            setup.config(spec, seed=0)
    except ValueError as err:
        fail(str(err))
    total = len(methods) * setup.seeds * setup.steps
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=total)
        run_transfer(setup, say=say, on_step=lambda done: bar.update(task, completed=done))
    print(out / "report.md")


@bench_app.command("controlnet")
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
    from bench.controlnet import DEFAULT_METHODS, ControlNetSetup, digits_setup, run_benchmark
    from contract.train_config import dump_config, load_config

    entry_threads(threads)
    options = dict(methods=method or list(DEFAULT_METHODS), seeds=seeds, steps=steps, eval_every=eval_every,
                   threshold=threshold, guidance=guidance, sample_steps=sample_steps)
    try:
        if preset == "digits":
            setup = digits_setup(out, base=base, base_steps=base_steps, say=say, **options)
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
        fail(str(err))
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("train", total=len(setup.methods) * seeds * steps)
        run_benchmark(setup, say=say, on_step=lambda done: bar.update(task, completed=done))
    print(out / "report.md")


def library_demo(
    out: Annotated[Path, typer.Option(help="Working folder (base model, data, run).")] = Path(".cache/demo"),
    steps: Annotated[int, typer.Option(help="Diff-Tuning steps.")] = 400,
) -> None:
    """Library demo (no service): pre-train a tiny DiT on digits 0-4, Diff-Tune it on 10 shots of 5-9."""
    from bench.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    result = run_demo(out, steps=steps, say=lambda line: console.print(line, soft_wrap=True))
    print(f"base model:  {result.base_model}")
    print(f"checkpoint:  {result.checkpoint}")
    print(f"sample grid: {result.samples}")


def demo(
    out: Annotated[Path, typer.Option(help="Working folder (base model, data, embedded service).")] = Path(
        ".cache/demo"),
    steps: Annotated[int, typer.Option(help="Diff-Tuning steps.")] = 400,
) -> None:
    """One real Diff-Tuning job through the REST API of an embedded service (what `make demo` runs)."""
    from bench.service_demo import run_service_demo

    result = run_service_demo(out, steps=steps, say=lambda line: console.print(line, soft_wrap=True, markup=False))
    print(f"job:         {result['job']['id']} {result['job']['status']}  metrics {result['job']['metrics']}")
    print(f"checkpoint:  {result['checkpoint_dir']}")
    print(f"sample grid: {result['sample_file']}")


def register(app: typer.Typer, *, service: bool) -> None:
    """Mount the lab's commands; ``demo`` drives the embedded service, so only with the service extra."""
    app.add_typer(bench_app, name="bench")
    app.command("library-demo")(library_demo)
    if service:
        app.command()(demo)
