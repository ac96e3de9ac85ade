"""Experiment trackers (``report_to``): TensorBoard, MLflow and Weights & Biases, on rank 0.

Each logged step sends the losses split into the target (reconsolidation) and bank (retention)
streams, the learning rate, images/s and the convergence metric; each validation grid is sent as an
image. Where the runs go:

- ``tensorboard``: event files under ``OUT/tensorboard`` (the service publishes them with the job);
- ``mlflow``: the server ``MLFLOW_TRACKING_URI`` names, else a SQLite store ``OUT/mlflow/mlflow.db``
  with artifacts beside it (``mlflow ui --backend-store-uri sqlite:///OUT/mlflow/mlflow.db``);
- ``wandb``: the project ``tracker_project`` (``WANDB_API_KEY`` / ``WANDB_MODE`` as wandb reads them),
  when wandb is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from contract.train_config import TrainConfig, dump_config


class TrackerError(ValueError):
    """A configured tracker cannot be used here; the message names ``report_to``."""


def _scalars(p) -> dict[str, float]:
    values = {"loss/total": p.loss, "loss/target": p.loss_target, "learning_rate": p.learning_rate,
              "images_per_sec": p.images_per_sec}
    if p.loss_bank is not None:
        values["loss/bank"] = p.loss_bank
    evaluation = p.evaluation or {}
    if (name := evaluation.get("metric")) and isinstance(evaluation.get(name), int | float):
        values[f"eval/{name}"] = float(evaluation[name])
    return values


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """Hyperparameters as scalars/strings (nested and list values as JSON), as trackers store them."""
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in dump_config(config).items()}


class _TensorBoard:
    def __init__(self, config: TrainConfig, out_dir: Path, run_name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(dump_config(config), indent=2) + "\n```", 0)

    def log(self, p) -> None:
        for name, value in _scalars(p).items():
            self.writer.add_scalar(name, value, p.step)
        self.writer.flush()

    def log_image(self, step: int, image: np.ndarray) -> None:
        self.writer.add_image("samples", image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    def __init__(self, config: TrainConfig, out_dir: Path, run_name: str):
        import mlflow

        self.mlflow = mlflow
        local = out_dir / "mlflow"
        self.server = server = os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets it too
        local.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(server or f"sqlite:///{(local / 'mlflow.db').resolve()}")
        experiment = mlflow.get_experiment_by_name(config.tracker_project)
        experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(
            config.tracker_project, artifact_location=None if server else (local / "artifacts").resolve().as_uri())
        self.run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
        mlflow.log_params(_flat_config(config))

    def log(self, p) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in _scalars(p).items()}, step=p.step)

    def log_image(self, step: int, image: np.ndarray) -> None:
        self.mlflow.log_image(image, key="samples", step=step)

    def close(self) -> None:
        self.mlflow.end_run()
        if self.server is None:  # the next run in this process (a worker's next job) must not log here
            os.environ.pop("MLFLOW_TRACKING_URI", None)


class _WandB:
    def __init__(self, config: TrainConfig, out_dir: Path, run_name: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=config.tracker_project, name=run_name, config=dump_config(config),
                              dir=str(out_dir))

    def log(self, p) -> None:
        self.run.log(_scalars(p), step=p.step)

    def log_image(self, step: int, image: np.ndarray) -> None:
        self.run.log({"samples": self.wandb.Image(image)}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": (_TensorBoard, "tensorboard"), "mlflow": (_MLflow, "mlflow"), "wandb": (_WandB, "wandb")}


def check_installed(config: TrainConfig) -> None:
    """``TrackerError`` naming ``report_to`` when a configured tracker's library is missing."""
    for name in config.report_to:
        module = BACKENDS[name][1]
        if importlib.util.find_spec(module) is None:
            extra = " (pip install 'difftune[trackers]')" if name != "wandb" else ""
            raise TrackerError(f"report_to: {name} needs the {module} package, which is not installed here{extra}")


class Trackers:
    """The run's trackers (none when ``report_to`` is empty); call from rank 0 only."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, run_name: str):
        check_installed(config)
        out_dir = Path(out_dir)
        self.backends = [BACKENDS[name][0](config, out_dir, run_name) for name in config.report_to]

    def log(self, p) -> None:
        for backend in self.backends:
            backend.log(p)

    def log_grid(self, step: int, path: Path) -> None:
        if not self.backends:
            return
        with Image.open(path) as grid:
            image = np.asarray(grid.convert("RGB"))  # (H, W, 3) uint8
        for backend in self.backends:
            backend.log_image(step, image)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
