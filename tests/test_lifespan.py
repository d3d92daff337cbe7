"""Lifespan hooks and server.state: per process, after the fork, before the first accept."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import requests

from packetron import Packetron, PacketronError

HOST = "127.0.0.1"


def test_hooks_run_around_serving_with_one_worker(tmp_path: Path) -> None:
    server = Packetron(port=0, host=HOST, workers=1)
    events: list[str] = []

    @server.on_startup
    async def open_db(app: Packetron) -> None:
        app.state.db = sqlite3.connect(tmp_path / "app.db", check_same_thread=False)
        app.state.db.execute("create table hits (pid integer)")
        events.append("startup")

    @server.on_shutdown
    def close_db(app: Packetron) -> None:
        app.state.db.close()
        events.append("shutdown")

    @server.get("hit")
    def hit(request, response) -> None:  # type: ignore[no-untyped-def]
        server.state.db.execute("insert into hits values (?)", (os.getpid(),))
        count = server.state.db.execute("select count(*) from hits").fetchone()[0]
        response.send_json({"count": count})

    with server:
        assert events == ["startup"]
        assert requests.get(server.url + "/hit", timeout=5).json() == {"count": 1}
        assert requests.get(server.url + "/hit", timeout=5).json() == {"count": 2}
    assert events == ["startup", "shutdown"]


def test_failing_startup_hook_fails_start_with_its_error() -> None:
    server = Packetron(port=0, host=HOST, workers=1)

    def broken(app: Packetron) -> None:
        raise RuntimeError("database unreachable")

    server.on_startup(broken)
    with pytest.raises(RuntimeError, match="database unreachable"):
        server.start()
    assert not server.is_running
    server.stop()


def test_each_worker_runs_startup_after_the_fork() -> None:
    server = Packetron(port=0, host=HOST, workers=2)
    parent = os.getpid()

    @server.on_startup
    def remember_pid(app: Packetron) -> None:
        app.state.opened_in = os.getpid()

    @server.get("who")
    def who(request, response) -> None:  # type: ignore[no-untyped-def]
        response.send_json({"pid": os.getpid(), "opened_in": server.state.opened_in})

    with server:
        seen = {}
        for _ in range(60):
            body = requests.get(server.url + "/who", timeout=5,
                                headers={"Connection": "close"}).json()
            seen[body["pid"]] = body["opened_in"]
            if len(seen) == 2:
                break
    assert all(pid == opened for pid, opened in seen.items())
    assert parent not in seen
    assert not hasattr(server.state, "opened_in")  # the parent process opened nothing


def test_failing_startup_hook_with_workers_fails_start_with_the_reason() -> None:
    server = Packetron(port=0, host=HOST, workers=2)

    @server.on_startup
    def broken(app: Packetron) -> None:
        raise RuntimeError("no credentials")

    with pytest.raises(PacketronError, match="RuntimeError: no credentials"):
        server.start()
    assert not server.is_running
    server.stop()
