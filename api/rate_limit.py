"""Per-API-key request rate limits with the ``limits`` library (sliding window counters in Redis, so
every API process shares them; in memory for a single embedded process)."""

from __future__ import annotations

import logging
import math
import time

from limits import parse_many
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)
NAMESPACE = "difftune-rate"


class RateLimiter:
    """``retry_after(identity)``: None while ``identity`` is within every limit, else the seconds to wait."""

    def __init__(self, spec: str, url: str):
        self.limits = parse_many(spec)
        self.url = url
        self._strategy = SlidingWindowCounterRateLimiter(storage_from_string(url))

    def retry_after(self, identity: str) -> int | None:
        """Count one request of ``identity``; a Redis outage lets requests through (and is logged)."""
        try:
            for limit in self.limits:
                if not self._strategy.hit(limit, NAMESPACE, identity):
                    reset, _ = self._strategy.get_window_stats(limit, NAMESPACE, identity)
                    return max(1, math.ceil(reset - time.time()))
        except Exception as err:  # noqa: BLE001 - the limiter must not take the API down with it
            log.warning("rate limiter unavailable (%s); request allowed", type(err).__name__)
        return None

    def describe(self) -> str:
        return "; ".join(str(limit) for limit in self.limits)
