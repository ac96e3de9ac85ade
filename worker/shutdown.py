"""A worker asked to shut down (SIGTERM: a deploy, a preempted GPU) lets its job checkpoint at the
next step and go back to the queue, instead of losing the steps since the last periodic checkpoint.

Celery's warm shutdown announces itself with ``worker_shutting_down`` (connected in ``worker.app``);
torchrun ranks of a multi-GPU job, other processes, learn it from a marker file in the job's folder.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_requested = threading.Event()
_markers: set[Path] = set()
_lock = threading.Lock()


def request_shutdown() -> None:
    """Ask the running job to stop at the next step; tell its other processes through their markers."""
    _requested.set()
    with _lock:
        for marker in _markers:
            marker.touch()


def shutdown_requested(marker: Path | None = None) -> bool:
    """Whether this worker (or, with ``marker``, the worker that started this process) is shutting down."""
    return _requested.is_set() or (marker is not None and marker.exists())


@contextmanager
def shutdown_marker(marker: Path) -> Iterator[Path]:
    """Touch ``marker`` if a shutdown is requested while the block runs (and remove it afterwards)."""
    marker.unlink(missing_ok=True)
    with _lock:
        _markers.add(marker)
    if _requested.is_set():
        marker.touch()
    try:
        yield marker
    finally:
        with _lock:
            _markers.discard(marker)
        marker.unlink(missing_ok=True)


def reset() -> None:
    """Forget a request (tests, or a worker process that keeps serving)."""
    _requested.clear()
