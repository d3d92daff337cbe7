"""`GlobalData`, the server's view of a store, and `open_global_data`, which picks the backend."""
from __future__ import annotations

from typing import Any, Callable
from urllib.parse import urlsplit

from packetron.errors import ConfigError
from packetron.globaldata.backend import GlobalDataBackend
from packetron.globaldata.disabled import DisabledGlobalData
from packetron.globaldata.redis import REDIS_SCHEMES, RedisGlobalData
from packetron.globaldata.sqlite import SQLiteGlobalData
from packetron.globaldata.values import JsonValue

__all__ = ["GlobalData", "open_global_data"]


class GlobalData:
    """The server's view of a store, under the names of the public API.

    A server holds one and delegates `server.set_global_data` and friends to it.
    Usable as a context manager; picklable (a 'spawn' child reconnects).
    `GlobalData(url, path=..., disabled=...)` is `open_global_data(...)`.

    Args:
        url: See `open_global_data`.
        path: See `open_global_data`.
        disabled: See `open_global_data`.
        backend: Use this `GlobalDataBackend` instead (then give nothing else).

    Raises:
        ConfigError: As `open_global_data`, or `backend` given with other options.
    """

    __slots__ = ("backend",)

    def __init__(
        self,
        url: str | None = None,
        *,
        path: str | None = None,
        disabled: bool = False,
        backend: GlobalDataBackend | None = None,
    ) -> None:
        if backend is None:
            backend = _open_backend(url, path, disabled)
        elif url is not None or path is not None or disabled:
            raise ConfigError("pass either a global data backend or url/path/disabled, not both")
        self.backend: GlobalDataBackend = backend

    def set_global_data(self, key: str, value: JsonValue) -> None:
        """Store `value` (JSON) under `key`. See `GlobalDataBackend.set`.

        Raises:
            TypeError: `key` is not a str or `value` is not JSON-serializable.
            GlobalDataDisabled: The server runs with NO_GLOBAL_DATA.
        """
        self.backend.set(key, value)

    def get_global_data(self, key: str, default: JsonValue = None) -> JsonValue:
        """Return the value under `key`, or `default` if absent.

        Raises:
            TypeError: `key` is not a str.
            GlobalDataDisabled: The server runs with NO_GLOBAL_DATA.
        """
        return self.backend.get(key, default)

    def update_global_data(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """Atomically store `fn(current)` under `key` and return it; no update is lost.

        `fn` must be quick and free of side effects (Redis may call it again).

        Raises:
            TypeError: `key` is not a str or the new value is not JSON-serializable.
            GlobalDataDisabled: The server runs with NO_GLOBAL_DATA.
        """
        return self.backend.update(key, fn, default)

    def close(self) -> None:
        """Release this process's connection. Idempotent."""
        self.backend.close()

    def __enter__(self) -> GlobalData:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_wrap_backend, (self.backend,))

    def __repr__(self) -> str:
        return f"GlobalData({self.backend!r})"


def open_global_data(
    url: str | None = None, *, path: str | None = None, disabled: bool = False
) -> GlobalData:
    """Open the global data store a server uses.

    Args:
        url: None for SQLite; `redis://...`, `rediss://...` or `unix://...` for
            Redis; `sqlite:///absolute/path` is the same as `path=`.
        path: The SQLite file (default `default_global_data_path()`).
        disabled: `ServerFlags.NO_GLOBAL_DATA`: every call raises
            `GlobalDataDisabled`; `url` and `path` are ignored and nothing is
            created.

    Returns:
        A `GlobalData`. No connection is made until the first call.

    Raises:
        ConfigError: Unknown URL scheme, both `url` and `path` given, Redis
            requested without the `redis` package, or an unusable directory.
    """
    return GlobalData(backend=_open_backend(url, path, disabled))


def _wrap_backend(backend: GlobalDataBackend) -> GlobalData:
    return GlobalData(backend=backend)


def _open_backend(url: str | None, path: str | None, disabled: bool) -> GlobalDataBackend:
    if disabled:
        return DisabledGlobalData()
    if url is None:
        return SQLiteGlobalData(path)
    if path is not None:
        raise ConfigError("pass either a global data url or a path, not both")
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return RedisGlobalData(url)
    if scheme == "sqlite" and url.startswith("sqlite://"):
        # sqlite:///abs/path -> "/abs/path"; "sqlite://" alone means the default file.
        return SQLiteGlobalData(url[len("sqlite://"):] or None)
    raise ConfigError(
        f"unsupported global data url {url!r}: expected redis://, rediss://, unix:// or sqlite:///"
    )
