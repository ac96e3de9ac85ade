"""What every part of the service benchmark shares: sizes, default endpoints, progress logging."""

from __future__ import annotations

import os
import sys

MIB = 1024**2
DEFAULT_PG_ADMIN = os.environ.get("DIFFTUNE_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_BROKER = os.environ.get("DIFFTUNE_BENCH_BROKER", "redis://127.0.0.1:6379/14")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
