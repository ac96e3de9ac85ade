"""The difftune CLI: train, resume, sample, bank, errors; DDP on two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from diffusers import DiTPipeline
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from models import checkpoints as ckpt

runner = CliRunner()


def _write_config(path: Path, base: Path, **overrides) -> Path:
    values = dict(base_model=str(base), resolution=16, batch_size=8, max_steps=3, checkpoint_every=3,
                  sample_every=3, log_every=1, sample_steps=2, ema_warmup=True, learning_rate=1e-3,
                  bank={"size": 8, "batch_size": 4, "num_inference_steps": 2})
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def test_train_resume_and_sample(tiny_base, image_folder, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", tiny_base)
    args = ["train", str(cfg), "--data", str(image_folder), "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "checkpoint:" in result.output and "step_0000003" in result.output
    # not a terminal: plain progress lines of at most 80 columns, the last at the last step
    lines = [line for line in result.output.splitlines() if line.startswith("step ")]
    assert lines[-1].startswith("step 3/3 loss ") and "img/s eta" in lines[-1]
    assert all(len(line) <= 80 for line in result.output.splitlines() if not line.startswith(("checkpoint", "samples")))
    series = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [p["step"] for p in series] == [1, 2, 3] and all(p["loss_bank"] is not None for p in series)
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    more = runner.invoke(app, [*args, "--resume", "--max-steps", "5"])
    assert more.exit_code == 0, more.output
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_0000005"
    series = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [p["step"] for p in series] == [1, 2, 3, 4, 5]  # the resumed run continues the series

    grid = tmp_path / "grid.png"
    sampled = runner.invoke(app, ["sample", str(ckpt.latest_checkpoint(tmp_path / "run")), "--labels", "0,2,1",
                                  "--out", str(grid), "--steps", "2", "--device", "cpu"])
    assert sampled.exit_code == 0, sampled.output
    with Image.open(grid) as img:
        assert img.size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 3 images: 2 columns x 2 rows, 2 px padding
    bad = runner.invoke(app, ["sample", str(ckpt.latest_checkpoint(tmp_path / "run")), "--labels", "7",
                              "--device", "cpu"])
    assert bad.exit_code == 2 and "labels" in bad.output


def test_invalid_config_exits_with_the_field_name(tiny_base, image_folder, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", tiny_base, bank_share=2.0)
    result = runner.invoke(app, ["train", str(cfg), "--data", str(image_folder), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "bank_share" in result.output


def test_bad_dataset_exits_naming_the_file(tiny_base, tmp_path):
    (tmp_path / "d" / "cls").mkdir(parents=True)
    (tmp_path / "d" / "cls" / "bad.jpg").write_text("not an image")
    cfg = _write_config(tmp_path / "c.yaml", tiny_base)
    result = runner.invoke(app, ["train", str(cfg), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                                 "--device", "cpu"])
    assert result.exit_code == 2
    assert "bad.jpg" in result.output


def test_bank_command_builds_the_cache(tiny_base, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", tiny_base)
    result = runner.invoke(app, ["bank", str(cfg), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["images"] == 8 and info["shape"] == [8, 4, 8, 8]
    assert (Path(info["bank"]) / "bank.safetensors").exists()


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cli.main", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_checkpoint_and_resume(tiny_base, image_folder, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", tiny_base, max_steps=4, checkpoint_every=2)
    args = ["train", str(cfg), "--data", str(image_folder), "--out", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    first = _torchrun(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    last = ckpt.latest_checkpoint(tmp_path / "run")
    assert last.name == "step_0000004"
    meta = json.loads((last / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert {p.name for p in (last / "trainer_state").iterdir()} == {
        "state.json", "state.safetensors", "rank0.safetensors", "rank1.safetensors"}
    DiTPipeline.from_pretrained(last)  # the published weights load

    resumed = _torchrun([*args, "--resume", "--max-steps", "6"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_0000006"

    single = runner.invoke(app, [*args, "--resume", "--max-steps", "8"])
    assert single.exit_code == 2 and "same number" in single.output
