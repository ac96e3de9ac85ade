"""The ``difftune`` command line: train, build a knowledge bank, sample, demo, benchmarks.

This is an entry point: it configures logging and torch's thread settings, which the library
itself never touches.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from models import analysis_cli as evidence

app = typer.Typer(help="Diff-Tuning: fine-tune diffusion models without forgetting what transfers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Throughput benchmarks with random weights (print JSON).", no_args_is_help=True)
tiny_app = typer.Typer(help="Build tiny random pipelines offline (tests, experiments).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(tiny_app, name="tiny")
bench_app.command("transfer")(evidence.transfer)
bench_app.command("controlnet")(evidence.controlnet)
app.add_typer(evidence.analyze_app, name="analyze")
console = Console(stderr=True)

CacheOpt = Annotated[Path | None, typer.Option(help="Cache for knowledge banks and latents "
                                                     "[default: $DIFFTUNE_CACHE_DIR or ~/.cache/difftune].")]


def _cache_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("DIFFTUNE_CACHE_DIR", Path.home() / ".cache" / "difftune"))


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)])


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


def _load(config_path: Path, **overrides):
    from contract.train_config import ConfigError, load_config

    try:
        return load_config(config_path, **overrides)
    except ConfigError as err:
        _fail(str(err))


class _Bars:
    """rich progress bars for the phases of a run (bank, encode, train)."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def phase(self, name: str, done: int, total: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")
        self.progress.update(self.tasks[name], completed=done)

    def train(self, p) -> None:
        bank = f" bank {p.loss_bank:.4f}" if p.loss_bank is not None else ""
        info = f"loss {p.loss:.4f} (target {p.loss_target:.4f}{bank}) {p.images_per_sec:.0f} img/s"
        if "train" not in self.tasks:
            self.tasks["train"] = self.progress.add_task("train", total=p.total_steps, info=info)
        self.progress.update(self.tasks["train"], completed=p.step, info=info)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:>7}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML file with TrainConfig fields.")],
    data: Annotated[Path, typer.Option(help="dit: one sub-folder per class; sd/controlnet: images with "
                                            "metadata.jsonl (file_name, text[, conditioning_file_name]) "
                                            "or .txt captions.")],
    out: Annotated[Path, typer.Option(help="Output folder for checkpoints and samples.")],
    resume: Annotated[bool, typer.Option(help="Continue from the latest checkpoint in --out.")] = False,
    base_model: Annotated[str | None, typer.Option(help="Override base_model from the config.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override max_steps.")] = None,
    cache_dir: CacheOpt = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 [default: cuda if available]")] = None,
) -> None:
    """Fine-tune a base model (the config's ``family``: dit, sd, controlnet) on a dataset (torchrun for DDP)."""
    from models.data import DatasetError
    from models.distributed import init_distributed, shutdown
    from models.run import run_training

    _setup_logging()
    cfg = _load(config, base_model=base_model, max_steps=max_steps)
    dist = init_distributed(device)
    try:
        with _progress() as progress:
            bars = _Bars(progress)
            result = run_training(cfg, data_dir=data, out_dir=out, cache_dir=_cache_dir(cache_dir), resume=resume,
                                  dist=dist, on_phase=bars.phase, on_progress=bars.train)
    except (DatasetError, ValueError, FileExistsError) as err:
        _fail(str(err))
    finally:
        shutdown(dist)
    if dist.is_main:
        print(f"checkpoint: {result.fit.last_checkpoint}")
        print(f"samples:    {out / 'samples'}")


