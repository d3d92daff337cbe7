"""`SQLiteGlobalData`: global data in one SQLite file shared by every local process.

The default backend. One file, by default under the temp directory, shared by every
worker and every server that uses the same path; WAL mode, so readers and the writer
never block each other, and `update` is one `BEGIN IMMEDIATE` transaction.
"""
from __future__ import annotations

import math
import os
import sqlite3
import tempfile
import threading
import time
import weakref
from typing import Any, Callable, TypeAlias

from packetron.errors import ConfigError, GlobalDataUnavailable, PacketronError
from packetron.globaldata.files import (
    SIDE_FILE_SUFFIXES,
    prepare_private_directory,
    secure_database_files,
)
from packetron.globaldata.outage import UNAVAILABLE_ERRNOS, OutageLog
from packetron.globaldata.values import JsonValue, check_key, decode, encode
from packetron.log import server_logger

__all__ = [
    "SQLiteGlobalData",
    "default_global_data_path",
    "DEFAULT_DIRECTORY_NAME",
    "DEFAULT_FILE_NAME",
    "DEFAULT_BUSY_TIMEOUT_SECONDS",
]

# The directory name Packetron uses in the temp directory, kept so both can be found
# in the same place.
DEFAULT_DIRECTORY_NAME = ".packetroninternal"
DEFAULT_FILE_NAME = "globaldata.sqlite3"
# How long a writer waits for another process's transaction before giving up with
# "database is locked". Transactions here last microseconds, so reaching this means a
# stuck process, and an error beats a request that hangs forever.
DEFAULT_BUSY_TIMEOUT_SECONDS = 10.0
# Opening retries a step that found the file locked after these many seconds, doubling up
# to the cap, until busy_timeout has passed: short, since the holder's step is short too.
_OPEN_RETRY_FIRST_DELAY = 0.001
_OPEN_RETRY_MAX_DELAY = 0.05
# SQLITE_BUSY and SQLITE_LOCKED, whatever their extended code (BUSY_RECOVERY, ...).
_BUSY_CODES = frozenset({5, 6})
# SQLite's primary result codes that mean the file cannot be written or opened now:
# SQLITE_IOERR (10, a failing disk, or one that filled while a page was written),
# SQLITE_FULL (13, the disk is full) and SQLITE_CANTOPEN (14, no file descriptor left,
# or the folder is not writable). SQLite rolls the statement back on each of them, so
# the file stays whole and works again once there is room; SQLITE_CORRUPT, NOTADB and
# BUSY are left to the caller as they are (they do not pass by themselves).
_UNAVAILABLE_CODES = frozenset({10, 13, 14})
_SQLITE_IOERR = 10
# What a data call inspects on its way out (see _raise_unavailable).
_FAILURES = (sqlite3.OperationalError, OSError, GlobalDataUnavailable)
# A file that was created anew and then found at the path by another stat: opening
# gives up after this many tries (someone replaces the file in a loop).
_OPEN_ATTEMPTS = 3

# (st_dev, st_ino): which file a path names; None when nothing is there.
FileId: TypeAlias = "tuple[int, int] | None"


