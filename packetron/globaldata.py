"""Cross-process key/value store behind `server.set/get/update_global_data`.

Three backends share one small interface (`GlobalDataBackend`):

- `SQLiteGlobalData` (the default): one SQLite file, by default under the temp
  directory, shared by every worker and every server that uses the same path.
- `RedisGlobalData`: a Redis server, for state shared by several machines.
- `DisabledGlobalData`: `ServerFlags.NO_GLOBAL_DATA`; every data call raises
  `GlobalDataDisabled` and nothing is stored anywhere.

Values are JSON: what is read back is what `json.loads` gives (a tuple comes back
as a list, an integer dict key as a string). `update` is an atomic
read-modify-write: however many processes update one key at once, no update is
lost. The API is synchronous, so plain-function handlers can use it; each call
is one short local transaction (SQLite) or a few round trips (Redis).
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import tempfile
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeAlias
from urllib.parse import urlsplit

from packetron.errors import ConfigError, GlobalDataDisabled, PacketronError

if TYPE_CHECKING:  # pragma: no cover - the redis package is an optional extra
    from redis import Redis

__all__ = [
    "GlobalData",
    "GlobalDataBackend",
    "SQLiteGlobalData",
    "RedisGlobalData",
    "DisabledGlobalData",
    "FixedWindowRateCounter",
    "open_global_data",
    "default_global_data_path",
    "DEFAULT_DIRECTORY_NAME",
    "DEFAULT_FILE_NAME",
    "DEFAULT_BUSY_TIMEOUT_SECONDS",
    "DEFAULT_REDIS_PREFIX",
]

# A JSON document: None, bool, int, float, str, list or dict with str keys. Spelled
# `Any` because a recursive union would reject `list[int]` (lists are invariant).
JsonValue: TypeAlias = Any

# The directory name Packetron uses in the temp directory, kept so both can be found
# in the same place.
DEFAULT_DIRECTORY_NAME = ".packetroninternal"
DEFAULT_FILE_NAME = "globaldata.sqlite3"
# How long a writer waits for another process's transaction before giving up with
# "database is locked". Transactions here last microseconds, so reaching this means a
# stuck process, and an error beats a request that hangs forever.
DEFAULT_BUSY_TIMEOUT_SECONDS = 10.0
# Keeps packetron's keys apart from anything else stored in a shared Redis.
DEFAULT_REDIS_PREFIX = "packetron:globaldata:"

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})

# Compare-and-set, run atomically by Redis: write ARGV[3] only if the key still
# holds what the caller read (ARGV[1] = "1" and the bytes ARGV[2]; "0" = absent).
# Returns 1 if written, 0 if another client got there first.
_REDIS_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
    if current ~= ARGV[2] then return 0 end
elseif current then
    return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""


# ---------------------------------------------------------------- JSON values


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"global data keys must be str, got {type(key).__name__}")
    return key


def _encode(key: str, value: JsonValue) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, and other readers of a shared
    # Redis (or of the SQLite file) would choke on them.
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"global data value for key {key!r} must be JSON-serializable "
            f"(None, bool, int, float, str, list, dict with str keys): {exc}"
        ) from None


def _decode(raw: str | bytes) -> JsonValue:
    return json.loads(raw)


# ---------------------------------------------------------------- interface


class GlobalDataBackend(Protocol):
    """What every global-data backend provides; this is the contract they share.

    All methods are synchronous. Keys are any `str`. Besides what is listed, every
    data method raises `TypeError` for a non-str key, `PacketronError` once the
    store is closed, and the backend's own error when its storage fails
    (`sqlite3.OperationalError`, `redis.RedisError`).
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


# ---------------------------------------------------------------- SQLite


def default_global_data_path() -> str:
    """Return the default SQLite file: `<tempdir>/.packetroninternal/globaldata.sqlite3`.

    Returns:
        An absolute path; nothing is created.
    """
    return os.path.join(tempfile.gettempdir(), DEFAULT_DIRECTORY_NAME, DEFAULT_FILE_NAME)


