"""What a CLI run keeps and prints: metrics.jsonl across a resume, and progress lines that fit 80 columns."""

from __future__ import annotations

import json

from models.run_log import MetricsLog, train_line
from models.trainer import TrainProgress


def progress(step: int, **kw) -> TrainProgress:
    values = dict(step=step, total_steps=10_000_000, loss=123.456789, loss_target=99.123456, loss_bank=0.012345,
                  images_per_sec=12345.678, eta_seconds=9_999_999.0, learning_rate=1e-4)
    return TrainProgress(**{**values, **kw})


def test_a_resumed_run_replaces_the_steps_it_logs_again(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 6):  # a run logged steps 1-5, then died; its last checkpoint was step 3
        log(progress(step))
    resumed = MetricsLog(tmp_path)
    resumed(progress(4, loss=0.5))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == 0.5


def test_progress_lines_fit_80_columns_even_with_large_figures():
    line = train_line(progress(9_999_999))
    assert len(line) <= 80 and line.startswith("step 9999999/10000000 loss 123.4568")
    assert "b 0.0123" in train_line(progress(5)) and " b " not in train_line(progress(5, loss_bank=None))
