"""What a CLI run shows and keeps: progress bars on a terminal, one line every few steps elsewhere (logs,
CI, ``nohup``), and ``OUT/metrics.jsonl``, the series the service serves as ``GET /v1/jobs/{id}/metrics``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LINE_EVERY_S = 10.0  # seconds between progress lines when the output is not a terminal
WIDTH = 80


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_line(p) -> str:
    """One progress line of at most 80 columns: step, losses (target/bank), throughput, ETA."""
    bank = f" b {p.loss_bank:.4f}" if p.loss_bank is not None else ""
    line = (f"step {p.step}/{p.total_steps} loss {p.loss:.4f} (t {p.loss_target:.4f}{bank}) "
            f"{p.images_per_sec:.1f} img/s eta {_clock(p.eta_seconds)}")
    return line[:WIDTH]


class RunDisplay:
    """``phase`` and ``train`` callbacks for ``run_training``: rich bars on a terminal, else a line every
    ``LINE_EVERY_S`` seconds (and at the end of each phase); use it as a context manager."""

    def __init__(self, console: Console):
        self.console, self.tasks = console, {}
        self.bars = console.is_terminal
        self.progress = Progress(TextColumn("{task.description:>7}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)
        self._last: dict[str, float] = {}

    def __enter__(self) -> RunDisplay:
        if self.bars:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bars:
            self.progress.__exit__(*exc)

    def _due(self, name: str, done: int, total: int) -> bool:
        now = time.monotonic()
        if done >= total or now - self._last.get(name, -LINE_EVERY_S) >= LINE_EVERY_S:
            self._last[name] = now
            return True
        return False

    def phase(self, name: str, done: int, total: int) -> None:
        if not self.bars:
            if self._due(name, done, total):
                self.console.print(f"{name} {done}/{total}", highlight=False, markup=False)
            return
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, info="")
        self.progress.update(self.tasks[name], completed=done)

    def train(self, p) -> None:
        if not self.bars:
            if self._due("train", p.step, p.total_steps):
                self.console.print(train_line(p), highlight=False, markup=False, soft_wrap=True)
            return
        bank = f" bank {p.loss_bank:.3f}" if p.loss_bank is not None else ""
        info = f"loss {p.loss:.3f}{bank} {p.images_per_sec:.0f}/s"
        if "train" not in self.tasks:
            self.tasks["train"] = self.progress.add_task("train", total=p.total_steps, info=info)
        self.progress.update(self.tasks["train"], completed=p.step, info=info)


class MetricsLog:
    """Appends every logged step's figures to ``OUT/metrics.jsonl``; a resumed run first drops the lines
    of steps it is about to log again (those after its checkpoint)."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / "metrics.jsonl"
        self._started = False

    def __call__(self, p) -> None:
        if not self._started:
            self._started = True
            self._truncate_from(p.step)
        with self.path.open("a") as f:
            f.write(json.dumps(p.as_dict()) + "\n")

    def _truncate_from(self, step: int) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] < step]
        self.path.write_text("".join(line + "\n" for line in kept))
