"""Embedded mode: the whole service on one machine with no servers.

SQLite database, a SQLite (kombu sqlalchemy) broker, a local directory store, the API under
uvicorn and one Celery worker (solo pool), each a child process. ``make run`` starts it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

KEY_FILE = "api_key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _persistent_secret(path: Path, prefix: str = "") -> str:
    """A secret kept in ``path`` so restarts reuse it (created on first start)."""
    if path.exists():
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(32)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def embedded_env(home: Path, port: int) -> dict[str, str]:
    """DIFFTUNE_* settings of an embedded stack rooted at ``home``."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return {
        "DIFFTUNE_DATABASE_URL": f"sqlite:///{home}/difftune.db",
        "DIFFTUNE_BROKER_URL": f"sqla+sqlite:///{home}/broker.db",
        "DIFFTUNE_STORAGE_URL": f"file://{home}/storage",
        "DIFFTUNE_CACHE_DIR": str(home / "cache"),
        "DIFFTUNE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DIFFTUNE_BOOTSTRAP_TENANT": "local",
        "DIFFTUNE_BOOTSTRAP_API_KEY": _persistent_secret(home / KEY_FILE, "dtk_"),
        "DIFFTUNE_SIGNING_SECRET": _persistent_secret(home / "signing_secret"),
    }


@dataclass
class EmbeddedStack:
    """The API and a worker as child processes; use as a context manager."""

    home: Path
    port: int = 0
    log_dir: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self):
        self.home = Path(self.home).resolve()
        self.port = self.port or free_port()
        self.env = {**os.environ, **embedded_env(self.home, self.port), "PYTHONUNBUFFERED": "1"}
        self.log_dir = Path(self.log_dir or self.home / "logs")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str:
        return self.env["DIFFTUNE_BOOTSTRAP_API_KEY"]

    def _spawn(self, name: str, args: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("w")
        self.processes.append(subprocess.Popen([sys.executable, *args], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, timeout: float = 60) -> EmbeddedStack:
        """Migrate the database, start the API and the worker, wait until the API is ready."""
        subprocess.run([sys.executable, "-m", "migrations"], env=self.env, check=True, capture_output=True)
        self._spawn("api", ["-m", "uvicorn", "--factory", "api.main:app", "--host", "127.0.0.1",
                            "--port", str(self.port), "--log-level", "warning"])
        self._spawn("worker", ["-m", "celery", "--app", "worker.app:app", "worker", "--pool=solo", "--queues",
                               "gpu", "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                self.stop()
                raise RuntimeError(f"a service process exited at start; see {self.log_dir}")
            if self._api_ready() and self._worker_ready():
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"the API did not become ready in {timeout:.0f}s; see {self.log_dir}")

    def _api_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _worker_ready(self) -> bool:
        """Celery logs ``celery@host ready.`` once it consumes from the queue."""
        log = self.log_dir / "worker.log"
        return log.exists() and " ready." in log.read_text(errors="replace")[-20000:]

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes.clear()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
