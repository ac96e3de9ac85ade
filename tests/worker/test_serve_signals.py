"""``difftune serve`` stops its API and worker on SIGTERM / SIGINT / SIGHUP and frees the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from worker.embedded import EmbeddedStack, free_port

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] != "Z":
            parents[int(entry.name)] = stat[1]
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = {child for child, p in parents.items() if p == parent}
        todo += children - found
        found |= children
    return found


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _port_is_free(port: int) -> bool:
    """A server could listen on ``port`` again (SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_sigterm_stops_the_api_and_the_worker_and_frees_the_port(tmp_path):
    signum = signal.SIGTERM
    port = free_port()
    children: set[int] = set()
    out = tmp_path / "serve.out"
    with out.open("w") as stream:
        serve = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--home", str(tmp_path / "home"),
                                  "--port", str(port)], stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 90
        while "API key:" not in out.read_text():  # printed once the API and the worker are ready
            assert serve.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, "serve did not come up in 90 s:\n" + out.read_text()[-3000:]
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        children = _descendants(serve.pid)
        assert len(children) >= 2, children  # uvicorn and celery
        assert not _port_is_free(port)

        started = time.monotonic()
        serve.send_signal(signum)
        assert serve.wait(45) == 0, out.read_text()[-3000:]
        took = time.monotonic() - started
    finally:
        for pid in [serve.pid, *children]:  # leave nothing behind when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        serve.wait()
    assert took < 40, took  # within the grace period (30 s) plus the polling
    assert [pid for pid in children if _alive(pid)] == []
    assert _port_is_free(port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert f"{signal.Signals(signum).name}: stopping the API and the worker" in out.read_text()


def test_signals_request_a_stop_and_a_second_one_hurries(tmp_path):
    stack = EmbeddedStack(tmp_path / "home")
    before = signal.getsignal(signal.SIGHUP)
    with stack.stop_on_signals():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.01)
        assert stack.stop_signal == signal.SIGHUP and not stack._hurry
        assert stack.wait() is True  # returns at once: a stop was requested
        os.kill(os.getpid(), signal.SIGINT)  # handled, not a KeyboardInterrupt
        time.sleep(0.01)
        assert stack.stop_signal == signal.SIGHUP and stack._hurry
    assert signal.getsignal(signal.SIGHUP) == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def test_stop_kills_a_child_that_ignores_sigterm_and_what_it_started(tmp_path):
    stack = EmbeddedStack(tmp_path / "home")
    stack._spawn("stubborn", ["-c", STUBBORN])
    stack._spawn("polite", ["-c", "import time; time.sleep(600)"])
    log = stack.log_dir / "stubborn.log"
    deadline = time.monotonic() + 20
    while not log.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(log.read_text().split()[0])
    stubborn, polite = stack.processes
    assert stack.running()
    started = time.monotonic()
    stack.stop(grace=1.0)
    assert 0.9 < time.monotonic() - started < 10  # waited the grace period for the stubborn one, then killed
    assert stubborn.returncode == -signal.SIGKILL and polite.returncode == -signal.SIGTERM
    assert stack.processes == []
    deadline = time.monotonic() + 5
    while _alive(grandchild):  # it inherited SIGTERM ignored: only the group's SIGKILL ends it
        assert time.monotonic() < deadline, "the grandchild survived"
        time.sleep(0.02)
