"""Connection timeouts on the protocol alone: an in-memory transport and a clock the test
moves, so a 10-second timeout takes no time at all."""
from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from memtransport import MemoryTransport
from packetron import Packetron
from packetron.http.protocol import HttpProtocol


@pytest.fixture
def connection() -> Iterator[tuple[HttpProtocol, MemoryTransport]]:
    app = Packetron(port=0, workers=1, header_timeout=10.0, body_timeout=20.0,
                    keep_alive_timeout=5.0)
    app.get("hi", lambda request, response: response.send_text_plain("hi"))
    app.post("echo", lambda request, response: response.send(request.body))
    loop = asyncio.new_event_loop()
    state = app.serving_state()
    state.tick(100.0)
    protocol = HttpProtocol(state, loop)
    transport = MemoryTransport(protocol)
    protocol.connection_made(transport)
    try:
        yield protocol, transport
    finally:
        loop.close()


def tick(protocol: HttpProtocol, now: float) -> None:
    protocol.state.tick(now)  # what the serving loop does once a second


def test_a_head_that_does_not_end_gets_408_at_the_header_timeout(connection) -> None:
    protocol, transport = connection
    protocol.data_received(b"GET /hi HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    tick(protocol, 109.0)
    assert transport.out == b""
    tick(protocol, 110.5)
    assert transport.out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in transport.out


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(connection) -> None:
    protocol, transport = connection
    protocol.data_received(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.out.endswith(b"\r\n\r\nhi")
    tick(protocol, 104.0)
    assert not transport.closed
    tick(protocol, 105.5)
    assert transport.closed


def test_a_body_that_stops_arriving_gets_408_at_the_body_timeout(connection) -> None:
    protocol, transport = connection
    protocol.data_received(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    tick(protocol, 119.0)
    assert transport.out == b""
    tick(protocol, 120.5)
    assert transport.out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_body_that_keeps_arriving_is_never_cut(connection) -> None:
    protocol, transport = connection
    protocol.data_received(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\na")
    for now, piece in ((115.0, b"b"), (130.0, b"c"), (145.0, b"d")):
        tick(protocol, now)
        protocol.data_received(piece)
    assert transport.out.endswith(b"\r\n\r\nabcd")
    assert not transport.closed
