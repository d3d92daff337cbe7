"""What the backends share about their storage going away: which failures mean "not
available now" (as opposed to a bug or a corrupt store), and a log that says so once per
interval instead of once per call."""
from __future__ import annotations

import errno
import threading
import time

from packetron.log import server_logger

__all__ = ["OutageLog", "RetryGate", "UNAVAILABLE_ERRNOS", "OUTAGE_LOG_INTERVAL_SECONDS",
           "RETRY_FIRST_DELAY_SECONDS", "RETRY_MAX_DELAY_SECONDS", "UNAVAILABLE_REPLIES"]

# OS errors that pass once the operator (or time) makes room: a full disk or quota, no
# file descriptor or memory left, a failing disk, a read-only remount after errors.
UNAVAILABLE_ERRNOS = frozenset({
    errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EMFILE, errno.ENFILE,
    errno.ENOMEM, errno.EIO, errno.EROFS,
})
# While a store stays unavailable, one warning per this many seconds (with a count of
# the failed calls in between): every request may fail, the log must not grow as fast.
OUTAGE_LOG_INTERVAL_SECONDS = 10.0
# After a failed call, calls fail at once (no connection attempt) for a while, so a Redis
# that is away costs one timeout per period, not one per request: RETRY_FIRST_DELAY
# doubling to RETRY_MAX_DELAY, and at least twice what the failed call took (a worker
# then spends at most a third of its time waiting on a Redis that does not answer).
RETRY_FIRST_DELAY_SECONDS = 0.05
RETRY_MAX_DELAY_SECONDS = 1.0
# Error replies that mean "not now" rather than "wrong command": out of memory, a
# read-only replica, a primary that is down, a script running, the dataset loading.
UNAVAILABLE_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "BUSY", "LOADING", "TRYAGAIN",
                       "CLUSTERDOWN")


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


class RetryGate:
    """Calls to a remote store (Redis) that fail for want of it close the gate for a
    while (see RETRY_FIRST_DELAY_SECONDS); calls made meanwhile fail at once. The
    reasons it gives name what failed, never an address or a password.

    Args:
        log: where the outage is reported.
        timeout: the calls' timeout, quoted in the reason of a timed-out call.
        timeout_errors: the exceptions that mean a call timed out.
        reply_error: the exception of an error reply (UNAVAILABLE_REPLIES mean "not now").
    """

    __slots__ = ("log", "timeout", "timeout_errors", "reply_error", "retry_at", "_delay",
                 "_reason")

    def __init__(self, log: OutageLog, timeout: float,
                 timeout_errors: tuple[type[BaseException], ...],
                 reply_error: type[BaseException]) -> None:
        self.log = log
        self.timeout = timeout
        self.timeout_errors = timeout_errors
        self.reply_error = reply_error
        self.retry_at = 0.0  # calls fail at once until this monotonic time; 0.0: open
        self._delay = RETRY_FIRST_DELAY_SECONDS
        self._reason = ""

    def refusal(self) -> str | None:
        """None when a call may be tried; else why not (the refused call is counted)."""
        retry_at = self.retry_at
        if retry_at:
            now = time.monotonic()
            if now < retry_at:
                self.log.failed(self._reason)  # counted; logged once per interval
                return f"{self._reason} (next attempt in {retry_at - now:.2f} s)"
        return None

    def failed(self, exc: BaseException, started: float) -> str | None:
        """A call begun at monotonic time `started` raised `exc`: why the store is
        unavailable (and the gate closes), or None when `exc` is an error reply that
        says nothing about availability (the caller re-raises it)."""
        if isinstance(exc, self.timeout_errors):
            reason = f"no answer within {self.timeout:g} s"
        elif isinstance(exc, self.reply_error):
            if not str(exc).startswith(UNAVAILABLE_REPLIES):
                return None
            reason = f"it refused the command ({str(exc).split(' ', 1)[0]})"
        else:
            reason = "cannot connect, or the connection was lost"
        now = time.monotonic()
        self._reason = reason
        # Wait at least twice what the failed call took (see RETRY_FIRST_DELAY_SECONDS).
        self.retry_at = now + max(self._delay, 2 * (now - started))
        self._delay = min(self._delay * 2, RETRY_MAX_DELAY_SECONDS)
        self.log.failed(f"{reason}: {exc or type(exc).__name__}")
        return reason

    def succeeded(self) -> None:
        """A call worked: open the gate (and report the recovery) if it was closed."""
        if self.retry_at:
            self.retry_at = 0.0
            self._delay = RETRY_FIRST_DELAY_SECONDS
            self.log.recovered()
