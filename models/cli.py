"""The training library's commands: ``difftune train | bank | sample | tiny | analyze``.

Mounted on the ``difftune`` console script by :mod:`cli.main`; needs only the ``ml`` extra. These
are entry points: they configure logging and torch's thread settings, which the library itself
never touches.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from contract.families import FAMILIES, FamilySpec, family_of_pipeline
from contract.families import family as family_spec
from models.run_log import MetricsLog, RunDisplay

tiny_app = typer.Typer(help="Build tiny random pipelines offline (tests, experiments).", no_args_is_help=True)
analyze_app = typer.Typer(help="Diagnostics on tuned models (chain-of-forgetting probe).", no_args_is_help=True)
console = Console(stderr=True)
ThreadsOpt = Annotated[int, typer.Option(min=1, help="torch intra-op threads (1 is fastest for tiny models "
                                                     "on a shared CPU).")]

CacheOpt = Annotated[Path | None, typer.Option(help="Cache for knowledge banks and latents "
                                                     "[default: $DIFFTUNE_CACHE_DIR or ~/.cache/difftune].")]


def _cache_dir(value: Path | None) -> Path:
    return value or Path(os.environ.get("DIFFTUNE_CACHE_DIR", Path.home() / ".cache" / "difftune"))


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr)])


def fail(message: str) -> None:
    """Print ``error: message`` and exit with status 2 (a usage or input error, no traceback)."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(code=2)


