"""No file descriptors left: a server process started with RLIMIT_NOFILE = 64, and
connections opened from the test until it can take no more.

The accept loop must not spin (the server's CPU time is sampled from /proc while it sits
at the limit) nor die; it pauses with backoff, logs once per interval, and serves again,
the connections that waited in the backlog included, once descriptors are free. The
HTTP server and a Broker port go through the same listener; both loops are run (uvloop,
and asyncio's as when uvloop is not installed).
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from faulthelp import HOST, ChildLog, cpu_seconds, http_get, open_fds, start_child, stop, wait_until

APP = str(Path(__file__).parent / "fd_server_app.py")
NOFILE = 64
WINDOW_SECONDS = 2.0  # held at the limit this long while the CPU time is sampled
MAX_CPU_SHARE = 0.30  # of one core, over that window
WAITING = 3  # connections opened while at the limit: they must be served afterwards
PAUSED = "cannot accept connections on"
RESUMED = "again after"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ask(kind: str, sock: socket.socket) -> None:
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" if kind == "http" else b"x")


def _outcome(kind: str, sock: socket.socket, timeout: float) -> str:
    """What became of the request sent on `sock` within `timeout`: "answered", "closed"
    (unanswered) or "waiting"."""
    sock.settimeout(timeout)
    expected = b"pong" if kind == "http" else b"x"
    data = b""
    try:
        while expected not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed"
            data += chunk
    except socket.timeout:
        return "waiting"
    except ConnectionResetError:
        return "closed"
    return "answered"


def _answered(kind: str, sock: socket.socket, timeout: float) -> bool:
    return _outcome(kind, sock, timeout) == "answered"


def _fill(kind: str, port: int) -> list[socket.socket]:
    """Open connections, each answered once and kept open, until one is not answered:
    the server has no descriptor left. Returns the answered ones."""
    held: list[socket.socket] = []
    for _ in range(NOFILE * 2):
        sock = socket.create_connection((HOST, port), timeout=5)
        _ask(kind, sock)
        if not _answered(kind, sock, timeout=0.5):
            sock.close()
            return held
        held.append(sock)
    for sock in held:
        sock.close()
    raise AssertionError(f"{len(held)} connections were served with a limit of {NOFILE}")


def _served_fresh(kind: str, port: int) -> bool:
    if kind == "http":
        return http_get(port, "/ping", timeout=1.0) == (200, b"pong")
    with socket.create_connection((HOST, port), timeout=1.0) as sock:
        _ask(kind, sock)
        return _answered(kind, sock, timeout=1.0)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("kind", ["http", "broker"])
def test_accept_backs_off_without_spinning_and_serves_again(kind: str, loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    args = [APP, kind] + ([str(_free_port())] if kind == "broker" else [])
    args += ["--asyncio"] if loop == "asyncio" else []
    proc, line = start_child(args, nofile=NOFILE)
    log = ChildLog(proc)
    held: list[socket.socket] = []
    waiting: list[socket.socket] = []
    try:
        port = int(line)
        held = _fill(kind, port)
        assert len(held) > NOFILE // 2  # the limit was reached by connections, not at start
        # The listener says so (uvloop: once its watch has noticed, within a second).
        log.wait_for(PAUSED, timeout=5)
        # Connections arriving now wait in the backlog, and are not closed unanswered
        # (one may be served: taking the port from uvloop frees its descriptor of it).
        for _ in range(WAITING):
            sock = socket.create_connection((HOST, port), timeout=5)
            _ask(kind, sock)
            waiting.append(sock)
        outcomes = [_outcome(kind, sock, timeout=0.2) for sock in waiting]
        assert "closed" not in outcomes and outcomes.count("waiting") >= WAITING - 1
        # At the limit the server neither spins nor dies.
        cpu_before, started = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(WINDOW_SECONDS)
        share = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - started)
        assert share < MAX_CPU_SHARE, f"{share:.0%} of a core while out of descriptors"
        assert proc.poll() is None
        assert open_fds(proc.pid) <= NOFILE
        # Descriptors free again: served within a few seconds (the pause is 1 s at most),
        # the connections that waited first.
        for sock in held:
            sock.close()
        held.clear()
        assert all(_answered(kind, sock, timeout=5)
                   for sock, outcome in zip(waiting, outcomes) if outcome == "waiting")
        recovery = wait_until(lambda: _served_fresh(kind, port), timeout=5)
        assert recovery < 5
        log.wait_for(RESUMED, timeout=5)
        # Logged once for the whole episode (one line per 10 s while it lasts).
        assert log.count(PAUSED) == 1, log.lines
        assert log.count("Traceback") == 0, log.lines
    finally:
        for sock in held + waiting:
            sock.close()
        stop(proc, keep_stderr=True)
        log.join()


def _answer_head(client: socket.socket, request: bytes) -> bytes:
    """Send `request` on `client` and return the head of the answer, lowercased."""
    client.sendall(request)
    client.settimeout(5)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += client.recv(4096)
    return answer.split(b"\r\n\r\n", 1)[0].lower()


def test_upload_with_no_descriptor_left_is_503_and_the_connection_goes_on() -> None:
    proc, line = start_child([APP, "http"], nofile=NOFILE)
    log = ChildLog(proc)
    held: list[socket.socket] = []
    try:
        port = int(line)
        held = _fill("http", port)  # the last one answered is kept alive: reuse it
        client = held.pop()
        body = (b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n"
                b"\r\nhello\r\n--b--\r\n")
        head = _answer_head(client, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"multipart/form-data; boundary=b\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert head.startswith(b"http/1.1 503"), head
        assert b"retry-after: 1" in head
        # The body was read whole: the connection serves the next request once the
        # server has a descriptor again.
        for sock in held:
            sock.close()
        held.clear()
        wait_until(lambda: _served_fresh("http", port), timeout=5)
        _ask("http", client)
        assert _answered("http", client, timeout=5)
        client.close()
        assert log.count("could not be stored") == 1
    finally:
        for sock in held:
            sock.close()
        stop(proc, keep_stderr=True)
        log.join()


def test_a_static_file_with_no_descriptor_left_is_503_not_404() -> None:
    proc, line = start_child([APP, "http"], nofile=NOFILE)
    log = ChildLog(proc)
    held: list[socket.socket] = []
    try:
        port = int(line)
        held = _fill("http", port)  # the last one answered is kept alive: reuse it
        head = _answer_head(held[-1], b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"http/1.1 503"), head
        assert b"retry-after: 1" in head
        for sock in held:
            sock.close()
        held.clear()
        wait_until(lambda: _served_fresh("http", port), timeout=5)
        assert http_get(port, "/big", timeout=5)[0] == 200
        assert log.count("cannot open files") == 1
    finally:
        for sock in held:
            sock.close()
        stop(proc, keep_stderr=True)
        log.join()