def _prepare_private_directory(directory: str) -> None:
    """Create `directory` (mode 0700) or check that an existing one is ours.

    The temp directory is shared by every user of the machine. Another user could
    create the directory first, or put a symlink there, and so read or plant our
    data; an existing directory is therefore only used if we own it.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the global data directory {directory!r}: {exc}") from None
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory!r} is not a directory (a symlink or file is in the way)")
    geteuid = getattr(os, "geteuid", None)  # absent on Windows, where %TEMP% is per user
    if geteuid is not None and st.st_uid != geteuid():
        raise ConfigError(
            f"{directory!r} belongs to another user; pass an explicit global data path"
        )


# Connections inherited over fork() are kept referenced here, so the child never
# closes them: SQLite's "How To Corrupt An SQLite Database File" (section 2.6) says
# not to use in a child a connection opened before fork(), and closing is a use (it
# may checkpoint the WAL the parent is still writing through).
_INHERITED_CONNECTIONS: list[sqlite3.Connection] = []
_LIVE_SQLITE_STORES: weakref.WeakSet[SQLiteGlobalData] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    for store in list(_LIVE_SQLITE_STORES):
        store._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_after_fork)


class SQLiteGlobalData:
    """Global data in one SQLite file (WAL mode), shared by every process using it.

    The connection is opened on first use and opened again in a forked child (the
    process id is checked on every call), so a store created before workers are
    forked works in each of them. Calls from several threads are serialized.

    Args:
        path: The database file. Default: `default_global_data_path()`, whose
            directory is created with mode 0700 (and must belong to this user).
        busy_timeout: Seconds a call waits for another process's write
            transaction before raising `sqlite3.OperationalError`.

    Raises:
        ConfigError: The directory cannot be created or is not safely ours.
    """

    def __init__(
        self, path: str | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS
    ) -> None:
        if busy_timeout <= 0 or not math.isfinite(busy_timeout):
            raise ConfigError(f"busy_timeout must be a positive number of seconds, got {busy_timeout!r}")
        if path is None:
            path = default_global_data_path()
            _prepare_private_directory(os.path.dirname(path))
        else:
            path = os.path.abspath(os.fspath(path))
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                raise ConfigError(f"the directory of the global data file does not exist: {directory!r}")
        self.path: str = path
        self.busy_timeout: float = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        _LIVE_SQLITE_STORES.add(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # A 'spawn' child gets the configuration and opens its own connection.
        return (_reopen_sqlite, (self.path, self.busy_timeout))

    def __repr__(self) -> str:
        return f"SQLiteGlobalData({self.path!r})"

    def _connection(self) -> sqlite3.Connection:
        # Caller holds self._lock.
        if self._closed:
            raise PacketronError("the global data store is closed")
        pid = os.getpid()
        if pid != self._pid:
            if self._conn is not None:
                _INHERITED_CONNECTIONS.append(self._conn)
                self._conn = None
            self._pid = pid
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; update() issues its own
        # BEGIN IMMEDIATE. check_same_thread=False: self._lock serializes threads.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            # WAL: readers never block the writer and the writer never blocks readers.
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL under WAL: commits stay atomic and durable across process crashes;
            # only a power loss can drop the last commits. Skips an fsync per commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS globaldata"
                " (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def set(self, key: str, value: JsonValue) -> None:
        """See `GlobalDataBackend.set`; one autocommitted statement."""
        encoded = _encode(_check_key(key), value)
        with self._lock:
            self._connection().execute(
                "INSERT INTO globaldata (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, encoded),
            )

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """See `GlobalDataBackend.get`."""
        _check_key(key)
        with self._lock:
            row = self._connection().execute(
                "SELECT value FROM globaldata WHERE key = ?", (key,)
            ).fetchone()
        return default if row is None else _decode(row[0])

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """See `GlobalDataBackend.update`; `fn` runs once, inside the write lock.

        Raises:
            sqlite3.OperationalError: Another process held the write lock for
                `busy_timeout` seconds.
        """
        _check_key(key)
        with self._lock:
            conn = self._connection()
            # IMMEDIATE takes the write lock before reading. A plain BEGIN would read
            # under a shared lock, and two processes could both read the same value;
            # the second to commit would then fail with SQLITE_BUSY (or, without a
            # transaction, silently overwrite the first).
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT value FROM globaldata WHERE key = ?", (key,)
                ).fetchone()
                new = fn(default if row is None else _decode(row[0]))
                conn.execute(
                    "INSERT INTO globaldata (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, _encode(key, new)),
                )
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT may already have rolled back by itself.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return new

    def delete(self, key: str) -> bool:
        """See `GlobalDataBackend.delete`."""
        _check_key(key)
        with self._lock:
            cursor = self._connection().execute("DELETE FROM globaldata WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def close(self) -> None:
        """Close this process's connection; later calls raise. Idempotent.

        A connection inherited from a parent process is left alone (see
        `_INHERITED_CONNECTIONS`). The file stays, shared with other processes.
        """
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True


def _reopen_sqlite(path: str, busy_timeout: float) -> SQLiteGlobalData:
    return SQLiteGlobalData(path, busy_timeout=busy_timeout)


# ---------------------------------------------------------------- Redis


class RedisGlobalData:
    """Global data in Redis, for servers on several machines.

    Each key is stored as a Redis string holding JSON, under `prefix + key`. The
    client is redis-py's, whose connection pool re-creates its connections in a
    forked child by itself.

    Args:
        url: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or
            `unix:///path/to/socket`.
        prefix: Prepended to every key.

    Raises:
        ConfigError: The `redis` package is missing or the URL is invalid.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_REDIS_PREFIX) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "a redis:// global data URL needs the 'redis' package "
                "(pip install 'packetron[redis]')"
            ) from None
        try:
            # No I/O here: redis-py connects on the first command.
            self._client: Redis = redis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {url!r}: {exc}") from None
        # Only hashes the script; it is loaded on first use (and again after a
        # server restart, which forgets loaded scripts).
        self._compare_and_set = self._client.register_script(_REDIS_CAS_SCRIPT)
        self.url: str = url
        self.prefix: str = prefix
        self._closed = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_redis, (self.url, self.prefix))

    def __repr__(self) -> str:
        # The URL may carry a password; show only where it points.
        parts = urlsplit(self.url)
        return f"RedisGlobalData('{parts.scheme}://{parts.hostname or ''}{parts.path}')"

    def _name(self, key: str) -> str:
        if self._closed:
            raise PacketronError("the global data store is closed")
        return self.prefix + _check_key(key)

    def set(self, key: str, value: JsonValue) -> None:
        """See `GlobalDataBackend.set`."""
        name = self._name(key)
        self._client.set(name, _encode(key, value))

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """See `GlobalDataBackend.get`."""
        raw = self._client.get(self._name(key))
        return default if raw is None else _decode(raw)

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """See `GlobalDataBackend.update`; `fn` may run more than once.

        Optimistic: GET the key, compute `fn` here, then write with a Lua
        compare-and-set that succeeds only if the key still holds what was read;
        otherwise start over. `fn` is arbitrary Python, so it cannot run inside
        Redis; the script only guards the write. This takes two round trips,
        where WATCH / GET / MULTI-SET-EXEC takes three (measured: 1.4x to 1.5x
        the updates per second). Comparing values rather than watching the key lets
        an A -> B -> A change in between go unnoticed, which is harmless: `fn`
        sees only the value, and that value is exactly what the key holds when
        the new one is written.

        Raises:
            redis.RedisError: The server is unreachable or refused a command.
        """
        name = self._name(key)
        # No retry limit: a compare-and-set only fails because another client's
        # write succeeded, so the cluster as a whole always progresses.
        while True:
            raw = self._client.get(name)
            new = fn(default if raw is None else _decode(raw))
            encoded = _encode(key, new)
            seen = (b"0", b"") if raw is None else (b"1", raw)
            if self._compare_and_set(keys=[name], args=[*seen, encoded]):
                return new

    def delete(self, key: str) -> bool:
        """See `GlobalDataBackend.delete`."""
        return bool(self._client.delete(self._name(key)))

    def close(self) -> None:
        """Close the client and its connection pool; later calls raise. Idempotent."""
        if not self._closed:
            self._closed = True
            self._client.close()


