"""Clients that pipeline many requests, stop reading, or half-close: every answer arrives,
in order, and the server's memory stays bounded."""
from __future__ import annotations

import asyncio
import socket

import pytest

from memtransport import MemoryTransport
from rawhttp import connect, read_responses, read_until_closed
from packetron import Packetron
from packetron.http.protocol import HttpProtocol


@pytest.fixture
def server(make_server):
    server = make_server()
    server.get("n", lambda q, s: s.send_text_plain(q.get_query_params()["i"]))
    server.post("echo", lambda q, s: s.send(q.body))

    @server.get("slow")
    async def slow(request, response):
        await asyncio.sleep(0.2)
        response.send_text_plain("slow")

    return server.start()


def pipelined(count: int) -> bytes:
    return b"".join(b"GET /n?i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(count))


def test_thousands_of_requests_queued_behind_a_slow_one_are_all_answered(server) -> None:
    # They wait in the queue while /slow runs, then are answered one after another: in a
    # loop, not by recursion (5,000 of them once overflowed the stack).
    count = 5000
    with connect(server.port, timeout=20) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n" + pipelined(count))
        answers = read_responses(sock, count + 1)
    assert answers[0][1] == b"slow"
    assert [body for _, body in answers[1:]] == [b"%d" % i for i in range(count)]
    assert all(response.status_code == 200 for response, _ in answers)


@pytest.mark.parametrize("first", [b"/n?i=first", b"/slow"])
def test_half_closed_client_gets_every_queued_answer_then_close(server, first: bytes) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET " + first + b" HTTP/1.1\r\nHost: t\r\n\r\n" + pipelined(4))
        sock.shutdown(socket.SHUT_WR)  # no more requests: answer what was sent, then close
        raw = read_until_closed(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 5
    assert raw.endswith(b"\r\n\r\n3")
    if first == b"/slow":
        # The end of input was known before the queued answers: the last one says close.
        assert raw.count(b"connection: close") == 1
        assert raw.rsplit(b"HTTP/1.1 ", 1)[1].count(b"connection: close") == 1


def test_a_client_that_stops_reading_stops_the_server_reading_and_answering() -> None:
    app = Packetron(port=0, workers=1)
    app.get("n", lambda q, s: s.send_text_plain(q.get_query_params()["i"] + "." * 1000))
    loop = asyncio.new_event_loop()
    try:
        protocol = HttpProtocol(app.serving_state(), loop)
        transport = MemoryTransport(protocol, high=64 * 1024)
        protocol.connection_made(transport)
        count = 1000
        protocol.data_received(pipelined(count))  # ~1 MB of answers asked for at once
        # Answers stop just past the mark, and the socket is no longer read.
        assert 64 * 1024 < len(transport.buffered) < 64 * 1024 + 2048
        assert not transport.reading
        rounds = 0
        while transport.buffered or transport.write_paused:
            transport.client_reads()
            rounds += 1
            assert len(transport.buffered) < 64 * 1024 + 2048
        assert transport.reading  # caught up: reading again
        assert rounds > 10
        bodies = [chunk.split(b"\r\n\r\n", 1)[1].rstrip(b".")
                  for chunk in bytes(transport.delivered).split(b"HTTP/1.1 ")[1:]]
        assert bodies == [b"%d" % i for i in range(count)]
    finally:
        loop.close()


def test_bodies_of_waiting_requests_are_not_read_ahead(server) -> None:
    # Behind a slow request, a pipelined POST's body stays in the kernel until its turn;
    # it is read, and answered, in order afterwards.
    body = b"x" * (4 * 1024 * 1024)
    with connect(server.port, timeout=20) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body + b"GET /n?i=last HTTP/1.1\r\nHost: t\r\n\r\n")
        answers = read_responses(sock, 3, methods=[b"GET", b"POST", b"GET"])
    assert [response.status_code for response, _ in answers] == [200, 200, 200]
    assert answers[0][1] == b"slow" and answers[1][1] == body and answers[2][1] == b"last"


def test_a_waiting_request_with_a_body_pauses_reading() -> None:
    app = Packetron(port=0, workers=1)

    @app.get("slow")
    async def slow(request, response):
        await asyncio.sleep(0)
        response.send_text_plain("slow")

    app.post("echo", lambda q, s: s.send(q.body))
    loop = asyncio.new_event_loop()
    try:
        protocol = HttpProtocol(app.serving_state(), loop)
        transport = MemoryTransport(protocol, high=1 << 30)
        protocol.connection_made(transport)
        protocol.data_received(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
                               b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab")
        assert not transport.reading  # the POST waits: its body is not read ahead
        loop.run_until_complete(asyncio.sleep(0.01))  # /slow answers; the POST's turn
        assert transport.reading
        protocol.data_received(b"cde")
        assert bytes(transport.buffered).count(b"HTTP/1.1 200 OK") == 2
        assert bytes(transport.buffered).endswith(b"\r\n\r\nabcde")
    finally:
        loop.close()
