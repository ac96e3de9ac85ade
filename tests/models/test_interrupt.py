"""SIGTERM / SIGINT during training: stop at the next step, checkpoint it, exit 143 / 130, resume exactly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app
from models import checkpoints as ckpt
from models.interrupt import StopSignals
from models.run import run_training

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_a_signal_becomes_a_stop_request_and_handlers_are_restored():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with StopSignals(announce=None) as stop:
            assert not stop.requested() and stop.signal_name is None and stop.exit_code == 0
            assert signal.getsignal(signal.SIGINT) == stop._handle
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs between bytecodes of the main thread
            assert stop.requested() and stop.signal_name == "SIGTERM" and stop.exit_code == 143
            assert calls == []  # taken over while the block runs
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        stop.resend()  # the restored handler gets the signal that stopped the run
        time.sleep(0.01)
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_signal_exits_at_once():
    script = textwrap.dedent("""
        import os, signal, time
        from models.interrupt import StopSignals
        with StopSignals(signals=[signal.SIGINT, signal.SIGTERM]) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            print("requested", stop.requested(), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        print("not reached", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 130, proc.stderr  # the code of the first signal
    assert proc.stdout == "requested True\n"
    assert "received SIGINT: stopping after the current step" in proc.stderr
    assert "received SIGTERM again: exiting now" in proc.stderr


def test_fit_asks_after_every_step_and_checkpoints_the_step_it_stopped_at(make_config, image_folder, tmp_path):
    config = make_config(max_steps=20, checkpoint_every=4, sample_every=100, log_every=10, keep_checkpoints=5)
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 7

    result = run_training(config, data_dir=image_folder, out_dir=tmp_path / "r", cache_dir=tmp_path / "c",
                          should_stop=should_stop)
    # asked once per step in a single process, not only at the log boundary (step 10)
    assert result.fit.stopped and result.fit.step == 7 and len(calls) == 7
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r")] == ["step_0000004", "step_0000007"]
    assert result.fit.last_checkpoint.name == "step_0000007"
    assert ckpt.read_trainer_state(result.fit.last_checkpoint, 0)[1]["step"] == 7


def _write_config(path: Path, base: Path, **overrides) -> Path:
    values = dict(base_model=str(base), resolution=16, batch_size=8, max_steps=50, checkpoint_every=20,
                  sample_every=1000, log_every=1, sample_steps=2, ema_warmup=True, learning_rate=1e-3,
                  keep_checkpoints=10, bank={"size": 8, "batch_size": 4, "num_inference_steps": 2})
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def _train(cfg: Path, data: Path, out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cli.main", "train", str(cfg), "--data", str(data), "--out", str(out),
           "--cache-dir", str(cache), "--device", "cpu", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / ckpt.STATE_DIR / "state.safetensors")


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_resume_matches_an_unbroken_run(tiny_base, image_folder, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", tiny_base)
    unbroken = _train(cfg, image_folder, tmp_path / "unbroken", tmp_path / "cache_u")  # the reference, alongside
    run = tmp_path / "run"
    first = _train(cfg, image_folder, run, tmp_path / "cache")
    try:
        periodic = ckpt.checkpoints_root(run) / "step_0000020"
        deadline = time.monotonic() + 60
        while not periodic.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert periodic.exists(), first.stderr.read() if first.poll() is not None else "no step 20 in 60 s"
        first.send_signal(signal.SIGTERM)  # steps take ~10 ms: it is now somewhere in 21..39
        out, err = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 143, err[-3000:]
    assert "received SIGTERM: stopping after the current step" in err
    stopped = int(re.search(r"interrupted by SIGTERM: stopped at step (\d+)/50", err).group(1))
    assert 20 < stopped < 40, err[-2000:]  # beyond the periodic checkpoint, before the next one
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000020", f"step_{stopped:07d}"]
    assert ckpt.read_trainer_state(ckpt.latest_checkpoint(run), 0)[1]["step"] == stopped
    assert "checkpoint:" not in out  # the success lines are not printed

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 in the other runs: the same arithmetic, bit for bit
    try:  # in this process: the interpreter start-up and imports of a third run cost more than the run
        resumed = CliRunner().invoke(app, ["train", str(cfg), "--data", str(image_folder), "--out", str(run),
                                           "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--resume"])
    finally:
        torch.set_num_threads(threads)
    assert resumed.exit_code == 0, resumed.output[-3000:]
    assert "step_0000050" in resumed.stdout
    u_out, u_err = unbroken.communicate(timeout=60)
    assert unbroken.returncode == 0, u_err[-3000:]

    a = _state(ckpt.latest_checkpoint(tmp_path / "unbroken"))
    b = _state(ckpt.latest_checkpoint(run))
    assert a.keys() == b.keys() and any(k.startswith("model.") for k in a)
    for name in a:  # raw weights, EMA, optimizer moments: bit for bit
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_sigint_exits_130_with_a_checkpoint_of_the_current_step(tiny_base, image_folder, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", tiny_base, max_steps=40, checkpoint_every=20)
    run = tmp_path / "run"
    proc = _train(cfg, image_folder, run, tmp_path / "cache")
    try:
        deadline = time.monotonic() + 60
        while not (ckpt.checkpoints_root(run) / "step_0000020").exists() and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    stopped = int(re.search(r"interrupted by SIGINT: stopped at step (\d+)/40", err).group(1))
    assert 20 < stopped < 40
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000020", f"step_{stopped:07d}"]
