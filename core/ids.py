"""Public ids: a type prefix and a time-ordered random part (``job_0193ab…``)."""

from __future__ import annotations

import secrets
import time

PREFIXES = {
    "tenant": "ten",
    "api_key": "key",
    "dataset": "ds",
    "base_model": "bm",
    "job": "job",
    "checkpoint": "ckpt",
    "sample": "smp",
    "webhook_delivery": "whd",
}


def new_id(kind: str) -> str:
    """A new id of ``kind``; ids sort by creation time (millisecond resolution)."""
    return f"{PREFIXES[kind]}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def has_prefix(kind: str, value: str) -> bool:
    """Whether ``value`` looks like an id of ``kind``."""
    return value.startswith(PREFIXES[kind] + "_")
