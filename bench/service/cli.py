"""Service benchmarks on loopback: ``python -m bench.service [latency|upload|history|all|abuse]``.

The command line: start the service once, run the chosen measurements against it, print one JSON object
per measurement on stdout. See :mod:`bench.service` for what is measured and how.
"""

from __future__ import annotations

import argparse
import json

from bench.service.common import DEFAULT_BROKER, DEFAULT_PG_ADMIN, MIB
from bench.service.history import measure_history
from bench.service.latency import measure_latency
from bench.service.server import service
from bench.service.upload import measure_upload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", choices=("latency", "upload", "history", "all", "abuse"), default="all",
                        help="abuse: a hostile tenant and a flaky cluster on the embedded stack (bench.service.abuse)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="client connections (default 32)")
    parser.add_argument("--pools", type=int, default=8, help="httpx pools they are split over (default 8)")
    parser.add_argument("--upload-mb", type=float, default=1024, help="archive size in MiB (default 1024)")
    parser.add_argument("--history-jobs", type=int, default=1000, help="jobs seeded for history (default 1000)")
    parser.add_argument("--history-points", type=int, default=100_000,
                        help="metric points of one job for history (default 100000)")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN, help="database to CREATE DATABASE from")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER, help="Celery broker of the API")
    args = parser.parse_args(argv)
    if args.which == "abuse":
        from bench.service.abuse import measure_abuse

        print(json.dumps(measure_abuse()), flush=True)
        return 0
    upload_bytes = int(args.upload_mb * MIB) if args.which in ("upload", "all") else 0
    with service(
        pg_admin_url=args.pg_admin_url, broker_url=args.broker_url, upload_bytes=upload_bytes
    ) as svc:
        if args.which in ("latency", "all"):
            figures = measure_latency(
                svc,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                connections=args.connections,
                pools=args.pools,
            )
            print(json.dumps(figures), flush=True)
        if args.which in ("upload", "all"):
            print(json.dumps(measure_upload(svc, size_mib=args.upload_mb)), flush=True)
        if args.which in ("history", "all"):  # last: it adds 1,000 jobs to the database
            print(json.dumps(measure_history(svc, jobs=args.history_jobs, points=args.history_points)), flush=True)
    return 0
