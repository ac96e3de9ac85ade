"""report_to: TensorBoard and MLflow receive every logged step (losses split target/bank, lr, images/s)
and the sample grids; a tracker that is not installed fails before anything loads, naming report_to."""

from __future__ import annotations

import os

import pytest

from models.run import run_training
from models.trackers import TrackerError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_and_mlflow_get_the_losses_and_the_grids(make_config, image_folder, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = make_config(max_steps=3, log_every=1, sample_every=3, checkpoint_every=3,
                         report_to=["tensorboard", "mlflow"], tracker_project="tests")
    run_training(config, data_dir=image_folder, out_dir=tmp_path / "run", cache_dir=tmp_path / "c", run_name="job_1")
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the next run in this process gets its own store
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert {"loss/total", "loss/target", "loss/bank", "learning_rate", "images_per_sec"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/bank")] == [1, 2, 3]
    assert [e.step for e in events.Images("samples")] == [3]
    client = MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.run_name == "job_1" and run.data.params["learning_rate"] == str(config.learning_rate)
    history = client.get_metric_history(run.info.run_id, "loss_target")
    assert [m.step for m in history] == [1, 2, 3]
    totals = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss_total")}
    assert totals[3] == pytest.approx(events.Scalars("loss/total")[-1].value)
    assert any(a.path.startswith("images") for a in client.list_artifacts(run.info.run_id))  # the grid
    assert list((tmp_path / "run" / "mlflow" / "artifacts").rglob("*.png"))  # kept in the run folder


def test_a_tracker_that_is_not_installed_is_named_before_anything_loads(make_config, image_folder, tmp_path,
                                                                        monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrackerError, match="report_to: wandb needs the wandb package, which is not installed"):
        run_training(make_config(report_to="wandb"), data_dir=image_folder, out_dir=tmp_path / "r",
                     cache_dir=tmp_path / "c")
    assert not (tmp_path / "r").exists()
