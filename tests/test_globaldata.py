"""Tests of packetron.globaldata: the SQLite and Redis backends run one suite.

The Redis half starts its own redis-server on a free loopback port and skips when
redis-server is not installed (tests/prepare.sh installs it).
"""
from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from packetron.errors import ConfigError, GlobalDataDisabled, PacketronError, UnsafeGlobalDataPath
from packetron.globaldata import (
    DEFAULT_DIRECTORY_NAME,
    DEFAULT_FILE_NAME,
    DisabledGlobalData,
    FixedWindowRateCounter,
    GlobalData,
    RedisGlobalData,
    SQLiteGlobalData,
    _fixed_window_step,
    open_global_data,
)

PROCESSES = 4
INCREMENTS_PER_PROCESS = 2_500
# Generous: 10,000 updates take about 0.3 s on SQLite and 3.5 s on Redis on 2 cores.
CHILD_DEADLINE_SECONDS = 40.0
REDIS_START_DEADLINE_SECONDS = 10.0


# ---------------------------------------------------------------- redis-server


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # redis-server has no "pick a port and tell me": --port 0 turns TCP off. So
        # take a port the OS says is free; if another process grabs it before
        # redis binds, redis exits and the next attempt uses a new port.
        failures: list[str] = []
        for attempt in range(3):
            self.port = _free_port()
            log = self.workdir / f"redis-{attempt}.log"
            with open(log, "wb") as log_file:
                self.proc = subprocess.Popen(
                    [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--daemonize", "no",
                     "--dir", str(self.workdir)],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            if self._wait_ready():
                return
            self.stop()
            failures.append(log.read_text(errors="replace")[-500:])
        raise RuntimeError("redis-server did not start:\n" + "\n---\n".join(failures))

    def _wait_ready(self) -> bool:
        import redis

        assert self.proc is not None
        deadline = time.monotonic() + REDIS_START_DEADLINE_SECONDS
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    pass
                # Waiting on the process doubles as the poll interval and notices a
                # server that exited (port taken, bad option) at once.
                try:
                    self.proc.wait(timeout=0.02)
                    return False
                except subprocess.TimeoutExpired:
                    pass
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, 15)  # SIGTERM: with --save "" redis exits at once
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, 9)
                proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH; run `bash tests/prepare.sh` to install it")
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GlobalData]:
    """An empty store of each backend."""
    if request.param == "sqlite":
        opened = open_global_data(path=str(tmp_path / "globaldata.sqlite3"))
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        _flush(server.url)
        opened = open_global_data(server.url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile.gettempdir() (and so the default SQLite path) at tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------- basic operations


def test_set_then_get_returns_the_value(store: GlobalData) -> None:
    value = {"name": "packetron", "ports": [80, 443], "ratio": 0.5, "ok": True, "none": None}
    store.set_global_data("config", value)
    assert store.get_global_data("config") == value


def test_get_missing_key_returns_default(store: GlobalData) -> None:
    assert store.get_global_data("missing") is None
    assert store.get_global_data("missing", 42) == 42
    assert store.get_global_data("missing", default=[1]) == [1]


def test_stored_null_is_not_replaced_by_default(store: GlobalData) -> None:
    store.set_global_data("k", None)
    assert store.get_global_data("k", "default") is None


def test_set_replaces_previous_value(store: GlobalData) -> None:
    store.set_global_data("k", 1)
    store.set_global_data("k", "two")
    assert store.get_global_data("k") == "two"


def test_values_come_back_as_json_gives_them(store: GlobalData) -> None:
    store.set_global_data("k", {"t": (1, 2), 3: "int key", "é": "ünï"})
    assert store.get_global_data("k") == {"t": [1, 2], "3": "int key", "é": "ünï"}


def test_update_missing_key_starts_from_default(store: GlobalData) -> None:
    assert store.update_global_data("n", lambda v: v + 1, 10) == 11
    assert store.get_global_data("n") == 11


def test_update_passes_current_value_and_returns_new(store: GlobalData) -> None:
    store.set_global_data("list", [1])
    assert store.update_global_data("list", lambda v: v + [2]) == [1, 2]
    assert store.get_global_data("list") == [1, 2]


def test_update_without_default_passes_none(store: GlobalData) -> None:
    seen: list[object] = []

    def fn(current: object) -> str:
        seen.append(current)
        return "set"

    assert store.update_global_data("absent", fn) == "set"
    assert seen == [None]


def test_update_whose_fn_raises_changes_nothing(store: GlobalData) -> None:
    store.set_global_data("k", 1)

    def boom(current: int) -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        store.update_global_data("k", boom)
    assert store.get_global_data("k") == 1
    # The store is still usable (the transaction was rolled back / the WATCH reset).
    assert store.update_global_data("k", lambda v: v + 1) == 2


def test_delete_removes_key_and_reports_whether_it_existed(store: GlobalData) -> None:
    store.set_global_data("k", 1)
    assert store.backend.delete("k") is True
    assert store.get_global_data("k", "gone") == "gone"
    assert store.backend.delete("k") is False


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize("bad", [object(), {1, 2}, b"bytes", math.nan, math.inf, {"x": [object()]}])
def test_set_non_json_value_raises_type_error(store: GlobalData, bad: object) -> None:
    with pytest.raises(TypeError, match="'k' must be JSON-serializable"):
        store.set_global_data("k", bad)
    assert store.get_global_data("k", "absent") == "absent"


def test_update_to_non_json_value_raises_and_keeps_old_value(store: GlobalData) -> None:
    store.set_global_data("k", 1)
    with pytest.raises(TypeError, match="JSON-serializable"):
        store.update_global_data("k", lambda v: {v})
    assert store.get_global_data("k") == 1


def test_non_str_key_raises_type_error(store: GlobalData) -> None:
    with pytest.raises(TypeError, match="keys must be str, got int"):
        store.set_global_data(1, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must be str, got bytes"):
        store.get_global_data(b"k")  # type: ignore[arg-type]


def test_closed_store_refuses_calls_and_close_is_idempotent(store: GlobalData) -> None:
    store.close()
    store.close()
    with pytest.raises(PacketronError, match="closed"):
        store.get_global_data("k")


def test_pickled_store_reopens_on_the_same_data(store: GlobalData) -> None:
    # What a multiprocessing 'spawn' child receives.
    store.set_global_data("k", "shared")
    with pickle.loads(pickle.dumps(store)) as copy:
        assert copy.get_global_data("k") == "shared"
        copy.set_global_data("k", "from copy")
    assert store.get_global_data("k") == "from copy"


# ---------------------------------------------------------------- disabled


def test_disabled_store_raises_on_every_data_call(private_tempdir: Path) -> None:
    store = open_global_data(disabled=True)
    called: list[object] = []
    with pytest.raises(GlobalDataDisabled, match="NO_GLOBAL_DATA"):
        store.set_global_data("k", 1)
    with pytest.raises(GlobalDataDisabled, match=r"get\('k'\)"):
        store.get_global_data("k", 0)
    with pytest.raises(GlobalDataDisabled):
        store.update_global_data("k", called.append)
    with pytest.raises(GlobalDataDisabled):
        store.backend.delete("k")
    store.close()
    assert called == []
    assert isinstance(store.backend, DisabledGlobalData)


def test_disabled_store_creates_no_file(private_tempdir: Path) -> None:
    explicit = private_tempdir / "explicit.sqlite3"
    for store in (open_global_data(disabled=True),
                  open_global_data(path=str(explicit), disabled=True),
                  open_global_data("redis://127.0.0.1:1/0", disabled=True)):
        with pytest.raises(GlobalDataDisabled):
            store.set_global_data("k", 1)
        store.close()
    assert list(private_tempdir.iterdir()) == []


def test_global_data_disabled_is_a_packetron_error() -> None:
    assert issubclass(GlobalDataDisabled, PacketronError)


# ---------------------------------------------------------------- SQLite specifics


def test_default_path_is_private_directory_in_tempdir(private_tempdir: Path) -> None:
    store = open_global_data()
    try:
        assert isinstance(store.backend, SQLiteGlobalData)
        expected = private_tempdir / DEFAULT_DIRECTORY_NAME / DEFAULT_FILE_NAME
        assert store.backend.path == str(expected)
        assert stat.S_IMODE(os.stat(expected.parent).st_mode) == 0o700
        assert not expected.exists()  # opened lazily
        store.set_global_data("k", 1)
        assert expected.exists()
    finally:
        store.close()


def test_default_directory_replaced_by_symlink_is_refused(private_tempdir: Path) -> None:
    elsewhere = private_tempdir / "elsewhere"
    elsewhere.mkdir()
    (private_tempdir / DEFAULT_DIRECTORY_NAME).symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a directory"):
        open_global_data()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _store_files(db: Path) -> list[Path]:
    return [db, Path(f"{db}-wal"), Path(f"{db}-shm")]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: whatever the store does not set itself comes out world-writable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("where", ["default", "explicit"])
def test_store_files_are_private_whatever_the_umask(
    private_tempdir: Path, open_umask: None, where: str
) -> None:
    if where == "default":
        store = open_global_data()
        db = private_tempdir / DEFAULT_DIRECTORY_NAME / DEFAULT_FILE_NAME
    else:
        db = private_tempdir / "explicit.sqlite3"
        store = open_global_data(path=str(db))
    try:
        store.set_global_data("k", 1)  # opens the file: database, -wal and -shm exist now
        assert [_mode(f) for f in _store_files(db)] == [0o600] * 3
        if where == "default":
            assert _mode(db.parent) == 0o700
    finally:
        store.close()


def test_store_files_created_first_by_someone_else_become_private(
    private_tempdir: Path, open_umask: None
) -> None:
    import sqlite3

    directory = private_tempdir / DEFAULT_DIRECTORY_NAME
    directory.mkdir(mode=0o755)
    db = directory / DEFAULT_FILE_NAME
    # An older program (or a bare sqlite3 shell) made the files with mode 0666.
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE t (x)")
        assert [_mode(f) for f in _store_files(db)] == [0o644] * 3
        with open_global_data() as store:
            store.set_global_data("k", 1)
            assert _mode(directory) == 0o700
            assert [_mode(f) for f in _store_files(db)] == [0o600] * 3
    finally:
        other.close()


@pytest.mark.parametrize("name", [DEFAULT_FILE_NAME, DEFAULT_FILE_NAME + "-wal",
                                  DEFAULT_FILE_NAME + "-shm"])
def test_default_store_file_that_is_a_symlink_is_refused(private_tempdir: Path, name: str) -> None:
    directory = private_tempdir / DEFAULT_DIRECTORY_NAME
    directory.mkdir(mode=0o700)
    target = private_tempdir / "planted"
    target.write_bytes(b"")
    (directory / name).symlink_to(target)
    store = open_global_data()
    try:
        with pytest.raises(UnsafeGlobalDataPath, match="is a symlink"):
            store.set_global_data("k", 1)
        assert target.read_bytes() == b""  # nothing was written through the link
    finally:
        store.close()


def test_default_directory_that_is_a_symlink_is_refused_with_its_own_error(
    private_tempdir: Path
) -> None:
    elsewhere = private_tempdir / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (private_tempdir / DEFAULT_DIRECTORY_NAME).symlink_to(elsewhere)
    with pytest.raises(UnsafeGlobalDataPath, match="not a directory but a symlink"):
        open_global_data()
    assert issubclass(UnsafeGlobalDataPath, ConfigError)
    assert _mode(elsewhere) == 0o755  # not followed, not changed
    assert list(elsewhere.iterdir()) == []


NOBODY = 65534


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
@pytest.mark.parametrize("what", ["directory", "database"])
def test_default_store_owned_by_another_user_is_refused(private_tempdir: Path, what: str) -> None:
    directory = private_tempdir / DEFAULT_DIRECTORY_NAME
    directory.mkdir(mode=0o700)
    db = directory / DEFAULT_FILE_NAME
    db.write_bytes(b"")
    os.chown(directory if what == "directory" else db, NOBODY, NOBODY)
    if what == "directory":
        with pytest.raises(UnsafeGlobalDataPath, match="belongs to another user"):
            open_global_data()
        return
    store = open_global_data()
    try:
        with pytest.raises(UnsafeGlobalDataPath, match="belongs to another user"):
            store.set_global_data("k", 1)
        assert db.read_bytes() == b""
    finally:
        store.close()


def test_explicit_path_through_a_symlink_is_the_users_choice(tmp_path: Path) -> None:
    real = tmp_path / "real.sqlite3"
    link = tmp_path / "link.sqlite3"
    link.symlink_to(real)
    with open_global_data(path=str(link)) as store:
        store.set_global_data("k", "through the link")
    with open_global_data(path=str(real)) as store:
        assert store.get_global_data("k") == "through the link"
    assert _mode(real) == 0o600


def test_two_stores_on_one_path_share_data(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    with open_global_data(path=path) as first, open_global_data(f"sqlite://{path}") as second:
        first.set_global_data("k", "v")
        assert second.get_global_data("k") == "v"


def test_sqlite_uses_wal_journal(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "g.sqlite3"
    with open_global_data(path=str(path)) as store:
        store.set_global_data("k", 1)
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            conn.close()


def test_missing_directory_of_explicit_path_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_global_data(path=str(tmp_path / "no" / "such.sqlite3"))


def test_threads_sharing_one_store_lose_no_update(tmp_path: Path) -> None:
    with open_global_data(path=str(tmp_path / "g.sqlite3")) as store:
        def work() -> None:
            for _ in range(250):
                store.update_global_data("n", lambda v: v + 1, 0)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert store.get_global_data("n") == 1_000


def test_read_then_write_loses_an_update(tmp_path: Path) -> None:
    """The interleaving the concurrency test guards against, played step by step.

    Two workers (two connections) both read 0, both write 0 + 1: one increment is
    lost. This is what an unlocked get-then-set does under load.
    """
    path = str(tmp_path / "g.sqlite3")
    worker_a, worker_b = SQLiteGlobalData(path), SQLiteGlobalData(path)
    try:
        worker_a.set("n", 0)
        seen_by_a = worker_a.get("n")
        seen_by_b = worker_b.get("n")
        worker_a.set("n", seen_by_a + 1)
        worker_b.set("n", seen_by_b + 1)
        assert worker_a.get("n") == 1
    finally:
        worker_a.close()
        worker_b.close()


@pytest.mark.parametrize("initial", [None, 1], ids=["absent", "present"])
def test_redis_update_retries_when_key_changes_between_read_and_write(
    redis_server: RedisServer, initial: int | None
) -> None:
    _flush(redis_server.url)
    with open_global_data(redis_server.url) as store, open_global_data(redis_server.url) as other:
        if initial is not None:
            store.set_global_data("k", initial)
        seen: list[object] = []

        def fn(current: int | None) -> int:
            seen.append(current)
            if len(seen) == 1:
                # Another client writes after our read: our write must not land.
                other.set_global_data("k", 100)
            return (current or 0) + 1

        assert store.update_global_data("k", fn) == 101
        assert seen == [initial, 100]
        assert store.get_global_data("k") == 101


# ---------------------------------------------------------------- concurrency


def _increment_many(store: GlobalData, count: int) -> None:
    # Runs in a forked child: the store (and its open connection) was inherited.
    try:
        for _ in range(count):
            store.update_global_data("counter", lambda v: v + 1, 0)
    finally:
        store.close()


def test_concurrent_updates_from_processes_lose_nothing(store: GlobalData) -> None:
    """4 processes x 2,500 update() increments of one key give exactly 10,000.

    The naive read-then-write (`set(k, get(k) + 1)`) run the same way loses most
    of them: measured on a 2-core machine, 3,068 / 3,653 / 2,893 of 10,000 left
    with SQLite and 4,009 / 3,722 with Redis, in 0.3 s and 1 s. `test_read_then_write_loses_an_update`
    shows the interleaving deterministically.
    """
    # Used before forking, so the children inherit an open connection and must
    # open their own (SQLite) or have the pool reset (redis-py).
    store.set_global_data("counter", 0)
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_increment_many, args=(store, INCREMENTS_PER_PROCESS))
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            child.start()
        deadline = time.monotonic() + CHILD_DEADLINE_SECONDS
        for child in children:
            child.join(timeout=max(0.0, deadline - time.monotonic()))
        assert [child.exitcode for child in children] == [0] * PROCESSES
    finally:
        for child in children:
            if child.pid is not None and child.exitcode is None:
                os.kill(child.pid, 9)
                child.join(timeout=10)
            if child.exitcode is not None:
                child.close()
    assert store.get_global_data("counter") == PROCESSES * INCREMENTS_PER_PROCESS
    # The parent's own connection survived its children.
    assert store.update_global_data("counter", lambda v: v + 1) == 10_001


# ---------------------------------------------------------------- file deleted or replaced


def _remove_store_files(db: Path, suffixes: tuple[str, ...] = ("", "-wal", "-shm")) -> None:
    for suffix in suffixes:
        Path(f"{db}{suffix}").unlink()


def _integrity(db: Path) -> str:
    import sqlite3

    check = sqlite3.connect(db)
    try:
        return str(check.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        check.close()


def test_deleted_store_file_is_recreated_by_the_next_call(tmp_path: Path, caplog) -> None:
    db = tmp_path / "g.sqlite3"
    with open_global_data(path=str(db)) as store:
        store.set_global_data("k", "before")
        _remove_store_files(db)  # rm g.sqlite3*, or a temp cleaner
        with caplog.at_level("WARNING", logger="packetron.server"):
            assert store.get_global_data("k", "gone") == "gone"
        assert "deleted or replaced" in caplog.text
        store.set_global_data("k", "after")
        assert [_mode(f) for f in _store_files(db)] == [0o600] * 3
        with open_global_data(path=str(db)) as other:
            assert other.get_global_data("k") == "after"  # it went to the file at the path


def test_deleted_database_file_does_not_revive_its_old_log(tmp_path: Path) -> None:
    # A cleaner that removes only the database file leaves the -wal and -shm: a new
    # database must not be read through the old one's log.
    db = tmp_path / "g.sqlite3"
    with open_global_data(path=str(db)) as store:
        for n in range(50):
            store.set_global_data(f"k{n}", n)
        _remove_store_files(db, ("",))
        assert store.get_global_data("k1", "gone") == "gone"
        assert store.update_global_data("n", lambda v: v + 1, 0) == 1
        assert _integrity(db) == "ok"
    with open_global_data(path=str(db)) as again:
        assert again.get_global_data("k1", "gone") == "gone"
        assert again.get_global_data("n") == 1


def test_replaced_store_file_is_read_by_the_next_call(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite3"
    restored = tmp_path / "backup.sqlite3"
    with open_global_data(path=str(restored)) as backup:
        backup.set_global_data("k", "from the backup")
    with open_global_data(path=str(db)) as store:
        store.set_global_data("k", "before")
        os.replace(restored, db)  # a restore that moves a file into place
        assert store.get_global_data("k") == "from the backup"
        assert store.update_global_data("n", lambda v: v + 1, 0) == 1
        assert _integrity(db) == "ok"
    with open_global_data(path=str(db)) as again:
        assert again.get_global_data("k") == "from the backup"
        assert again.get_global_data("n") == 1


def test_store_file_replaced_by_something_else_fails_clearly_until_removed(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "g.sqlite3"
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a database file" * 100)
    with open_global_data(path=str(db)) as store:
        store.set_global_data("k", 1)
        os.replace(junk, db)
        with pytest.raises(sqlite3.DatabaseError, match="not a database"):
            store.get_global_data("k")
        db.unlink()
        assert store.get_global_data("k", "fresh") == "fresh"  # created anew


def test_deleted_default_directory_is_made_again(private_tempdir: Path) -> None:
    import shutil as _shutil

    directory = private_tempdir / DEFAULT_DIRECTORY_NAME
    with open_global_data() as store:
        store.set_global_data("k", 1)
        _shutil.rmtree(directory)
        store.set_global_data("k", 2)
        assert _mode(directory) == 0o700
        assert _mode(directory / DEFAULT_FILE_NAME) == 0o600
        assert store.get_global_data("k") == 2


def test_deleted_directory_of_an_explicit_path_fails_clearly(tmp_path: Path) -> None:
    import shutil as _shutil

    directory = tmp_path / "data"
    directory.mkdir()
    with open_global_data(path=str(directory / "g.sqlite3")) as store:
        store.set_global_data("k", 1)
        _shutil.rmtree(directory)
        with pytest.raises(ConfigError, match="no longer exists"):
            store.get_global_data("k")
        directory.mkdir()
        assert store.get_global_data("k", "fresh") == "fresh"


# ---------------------------------------------------------------- first use of a new file

FIRST_USE_PROCESSES = 6
FIRST_USE_ROUNDS = 4
FIRST_USE_INCREMENTS = 100


def _open_together_and_increment(path: str, barrier: threading.Barrier, count: int) -> None:
    # Runs in a forked child: every child opens the fresh file at the same moment.
    store = SQLiteGlobalData(path)
    try:
        barrier.wait(timeout=CHILD_DEADLINE_SECONDS)
        for _ in range(count):
            store.update("counter", lambda v: v + 1, 0)
    finally:
        store.close()


def test_processes_opening_a_fresh_file_together_lose_no_update(tmp_path: Path) -> None:
    """Several workers' first calls on a new file: each switches it to WAL at once.

    Before the switch was retried, one of them got "database is locked" from
    `PRAGMA journal_mode=WAL` in about one round in ten on a 2-core machine.
    """
    context = multiprocessing.get_context("fork")
    for round_number in range(FIRST_USE_ROUNDS):
        path = str(tmp_path / f"fresh-{round_number}.sqlite3")
        barrier = context.Barrier(FIRST_USE_PROCESSES)
        children = [
            context.Process(target=_open_together_and_increment,
                            args=(path, barrier, FIRST_USE_INCREMENTS))
            for _ in range(FIRST_USE_PROCESSES)
        ]
        try:
            for child in children:
                child.start()
            deadline = time.monotonic() + CHILD_DEADLINE_SECONDS
            for child in children:
                child.join(timeout=max(0.0, deadline - time.monotonic()))
            assert [child.exitcode for child in children] == [0] * FIRST_USE_PROCESSES
        finally:
            for child in children:
                if child.pid is not None and child.exitcode is None:
                    os.kill(child.pid, 9)
                    child.join(timeout=10)
                if child.exitcode is not None:
                    child.close()
        with open_global_data(path=path) as store:
            assert store.get_global_data("counter") == FIRST_USE_PROCESSES * FIRST_USE_INCREMENTS


def _hold_write_lock(path: Path, seconds: float) -> threading.Timer:
    """Another process's view: a connection holding the write lock on `path` for a while."""
    import sqlite3

    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    def release() -> None:
        other.execute("COMMIT")
        other.close()

    timer = threading.Timer(seconds, release)
    timer.start()
    return timer


def test_first_use_of_a_new_file_waits_for_a_write_lock_held_elsewhere(tmp_path: Path) -> None:
    # The switch to WAL reads, then upgrades its lock; SQLite refuses that upgrade at
    # once, without the busy timeout, while another connection holds the write lock.
    path = tmp_path / "g.sqlite3"
    timer = _hold_write_lock(path, 0.3)
    store = SQLiteGlobalData(str(path))
    try:
        started = time.monotonic()
        assert store.update("n", lambda v: v + 1, 0) == 1
        assert time.monotonic() - started >= 0.25
        assert store.get("n") == 1
    finally:
        timer.join()
        store.close()


def test_first_use_gives_up_once_the_busy_timeout_has_passed(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "g.sqlite3"
    timer = _hold_write_lock(path, 2.0)
    store = SQLiteGlobalData(str(path), busy_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.set("n", 1)
        assert 0.15 <= time.monotonic() - started < 1.5
    finally:
        timer.join()
        store.close()
    with open_global_data(path=str(path)) as later:  # the lock is gone: it works now
        later.set_global_data("n", 1)
        assert later.get_global_data("n") == 1


# ---------------------------------------------------------------- factory


def test_unknown_url_scheme_is_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported global data url"):
        open_global_data("memcached://localhost")


def test_url_and_path_together_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="either"):
        open_global_data("redis://localhost", path=str(tmp_path / "g.sqlite3"))


def test_invalid_redis_url_is_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        open_global_data("redis://localhost:notaport/0")


def test_redis_url_opens_redis_backend_without_connecting() -> None:
    # Port 1 refuses connections; construction must not touch the network.
    store = open_global_data("redis://127.0.0.1:1/0")
    try:
        assert isinstance(store.backend, RedisGlobalData)
    finally:
        store.close()


def test_redis_repr_hides_password() -> None:
    store = open_global_data("redis://user:secret@127.0.0.1:1/0")
    try:
        assert "secret" not in repr(store)
    finally:
        store.close()


def test_global_data_constructor_opens_like_the_factory(tmp_path: Path) -> None:
    # The server builds its store as GlobalData(url=..., path=...).
    path = str(tmp_path / "g.sqlite3")
    with GlobalData(url=None, path=path) as store, open_global_data(path=path) as same:
        assert isinstance(store.backend, SQLiteGlobalData)
        store.set_global_data("k", [1])
        assert same.get_global_data("k") == [1]


class DictBackend:
    """A one-process backend: enough to show GlobalData takes any GlobalDataBackend."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def set(self, key: str, value: object) -> None:
        self.data[key] = value

    def get(self, key: str, default: object = None) -> object:
        return self.data.get(key, default)

    def update(self, key: str, fn: Callable[[object], object], default: object = None) -> object:
        self.data[key] = new = fn(self.data.get(key, default))
        return new

    def delete(self, key: str) -> bool:
        return self.data.pop(key, self) is not self

    def close(self) -> None:
        pass


def test_global_data_accepts_any_backend() -> None:
    backend = DictBackend()
    with GlobalData(backend=backend) as store:
        assert store.update_global_data("n", lambda v: v + 1, 1) == 2
    assert backend.data == {"n": 2}


def test_backend_with_other_options_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        GlobalData(path=str(tmp_path / "g.sqlite3"), backend=DictBackend())


# ---------------------------------------------------------------- rate counter


def test_fixed_window_step_counts_within_window_and_resets_on_new_one() -> None:
    assert _fixed_window_step(None, 7) == {"window": 7, "count": 1}
    assert _fixed_window_step({"window": 7, "count": 1}, 7) == {"window": 7, "count": 2}
    assert _fixed_window_step({"window": 6, "count": 9}, 7) == {"window": 7, "count": 1}


def test_rate_counter_allows_limit_hits_per_window(store: GlobalData) -> None:
    counter = FixedWindowRateCounter(store)
    assert [counter.allow("api", 3, 1.0, now=100.1) for _ in range(5)] == [
        True, True, True, False, False,
    ]
    assert counter.allow("api", 3, 1.0, now=100.99) is False
    assert counter.allow("api", 3, 1.0, now=101.0) is True
    assert counter.allow("other", 3, 1.0, now=100.5) is True


def test_rate_counter_rejects_bad_arguments(store: GlobalData) -> None:
    counter = FixedWindowRateCounter(store)
    with pytest.raises(ConfigError):
        counter.allow("api", -1, 1.0, now=0.0)
    with pytest.raises(ConfigError):
        counter.allow("api", 1, 0.0, now=0.0)


# ---------------------------------------------------------------- package shape


def test_package_exports_what_its_all_lists() -> None:
    import packetron.globaldata as globaldata

    missing = [name for name in globaldata.__all__ if not hasattr(globaldata, name)]
    assert missing == []
    assert len(globaldata.__all__) == len(set(globaldata.__all__))


def test_each_backend_lives_in_its_own_module() -> None:
    assert SQLiteGlobalData.__module__ == "packetron.globaldata.sqlite"
    assert RedisGlobalData.__module__ == "packetron.globaldata.redis"
    assert DisabledGlobalData.__module__ == "packetron.globaldata.disabled"
