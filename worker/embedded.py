"""Embedded mode: the whole service on one machine with no servers.

SQLite database, a SQLite (kombu sqlalchemy) broker, a local directory store, the API under
uvicorn and one Celery worker (solo pool), each a child process in its own process group.
``make run`` starts it. Stopping sends SIGTERM to each group, waits ``grace`` seconds, then sends
SIGKILL, so no child (nor anything it started) outlives the stack.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

KEY_FILE = "api_key"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
        # one local user: any folder of this machine but the service's own area (unless the env narrows it)
        "DIFFTUNE_MODEL_ROOTS": os.environ.get("DIFFTUNE_MODEL_ROOTS", '["/"]'),
    }


def _exited(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` ended, without reaping it: while it is an unreaped zombie its pid (the id of
    its process group) cannot be reused, so signalling the group stays safe."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group ``proc`` leads (unless ``proc`` was already reaped)."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


WEBHOOK_WORKER = "webhooks"  # the light worker.webhook_app process (and its log's name)


@dataclass
class EmbeddedStack:
    """The API and a worker as child processes; use as a context manager."""

    home: Path
    port: int = 0
    log_dir: Path | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    grace: float = 30.0  # seconds the children get to exit after SIGTERM before SIGKILL
    worker_queues: tuple[str, ...] = ("gpu,checks",)  # one worker process per entry (one machine: one worker)

    def __post_init__(self):
        self.home = Path(self.home).resolve()
        self.port = self.port or free_port()
        self.env = {**os.environ, **embedded_env(self.home, self.port), "PYTHONUNBUFFERED": "1"}
        self.log_dir = Path(self.log_dir or self.home / "logs")
        self.stop_signal: int | None = None  # the signal (or request) that asked the stack to stop
        self._hurry = False

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
        """Migrate the database, start the API and the worker, wait until both are ready. Returns early,
        with everything stopped, when :meth:`request_stop` is called meanwhile (e.g. by a signal)."""
        subprocess.run([sys.executable, "-m", "migrations"], env=self.env, check=True, capture_output=True)
        if self.stop_signal is not None:
            return self
        self._spawn("api", ["-m", "uvicorn", "--factory", "api.main:app", "--host", "127.0.0.1",
                            "--port", str(self.port), "--log-level", "warning"])
        for queues in self.worker_queues:
            self.spawn_worker(queues)
        self._spawn(WEBHOOK_WORKER, ["-m", "celery", "--app", "worker.webhook_app:app", "worker", "--pool=solo",
                                     "--queues", "webhooks", "--hostname", f"{WEBHOOK_WORKER}@%h", "--loglevel", "INFO",
                                     "--without-gossip", "--without-mingle", "--without-heartbeat"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stop_signal is not None:
                self.stop()
                return self
            if not self.running():
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

    @staticmethod
    def worker_name(queues: str) -> str:
        """The log name of the worker on ``queues`` (``worker`` for the default one)."""
        return "worker" if queues == "gpu,checks" else f"worker-{queues.replace(',', '-')}"

    def spawn_worker(self, queues: str) -> subprocess.Popen:
        """Start a Celery worker (solo pool) on ``queues``; it logs to ``worker*.log``."""
        self._spawn(self.worker_name(queues), ["-m", "celery", "--app", "worker.app:app", "worker", "--pool=solo",
                                               "--queues", queues, "--hostname", f"{self.worker_name(queues)}@%h",
                                               "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
                                               "--without-mingle", "--without-heartbeat"])
        return self.processes[-1]

    def _worker_ready(self) -> bool:
        """Celery logs ``celery@host ready.`` once it consumes from the queue."""
        logs = [self.log_dir / f"{name}.log" for name in [*map(self.worker_name, self.worker_queues), WEBHOOK_WORKER]]
        return all(log.exists() and " ready." in log.read_text(errors="replace")[-20000:] for log in logs)

    def running(self) -> bool:
        """Whether every child is still running (checked without reaping them)."""
        return bool(self.processes) and not any(_exited(p) for p in self.processes)

    def wait(self, poll: float = 0.2) -> bool:
        """Block until a stop is requested (True) or a child exits (False)."""
        while self.stop_signal is None:
            if not self.running():
                return False
            time.sleep(poll)
        return True

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask :meth:`start` / :meth:`wait` to return; a second request makes :meth:`stop` skip the grace
        period. Only sets flags, so it is safe in a signal handler."""
        if self.stop_signal is None:
            self.stop_signal = int(signum)
        else:
            self._hurry = True

    @contextmanager
    def stop_on_signals(self, signals: Iterable[int] = STOP_SIGNALS) -> Iterator[EmbeddedStack]:
        """While the block runs, ``signals`` (SIGTERM, SIGINT, SIGHUP) call :meth:`request_stop`;
        the previous handlers are restored afterwards."""
        previous = {sig: signal.signal(sig, lambda signum, frame: self.request_stop(signum)) for sig in signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM every child's process group, wait up to ``grace`` seconds (cut short by a second
        :meth:`request_stop`), SIGKILL whatever is left of the groups, and reap the children."""
        grace = self.grace if grace is None else grace
        procs = list(self.processes)
        for proc in procs:
            if not _exited(proc):
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not self._hurry and time.monotonic() < deadline and not all(_exited(p) for p in procs):
            time.sleep(0.05)
        for proc in procs:  # the leaders still running, and anything an exited leader left behind
            _signal_group(proc, signal.SIGKILL)
        for proc in procs:
            proc.wait()
        self.processes.clear()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
