"""`GlobalDataBackend`: the interface every global-data backend provides."""
from __future__ import annotations

from typing import Callable, Protocol

from packetron.globaldata.values import JsonValue

__all__ = ["GlobalDataBackend"]


class GlobalDataBackend(Protocol):
    """What every global-data backend provides; this is the contract they share.

    All methods are synchronous. Keys are any `str`. Besides what is listed, every
    data method raises `TypeError` for a non-str key, `PacketronError` once the
    store is closed, `GlobalDataUnavailable` (a 503 when not caught) while the storage
    cannot be reached or written (Redis down or not answering within its timeout, the
    SQLite file's disk full, no file descriptor left; the backend's own error is its
    `__cause__`, and calls work again once the storage is back), and the backend's own
    error for anything else (`sqlite3.DatabaseError` for a file that is not a database,
    `sqlite3.OperationalError` when a lock is held past the busy timeout).
    """

    def set(self, key: str, value: JsonValue) -> None:
        """Store `value` under `key`, replacing any previous value.

        Raises:
            TypeError: `value` is not JSON-serializable (nothing is stored).
        """

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """Return the value under `key`.

        Returns:
            The stored value (a stored null is None), or `default` when absent.
        """

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """Atomically replace the value under `key` with `fn(current)`.

        No update is lost, however many processes update the key at once. `fn`
        must be quick, must not use the store, and may run more than once (Redis
        retries it), so it should have no side effects.

        Args:
            key: The key.
            fn: Gets the current value (`default` when the key is absent) and
                returns the new one.
            default: What `fn` gets when the key is absent.

        Returns:
            What `fn` returned (on the attempt that was stored).

        Raises:
            TypeError: The new value is not JSON-serializable (nothing changes).
            Exception: Whatever `fn` raises (nothing changes).
        """

    def delete(self, key: str) -> bool:
        """Remove `key`.

        Returns:
            True if the key existed.
        """

    def close(self) -> None:
        """Release this process's connections; later data calls raise. Idempotent."""
