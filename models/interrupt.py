"""Stop a run cleanly on a signal: the first SIGTERM / SIGINT asks it to stop after the current step
(the trainer then writes a checkpoint of that step), a second one exits at once.

Preemptible machines send SIGTERM and allow a grace period; Ctrl-C sends SIGINT::

    with StopSignals() as stop:
        result = run_training(config, ..., should_stop=stop.requested)
    if result.fit.stopped and stop.signum is not None:
        sys.exit(stop.exit_code)  # 143 after SIGTERM, 130 after SIGINT

Handlers can only be installed from the main thread; elsewhere the context installs nothing and
:meth:`StopSignals.request` is the only way to set it. Nothing happens on import.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


def _to_stderr(message: str) -> None:
    """Write straight to file descriptor 2: safe inside a signal handler, unlike print or logging,
    which may be in the middle of writing to the same stream."""
    try:
        os.write(2, (message + "\n").encode(errors="replace"))
    except OSError:
        pass


class StopSignals:
    """A context manager that turns ``signals`` into a stop request and restores the previous
    handlers on exit.

    ``requested()`` (pass it as ``should_stop``) turns true at the first signal; ``signum`` /
    ``signal_name`` say which one and ``exit_code`` is the conventional 128 + number. With
    ``exit_on_second`` a second signal ends the process at once with that code (no cleanup).
    ``announce`` receives a one-line message per signal (stderr by default; None for silence).
    """

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS, *, exit_on_second: bool = True,
                 announce: Callable[[str], None] | None = _to_stderr):
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.exit_on_second = exit_on_second
        self.announce = announce
        self.signum: int | None = None
        self._event = threading.Event()
        self._previous: dict[signal.Signals, Any] = {}

    # --- the request ------------------------------------------------------------------------------
    def requested(self) -> bool:
        """Whether a stop was asked for (cheap: call it every step)."""
        return self._event.is_set()

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as if ``signum`` had arrived (e.g. from a Celery shutdown hook)."""
        if self.signum is None:
            self.signum = int(signum)
        self._event.set()

    @property
    def signal_name(self) -> str | None:
        """``"SIGTERM"``, ``"SIGINT"``…; None when no stop was asked for."""
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the shells' convention; 0 if none."""
        return 128 + self.signum if self.signum is not None else 0

    # --- handlers ---------------------------------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested():
            if self.exit_on_second:
                if self.announce:
                    self.announce(f"received {name} again: exiting now, without a checkpoint")
                os._exit(self.exit_code)
            return
        self.request(signum)
        if self.announce:
            again = "; send it again to exit at once" if self.exit_on_second else ""
            self.announce(f"received {name}: stopping after the current step and writing a checkpoint{again}")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            log.warning("StopSignals used outside the main thread: no signal handlers installed")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (a handler installed outside Python becomes the default)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def resend(self) -> None:
        """Deliver the received signal again, to the handlers restored on exit (e.g. Celery's, so a
        worker that lent its SIGTERM to a training run still shuts down afterwards)."""
        if self._previous:
            raise RuntimeError("resend() after leaving the with-block, when the previous handlers are back")
        if self.signum is not None:
            signal.raise_signal(self.signum)