def _reopen_redis(url: str, prefix: str) -> RedisGlobalData:
    return RedisGlobalData(url, prefix=prefix)


# ---------------------------------------------------------------- disabled


class DisabledGlobalData:
    """The backend of `ServerFlags.NO_GLOBAL_DATA`: stores nothing, anywhere.

    Every data call raises `GlobalDataDisabled`; `close()` does nothing, so a
    server can close its store without asking which kind it has.
    """

    _MESSAGE = (
        "global data is disabled (the server was started with ServerFlags.NO_GLOBAL_DATA); "
        "{op}({key!r}) stores and reads nothing"
    )

    def _refuse(self, op: str, key: object) -> GlobalDataDisabled:
        return GlobalDataDisabled(self._MESSAGE.format(op=op, key=key))

    def set(self, key: str, value: JsonValue) -> None:
        """Raises: GlobalDataDisabled, always."""
        raise self._refuse("set", key)

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """Raises: GlobalDataDisabled, always."""
        raise self._refuse("get", key)

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """Raises: GlobalDataDisabled, always (`fn` is not called)."""
        raise self._refuse("update", key)

    def delete(self, key: str) -> bool:
        """Raises: GlobalDataDisabled, always."""
        raise self._refuse("delete", key)

    def close(self) -> None:
        """Does nothing."""

    def __repr__(self) -> str:
        return "DisabledGlobalData()"


# ---------------------------------------------------------------- facade


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
    if scheme in _REDIS_SCHEMES:
        return RedisGlobalData(url)
    if scheme == "sqlite" and url.startswith("sqlite://"):
        # sqlite:///abs/path -> "/abs/path"; "sqlite://" alone means the default file.
        return SQLiteGlobalData(url[len("sqlite://"):] or None)
    raise ConfigError(
        f"unsupported global data url {url!r}: expected redis://, rediss://, unix:// or sqlite:///"
    )


# ---------------------------------------------------------------- rate counter


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
