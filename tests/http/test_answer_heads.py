"""The one-join answer of a persistent HTTP/1.1 request carries the same head as the
general path builds (only the Connection line differs), headers set by the handler or by
after-hooks included: the protocol alone, on an in-memory transport."""
from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from memtransport import MemoryTransport
from packetron import Packetron, Plugin, PluginPriority
from packetron.http.protocol import HttpProtocol


def stamp(request: Any, response: Any) -> None:
    response.set_header("X-Stamp", "after")


@pytest.fixture
def app() -> Packetron:
    server = Packetron(port=0, workers=1)

    def plain(request: Any, response: Any) -> None:
        response.send_json({"ok": True})

    def with_headers(request: Any, response: Any) -> None:
        response.set_header("X-A", 1)
        response.set_header("Cache-Control", "no-store")
        response.send_json({"ok": True})

    def own_type(request: Any, response: Any) -> None:
        response.set_header("Content-Type", "application/vnd.x+json")
        response.send_json([1, 2])

    server.get("plain", plain)
    server.get("headers", with_headers)
    server.get("type", own_type)
    server.get("stamped", plain, plugins=[Plugin.create(PluginPriority.MEDIUM, after=stamp)])
    return server


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def answer(app: Packetron, loop: asyncio.AbstractEventLoop, path: str, close: bool) -> bytes:
    protocol = HttpProtocol(app.serving_state(), loop)
    transport = MemoryTransport(protocol)
    protocol.connection_made(transport)
    connection = b"Connection: close\r\n" if close else b""
    protocol.data_received(b"GET /%s HTTP/1.1\r\nHost: h\r\n%s\r\n" % (path.encode(), connection))
    return transport.out


@pytest.mark.parametrize("path", ["plain", "headers", "type", "stamped"])
def test_the_kept_alive_answer_is_the_general_one_without_its_connection_line(
        app: Packetron, loop: asyncio.AbstractEventLoop, path: str) -> None:
    fast = answer(app, loop, path, close=False)
    general = answer(app, loop, path, close=True)
    assert b"connection: close\r\n" in general.lower()
    lines = [line for line in general.split(b"\r\n") if line.lower() != b"connection: close"]
    assert fast == b"\r\n".join(lines)


def test_headers_set_by_the_handler_and_after_hooks_are_in_the_fast_answer(
        app: Packetron, loop: asyncio.AbstractEventLoop) -> None:
    head, _, body = answer(app, loop, "headers", close=False).partition(b"\r\n\r\n")
    assert body == b'{"ok":true}'
    fields = head.split(b"\r\n")[1:]
    assert [f for f in fields if not f.lower().startswith(b"date:")] == [
        b"content-type: application/json", b"content-length: 11", b"X-A: 1",
        b"Cache-Control: no-store"]
    own = answer(app, loop, "type", close=False).lower()
    assert own.count(b"content-type:") == 1 and b"content-type: application/vnd.x+json" in own
    stamped = answer(app, loop, "stamped", close=False)
    assert b"\r\nX-Stamp: after\r\n" in stamped and stamped.lower().count(b"content-type") == 1