@app.command()
def bank(
    config: Annotated[Path, typer.Argument(help="YAML file with TrainConfig fields (bank: ...).")],
    base_model: Annotated[str | None, typer.Option(help="Override base_model from the config.")] = None,
    cache_dir: CacheOpt = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda [default: cuda if available]")] = None,
) -> None:
    """Build (or complete) the knowledge bank of a base model, on its own."""
    from models.bank import bank_key, build_bank
    from models.distributed import default_device
    from models.families import load_family

    _setup_logging()
    cfg = _load(config, base_model=base_model)
    if cfg.family != "dit" and not cfg.bank_prompts:
        _fail(f"bank_prompts: a {cfg.family} bank is sampled with prompts; without a dataset to take captions "
              "from, list them in the config (or let `difftune train` build the bank)")
    try:
        family = load_family(cfg, device=device or default_device())
    except ValueError as err:
        _fail(str(err))
    with _progress() as progress:
        bars = _Bars(progress)
        result = build_bank(family, cfg, _cache_dir(cache_dir), progress=lambda d, t: bars.phase("bank", d, t))
    folder = _cache_dir(cache_dir) / "banks" / bank_key(family, cfg.bank)
    print(json.dumps({"bank": str(folder), "images": len(result), "shape": list(result.latents.shape)}))


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (diffusers format).")],
    labels: Annotated[str, typer.Option(help="DiT: comma-separated target labels, e.g. 0,1,2.")] = "",
    prompt: Annotated[list[str] | None, typer.Option(help="SD/ControlNet: a prompt (repeat for several).")] = None,
    control: Annotated[Path | None, typer.Option(help="ControlNet: the control image for every prompt.")] = None,
    out: Annotated[Path, typer.Option(help="PNG file for the grid.")] = Path("grid.png"),
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 4.0,
    steps: Annotated[int, typer.Option(help="DDIM steps.")] = 50,
    seed: int = 0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda [default: cuda if available]")] = None,
) -> None:
    """Draw a sample grid from a checkpoint with CFG (DiT: labels; SD: prompts; ControlNet: + control)."""
    import torch

    from models.distributed import default_device
    from models.families.dit import DiTFamily
    from models.grid import save_grid

    if _pipeline_class(checkpoint).startswith("StableDiffusion"):
        images = _sample_prompts(checkpoint, prompt or [], control, guidance=guidance, steps=steps, seed=seed,
                                 device=device or default_device())
        save_grid(images, out)
        print(f"wrote {out}")
        return
    try:
        wanted = [int(x) for x in labels.split(",") if x.strip()]
        family = DiTFamily.from_pretrained(str(checkpoint), device=device or default_device())
    except ValueError as err:
        _fail(f"labels: expected integers like 0,1,2 ({err})" if "invalid literal" in str(err) else str(err))
    known = sorted(family.base_id2label) or list(range(family.null_label))  # the checkpoint's classes
    bad = [x for x in wanted if x not in known]
    if bad or not wanted:
        names = ", ".join(f"{k}={family.base_id2label.get(k, k)}" for k in known[:20])
        _fail(f"labels: {bad or 'none given'} not among the checkpoint's classes ({names})")
    latents = family.sample_latents(family.denoiser.eval(), torch.tensor(wanted), null=family.null_label,
                                    guidance=guidance, steps=steps, sampler="ddim",
                                    generator=torch.Generator().manual_seed(seed))
    save_grid(family.decode_latents(latents), out)
    print(f"wrote {out}")


