"""Service benchmarks on loopback: ``python -m bench.service [latency|upload|all]``.

Each measurement prints one JSON object on stdout (progress goes to stderr):

* ``latency`` — ``GET /v1/jobs/{id}`` driven open-loop at a fixed rate (requests leave on a fixed
  timetable and latency is counted from the *scheduled* send time, so a stalled server cannot hide
  its queueing delay: no coordinated omission). Percentiles, achieved rate, errors, CPU use.
* ``upload`` — a generated, uncompressed class-folder tar of ``--upload-mb`` MiB streamed to
  ``POST /v1/datasets``; throughput and the server process's peak RSS growth while it is handled.

The server is the real API (``uvicorn --factory api.main:app``, one process, no access log) in a
subprocess on a free port of 127.0.0.1, against a fresh PostgreSQL database
(``difftune_bench_<random>``, migrated, dropped at the end), the Redis broker and a local-directory
store in a temporary folder. The client runs in this process (httpx, one connection pool). Sizes are
MiB (2**20 bytes); times are milliseconds or seconds as the field names say. No torch is imported.
"""

from __future__ import annotations

from bench.service.cli import main
from bench.service.common import DEFAULT_BROKER, DEFAULT_PG_ADMIN, MIB, log
from bench.service.latency import TARGET_P99_MS, measure_latency, percentile
from bench.service.procfs import RssSampler, cpu_seconds, machine
from bench.service.server import REPO, Service, free_port, service
from bench.service.upload import (
    CLASSES,
    DISTINCT_IMAGES,
    IMAGE_SIDE,
    TARGET_RSS_GROWTH_MIB,
    make_archive,
    measure_upload,
    noise_png,
)

__all__ = [
    "CLASSES",
    "DEFAULT_BROKER",
    "DEFAULT_PG_ADMIN",
    "DISTINCT_IMAGES",
    "IMAGE_SIDE",
    "MIB",
    "REPO",
    "TARGET_P99_MS",
    "TARGET_RSS_GROWTH_MIB",
    "RssSampler",
    "Service",
    "cpu_seconds",
    "free_port",
    "log",
    "machine",
    "main",
    "make_archive",
    "measure_latency",
    "measure_upload",
    "noise_png",
    "percentile",
    "service",
]
