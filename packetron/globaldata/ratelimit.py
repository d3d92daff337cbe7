"""`FixedWindowRateCounter`: a cluster-wide rate limit counted in the global data store."""
from __future__ import annotations

import math

from packetron.errors import ConfigError
from packetron.globaldata.backend import GlobalDataBackend
from packetron.globaldata.facade import GlobalData
from packetron.globaldata.values import JsonValue

__all__ = ["FixedWindowRateCounter"]


def _fixed_window_step(state: JsonValue, window: int) -> dict[str, int]:
    # Pure: the counter after one more hit in `window`; a stale window starts over.
    if isinstance(state, dict) and state.get("window") == window:
        return {"window": window, "count": int(state["count"]) + 1}
    return {"window": window, "count": 1}


class FixedWindowRateCounter:
    """A cluster-wide fixed-window rate limit, counted in the global data store.

    Every process (and, with Redis, every machine) counts into the same key, so
    `limit` holds for the whole cluster, unlike the per-worker
    `max_requests_per_second`. Hits past the limit are still counted; they are
    refused until the next window. Each distinct key keeps one small entry, so
    keys should come from a bounded set (an endpoint, not a client address).

    Args:
        store: A `GlobalData` or any backend.
        prefix: Prepended to each key, to keep counters apart from other data.
    """

    def __init__(self, store: GlobalData | GlobalDataBackend, *, prefix: str = "ratelimit:") -> None:
        self._backend: GlobalDataBackend = store.backend if isinstance(store, GlobalData) else store
        self.prefix = prefix

    def allow(self, key: str, limit: int, window_seconds: float, now: float) -> bool:
        """Count one hit for `key` and say whether it is within `limit`.

        Args:
            key: What is limited (e.g. a route path).
            limit: Hits allowed per window, >= 0.
            window_seconds: Window length; windows start at multiples of it.
            now: The current time in seconds (e.g. `time.time()`; the same clock
                on every machine).

        Returns:
            True if this hit is among the first `limit` of its window.

        Raises:
            ConfigError: `limit` < 0 or `window_seconds` <= 0.
        """
        if limit < 0:
            raise ConfigError(f"limit must be >= 0, got {limit!r}")
        if not window_seconds > 0:
            raise ConfigError(f"window_seconds must be > 0, got {window_seconds!r}")
        window = math.floor(now / window_seconds)
        state = self._backend.update(
            self.prefix + key, lambda current: _fixed_window_step(current, window)
        )
        return bool(state["count"] <= limit)