def _load(config_path: Path, **overrides):
    from contract.train_config import ConfigError, load_config

    try:
        return load_config(config_path, **overrides)
    except ConfigError as err:
        fail(str(err))


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
    """Fine-tune a base model (the config's ``family``: dit, sd, controlnet) on a dataset (torchrun for DDP).

    SIGTERM or Ctrl-C stops after the current step with a checkpoint of it (``--resume`` continues
    exactly from there) and exits 143 / 130; a second signal exits at once.
    """
    from models.data import DatasetError
    from models.distributed import init_distributed, shutdown
    from models.interrupt import StopSignals
    from models.oom import OutOfMemory
    from models.run import run_training

    _setup_logging()
    cfg = _load(config, base_model=base_model, max_steps=max_steps)
    dist = init_distributed(device)
    try:
        with StopSignals() as stop, RunDisplay(console) as display:
            metrics = MetricsLog(out)

            def on_progress(p) -> None:
                display.train(p)
                metrics(p)

            result = run_training(cfg, data_dir=data, out_dir=out, cache_dir=_cache_dir(cache_dir), resume=resume,
                                  dist=dist, on_phase=display.phase, on_progress=on_progress,
                                  should_stop=stop.requested)
    except OutOfMemory as err:
        fail(f"{err}: rerun with the change and --resume to continue from it")
    except (DatasetError, ValueError, FileExistsError) as err:
        fail(str(err))
    finally:
        shutdown(dist)
    if result.fit.stopped:
        if dist.is_main:
            console.print(f"interrupted by {stop.signal_name or 'a stop request'}: stopped at step "
                          f"{result.fit.step}/{cfg.max_steps} with a checkpoint of that step "
                          f"({result.fit.last_checkpoint}); continue with --resume",
                          soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(code=stop.exit_code or 1)
    if dist.is_main:
        print(f"checkpoint: {result.fit.last_checkpoint}")
        print(f"samples:    {out / 'samples'}")


def plan(
    config: Annotated[Path, typer.Argument(help="YAML file with TrainConfig fields.")],
    data: Annotated[Path, typer.Option(help="The dataset the run will train on.")],
    gpus: Annotated[int, typer.Option(help="Processes the run will use (the batch is split over them).")] = 1,
    gpu_memory: Annotated[float | None, typer.Option(help="GB to fit in [default: the CUDA device's memory].")] = None,
    base_model: Annotated[str | None, typer.Option(help="Override base_model from the config.")] = None,
    cache_dir: CacheOpt = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 [default: cuda if available]")] = None,
) -> None:
    """Measure the memory one training step of the run needs (one real step, by part) and whether it
    fits: prints JSON; exits 3 when it does not fit."""
    import torch

    from models.data import DatasetError
    from models.distributed import default_device
    from models.plan import does_not_fit, plan_memory

    cfg = _load(config, base_model=base_model)
    device = device or default_device()
    try:
        result = plan_memory(cfg, data, device=device, cache_dir=_cache_dir(cache_dir), processes=gpus,
                             budget_gb=gpu_memory)
    except (DatasetError, ValueError) as err:
        fail(str(err))
    except torch.OutOfMemoryError:
        result = None
    if result is None or result.fits is False:
        if result:
            print(json.dumps(result.as_dict(), indent=2))
        console.print(does_not_fit(cfg, result, device), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(code=3)
    print(json.dumps(result.as_dict(), indent=2))


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
    if family_spec(cfg.family).text_conditioned and not cfg.bank_prompts:
        fail(f"bank_prompts: a {cfg.family} bank is sampled with prompts; without a dataset to take captions "
              "from, list them in the config (or let `difftune train` build the bank)")
    try:
        family = load_family(cfg, device=device or default_device())
    except ValueError as err:
        fail(str(err))
    with RunDisplay(console) as display:
        result = build_bank(family, cfg, _cache_dir(cache_dir), progress=lambda d, t: display.phase("bank", d, t))
    folder = _cache_dir(cache_dir) / "banks" / bank_key(family, cfg.bank)
    print(json.dumps({"bank": str(folder), "images": len(result), "shape": list(result.latents.shape)}))


def sample(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (diffusers format).")],
    labels: Annotated[str, typer.Option(help="DiT: comma-separated target labels, e.g. 0,1,2.")] = "",
    prompt: Annotated[list[str] | None, typer.Option(help="SD/ControlNet: a prompt (repeat for several).")] = None,
    control: Annotated[Path | None, typer.Option(help="ControlNet: the control image for every prompt.")] = None,
    out: Annotated[Path, typer.Option(help="PNG file for the grid.")] = Path("grid.png"),
    guidance: Annotated[float, typer.Option(help="Guidance scale.")] = 4.0,
    guidance_mode: Annotated[str, typer.Option(help="cfg, or domain: Domain Guidance, the unconditional branch "
                                                     "from the pre-trained base (--base).")] = "cfg",
    base: Annotated[Path | None, typer.Option(help="Domain Guidance's base model [default: the checkpoint's "
                                                   "base_model]")] = None,
    steps: Annotated[int, typer.Option(help="DDIM steps.")] = 50,
    seed: int = 0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda [default: cuda if available]")] = None,
) -> None:
    """Draw a sample grid from a checkpoint with CFG or Domain Guidance (DiT: labels; SD: prompts;
    ControlNet: + control)."""
    import torch

    from models.distributed import default_device
    from models.domain_guidance import load_guidance_base
    from models.families import family_class
    from models.grid import save_grid
    from models.lora import attach_checkpoint_lora

    spec = family_of_pipeline(_pipeline_class(checkpoint))
    if spec is None:
        fail(f"checkpoint: {checkpoint} is not a diffusers pipeline of a known family "
             f"({', '.join(s.pipeline for s in FAMILIES.values())})")
    if guidance_mode not in ("cfg", "domain"):
        fail(f"guidance-mode: {guidance_mode!r} is not cfg or domain")
    try:
        base_family = load_guidance_base(checkpoint, spec, base, device or default_device()) \
            if guidance_mode == "domain" else None
    except ValueError as err:
        fail(str(err))
    if spec.text_conditioned:
        images = _sample_prompts(checkpoint, spec, prompt or [], control, guidance=guidance, steps=steps,
                                 seed=seed, device=device or default_device(), base_family=base_family,
                                 domain=guidance_mode == "domain")
        save_grid(images, out)
        print(f"wrote {out}")
        return
    try:
        wanted = [int(x) for x in labels.split(",") if x.strip()]
        family = family_class(spec.name).from_pretrained(str(checkpoint), device=device or default_device())
        attach_checkpoint_lora(family.denoiser, checkpoint, diffusers_format=False)
    except ValueError as err:
        fail(f"labels: expected integers like 0,1,2 ({err})" if "invalid literal" in str(err) else str(err))
    known = sorted(family.base_id2label) or list(range(family.null_label))  # the checkpoint's classes
    bad = [x for x in wanted if x not in known]
    if bad or not wanted:
        names = ", ".join(f"{k}={family.base_id2label.get(k, k)}" for k in known[:20])
        fail(f"labels: {bad or 'none given'} not among the checkpoint's classes ({names})")
    latents = family.sample_latents(family.denoiser.eval(), torch.tensor(wanted), null=family.null_label,
                                    guidance=guidance, steps=steps, sampler="ddim",
                                    generator=torch.Generator().manual_seed(seed),
                                    base=base_family and base_family.denoiser.eval(),
                                    base_null=base_family and base_family.null_label)
    save_grid(family.decode_latents(latents), out)
    print(f"wrote {out}")


def _pipeline_class(checkpoint: Path) -> str:
    try:
        return str(json.loads((checkpoint / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def _sample_prompts(checkpoint: Path, spec: FamilySpec, prompts: list[str], control: Path | None, *,
                    guidance: float, steps: int, seed: int, device: str, base_family=None, domain: bool = False):
    """Text-to-image sample images (with controls: condition | generated side by side)."""
    import torch

    from models.data import load_image
    from models.families import family_class
    from models.lora import attach_checkpoint_lora

    if not prompts:
        fail(f"prompt: give at least one --prompt for a {spec.description} checkpoint")
    if spec.needs_controls != (control is not None):
        fail(f"control: a {spec.name} checkpoint needs --control IMAGE" if spec.needs_controls
             else f"control: only checkpoints with controls take --control, not {spec.name}")
    try:
        family = family_class(spec.name).from_pretrained(str(checkpoint), device=device)
        # an unmerged LoRA: the folder holds the base weights and the adapter beside them
        attach_checkpoint_lora(family.denoiser, checkpoint, diffusers_format=not spec.needs_controls)
        controls = None
        if control is not None:
            image = load_image(control, family.image_size).add(1).div(2)  # (3, R, R) in [0, 1]
            controls = image.expand(len(prompts), -1, -1, -1)  # (n, 3, R, R)
        base = base_family.denoiser.eval() if base_family is not None else (family.pretrained_denoiser() if domain
                                                                            else None)
        images = family.generate_images(family.denoiser, prompts, guidance=guidance, steps=steps,
                                        generator=torch.Generator().manual_seed(seed), controls=controls, base=base)
    except (ValueError, OSError) as err:
        fail(str(err))
    return images if controls is None else torch.cat([controls, images], dim=-1)


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


@tiny_app.command("sd3")
def tiny_sd3_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the pipeline to.")],
    resolution: int = 16,
    seed: int = 0,
) -> None:
    """Write a tiny random Stable Diffusion 3 pipeline (CLIP-L, CLIP-G, T5, MMDiT), diffusers format."""
    from models.tiny import build_tiny_sd3_pipeline

    build_tiny_sd3_pipeline(out, seed=seed, resolution=resolution)
    console.print(f"wrote {out}")


@tiny_app.command("sdxl")
def tiny_sdxl_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the pipeline to.")],
    resolution: int = 16,
    controlnet: Annotated[bool, typer.Option(help="Also write a ControlNet made from the UNet.")] = False,
    seed: int = 0,
) -> None:
    """Write a tiny random Stable Diffusion XL pipeline (two CLIP encoders, text-time UNet; optionally with a
    ControlNet), diffusers format."""
    from models.tiny import build_tiny_sdxl_pipeline

    build_tiny_sdxl_pipeline(out, seed=seed, resolution=resolution, controlnet=controlnet)
    console.print(f"wrote {out}")


@tiny_app.command("flux")
def tiny_flux_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the pipeline to.")],
    resolution: int = 16,
    seed: int = 0,
) -> None:
    """Write a tiny random Flux pipeline (CLIP, T5, guidance-distilled Flux transformer), diffusers format."""
    from models.tiny import build_tiny_flux_pipeline

    build_tiny_flux_pipeline(out, seed=seed, resolution=resolution)
    console.print(f"wrote {out}")


def entry_threads(threads: int) -> None:
    """Entry-point settings of the long-running analyses: Agg plots, a fixed number of torch threads."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    torch.set_num_threads(threads)


def say(line: str) -> None:
    console.print(line, soft_wrap=True, highlight=False, markup=False)


def guidance_scales(value: str) -> tuple[float, ...]:
    """``"1,4"`` → ``(1.0, 4.0)``; a bad value is a usage error naming it."""
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected numbers like 1,4; got {value!r}") from None


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
    guidance_mode: Annotated[str, typer.Option(help="cfg, or domain: the tuned model's steps guided by the base "
                                                    "(Domain Guidance).")] = "cfg",
    threads: ThreadsOpt = 1,
) -> None:
    """Chain-of-forgetting probe: FD against t* when swapping base and tuned models along the chain."""
    from models.probe import run_probe

    if guidance_mode not in ("cfg", "domain"):
        fail(f"guidance-mode: {guidance_mode!r} is not cfg or domain")
    entry_threads(threads)
    run_probe(base, tuned, data, out, points=points, per_class=per_class, guidances=guidance_scales(guidance),
              steps=steps, seed=seed, classifier=classifier, say=say, guidance_mode=guidance_mode)
    print(out / "probe.json")


def register(app: typer.Typer) -> None:
    """Mount the library's commands on the ``difftune`` app."""
    app.command()(train)
    app.command()(bank)
    app.command()(plan)
    app.command()(sample)
    app.add_typer(tiny_app, name="tiny")
    app.add_typer(analyze_app, name="analyze")
