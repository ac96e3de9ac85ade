"""``pip install ".[ml]"`` alone (no service extra) gives a working ``difftune`` for the library.

A real venv, a real (non-editable) install of the built wheel, real subprocesses. The venv with
torch and the ``ml`` dependencies is cached in the user's cache (``~/.cache/difftune/test-venvs``,
like pip's own cache) by a hash of pyproject.toml, so clones on one machine share it; the project
itself is reinstalled from the working tree on every run, so the test sees today's code.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"  # pinned as in the Makefile: a local CPU build here, no CUDA download
SERVICE_ONLY = ("fastapi", "sqlalchemy", "celery", "boto3")
LIBRARY_COMMANDS = {"train", "plan", "bank", "sample", "bench", "analyze", "tiny", "library-demo"}
SERVICE_COMMANDS = {"serve", "keys", "demo"}
CLIENT_COMMANDS = {"datasets", "base-models", "jobs", "api-keys", "webhooks"}  # wherever httpx is installed (no ml dependency needs it)


def _pip(python: Path, *args: str) -> None:
    # --no-compile: byte-compiling torch & co. at install is half of a cold build; imports compile lazily
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check",
                    *args], cwd=ROOT, check=True, capture_output=True, text=True)


@pytest.fixture(scope="session")
def ml_venv() -> Path:
    """A venv with only the ``ml`` extra and the project installed from a built wheel."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH.encode()).hexdigest()[:16]
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difftune" / "test-venvs"
    home.mkdir(parents=True, exist_ok=True)
    venv = home / f"ml-{key}"
    python = venv / "bin" / "python"
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel test runs share the cache)
        if not (venv / ".complete").exists():
            for stale in home.glob("ml-*"):  # built for an older pyproject.toml
                shutil.rmtree(stale, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            _pip(python, TORCH)
            shutil.rmtree(ROOT / "build", ignore_errors=True)
            _pip(python, ".[ml]")
            (venv / ".complete").write_text(key)
        shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' in-tree build dir keeps deleted modules
        _pip(python, "--no-deps", "--force-reinstall", ".")  # today's sources, as a wheel
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # byte-code is written here (the installs skip it): the first run compiles what difftune imports, once
    dropped = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def commands(help_text: str) -> set[str]:
    return set(re.findall(r"^│ ([a-z][\w-]*)\s", help_text, flags=re.MULTILINE))


@pytest.mark.slow
def test_the_library_works_without_the_service_extra(ml_venv, tmp_path):
    python, difftune = ml_venv / "bin" / "python", ml_venv / "bin" / "difftune"
    for module in SERVICE_ONLY:
        assert run(ml_venv, str(python), "-c", f"import {module}", cwd=tmp_path).returncode != 0, module
    where = run(ml_venv, str(python), "-c", "import models, cli; print(models.__file__)", cwd=tmp_path)
    assert str(ml_venv) in where.stdout  # the installed wheel, not the checkout

    shown = run(ml_venv, str(difftune), "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    has_httpx = run(ml_venv, str(python), "-c", "import httpx", cwd=tmp_path).returncode == 0
    assert commands(shown.stdout) == LIBRARY_COMMANDS | (CLIENT_COMMANDS if has_httpx else set())
    for group in ("bench", "analyze", "tiny"):
        assert run(ml_venv, str(difftune), group, "--help", cwd=tmp_path).returncode == 0, group

    base = tmp_path / "base"
    built = run(ml_venv, str(difftune), "tiny", "dit", str(base), "--num-classes", "2", "--resolution", "16",
                cwd=tmp_path)
    assert built.returncode == 0 and (base / "model_index.json").exists(), built.stderr
    data = tmp_path / "data"
    for label, color in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        (data / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), tuple(c + 10 * i for c in color)).save(data / label / f"{i}.png")
    config = tmp_path / "config.yaml"
    config.write_text("family: dit\nresolution: 16\nbatch_size: 4\nmax_steps: 2\ncheckpoint_every: 2\n"
                      "sample_every: 2\nsample_steps: 2\nlog_every: 1\n"
                      "bank: {size: 4, batch_size: 4, num_inference_steps: 2}\n")
    out = tmp_path / "run"
    trained = run(ml_venv, str(difftune), "train", str(config), "--data", str(data), "--out", str(out),
                  "--base-model", str(base), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (out / "checkpoints" / "step_0000002" / "model_index.json").exists()
    assert (out / "samples" / "step_0000002.png").exists()
