"""What the backends share about their storage going away: which failures mean "not
available now" (as opposed to a bug or a corrupt store), and a log that says so once per
interval instead of once per call."""
from __future__ import annotations

import errno
import threading
import time

from packetron.log import server_logger

__all__ = ["OutageLog", "UNAVAILABLE_ERRNOS", "OUTAGE_LOG_INTERVAL_SECONDS"]

# OS errors that pass once the operator (or time) makes room: a full disk or quota, no
# file descriptor or memory left, a failing disk, a read-only remount after errors.
UNAVAILABLE_ERRNOS = frozenset({
    errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EMFILE, errno.ENFILE,
    errno.ENOMEM, errno.EIO, errno.EROFS,
})
# While a store stays unavailable, one warning per this many seconds (with a count of
# the failed calls in between): every request may fail, the log must not grow as fast.
OUTAGE_LOG_INTERVAL_SECONDS = 10.0


class OutageLog:
    """Logs a store's outage: a warning when it starts, then at most one per interval,
    and one line when a call succeeds again. Thread-safe; `failing` is the flag the
    data calls read (one attribute load) to learn that a success must be reported."""

    __slots__ = ("what", "failing", "_since", "_last", "_suppressed", "_lock")

    def __init__(self, what: str) -> None:
        self.what = what  # e.g. "global data (SQLite file /tmp/x)": no password, ever
        self.failing = False
        self._since = 0.0
        self._last = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def failed(self, reason: str) -> None:
        """A call failed because the store is unavailable (`reason` says why)."""
        now = time.monotonic()
        with self._lock:
            if not self.failing:
                self.failing = True
                self._since = self._last = now
                self._suppressed = 0
                server_logger.warning("%s is unavailable: %s", self.what, reason)
                return
            if now - self._last < OUTAGE_LOG_INTERVAL_SECONDS:
                self._suppressed += 1
                return
            self._last = now
            failed, self._suppressed = self._suppressed + 1, 0
            server_logger.warning("%s is still unavailable after %.0f s (%d calls failed "
                                  "since the last warning): %s", self.what, now - self._since,
                                  failed, reason)

    def recovered(self) -> None:
        """A call succeeded after failures."""
        with self._lock:
            if not self.failing:
                return
            self.failing = False
            server_logger.warning("%s works again after %.1f s", self.what,
                                  time.monotonic() - self._since)
