"""A whole tuning run as one call: validate data → load base → bank → encode → train.

The CLI and the service worker both call :func:`run_training`; it owns no logging configuration
and no process-wide state beyond what the Trainer documents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from contract.families import DatasetLayout
from contract.families import family as family_spec
from contract.outputs import step_of
from contract.train_config import TrainConfig
from models import checkpoints as ckpt
from models.bank import bank_for
from models.distributed import DistInfo, agree, barrier, node_barrier, shared_folder
from models.families import load_family, scan_dataset
from models.oom import out_of_memory
from models.trackers import Trackers, check_installed
from models.trainer import ArtifactCallback, FitResult, ProgressCallback, Trainer

log = logging.getLogger(__name__)

# (phase, done, total): "bank" and "encode" report their own progress before training starts.
PhaseCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunResult:
    """Where a run's outputs are and how it ended."""

    out_dir: Path
    fit: FitResult
    num_classes: int
    class_names: list[str]


def run_training(
    config: TrainConfig,
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    cache_dir: str | Path,
    resume: bool = False,
    dist: DistInfo | None = None,
    on_phase: PhaseCallback | None = None,
    on_progress: ProgressCallback | None = None,
    on_artifact: ArtifactCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    run_name: str | None = None,
) -> RunResult:
    """Tune ``config.base_model`` on the dataset ``data_dir`` (class folders for dit, captioned images for
    sd/controlnet); write checkpoints to ``out_dir``.

    ``should_stop`` (a cancel, :class:`models.interrupt.StopSignals`) is asked by ``Trainer.fit`` after
    each step (every ``log_every`` steps under DDP); fit then checkpoints the step it stopped at and
    ``fit.stopped`` says so. A request made while the bank or latents are built takes effect after
    the first training step. ``report_to`` trackers log the run as ``run_name`` (default: ``out_dir``'s name).
    """
    dist = dist or DistInfo()
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    check_installed(config)  # a missing tracker library fails before anything is loaded
    folder = scan_dataset(config, data_dir)
    class_folders = family_spec(config.family).dataset_layout is DatasetLayout.CLASS_FOLDERS
    if class_folders and config.num_classes is not None and config.num_classes != len(folder.class_names):
        raise ValueError(f"num_classes: config says {config.num_classes} but {data_dir} has "
                         f"{len(folder.class_names)} class folders")
    if config.validation_labels and max(config.validation_labels) >= len(folder.class_names):
        raise ValueError(f"validation_labels: {config.validation_labels} outside the dataset's "
                         f"{len(folder.class_names)} classes")
    existing = ckpt.latest_checkpoint(out_dir)
    if dist.multi_node:
        _agree_on_checkpoint(existing, dist)
    if existing and not resume:
        raise FileExistsError(f"{out_dir} already holds checkpoints ({existing.name}); pass --resume "
                              "to continue that run or choose another --out")

    stage: dict = {"phase": "load", "trainer": None}
    try:
        fit = _load_and_fit(config, folder, out_dir, cache_dir, existing if resume else None, dist, stage,
                            on_phase=on_phase, on_progress=on_progress, on_artifact=on_artifact,
                            should_stop=should_stop, run_name=run_name or out_dir.name)
        oom = None
    except torch.OutOfMemoryError:
        trainer = stage["trainer"]
        oom = out_of_memory(config, trainer.phase if trainer else stage["phase"], trainer and trainer.step,
                            ckpt.latest_checkpoint(out_dir))
    if oom is not None:  # raised here, outside the handler, so the failed step's tensors can be freed
        stage.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise oom
    return RunResult(out_dir=out_dir, fit=fit, num_classes=len(folder.class_names),
                     class_names=folder.class_names)


def _load_and_fit(config: TrainConfig, folder, out_dir: Path, cache_dir: Path, resume_from: Path | None,
                  dist: DistInfo, stage: dict, *, on_phase, on_progress, on_artifact, should_stop,
                  run_name: str) -> FitResult:
    """Load the base, build the bank and the latents, train; ``stage`` records how far it got."""
    family = load_family(config, device=dist.device)
    _check_resolution(family, config, folder)
    family.attach_dataset(folder, config)
    bank, stage["phase"] = None, "bank"
    if config.uses_bank:
        bank = bank_for(family, config, cache_dir, folder, **_bank_ranks(dist, cache_dir),
                        progress=(lambda d, t: on_phase("bank", d, t)) if on_phase else None)
    stage["phase"] = "encode"
    latents = family.prepare_target(folder, config, bank, cache_dir=cache_dir if dist.is_main else None,
                                    progress=(lambda d, t: on_phase("encode", d, t)) if on_phase else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage["phase"] = "train"
    trainer = stage["trainer"] = Trainer(family, config, latents, bank, out_dir, dist=dist)
    if resume_from:
        trainer.resume(resume_from)
        log.info("resumed from %s at step %d", resume_from, trainer.step)
    trackers = Trackers(config if dist.is_main else config.model_copy(update={"report_to": []}), out_dir, run_name)

    def progress(p) -> None:
        trackers.log(p)
        if on_progress:
            on_progress(p)

    def artifact(kind: str, step: int, path: Path) -> None:
        if kind == "samples":
            trackers.log_grid(step, path)
        if on_artifact:
            on_artifact(kind, step, path)

    try:
        return trainer.fit(on_progress=progress, on_artifact=artifact, should_stop=should_stop)
    finally:
        trackers.close()


def _bank_ranks(dist: DistInfo, cache_dir: Path) -> dict:
    """How the ranks share building the bank: all of them into one cache folder when they see the same
    one (one host, or a shared file system), else each host builds the whole bank into its own cache
    (its shards are seeded by index, so every host gets the same bank) among its own ranks."""
    if shared_folder(cache_dir, dist):
        return {"rank": dist.rank, "world_size": dist.world_size, "barrier": lambda: barrier(dist)}
    return {"rank": dist.local_rank, "world_size": dist.local_world_size, "barrier": node_barrier(dist)}


def _agree_on_checkpoint(existing: Path | None, dist: DistInfo) -> None:
    """Across hosts each rank reads its own ``out_dir``: all must find the same latest checkpoint
    (none, or the same step), or they would resume into different states."""
    step = step_of(existing.name) if existing else -1
    low, high = agree([step], dist)
    if low[0] != high[0]:
        def name(s: int) -> str:
            return "none" if s < 0 else f"step {s}"

        raise ValueError(f"resume: the hosts' output folders hold different latest checkpoints ({name(low[0])} "
                         f"and {name(high[0])}; this one: {name(step)}); give every host the same checkpoint "
                         "(a shared --out, or a copy of it) before resuming")


def _check_resolution(family, config: TrainConfig, folder) -> None:
    """Say which sizes the base model trains at (the square and every bucket's sides) instead of
    failing inside the network."""
    resolutions = getattr(family, "resolutions", None)
    problem = resolutions().problem(config.resolution) if resolutions else None
    if problem:
        raise ValueError(f"resolution: {problem}")
    sides = sorted({side for size in getattr(folder, "sizes", None) or [] for side in size})
    allowed = family.bucket_resolutions() if sides else None
    problem = allowed and next(filter(None, map(allowed.problem, sides)), None)
    if problem:
        raise ValueError(f"bucket_step: {config.bucket_step}px makes buckets this base model cannot train ({problem})")
