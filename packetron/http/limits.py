"""Per-route request-rate limiting: a fixed one-second window per endpoint per worker.

Pure apart from the clock, which the caller passes in, so tests need no sleeping.
"""
from __future__ import annotations

__all__ = ["FixedWindowRateLimiter"]


class FixedWindowRateLimiter:
    """Allows `limit` requests in each whole second; the rest get 429 with Retry-After: 1."""

    __slots__ = ("limit", "_window", "_count")

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("max_requests_per_second must be a positive integer")
        self.limit = limit
        self._window = -1
        self._count = 0

    def allow(self, now: float) -> bool:
        """Count one request at time `now` (seconds); False when this second is full."""
        window = int(now)
        if window != self._window:
            self._window = window
            self._count = 0
        if self._count >= self.limit:
            return False
        self._count += 1
        return True
