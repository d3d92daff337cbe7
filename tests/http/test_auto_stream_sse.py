"""AUTO_BODY (parser by Content-Type), STREAM_BODY (request.stream()) and server-sent events."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest
import requests

from packetron import HandlerFlags
from packetron.errors import ConnectionClosed
from packetron.http.sse import format_event

from tests.http import rawhttp


@pytest.fixture
def auto_server(make_server):
    server = make_server()

    @server.post("echo", flags=HandlerFlags.AUTO_BODY, max_request_size_in_bytes=1_000_000)
    async def echo(request, response) -> None:
        body = await request.get_body()
        files = await request.get_files()
        response.send_json({"type": type(body).__name__,
                            "body": body if not isinstance(body, bytes) else body.hex(),
                            "files": {name: entry["size"] for name, entry in files.items()}})

    return server.start()


@pytest.mark.parametrize("content_type, data, expected", [
    ("application/json", b'{"a": [1, 2]}', {"type": "dict", "body": {"a": [1, 2]}}),
    ("application/problem+json; charset=utf-8", b'[true]', {"type": "list", "body": [True]}),
    ("application/x-www-form-urlencoded", b"a=1&a=2&b=x", {"type": "dict",
                                                           "body": {"a": ["1", "2"], "b": "x"}}),
    ("application/xml", b"<r><v>1</v></r>", {"type": "dict", "body": {"r": {"v": "1"}}}),
    ("text/csv; charset=utf-8", "é,1".encode(), {"type": "str", "body": "é,1"}),
    ("application/octet-stream", b"\x00\x01", {"type": "bytes", "body": "0001"}),
])
def test_auto_body_picks_the_parser_by_content_type(auto_server, content_type, data,
                                                    expected) -> None:
    r = requests.post(auto_server.url + "/echo", data=data,
                      headers={"Content-Type": content_type}, timeout=5)
    assert r.status_code == 200
    assert r.json() == {**expected, "files": {}}


def test_auto_body_streams_multipart_files_to_disk(auto_server) -> None:
    r = requests.post(auto_server.url + "/echo", data={"note": "hi"},
                      files={"upload": ("a.bin", b"x" * 5000)}, timeout=5)
    assert r.json() == {"type": "dict", "body": {"note": "hi"}, "files": {"upload": 5000}}


def test_auto_body_keeps_the_limits(auto_server) -> None:
    r = requests.post(auto_server.url + "/echo", data=b"{" * 1_000_001,
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 413
    r = requests.post(auto_server.url + "/echo", data=b"{not json",
                      headers={"Content-Type": "application/json"}, timeout=5)
    assert r.json() == {"type": "NoneType", "body": None, "files": {}}


def test_stream_body_yields_chunks_as_they_arrive(make_server) -> None:
    server = make_server()

    @server.post("count", flags=HandlerFlags.STREAM_BODY)
    async def count(request, response) -> None:
        total, pieces = 0, 0
        async for chunk in request.stream():
            total += len(chunk)
            pieces += 1
        response.send_json({"bytes": total, "pieces_seen": pieces > 0})

    server.start()

    def body():
        for _ in range(64):
            yield b"y" * 65536

    r = requests.post(server.url + "/count", data=body(), timeout=10)
    assert r.json() == {"bytes": 64 * 65536, "pieces_seen": True}


def test_stream_body_is_cut_at_the_cap_with_413(make_server) -> None:
    server = make_server()
    outcome: list[str] = []
    handler_done = threading.Event()

    @server.post("cap", flags=HandlerFlags.STREAM_BODY, max_request_size_in_bytes=100_000)
    async def cap(request, response) -> None:
        try:
            async for _ in request.stream():
                pass
        except ConnectionClosed:
            outcome.append("closed")
            raise
        finally:
            handler_done.set()
        response.send_ok()

    server.start()
    sock = rawhttp.connect(server.port)
    try:
        sock.sendall(b"POST /cap HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            sock.sendall(b"8000\r\n" + b"z" * 0x8000 + b"\r\n")
        [(response, _)] = rawhttp.read_responses(sock, method=b"POST")
    finally:
        sock.close()
    assert response.status_code == 413
    assert handler_done.wait(5)  # the handler learns it too, in its own time
    assert outcome == ["closed"]


def test_client_leaving_mid_stream_ends_the_iteration_with_connection_closed(make_server) -> None:
    server = make_server()
    ended = threading.Event()
    seen: list[str] = []

    @server.post("slow", flags=HandlerFlags.STREAM_BODY)
    async def slow(request, response) -> None:
        try:
            async for _ in request.stream():
                await asyncio.sleep(0)
        except ConnectionClosed as exc:
            seen.append(type(exc).__name__)
            ended.set()
            raise

    server.start()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
    sock.close()
    assert ended.wait(5)
    assert seen == ["ConnectionClosed"]


def test_format_event_splits_lines_and_refuses_bad_fields() -> None:
    assert format_event("a\nb", event="tick", id="7", retry=1500) == \
        b"event: tick\nid: 7\nretry: 1500\ndata: a\ndata: b\n\n"
    assert format_event({"x": 1}) == b"data: {'x': 1}\n\n"
    with pytest.raises(ValueError):
        format_event("x", event="a\nb")
    with pytest.raises(ValueError):
        format_event("x", id="a\0")
    with pytest.raises(ValueError):
        format_event("x", retry=-1)


def test_event_stream_over_the_wire_with_heartbeat(make_server) -> None:
    server = make_server()

    @server.get("events")
    async def events(request, response) -> None:
        stream = await response.event_stream(heartbeat=0.05)
        await stream.send("hello", event="greeting", id="1")
        await asyncio.sleep(0.12)  # at least one heartbeat in between
        await stream.send("line1\nline2")
        stream.close()

    server.start()
    r = requests.get(server.url + "/events", timeout=5)
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    text = r.text
    assert text.startswith("event: greeting\nid: 1\ndata: hello\n\n")
    assert ": keep-alive\n\n" in text
    assert text.endswith("data: line1\ndata: line2\n\n")


def test_event_stream_ends_cleanly_when_the_client_leaves(make_server) -> None:
    server = make_server()
    outcome: list[str] = []
    done = threading.Event()

    @server.get("forever")
    async def forever(request, response) -> None:
        stream = await response.event_stream(heartbeat=0.02)
        try:
            while True:
                await stream.send("tick")
                await asyncio.sleep(0.01)
        except ConnectionClosed:
            outcome.append("left")
            outcome.append("closed" if stream.closed else "open")
            done.set()

    server.start()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(5)
    sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while b"data: tick" not in received:
        received += sock.recv(65536)
    sock.close()
    assert done.wait(5)
    assert outcome == ["left", "closed"]
