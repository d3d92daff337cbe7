"""Connection timeouts on the protocol alone: an in-memory transport and a clock the test
moves (the loop's, which the protocol reads), so a 10-second timeout takes no time at all."""
from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from memtransport import MemoryTransport
from packetron import Packetron
from packetron.http.protocol import HttpProtocol


class Clock:
    """The loop's time, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def connection() -> Iterator[tuple[HttpProtocol, MemoryTransport]]:
    app = Packetron(port=0, workers=1, header_timeout=10.0, body_timeout=20.0,
                    keep_alive_timeout=5.0)
    app.get("hi", lambda request, response: response.send_text_plain("hi"))
    app.post("echo", lambda request, response: response.send(request.body))
    loop = asyncio.new_event_loop()
    loop.time = Clock(100.0)  # type: ignore[method-assign]
    state = app.serving_state()
    state.tick(100.0)
    protocol = HttpProtocol(state, loop)
    transport = MemoryTransport(protocol)
    protocol.connection_made(transport)
    try:
        yield protocol, transport
    finally:
        loop.close()


def at(protocol: HttpProtocol, now: float) -> None:
    """Move the clock without a tick: events in between see the new time."""
    protocol.loop.time.now = now  # type: ignore[attr-defined]


def tick(protocol: HttpProtocol, now: float) -> None:
    at(protocol, now)
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


def test_the_header_timeout_counts_from_the_first_byte_of_the_method(connection) -> None:
    protocol, transport = connection
    head = b"GET /hi HTTP/1.1\r\nHost: x\r\nX-Slow: y\r\n\r\n"
    for second, byte in enumerate(head[:10]):  # a byte a second from 100.0 to 109.0
        tick(protocol, 100.0 + second)
        protocol.data_received(bytes([byte]))
    tick(protocol, 110.0)  # exactly header_timeout: not over it yet
    assert transport.out == b""
    tick(protocol, 110.5)
    assert transport.out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_method_trickled_in_is_timed_as_a_head_not_as_an_idle_connection(connection) -> None:
    protocol, transport = connection
    protocol.data_received(b"GE")
    tick(protocol, 106.0)  # past keep_alive_timeout (5 s): still waiting for the head
    assert not transport.closed and transport.out == b""
    protocol.data_received(b"T")
    tick(protocol, 110.5)
    assert transport.out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_timeout_never_fires_before_its_value_between_ticks(connection) -> None:
    protocol, transport = connection
    at(protocol, 100.9)  # the answer goes out 0.9 s after the last tick
    protocol.data_received(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.out.endswith(b"\r\n\r\nhi")
    tick(protocol, 105.5)  # 4.6 s idle: a clock sampled at the tick would say 5.5 s
    assert not transport.closed
    tick(protocol, 106.5)
    assert transport.closed


def test_a_head_begun_between_ticks_gets_its_whole_header_timeout(connection) -> None:
    protocol, transport = connection
    at(protocol, 100.8)
    protocol.data_received(b"GET /hi HTTP/1.1\r\nHost: x\r\n")
    tick(protocol, 110.5)  # 9.7 s after its first byte
    assert transport.out == b""
    tick(protocol, 111.5)
    assert transport.out.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
