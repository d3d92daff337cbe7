"""Multi-process serving with real processes: fork, replace, stop and reload gracefully.

The server under test is tests/apps/worker_app.py in its own process (started with
subprocess, ready once it answers, stopped by PID); the last tests run a Packetron with
workers=2 inside the test process itself.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from packetron import Packetron, ServerFlags
from packetron.errors import PacketronError
from packetron.server import pool as supervisor_module
from packetron.server.ossupport import open_firewall_port
from packetron.server.pool import respawn_delay as _respawn_delay

APP = Path(__file__).parent / "apps" / "worker_app.py"
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def request(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET on a fresh connection; returns (status, decoded JSON body or None)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, None


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


class Load:
    """Client threads sending GET `path` on fresh connections until stopped."""

    def __init__(self, port: int, path: str = "/api/pid", clients: int = 4) -> None:
        self.port = port
        self.path = path
        self.pids: Counter[int] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = request(self.port, self.path)
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                continue
            with self._lock:
                if status == 200:
                    self.pids[body["pid"]] += 1
                else:
                    self.failures.append(f"status {status}")

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.pids.values())


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class App:
    """tests/apps/worker_app.py in its own session, on a free port."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.marker_dir = tmp_path
        self.log_path = tmp_path / "app.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(APP), "--port", str(self.port),
                 "--marker-dir", str(tmp_path), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=Path(__file__).parent.parent, start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"the app exited early:\n{self.log()}"
            try:
                if request(self.port, "/api/pid", timeout=1.0)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            assert time.monotonic() < deadline, f"the app never answered:\n{self.log()}"
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self, count: int = 2) -> set[int]:
        """Ask until `count` distinct workers have answered."""
        pids: set[int] = set()
        deadline = time.monotonic() + 10
        while len(pids) < count:
            assert time.monotonic() < deadline, f"only saw workers {pids}"
            status, body = request(self.port, "/api/pid")
            if status == 200:
                pids.add(body["pid"])
        return pids

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Any]:
    apps: list[App] = []

    def start(*args: str) -> App:
        app = App(tmp_path, *args)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.close()


# ------------------------------------------------------------------ a server process


def test_two_workers_answer_on_one_port(start_app: Any) -> None:
    app = start_app("--workers", "2")
    with Load(app.port, clients=4) as load:
        wait_for(lambda: len(load.pids) >= 2 and load.total >= 200, 10, "200 answers")
    assert len(load.pids) == 2
    assert app.proc.pid not in load.pids  # the server process itself serves nothing
    assert not load.failures


def test_killed_worker_is_replaced_and_service_goes_on(start_app: Any) -> None:
    app = start_app("--workers", "2")
    original = app.worker_pids()
    victim = min(original)
    with Load(app.port, clients=8) as load:
        wait_for(lambda: load.total >= 100, 10, "load to start")
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: set(load.pids) - original, 10, "a replacement worker")
        answered = load.total
        wait_for(lambda: load.total >= answered + 200, 10, "answers after the kill")
    replacement = set(load.pids) - original
    assert len(replacement) == 1
    assert not alive(victim)
    # Only what the killed worker held at that instant may fail (8 clients at most).
    assert len(load.failures) <= 8, load.failures


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_after_in_flight_request(start_app: Any, signum: int) -> None:
    app = start_app("--workers", "2")
    result: dict[str, Any] = {}

    def slow_request() -> None:
        result["answer"] = request(app.port, "/slow", timeout=15)

    client = threading.Thread(target=slow_request)
    client.start()
    wait_for(lambda: any(app.marker_dir.glob("slow-*")), 10, "the slow handler to start")
    signalled = time.monotonic()
    app.signal(signum)
    client.join(15)
    assert app.proc.wait(15) == 0, app.log()
    status, body = result["answer"]
    assert status == 200
    assert body["pid"] > 0
    assert time.monotonic() - signalled >= 1.0  # it waited for the handler's 2 s
    with pytest.raises(ConnectionRefusedError):
        request(app.port, "/api/pid", timeout=2)


def test_route_added_after_start_reaches_every_worker(start_app: Any) -> None:
    app = start_app("--workers", "2", "--mode", "start")
    before = app.worker_pids()
    with Load(app.port, clients=4) as load:
        wait_for(lambda: load.total >= 50, 10, "load to start")
        app.signal(signal.SIGUSR1)  # the app registers GET /late on its running server
        late: set[int] = set()

        def served_by_new_workers() -> bool:
            status, body = request(app.port, "/late")
            if status == 200:
                late.add(body["pid"])
            return len(late) >= 2

        wait_for(served_by_new_workers, 15, "/late from two workers")
        answered = load.total
        wait_for(lambda: load.total >= answered + 50, 10, "answers after the reload")
    assert not load.failures, load.failures
    assert not late & before  # fresh workers, forked with the new router
    # No worker without the new route is left.
    assert all(request(app.port, "/late")[0] == 200 for _ in range(40))
    app.signal(signal.SIGTERM)
    assert app.proc.wait(15) == 0, app.log()


