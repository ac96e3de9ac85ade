"""``python -m bench.service``: a small, fast run of both measurements (shape and sanity, not speed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.service import percentile

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("DIFFTUNE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0


def test_bench_all_small_run():
    command = [
        sys.executable, "-m", "bench.service", "all", "--rate", "50", "--seconds", "1", "--warmup", "0.3",
        "--upload-mb", "5", "--history-jobs", "20", "--history-points", "3000", "--pg-admin-url", PG_ADMIN_URL,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    figures = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [f["measurement"] for f in figures] == ["latency", "upload", "history"]
    latency, upload, history = figures

    assert latency["requests"] == 50 and latency["errors"] == 0, latency
    ms = latency["latency_ms"]
    assert 0 < ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"], ms
    assert latency["achieved_rps"] > 0 and latency["duration_s"] >= 0.9
    assert isinstance(latency["meets_target"], bool)
    assert latency["machine"]["cpus"] >= 1

    assert upload["status"] == 201, upload["error"]
    archive = upload["archive"]
    assert 4.5 <= archive["mib"] <= 5.5 and archive["images"] >= 4
    assert upload["dataset"]["layout"] == "class_folders"
    assert upload["dataset"]["num_images"] == archive["images"]
    assert upload["dataset"]["num_classes"] == archive["classes"]
    assert isinstance(upload["rss_growth_mib"], int | float) and upload["rss_growth_mib"] >= 0
    assert upload["rss_peak_mib"] >= upload["rss_baseline_mib"] > 0
    assert upload["throughput_mib_s"] > 0 and upload["total_s"] >= upload["send_s"] >= 0

    assert history["jobs"] == 21 and history["metric_points"] == 3000
    metrics = history["pages"]["metrics"]
    assert metrics["points"] <= 1000 and metrics["total_points"] == 3000 and metrics["downsampled"]
    assert history["pages"]["jobs_list"]["p50_ms"] > 0 and isinstance(history["pages"]["job"]["ok"], bool)
    for page in ("dashboard_jobs", "dashboard_job"):  # the web dashboard's HTML pages, over a signed-in session
        assert history["pages"][page]["p95_ms"] > 0 and history["pages"][page]["html_bytes"] > 1000

    # The throw-away database is gone.
    name = re.search(r"database (difftune_bench_[0-9a-f]+)", result.stderr).group(1)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
