"""A short-lived cache of API key → tenant, sparing one database query per request.

Off by default (``DIFFTUNE_AUTH_CACHE_SECONDS=0``); when an operator turns it on, a key revoked by
another process stops working within ``ttl`` seconds. Unknown keys are never cached.
"""

from __future__ import annotations

import threading
import time

from core.tables import Tenant


class TenantCache:
    """Thread-safe TTL map from a key's secret to its (detached) tenant row."""

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000):
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[float, Tenant]] = {}
        self._lock = threading.Lock()

    def get(self, secret: str) -> Tenant | None:
        with self._lock:
            entry = self._entries.get(secret)
            if entry is None or entry[0] < time.monotonic():
                self._entries.pop(secret, None)
                return None
            return entry[1]

    def put(self, secret: str, tenant: Tenant) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[secret] = (time.monotonic() + self.ttl, tenant)

    def clear(self) -> None:
        """Forget every entry (a key was revoked through this process)."""
        with self._lock:
            self._entries.clear()