def test_stop_on_error_worker_is_replaced(start_app: Any) -> None:
    app = start_app("--workers", "2", "--stop-on-error")
    original = app.worker_pids()
    assert request(app.port, "/boom")[0] == 500
    # The worker that logged the error stops itself; the pool forks a new one.
    wait_for(lambda: sum(alive(pid) for pid in original) == 1, 10, "the erring worker to exit")
    current = app.worker_pids()
    assert len(current - original) == 1
    assert "STOP_ON_ERROR" in app.log()


# ------------------------------------------------------------------ in this process


def test_in_process_start_stop_leaves_no_child() -> None:
    server = Packetron(port=0, host=HOST, workers=2)
    server.get("api/pid", lambda req, res: res.send_json({"pid": os.getpid()}))
    server.start()
    try:
        port = server.port
        assert port
        seen: set[int] = set()
        wait_for(lambda: seen.add(request(port, "/api/pid")[1]["pid"]) or len(seen) == 2,
                 10, "two workers")
        server.get("late", lambda req, res: res.send_json({"pid": os.getpid()}))
        late: set[int] = set()

        def late_from_both() -> bool:
            status, body = request(port, "/late")
            if status == 200:
                late.add(body["pid"])
            return len(late) == 2

        wait_for(late_from_both, 10, "/late from both workers")
    finally:
        server.stop(timeout=5)
    assert children_of(os.getpid()) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    assert not any(alive(pid) for pid in seen | late)


def test_start_immediately_then_a_burst_of_routes() -> None:
    server = Packetron(port=0, host=HOST, workers=2, flags=ServerFlags.START_IMMEDIATELY)
    try:
        assert server.is_running
        for index in range(20):  # one reload for the whole burst (debounced)
            server.get(f"r{index}", lambda req, res: res.send_json({"pid": os.getpid()}))
        seen: set[int] = set()

        def last_route_from_both() -> bool:
            status, body = request(server.port, "/r19")
            if status == 200:
                seen.add(body["pid"])
            return len(seen) == 2

        wait_for(last_route_from_both, 10, "/r19 from both workers")
        assert all(request(server.port, f"/r{i}")[0] == 200 for i in range(20))
    finally:
        server.stop(timeout=5)
    assert children_of(os.getpid()) == []


def test_raise_process_priority_is_best_effort() -> None:
    server = Packetron(port=0, host=HOST, workers=2, flags=ServerFlags.RAISE_PROCESS_PRIORITY)
    server.get("nice", lambda req, res: res.send_json({"pid": os.getpid(), "nice": os.nice(0)}))
    mine = os.nice(0)
    with server:
        status, body = request(server.port, "/nice")
    assert status == 200
    expected = mine - 5 if os.geteuid() == 0 else mine  # root may raise it; others may not
    assert body["nice"] in (expected, mine)
    assert body["nice"] <= mine


def test_workers_that_cannot_start_make_start_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_worker(*args: object, **kwargs: object) -> int:
        raise RuntimeError("cannot serve")

    monkeypatch.setattr(supervisor_module, "run_worker", broken_worker)
    server = Packetron(port=0, host=HOST, workers=2, flags=ServerFlags.SILENCE_INTERNAL_LOGS)
    with pytest.raises(PacketronError, match="failed to start"):
        server.start()
    assert not server.is_running
    server.stop()
    assert children_of(os.getpid()) == []


# ------------------------------------------------------------------ pure parts


def test_respawn_delay_backs_off_and_caps() -> None:
    delays = [_respawn_delay(n) for n in range(1, 10)]
    assert delays[0] == 0.0  # the first replacement is immediate
    assert delays[1:4] == [0.1, 0.2, 0.4]
    assert delays[-1] == supervisor_module.RESPAWN_MAX_DELAY_SECONDS


def test_open_firewall_uses_an_active_ufw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "calls"
    ufw = tmp_path / "ufw"
    ufw.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                   '[ "$1" = status ] && echo "Status: active"\nexit 0\n')
    ufw.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert open_firewall_port(4567) is True
    assert calls.read_text().splitlines() == ["status", "allow 4567/tcp"]


def test_open_firewall_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ufw = tmp_path / "ufw"
    ufw.write_text('#!/bin/sh\n[ "$1" = status ] && echo "Status: active"\nexit 1\n')
    ufw.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert open_firewall_port(4567) is False
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert open_firewall_port(4567) is False  # no tool at all


def test_silence_internal_logs_lasts_only_while_the_server_runs() -> None:
    import logging

    before = [logging.getLogger(name).level
              for name in ("packetron.server", "packetron.net", "packetron.worker")]
    with Packetron(port=0, host=HOST, workers=1, flags=ServerFlags.SILENCE_INTERNAL_LOGS):
        assert logging.getLogger("packetron.net").level == logging.ERROR
    after = [logging.getLogger(name).level
             for name in ("packetron.server", "packetron.net", "packetron.worker")]
    assert after == before
