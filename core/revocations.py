"""Revoked API keys stop working at once in every API process, although each caches key lookups.

A counter in Redis (the one that holds the rate-limit counters) changes whenever a key is revoked,
by the API or ``difftune keys revoke``; an API process that sees it change drops its key cache.
Without Redis (embedded mode, ``memory://``) there is no way to tell other processes, so the API
does not cache keys at all.
"""

from __future__ import annotations

import logging
import time

from core.settings import Settings

log = logging.getLogger(__name__)
EPOCH_KEY = "difftune:api-keys:revocations"


def shared_state_url(settings: Settings) -> str:
    """Where counters shared by every API process live: the configured URL, else the broker's Redis,
    else this process only (``memory://``)."""
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


class Revocations:
    """The revocation counter; ``None`` from :meth:`epoch` means "unknown: do not trust a cache".

    An API process reads it at most every ``every`` seconds (a Redis round trip per request would
    cost more than the database query the cache spares), so a key revoked in another process stops
    working within that time; one revoked through this process, at once."""

    def __init__(self, url: str, every: float = 0.25):
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) \
            if url.startswith(("redis://", "rediss://")) else None
        self.every = every
        self._seen: tuple[float, int | None] = (float("-inf"), None)

    @property
    def shared(self) -> bool:
        """Whether other processes can learn of a revocation (else keys must not be cached)."""
        return self._redis is not None

    def epoch(self) -> int | None:
        if self._redis is None:
            return None
        now = time.monotonic()
        if now - self._seen[0] < self.every:
            return self._seen[1]
        try:
            value = int(self._redis.get(EPOCH_KEY) or 0)
        except Exception as err:  # noqa: BLE001 - an outage only costs the cache
            log.warning("revocation counter unavailable (%s); not caching API keys", type(err).__name__)
            value = None
        self._seen = (now, value)
        return value

    def announce(self) -> None:
        """A key was revoked: every API process drops its cache before its next request."""
        if self._redis is not None:
            try:
                self._redis.incr(EPOCH_KEY)
            except Exception as err:  # noqa: BLE001 - then caches expire within auth_cache_seconds
                log.warning("could not announce a revocation (%s); cached keys expire within "
                            "DIFFTUNE_AUTH_CACHE_SECONDS", type(err).__name__)