def _pipeline_class(checkpoint: Path) -> str:
    try:
        return str(json.loads((checkpoint / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def _sample_prompts(checkpoint: Path, prompts: list[str], control: Path | None, *, guidance: float, steps: int,
                    seed: int, device: str):
    """SD / ControlNet sample images (ControlNet: condition | generated side by side)."""
    import torch

    from models.data import load_image
    from models.families.controlnet import ControlNetFamily
    from models.families.sd import SDFamily

    is_controlnet = (checkpoint / "controlnet").is_dir()
    if not prompts:
        _fail("prompt: give at least one --prompt for a Stable Diffusion checkpoint")
    if is_controlnet != (control is not None):
        _fail("control: a ControlNet checkpoint needs --control IMAGE" if is_controlnet
              else "control: only ControlNet checkpoints take --control")
    try:
        family = (ControlNetFamily if is_controlnet else SDFamily).from_pretrained(str(checkpoint), device=device)
        controls = None
        if control is not None:
            image = load_image(control, family.image_size).add(1).div(2)  # (3, R, R) in [0, 1]
            controls = image.expand(len(prompts), -1, -1, -1)  # (n, 3, R, R)
        images = family.generate_images(family.denoiser, prompts, guidance=guidance, steps=steps,
                                        generator=torch.Generator().manual_seed(seed), controls=controls)
    except (ValueError, OSError) as err:
        _fail(str(err))
    return images if controls is None else torch.cat([controls, images], dim=-1)


@app.command("library-demo")
def library_demo(
    out: Annotated[Path, typer.Option(help="Working folder (base model, data, run).")] = Path(".cache/demo"),
    steps: Annotated[int, typer.Option(help="Diff-Tuning steps.")] = 400,
) -> None:
    """Library demo (no service): pre-train a tiny DiT on digits 0-4, Diff-Tune it on 10 shots of 5-9."""
    from models.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    result = run_demo(out, steps=steps, say=lambda line: console.print(line, soft_wrap=True))
    print(f"base model:  {result.base_model}")
    print(f"checkpoint:  {result.checkpoint}")
    print(f"sample grid: {result.samples}")


@tiny_app.command("dit")
def tiny_dit_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the pipeline to.")],
    num_classes: int = 1000,
    resolution: int = 16,
    seed: int = 0,
) -> None:
    """Write a tiny random DiT pipeline (diffusers format)."""
    from models.tiny import build_tiny_dit_pipeline

    build_tiny_dit_pipeline(out, seed=seed, num_classes=num_classes, resolution=resolution)
    console.print(f"wrote {out}")


@tiny_app.command("sd")
def tiny_sd_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the pipeline to.")],
    resolution: int = 16,
    controlnet: Annotated[bool, typer.Option(help="Also write a ControlNet made from the UNet.")] = False,
    seed: int = 0,
) -> None:
    """Write a tiny random Stable Diffusion pipeline (optionally with a ControlNet), diffusers format."""
    from models.tiny import build_tiny_sd_pipeline

    build_tiny_sd_pipeline(out, seed=seed, resolution=resolution, controlnet=controlnet)
    console.print(f"wrote {out}")


@bench_app.command("throughput")
def bench_throughput(
    model: Annotated[str, typer.Option(help="DiT-S/2, DiT-B/2, DiT-L/2, DiT-XL/2, DiT-tiny/2, SD-1.5, SD-tiny, "
                                            "SD-1.5+ControlNet or SD-tiny+ControlNet.")] = "DiT-XL/2",
    resolution: int = 256,
    method: Annotated[str, typer.Option(help="difftune or standard.")] = "difftune",
    batch: int = 32,
    compile: Annotated[bool, typer.Option("--compile/--no-compile")] = False,
    gradient_checkpointing: bool = False,
    peft: Annotated[str, typer.Option(help="full, difffit or lora.")] = "full",
    steps: int = 20,
    warmup: int = 5,
    device: Annotated[str | None, typer.Option(help="cpu or cuda [default: cuda if available]")] = None,
    bank: Annotated[bool, typer.Option(help="Also time knowledge-bank generation (DDIM 50, CFG).")] = False,
    bank_images: int = 64,
    baseline: Annotated[bool, typer.Option(help="SD models: also time diffusers' train_text_to_image.py step "
                                                "(defaults, fp16 mixed precision) on the same batch.")] = False,
) -> None:
    """Training images/s, step time, peak memory and MFU; prints one JSON object per line."""
    from models.bench import BenchSetup, bench_bank, bench_diffusers_baseline, bench_training
    from models.distributed import default_device

    if device is None and default_device() == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    setup = BenchSetup(model=model, resolution=resolution, method=method, batch=batch, compile=compile,
                       gradient_checkpointing=gradient_checkpointing, peft=peft, steps=steps, warmup=warmup,
                       device=device or default_device())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            print(json.dumps(bench_training(setup, Path(tmp))), flush=True)
            if bank:
                print(json.dumps(bench_bank(setup, images=bank_images)), flush=True)
            if baseline:
                print(json.dumps(bench_diffusers_baseline(setup)), flush=True)
        except ValueError as err:
            _fail(str(err))


if __name__ == "__main__":
    app()
