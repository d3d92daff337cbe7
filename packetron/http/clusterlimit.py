"""`rate_limit_scope="cluster"`: a route's request rate counted in the global data store.

Every worker (and, with Redis, every machine) counts into one key per route, so
`max_requests_per_second` is the cap for the whole server. Each request costs one atomic
update in the store (a short SQLite transaction, or a few Redis round trips); routes
with the default per-worker scope never touch it.

When the store fails (Redis down, a full disk), the limiter fails open by default:
requests are served rather than refused, and a warning is logged at most once per
interval. With the server option `rate_limit_store_failure="closed"` they get 429 instead.
"""
from __future__ import annotations

import time
from typing import Callable

from packetron.errors import GlobalDataDisabled
from packetron.globaldata import FixedWindowRateCounter, GlobalData
from packetron.log import server_logger

__all__ = ["ClusterRateLimiter", "WARN_INTERVAL_SECONDS"]

WARN_INTERVAL_SECONDS = 10.0


class ClusterRateLimiter:
    """Same interface as FixedWindowRateLimiter (`allow(now)`), counted cluster-wide."""

    __slots__ = ("limit", "key", "fail_open", "_store", "_counter", "_warned_at")

    def __init__(self, limit: int, key: str, store: Callable[[], GlobalData],
                 fail_open: bool = True) -> None:
        if limit <= 0:
            raise ValueError("max_requests_per_second must be a positive integer")
        self.limit = limit
        self.key = key
        self.fail_open = fail_open
        self._store = store  # opened lazily, in the worker that first needs it
        self._counter: FixedWindowRateCounter | None = None
        self._warned_at = -WARN_INTERVAL_SECONDS

    def allow(self, now: float) -> bool:
        """Count one request; False when this second's cluster-wide quota is spent.

        `now` (the loop's clock) is ignored: windows must agree between processes and
        machines, so they follow the wall clock.
        """
        try:
            counter = self._counter
            if counter is None:
                counter = self._counter = FixedWindowRateCounter(self._store(),
                                                                 prefix="packetron:rate:")
            return counter.allow(self.key, self.limit, 1.0, time.time())
        except GlobalDataDisabled:
            raise
        except Exception as exc:  # the store failed: open (serve) or closed (429)
            if now - self._warned_at >= WARN_INTERVAL_SECONDS:
                self._warned_at = now
                server_logger.warning("cluster rate limit of %s cannot count (%s): %s",
                                      self.key, exc, "serving" if self.fail_open else "refusing")
            return self.fail_open
