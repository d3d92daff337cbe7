"""Bad and hostile input sent as raw bytes; after each, a fresh connection must still work."""
from __future__ import annotations

import select
import socket
import time

import h11
import pytest

from rawhttp import connect, exchange, read_responses, read_until_closed, status_of, still_serves

from packetron import HandlerFlags


@pytest.fixture
def server(make_server):
    server = make_server(header_timeout=1.0, keep_alive_timeout=1.0, body_timeout=1.0,
                         max_url_size_in_bytes=1024, max_header_size_in_bytes=4096,
                         max_header_count=20)
    server.get("ping", lambda q, s: s.send_ok())
    server.post("echo", lambda q, s: s.send(q.body))
    server.post("json", lambda q, s: s.send_json(q.body), flags=HandlerFlags.JSON_BODY)

    @server.get("slow")
    async def slow(request, response):
        import asyncio
        await asyncio.sleep(float(request.get_query_params().get("s", "0.2")))
        response.send_text_plain(request.get_query_params().get("n", ""))

    return server.start()


def wait_readable(sock: socket.socket, seconds: float) -> bool:
    """Whether the server has written (or closed) within `seconds`."""
    return bool(select.select([sock], [], [], seconds)[0])


def send_and_read(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with connect(port, timeout) as sock:
        sock.sendall(payload)
        return read_until_closed(sock)


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on a plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
])
def test_malformed_request_gets_400_and_close(server, payload: bytes) -> None:
    raw = send_and_read(server.port, payload)
    assert status_of(raw) == 400
    assert b"connection: close" in raw.lower()
    assert still_serves(server.port)


