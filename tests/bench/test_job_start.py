"""``bench.job_start``: time from POST /v1/jobs to the worker's first training step (embedded mode)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_time_to_first_step_benchmark_reports_ordered_phases(tmp_path):
    from bench.job_start import time_to_first_step

    out = time_to_first_step(tmp_path, bank_size=8)
    phases = [out[k] for k in ("queued_s", "claimed_s", "inputs_ready_s", "first_step_s")]
    assert all(p is not None for p in phases) and phases == sorted(phases)
    assert 0 < out["post_answered_s"] < 30 and out["first_step_s"] < 120
