"""Out of memory: the run fails with a message naming the settings to change and keeps its last
checkpoint; a rerun with a change resumes from it. (A CPU cannot run out of GPU memory: the tests
raise torch's own OutOfMemoryError where a GPU would.)"""

from __future__ import annotations

import pytest
import torch

from models import checkpoints as ckpt
from models.oom import OutOfMemory, suggestions
from models.run import run_training
from models.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def fail_on_call(monkeypatch, cls, name: str, call: int) -> None:
    """Make ``cls.name`` raise CUDA's out-of-memory error on its ``call``-th call."""
    original, calls = getattr(cls, name), []

    def wrapped(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapped)


def test_an_oom_in_a_step_names_the_settings_and_a_rerun_resumes(make_config, image_folder, tmp_path, monkeypatch):
    config = make_config(max_steps=4, checkpoint_every=2)
    fail_on_call(monkeypatch, Trainer, "train_step", 3)
    with pytest.raises(OutOfMemory) as err:
        run_training(config, data_dir=image_folder, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "out of memory while training after step 2" in message
    assert "gradient_checkpointing: true" in message and "batch_size: 4" in message
    assert "optimizer: adamw_8bit" in message and "the last checkpoint (step_0000002) is kept" in message
    assert "--resume" not in message  # the CLI adds that, the worker its REST form
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_0000002"

    monkeypatch.undo()
    smaller = config.model_copy(update={"batch_size": 4, "gradient_checkpointing": True})
    result = run_training(smaller, data_dir=image_folder, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                          resume=True)
    assert result.fit.step == 4 and result.fit.last_checkpoint.name == "step_0000004"


def test_an_oom_in_the_validation_samples_names_their_settings(make_config, image_folder, tmp_path, monkeypatch):
    fail_on_call(monkeypatch, Trainer, "save_samples", 1)
    with pytest.raises(OutOfMemory, match="while drawing validation samples after step 4.*validation_labels"):
        run_training(make_config(), data_dir=image_folder, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache")


def test_suggestions_leave_out_what_is_already_set(make_config):
    lean = make_config(peft="lora", base_precision="nf4", mixed_precision="bf16", optimizer="adamw_8bit",
                       ema_device="cpu", gradient_checkpointing=True, batch_size=2)
    assert suggestions(lean, "train") == ["resolution below 16"]  # Diff-Tuning keeps ≥ 2 rows per batch
    # the frozen base one step lower: bf16, then 4 bits for LoRA (QLoRA) or fp8 for DiffFit
    assert "base_precision: nf4" in suggestions(lean.model_copy(update={"base_precision": "bf16"}), "train")
    assert "base_precision: fp8" in suggestions(make_config(peft="difffit", base_precision="bf16",
                                                            mixed_precision="bf16"), "train")
    assert suggestions(make_config(peft="full"), "train")[:3] == [
        "gradient_checkpointing: true", "batch_size: 4", "peft: lora"]
    assert suggestions(make_config(), "bank") == ["bank.batch_size: 2"]


def test_the_cli_says_how_to_continue(tiny_base, image_folder, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dict(base_model=str(tiny_base), resolution=16, batch_size=8, max_steps=4,
                                          checkpoint_every=2, sample_every=4, sample_steps=2,
                                          bank={"size": 8, "batch_size": 4, "num_inference_steps": 2})))
    fail_on_call(monkeypatch, Trainer, "train_step", 3)
    result = CliRunner().invoke(app, ["train", str(config), "--data", str(image_folder), "--out", str(tmp_path / "run"),
                                      "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    flat = " ".join(result.output.split())
    assert "out of memory while training after step 2" in flat and "rerun with the change and --resume" in flat
