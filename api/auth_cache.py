"""A short-lived cache of API key → tenant, sparing one database query per request.

A revocation anywhere clears it at once (``core.revocations``); unknown keys are never cached.
"""

from __future__ import annotations

import threading
import time

from core.tables import Tenant


class TenantCache:
    """Thread-safe TTL map from a key's secret to its (detached) tenant row."""

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000):
        self.ttl, self.max_entries = ttl, max_entries
        self.epoch: int | None = None  # the revocation counter the entries were cached under
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
        """Forget every entry (a key was revoked)."""
        with self._lock:
            self._entries.clear()

    def sync(self, epoch: int | None) -> bool:
        """Drop every entry when the revocation counter moved; False when it is unknown (no caching)."""
        if epoch != self.epoch:
            self.clear()
            self.epoch = epoch
        return epoch is not None
