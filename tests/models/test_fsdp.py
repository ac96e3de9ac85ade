"""FSDP2 (parallelism: fsdp) on two CPU processes (gloo): the same training as DDP, checkpoints that
diffusers loads, and an exact resume on the same number of ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from diffusers import DiTPipeline

from contract.train_config import ConfigError, parse_config
from models import checkpoints as ckpt

pytestmark = pytest.mark.slow


def torchrun(config, data, out, cache, cwd):
    """``difftune train`` under torchrun with 2 CPU processes; returns the last checkpoint folder."""
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cli.main",
           "train", str(path), "--data", str(data), "--out", str(out), "--cache-dir", str(cache), "--device", "cpu",
           "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    (out.parent / f"{out.name}.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return ckpt.latest_checkpoint(out)


def weights(checkpoint):
    return DiTPipeline.from_pretrained(checkpoint).transformer.state_dict()


def test_fsdp_trains_like_ddp_and_resumes_exactly(make_config, image_folder, tmp_path):
    config = make_config(max_steps=4, checkpoint_every=2, sample_every=4, ema_warmup=True)
    fsdp = config.model_copy(update={"parallelism": "fsdp"})
    unbroken = torchrun(fsdp, image_folder, tmp_path / "fsdp", tmp_path / "cache", tmp_path)
    assert unbroken.name == "step_0000004"
    assert json.loads((unbroken / "meta.json").read_text())["world_size"] == 2
    assert (tmp_path / "fsdp" / "samples" / "step_0000004.png").exists()
    ddp = torchrun(config, image_folder, tmp_path / "ddp", tmp_path / "cache", tmp_path)
    a, b = weights(unbroken), weights(ddp)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # same math, sharded

    first = torchrun(fsdp.model_copy(update={"max_steps": 2}), image_folder, tmp_path / "split", tmp_path / "cache",
                     tmp_path)
    assert first.name == "step_0000002"
    resumed = torchrun(fsdp, image_folder, tmp_path / "split", tmp_path / "cache", tmp_path)
    assert resumed.name == "step_0000004"
    c = weights(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a)  # EMA weights bit for bit
    raw_a, raw_c = ckpt.read_trainer_state(unbroken, 0)[0], ckpt.read_trainer_state(resumed, 0)[0]
    assert raw_a.keys() == raw_c.keys() and all(torch.equal(raw_a[k], raw_c[k]) for k in raw_a)


def test_fsdp_is_for_full_fine_tuning():
    with pytest.raises(ConfigError, match="parallelism: fsdp shards a full fine-tuning"):
        parse_config({"parallelism": "fsdp", "peft": "lora"})