def test_lowercase_method_is_an_unknown_method_501_and_close(server) -> None:
    """Methods are case-sensitive (RFC 9110 §9.1): "get" is a valid token naming a method
    nobody implements, so 501 rather than 400 (see test_conformance for the mapping)."""
    raw = send_and_read(server.port, b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 501
    assert b"connection: close" in raw.lower()
    assert still_serves(server.port)


def test_missing_host_on_http11_is_400(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\n\r\n")
    assert status_of(raw) == 400 and b"Host" in raw


def test_duplicate_host_is_400(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert status_of(raw) == 400


@pytest.mark.parametrize("host", [b"a b", b"evil.example/reset", b"user@evil.example",
                                  b"a?b", b"a#b", b"a\\b", b"h\xc3\xa9"])
def test_invalid_host_value_is_400(server, host: bytes) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert status_of(raw) == 400 and b"invalid Host" in raw
    assert still_serves(server.port)


@pytest.mark.parametrize("host", [b"", b"example.com", b"127.0.0.1:8080", b"[::1]:80",
                                  b"xn--caf-dma.example"])
def test_valid_host_values_are_served(server, host: bytes) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: " + host +
                        b"\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200 and raw.endswith(b"OK")


@pytest.mark.parametrize("request_line", [b"GET /ping HTTP/2.0", b"GET /ping"])
def test_unsupported_http_versions_get_505(server, request_line: bytes) -> None:
    raw = send_and_read(server.port, request_line + b"\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 505
    assert b"connection: close" in raw.lower()
    assert still_serves(server.port)


def test_http10_without_host_is_fine(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.0\r\n\r\n")
    assert status_of(raw) == 200 and raw.endswith(b"OK")


def test_content_length_with_transfer_encoding_refused(server) -> None:
    raw = send_and_read(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert status_of(raw) == 400
    assert still_serves(server.port)


def test_conflicting_content_lengths_refused(server) -> None:
    raw = send_and_read(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                     b"Content-Length: 4\r\n\r\nabcd")
    assert status_of(raw) == 400


def test_long_url_gets_414(server) -> None:
    raw = send_and_read(server.port, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 414
    assert still_serves(server.port)


def test_url_arriving_in_pieces_is_counted(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /")
        for _ in range(30):
            sock.sendall(b"b" * 100)
        raw = read_until_closed(sock)
    assert status_of(raw) == 414


def test_too_many_headers_gets_431(server) -> None:
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(25))
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(raw) == 431
    assert still_serves(server.port)


def test_headers_too_large_gets_431(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: "
                        + b"v" * 5000 + b"\r\n\r\n")
    assert status_of(raw) == 431


def test_one_endless_header_value_is_cut_off(server) -> None:
    """httptools buffers a header value until its line ends; we must stop it growing.

    The server answers 431 once the head passes its cap, then keeps draining input for a
    while before closing, so a client that reads its answer sees the status, never a reset.
    """
    with connect(server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent = 0
        raw = b""
        while sent < 2_000_000:
            sock.sendall(b"v" * 16384)
            sent += 16384
            if select.select([sock], [], [], 0.01)[0]:
                break  # the answer is there: stop sending, read it
        raw = read_until_closed(sock)
    assert sent <= 1024 + 4096 + 8192 + 2 * 16384  # url + header caps + slack, then cut off
    assert status_of(raw) == 431
    assert raw.endswith(b"\r\n\r\nRequest Header Fields Too Large")
    assert b"connection: close" in raw
    assert still_serves(server.port)


def test_giant_unfinished_head_in_one_read_gets_431_at_once(server) -> None:
    """The head's first read already holds more than the cap: 431 then, not a 408 after
    header_timeout because no further read came."""
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 20000)
        raw = read_until_closed(sock)
    assert status_of(raw) == 431
    assert raw.endswith(b"\r\n\r\nRequest Header Fields Too Large")
    assert time.monotonic() - started < 0.9  # header_timeout is 1.0


def test_many_unfinished_fields_in_one_read_get_431_at_once(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-%d: v\r\n" % i for i in range(30)))
        raw = read_until_closed(sock)
    assert status_of(raw) == 431


def test_slowloris_head_gets_408(server) -> None:
    with connect(server.port, timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /ping HTTP/1.1\r\n")
        raw = b""
        try:
            for _ in range(40):
                sock.sendall(b"X-a: b\r\n")
                sock.settimeout(0.1)
                try:
                    raw = sock.recv(4096)
                    if raw:
                        break
                except socket.timeout:
                    continue
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(5)
        raw += read_until_closed(sock)
    assert status_of(raw) == 408
    assert 1.0 <= time.monotonic() - started < 4.5
    assert still_serves(server.port)


def test_a_method_sent_byte_by_byte_is_timed_from_its_first_byte(server) -> None:
    """The method counts as part of the head: 408 at header_timeout from the "G" (never
    before it), not a silent close at the keep-alive timeout."""
    with connect(server.port, timeout=10) as sock:
        started = time.monotonic()
        try:
            for byte in b"GET":
                sock.sendall(bytes([byte]))
                if wait_readable(sock, 0.4):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert status_of(raw) == 408
    assert 1.0 <= elapsed < 3.0  # header_timeout 1 s, checked once a second


def test_idle_keep_alive_connection_is_closed(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        (response, body), = read_responses(sock)
        assert response.status_code == 200
        started = time.monotonic()
        assert sock.recv(10) == b""  # the server closes the idle connection
    assert 1.0 <= time.monotonic() - started < 3.5  # never before keep_alive_timeout


def test_stalled_body_gets_408(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        raw = read_until_closed(sock)
    assert status_of(raw) == 408


def test_keep_alive_and_pipelining_answer_in_order(server) -> None:
    requests_ = b"".join([
        b"GET /slow?n=first&s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /slow?n=last&s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n",
    ])
    with connect(server.port) as sock:
        sock.sendall(requests_)
        responses = read_responses(sock, 4)
    assert [body for _, body in responses] == [b"first", b"OK", b"hello", b"last"]
    assert all(r.status_code == 200 for r, _ in responses)


def test_many_pipelined_requests_in_one_write(server) -> None:
    count = 100  # beyond the pipelining cap: reading pauses and resumes
    with connect(server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        responses = read_responses(sock, count)
    assert len(responses) == count and all(body == b"OK" for _, body in responses)


def test_chunked_request_body(server) -> None:
    payload = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
    status, _, body = exchange(server.port, payload, method=b"POST")
    assert status == 200 and body == b"hello world"


def test_chunked_with_h11_as_client(server) -> None:
    client = h11.Connection(our_role=h11.CLIENT)
    out = client.send(h11.Request(method="POST", target="/json",
                                  headers=[("Host", "x"), ("Transfer-Encoding", "chunked")]))
    for piece in (b'{"a":', b' [1, 2', b"]}"):
        out += client.send(h11.Data(data=piece))
    out += client.send(h11.EndOfMessage())
    with connect(server.port) as sock:
        sock.sendall(out)
        client.receive_data(sock.recv(65536))
        response = client.next_event()
        data = client.next_event()
    assert response.status_code == 200 and data.data == b'{"a":[1,2]}'


def test_bad_chunk_size_is_400(server) -> None:
    raw = send_and_read(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                     b"\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    assert status_of(raw) == 400


def test_expect_100_continue(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        (response, body), = read_responses(sock, method=b"POST")
    assert response.status_code == 200 and body == b"data"


def test_expect_100_continue_over_cap_gets_413_instead(make_server) -> None:
    server = make_server()
    server.post("small", lambda q, s: s.send_ok(), max_request_size_in_bytes=10)
    server.get("ping", lambda q, s: s.send_ok())
    server.start()
    with connect(server.port) as sock:
        sock.sendall(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        raw = read_until_closed(sock)
    assert status_of(raw) == 413 and b"100 Continue" not in raw
    assert still_serves(server.port)


def test_unknown_expectation_is_417(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n")
    assert status_of(raw) == 417


def test_head_has_length_but_no_body(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        (head_response, head_body), (get_response, get_body) = read_responses(
            sock, 2, methods=[b"HEAD", b"GET"])
    assert head_response.status_code == 200 and head_body == b""
    assert dict(head_response.headers)[b"content-length"] == b"2"
    assert get_body == b"OK"


def test_date_header_present(server) -> None:
    status, headers, _ = exchange(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["date"].endswith(" GMT")


def test_connection_close_is_honoured(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 200 and b"connection: close" in raw


@pytest.mark.parametrize("host", [b"", b"Host: x\r\n"])
def test_http10_keep_alive_is_acknowledged(server, host: bytes) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.0\r\n" + host + b"Connection: keep-alive\r\n\r\n")
        first = sock.recv(4096)
        sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
        second = read_until_closed(sock)
    assert b"connection: keep-alive" in first and first.endswith(b"OK")
    assert status_of(second) == 200


def test_upgrade_request_is_answered_then_closed(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
                                     b"Upgrade: websocket\r\n\r\nextra-bytes")
    assert status_of(raw) == 200 and b"connection: close" in raw


def test_unknown_method_is_501(server) -> None:
    raw = send_and_read(server.port, b"PROPFIND /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(raw) == 501


def test_client_vanishing_mid_body_leaves_server_serving(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\":")
    assert still_serves(server.port)


def test_headers_over_the_cap_in_small_pieces_get_431(server) -> None:
    """Each piece is small; together the header lines exceed max_header_size_in_bytes."""
    with connect(server.port) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        for i in range(15):  # 15 x ~300 bytes > the 4096-byte cap, under the 20-header cap
            sock.sendall(b"X-%d: %s\r\n" % (i, b"v" * 290))
        sock.sendall(b"\r\n")
        raw = read_until_closed(sock)
    assert status_of(raw) == 431
    assert still_serves(server.port)


def test_headers_just_under_the_cap_in_one_piece_are_fine(server) -> None:
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 290) for i in range(12))
    status, _, body = exchange(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert status == 200 and body == b"OK"
