"""``difftune train`` as one torchrun job over two "hosts": two torchrun agents (``--nnodes 2``, one process
each) on loopback meeting at a c10d rendezvous, gloo. Each host has its own output and cache folders
(no shared file system), then both share one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from diffusers import DiTPipeline

from models import checkpoints as ckpt

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args_of, tmp_path: Path, run_id: str) -> list[subprocess.CompletedProcess]:
    """Start node 0 (hosting the rendezvous) and node 1; ``args_of(node)`` are their ``difftune`` arguments."""
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", run_id,
               "--rdzv_conf", f"is_host={int(node == 0)},join_timeout=120", "--local_addr", "127.0.0.1",
               "-m", "cli.main", *args_of(node)]
        log = (tmp_path / f"{run_id}-node{node}.log").open("w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log))
    done = []
    for proc, log in procs:
        try:
            proc.wait(300)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode,
                                                Path(log.name).read_text(), ""))
    return done


def test_two_hosts_train_as_one_job_and_resume(tiny_base, image_folder, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(
        base_model=str(tiny_base), resolution=16, batch_size=8, max_steps=4, checkpoint_every=2, sample_every=4,
        log_every=1, sample_steps=2, ema_warmup=True, learning_rate=1e-3,
        bank={"size": 8, "batch_size": 4, "num_inference_steps": 2})))

    def args(out: Path, cache: Path, *more: str) -> list[str]:
        return ["train", str(cfg), "--data", str(image_folder), "--out", str(out), "--cache-dir", str(cache),
                "--device", "cpu", *more]

    # no shared file system: each host its own --out and --cache-dir
    outs, caches = [tmp_path / f"out{n}" for n in (0, 1)], [tmp_path / f"cache{n}" for n in (0, 1)]
    first = _two_nodes(lambda n: args(outs[n], caches[n]), tmp_path, "first")
    assert [p.returncode for p in first] == [0, 0], "\n".join(p.stdout[-3000:] for p in first)
    holders = [out for out in outs if ckpt.latest_checkpoint(out)]
    assert len(holders) == 1  # the host of global rank 0 (c10d decides which)
    last = ckpt.latest_checkpoint(holders[0])
    assert last.name == "step_0000004"
    assert json.loads((last / "meta.json").read_text())["world_size"] == 2
    assert {p.name for p in (last / "trainer_state").iterdir()} == {
        "state.json", "state.safetensors", "rank0.safetensors", "rank1.safetensors"}  # gathered onto rank 0's host
    for cache in caches:  # each host built the whole bank in its own cache
        assert list(cache.glob("banks/*/bank.safetensors")), cache
    DiTPipeline.from_pretrained(last)

    # the hosts disagree on the checkpoint to resume from: both stop with the same message
    mismatch = _two_nodes(lambda n: args(outs[n], caches[n], "--resume", "--max-steps", "6"), tmp_path, "mismatch")
    assert [p.returncode for p in mismatch] == [1, 1]  # torchrun's exit for a failed worker
    assert all("different latest checkpoints" in p.stdout and "exitcode  : 2" in p.stdout for p in mismatch)

    # a shared folder: both hosts resume from the same checkpoint
    shared = tmp_path / "shared"
    shutil.copytree(holders[0], shared)
    resumed = _two_nodes(lambda n: args(shared, caches[0], "--resume", "--max-steps", "6"), tmp_path, "resumed")
    assert [p.returncode for p in resumed] == [0, 0], "\n".join(p.stdout[-3000:] for p in resumed)
    assert ckpt.latest_checkpoint(shared).name == "step_0000006"