def _file_id(path: str) -> FileId:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def default_global_data_path() -> str:
    """Return the default SQLite file: `<tempdir>/.packetroninternal/globaldata.sqlite3`.

    Returns:
        An absolute path; nothing is created.
    """
    return os.path.join(tempfile.gettempdir(), DEFAULT_DIRECTORY_NAME, DEFAULT_FILE_NAME)


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

    Its files are private: the database and its `-wal` / `-shm` get mode 0600
    whoever created them (see `files`).

    A full disk (or no file descriptor left, or a failing disk) makes data calls raise
    `GlobalDataUnavailable`; SQLite rolls the failed statement back, so the file stays
    whole, and calls work again as soon as there is room. The outage is logged once,
    then at most every OUTAGE_LOG_INTERVAL_SECONDS, and its end once.

    Args:
        path: The database file. Default: `default_global_data_path()`, whose
            directory is created with mode 0700 (and must belong to this user; there,
            in the shared temp directory, symlinks and other users' files are refused).
        busy_timeout: Seconds a call waits for another process's write
            transaction before raising `sqlite3.OperationalError`.

    Raises:
        ConfigError: The directory of an explicit path does not exist, or the default
            one cannot be created.
        UnsafeGlobalDataPath: The default directory is a symlink or another user's
            (a data call raises it too for such a file in it).
    """

    def __init__(
        self, path: str | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_SECONDS
    ) -> None:
        if busy_timeout <= 0 or not math.isfinite(busy_timeout):
            raise ConfigError(f"busy_timeout must be a positive number of seconds, got {busy_timeout!r}")
        # The default file is in the temp directory every user shares: checked strictly.
        self._shared_location = path is None
        if path is None:
            path = default_global_data_path()
            prepare_private_directory(os.path.dirname(path))
        else:
            path = os.path.abspath(os.fspath(path))
            directory = os.path.dirname(path)
            if not os.path.isdir(directory):
                raise ConfigError(f"the directory of the global data file does not exist: {directory!r}")
        self.path: str = path
        self.busy_timeout: float = busy_timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        # What the path, its -wal and its -shm named when the connection was opened.
        self._file_ids: tuple[FileId, ...] = ()
        self._pid = os.getpid()
        self._closed = False
        self._outage = OutageLog(f"global data (SQLite file {path})")
        _LIVE_SQLITE_STORES.add(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # A 'spawn' child gets the configuration and opens its own connection.
        return (_reopen_sqlite, (self.path, self.busy_timeout, self._shared_location))

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
        conn = self._conn
        # One stat per call: a file deleted or replaced under us (a temp cleaner, an rm,
        # a restore) would otherwise take this process's writes where nobody reads them.
        if conn is not None and _file_id(self.path) != self._file_ids[0]:
            self._drop_changed_file(conn)
            conn = None
        if conn is None:
            conn = self._conn = self._open()
        return conn

    def _drop_changed_file(self, conn: sqlite3.Connection) -> None:
        """Close the connection to a database file no longer at the path; reopen follows.

        Closing is safe: SQLite notices that the file moved, so it neither checkpoints
        nor deletes the -wal / -shm by name (they may be the new file's already). Those
        of the old file, still at the path, are removed here: a new database must not
        start from another one's log.
        """
        self._conn = None
        conn.close()
        for suffix, old_id in zip(SIDE_FILE_SUFFIXES, self._file_ids[1:]):
            name = self.path + suffix
            if old_id is not None and _file_id(name) == old_id:
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
        server_logger.warning("global data file %s was deleted or replaced; opening the file "
                              "now at that path (data written to the old one is not in it)",
                              self.path)

    def _open(self) -> sqlite3.Connection:
        """Connect to the file at the path, making it (and its folder) first if needed.

        Raises:
            UnsafeGlobalDataPath: see `files.secure_database_files`.
            ConfigError: the folder of an explicit path no longer exists.
            sqlite3.Error: the file is not a database, or stayed locked.
        """
        directory = os.path.dirname(self.path)
        if self._shared_location:
            prepare_private_directory(directory)  # made again if it was deleted
        elif not os.path.isdir(directory):
            raise ConfigError(f"the directory of the global data file no longer exists: "
                              f"{directory!r}")
        for _ in range(_OPEN_ATTEMPTS):
            # Before SQLite creates anything: the database file is created (or set) 0600
            # here, and SQLite gives the -wal and -shm it creates the database file's mode.
            secure_database_files(self.path, shared_location=self._shared_location)
            before = _file_id(self.path)
            conn = self._connect()
            file_ids = tuple(_file_id(self.path + suffix) for suffix in ("", *SIDE_FILE_SUFFIXES))
            if file_ids[0] == before:
                self._file_ids = file_ids
                return conn
            conn.close()  # replaced while we opened it: which one we got is unclear
        raise PacketronError(f"the global data file {self.path!r} keeps being replaced")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; update() issues its own
        # BEGIN IMMEDIATE. check_same_thread=False: self._lock serializes threads.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            # First of all, before any statement that may meet another process's lock
            # (connect() sets it too; this does not depend on how the driver does it).
            conn.execute(f"PRAGMA busy_timeout = {max(1, round(self.busy_timeout * 1000))}")
            self._initialize(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialize(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL and create the table, retrying while another process holds a lock.

        The busy timeout does not cover the switch to WAL: it reads the file, then
        upgrades to a write lock, and SQLite answers "database is locked" at once
        (without waiting) when another connection is upgrading too, as happens when
        several workers open a fresh file together. So each step is retried here,
        with a short backoff, until `busy_timeout` has passed.

        Raises:
            sqlite3.OperationalError: still locked after busy_timeout, or any other
                failure (not retried).
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = _OPEN_RETRY_FIRST_DELAY
        while True:
            try:
                # WAL: readers never block the writer and the writer never blocks readers.
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL under WAL: commits stay atomic and durable across process
                # crashes; only a power loss can drop the last commits. Skips an fsync
                # per commit.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS globaldata"
                    " (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID"
                )
                return
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if code is None or code & 0xFF not in _BUSY_CODES \
                        or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, _OPEN_RETRY_MAX_DELAY)

    def set(self, key: str, value: JsonValue) -> None:
        """See `GlobalDataBackend.set`; one autocommitted statement."""
        encoded = encode(check_key(key), value)
        try:
            with self._lock:
                self._connection().execute(
                    "INSERT INTO globaldata (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, encoded),
                )
        except _FAILURES as exc:
            self._raise_unavailable(exc)
            raise
        if self._outage.failing:
            self._outage.recovered()

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """See `GlobalDataBackend.get`."""
        check_key(key)
        try:
            with self._lock:
                row = self._connection().execute(
                    "SELECT value FROM globaldata WHERE key = ?", (key,)
                ).fetchone()
        except _FAILURES as exc:
            self._raise_unavailable(exc)
            raise
        if self._outage.failing:
            self._outage.recovered()
        return default if row is None else decode(row[0])

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """See `GlobalDataBackend.update`; `fn` runs once, inside the write lock.

        Raises:
            sqlite3.OperationalError: Another process held the write lock for
                `busy_timeout` seconds.
            GlobalDataUnavailable: The file cannot be written now (a full disk, no
                file descriptor left, a failing disk); nothing changed.
        """
        check_key(key)
        try:
            new = self._update(key, fn, default)
        except _FAILURES as exc:
            self._raise_unavailable(exc)
            raise
        if self._outage.failing:
            self._outage.recovered()
        return new

    def _update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue
    ) -> JsonValue:
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
                new = fn(default if row is None else decode(row[0]))
                conn.execute(
                    "INSERT INTO globaldata (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, encode(key, new)),
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
        check_key(key)
        try:
            with self._lock:
                cursor = self._connection().execute("DELETE FROM globaldata WHERE key = ?",
                                                    (key,))
        except _FAILURES as exc:
            self._raise_unavailable(exc)
            raise
        if self._outage.failing:
            self._outage.recovered()
        return cursor.rowcount > 0

    def _raise_unavailable(self, exc: BaseException) -> None:
        """Raise GlobalDataUnavailable (from `exc`) if `exc` means the file cannot be
        written or opened now (a full disk, no file descriptor, a failing disk); return
        for any other error, which the caller re-raises as it is."""
        if isinstance(exc, GlobalDataUnavailable):  # from files.py: already worded
            self._outage.failed(str(exc))
            return
        if isinstance(exc, sqlite3.OperationalError):
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None or code & 0xFF not in _UNAVAILABLE_CODES:
                return
            if code & 0xFF == _SQLITE_IOERR:
                # After an I/O error the connection's view of the file (its -shm mapping)
                # is suspect: the next call opens a fresh one.
                self._forget_connection()
            reason = str(exc)
        elif isinstance(exc, OSError) and exc.errno in UNAVAILABLE_ERRNOS:
            reason = exc.strerror or str(exc)
        else:
            return
        self._outage.failed(reason)
        raise GlobalDataUnavailable(f"global data (SQLite) is unavailable: {reason}") from exc

    def _forget_connection(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass

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


def _reopen_sqlite(path: str, busy_timeout: float, shared_location: bool) -> SQLiteGlobalData:
    store = SQLiteGlobalData(path, busy_timeout=busy_timeout)
    if shared_location:
        # The same file, checked as strictly as in the process that pickled it.
        prepare_private_directory(os.path.dirname(path))
        store._shared_location = True
    return store
