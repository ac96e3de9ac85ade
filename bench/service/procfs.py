"""Machine and process figures from /proc: the CPU model, a process's CPU time, sampled peak RSS."""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path


def machine() -> dict:
    """The CPU this ran on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version()}


def _status_kib(pid: int, field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status in KiB (None off Linux or when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """Polls a process's resident set size every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.baseline = self.peak = self._read()
        self.samples = 0
        self.hwm: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Reset the kernel's high-water mark too, so VmHWM afterwards is the exact peak (not sampled).
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False

    def _read(self) -> int:
        kib = _status_kib(self.pid, "VmRSS")
        if kib is None:
            raise RuntimeError(f"cannot read the RSS of process {self.pid}")
        return kib * 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            kib = _status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.peak = max(self.peak, kib * 1024)
                self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())
        hwm = _status_kib(self.pid, "VmHWM") if self.hwm_reset else None
        self.hwm = hwm * 1024 if hwm is not None else None
