"""RFC 9110/9112 conformance on real loopback sockets: exact statuses and bytes."""
from __future__ import annotations

import json
import time

import pytest

from rawhttp import connect, exchange, read_responses, read_until_closed, status_of, still_serves

from packetron import HandlerFlags


@pytest.fixture
def server(make_server):
    server = make_server(header_timeout=2.0, keep_alive_timeout=2.0, body_timeout=2.0,
                         max_header_count=20, max_header_size_in_bytes=4096)
    server.get("ping", lambda q, s: s.send_ok())
    server.get("pong", lambda q, s: s.send_text_plain("pong"))
    server.post("json", lambda q, s: s.send_json(q.body), flags=HandlerFlags.JSON_BODY)

    @server.post("inspect")
    async def inspect_request(request, response):
        body = await request.get_body()
        response.send_json({
            "hosts": request.headers.get_all("host"),
            "content_type": request.content_type,
            "headers_have_trailer": "x-checksum" in request.headers,
            "trailers": dict(request.trailers),
            "body": body.decode() if isinstance(body, bytes) else body,
            "version": request.http_version,
        })

    @server.get("value")
    def value(request, response):
        response.send_json({"value": request.headers.get("x-value"),
                            "all": request.headers.get_all("x-value"),
                            "host": request.headers.get("host"),
                            "trailers": len(request.trailers)})

    @server.options("x")
    def options_x(request, response):
        response.send_text_plain("options " + request.http_version)

    @server.get("stream")
    async def stream(request, response):
        length = request.get_query_params().get("length")
        response.start(200, [("Content-Type", "text/plain")],
                       content_length=int(length) if length else None)
        await response.write(b"hello ")
        await response.write(b"world")
        response.end()

    return server.start()


def send_and_read(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with connect(port, timeout) as sock:
        sock.sendall(payload)
        return read_until_closed(sock)


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(status line, headers lower-cased, everything after the head)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, rest


CHUNKED_POST = (b"POST /inspect HTTP/1.1\r\nHost: good.example.com\r\n"
                b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n")


# ---------------------------------------------------------------- 1. trailers


def test_trailer_fields_stay_out_of_the_headers(server) -> None:
    payload = CHUNKED_POST + (b"Host: evil.example.com\r\nContent-Type: application/json\r\n"
                              b"X-Checksum: abc\r\n\r\n")
    status, _, body = exchange(server.port, payload, method=b"POST")
    assert status == 200
    assert json.loads(body) == {
        "hosts": ["good.example.com"],
        "content_type": "text/plain",
        "headers_have_trailer": False,
        "trailers": {"host": "evil.example.com", "content-type": "application/json",
                     "x-checksum": "abc"},
        "body": "hello",
        "version": "1.1",
    }


def test_trailers_are_empty_by_default(server) -> None:
    status, _, body = exchange(server.port, b"GET /value HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["trailers"] == 0
    status, _, body = exchange(server.port, CHUNKED_POST + b"\r\n", method=b"POST")
    assert status == 200 and json.loads(body)["trailers"] == {}


def test_invalid_host_in_a_trailer_does_not_decide_anything(server) -> None:
    status, _, body = exchange(server.port, CHUNKED_POST + b"Host: a/b\r\n\r\n", method=b"POST")
    assert status == 200
    assert json.loads(body)["hosts"] == ["good.example.com"]
    assert json.loads(body)["trailers"] == {"host": "a/b"}


def test_trailer_section_is_bounded_like_a_head(server) -> None:
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(25))  # max_header_count is 20
    raw = send_and_read(server.port, CHUNKED_POST + trailers + b"\r\n")
    assert status_of(raw) == 431
    assert b"connection: close" in raw
    assert still_serves(server.port)


def test_pipelined_request_after_trailers_has_its_own_headers(server) -> None:
    payload = (CHUNKED_POST + b"X-Checksum: abc\r\n\r\n"
               + b"GET /value HTTP/1.1\r\nHost: next\r\nX-Value: v\r\n\r\n")
    with connect(server.port) as sock:
        sock.sendall(payload)
        (first, first_body), (second, second_body) = read_responses(
            sock, 2, methods=[b"POST", b"GET"])
    assert first.status_code == 200 and json.loads(first_body)["trailers"] == {"x-checksum": "abc"}
    assert second.status_code == 200
    assert json.loads(second_body) == {"value": "v", "all": ["v"], "host": "next", "trailers": 0}


# ---------------------------------------------------------------- 2. transfer codings


@pytest.mark.parametrize("codings", [
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: deflate\r\nTransfer-Encoding: gzip\r\n",
])
def test_transfer_coding_other_than_chunked_is_501_and_close(server, codings: bytes) -> None:
    raw = send_and_read(server.port, b"POST /inspect HTTP/1.1\r\nHost: x\r\n" + codings
                        + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    status_line, headers, _ = split_response(raw)
    assert status_line == b"HTTP/1.1 501 Not Implemented"
    assert headers[b"connection"] == b"close"
    assert still_serves(server.port)


@pytest.mark.parametrize("codings", [
    b"Transfer-Encoding: chunked, gzip\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
])
def test_chunked_not_last_or_twice_is_400(server, codings: bytes) -> None:
    """llhttp refuses these itself; the body length cannot be known (RFC 9112 §6.3)."""
    raw = send_and_read(server.port, b"POST /inspect HTTP/1.1\r\nHost: x\r\n" + codings
                        + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status_of(raw) == 400
    assert b"connection: close" in raw
    assert still_serves(server.port)


def test_lone_chunked_with_surrounding_whitespace_is_decoded(server) -> None:
    payload = (b"POST /inspect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \tChunked \r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")
    status, _, body = exchange(server.port, payload, method=b"POST")
    assert status == 200 and json.loads(body)["body"] == "hello"
    status, _, body = exchange(server.port, b"POST /json HTTP/1.1\r\nHost: x\r\n"
                               b"Transfer-Encoding: chunked \r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n",
                               method=b"POST")
    assert status == 200 and body == b'{"a":1}'


# ---------------------------------------------------------------- 3. HEAD never has content


@pytest.mark.parametrize("payload, status", [
    (b"HEAD /ping HTTP/1.1\r\n\r\n", 400),                            # no Host (dispatch)
    (b"HEAD /ping HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),  # llhttp's own error
    (b"HEAD /ping HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),               # invalid Host
    (b"HEAD /ping HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(25))
     + b"\r\n", 431),
    (b"HEAD /ping HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"HEAD /ping#x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
    (b"HEAD /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
])
def test_head_error_responses_have_no_content(server, payload: bytes, status: int) -> None:
    raw = send_and_read(server.port, payload)
    _, headers, rest = split_response(raw)
    assert status_of(raw) == status
    assert raw.endswith(b"\r\n\r\n") and rest == b""
    assert int(headers[b"content-length"]) > 0  # what a GET would have received
    assert headers[b"connection"] == b"close"


def test_head_then_unknown_method_gets_a_body_for_the_unknown_one(server) -> None:
    raw = send_and_read(server.port, b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                                     b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
    first, _, second = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 2" in first
    assert second.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert second.endswith(b"\r\n\r\nNot Implemented: unknown method")


# ---------------------------------------------------------------- 4. only HTTP/ is HTTP


@pytest.mark.parametrize("payload", [
    b"OPTIONS /x RTSP/1.0\r\nHost: x\r\n\r\n",
    b"OPTIONS /x RTSP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    b"GET /ping RTSP/1.1\r\nHost: x\r\n\r\n",               # would be the fast lane
    b"SOURCE /x ICE/1.0\r\nHost: x\r\n\r\n",
])
def test_other_protocol_names_are_400(server, payload: bytes) -> None:
    raw = send_and_read(server.port, payload)
    assert status_of(raw) == 400
    assert raw.endswith(b"Bad Request: not an HTTP request line")
    assert still_serves(server.port)


def test_other_protocol_pipelined_after_http_is_400(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                                     b"GET /pong RTSP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.count(b"HTTP/1.1 400 Bad Request\r\n") == 1
    assert raw.endswith(b"Bad Request: not an HTTP request line")


def test_other_protocol_pipelined_after_the_same_line_is_400(server) -> None:
    raw = send_and_read(server.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                                     b"GET /ping RTSP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.count(b"HTTP/1.1 400 Bad Request\r\n") == 1
    assert raw.endswith(b"Bad Request: not an HTTP request line")


def test_other_protocol_split_across_reads_is_400(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /pi")
        time.sleep(0.05)
        sock.sendall(b"ng RT")
        time.sleep(0.05)
        sock.sendall(b"SP/1.1\r\nHost: x\r\n\r\n")
        raw = read_until_closed(sock)
    assert status_of(raw) == 400
    assert raw.endswith(b"Bad Request: not an HTTP request line")


def test_http_line_split_across_reads_and_pipelined_lines_are_fine(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /pi")
        time.sleep(0.05)
        sock.sendall(b"ng HT")
        time.sleep(0.05)
        sock.sendall(b"TP/1.1\r\nHost: x\r\n\r\nGET /pong HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"OPTIONS /x HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = read_responses(sock, 3)
    assert [(r.status_code, body) for r, body in responses] == [
        (200, b"OK"), (200, b"pong"), (200, b"options 1.1")]


# ---------------------------------------------------------------- 5. OWS around values


def test_field_values_lose_surrounding_whitespace(server) -> None:
    status, _, body = exchange(server.port, b"GET /value HTTP/1.1\r\nHost: x \t\r\n"
                               b"X-Value:\tabc\t\r\nX-Value:  d e \r\n\r\n")
    assert status == 200
    assert json.loads(body) == {"value": "abc, d e", "all": ["abc", "d e"], "host": "x",
                                "trailers": 0}


# ---------------------------------------------------------------- 6. fragments


@pytest.mark.parametrize("target", [
    b"/ping#frag", b"/ping?a=1#frag", b"/ping#", b"/%70ing#frag", b"/nowhere#x",
])
def test_target_with_a_fragment_is_400(server, target: bytes) -> None:
    raw = send_and_read(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 400
    assert raw.endswith(b"Bad Request: a request target cannot contain '#'")


def test_fragment_in_a_post_query_is_400(server) -> None:
    raw = send_and_read(server.port, b"POST /json?a#b HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 2\r\n\r\n{}")
    assert status_of(raw) == 400


# ---------------------------------------------------------------- 7. methods


@pytest.mark.parametrize("payload", [
    b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
    b"-BLARGH / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n",
    b"DESCRIBE / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PROPFIND /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"QUERY /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"BR",  # the parser refuses it before the rest arrives: still a token so far
])
def test_valid_but_unserved_method_is_501(server, payload: bytes) -> None:
    raw = send_and_read(server.port, payload)
    status_line, headers, _ = split_response(raw)
    assert status_line == b"HTTP/1.1 501 Not Implemented"
    assert headers[b"connection"] == b"close"
    assert still_serves(server.port)


def test_unserved_method_on_a_known_path_lists_allow(server) -> None:
    raw = send_and_read(server.port, b"PROPFIND /ping HTTP/1.1\r\nHost: x\r\n"
                                     b"Connection: close\r\n\r\n")
    _, headers, _ = split_response(raw)
    assert status_of(raw) == 501 and headers[b"allow"] == b"GET, HEAD"


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n",
    b"BR\x01W / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"(BREW) / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
])
def test_invalid_method_token_is_400(server, payload: bytes) -> None:
    raw = send_and_read(server.port, payload)
    assert status_of(raw) == 400
    assert raw.endswith(b"Bad Request: Invalid method")


# ---------------------------------------------------------------- 8. singleton fields


@pytest.mark.parametrize("fields", [
    b"Content-Type: application/json\r\nContent-Type: application/json\r\n",
    b"Content-Type: application/json\r\nContent-Type: text/plain\r\n",
])
def test_content_type_given_twice_is_400(server, fields: bytes) -> None:
    raw = send_and_read(server.port, b"POST /json HTTP/1.1\r\nHost: x\r\n" + fields
                        + b"Content-Length: 2\r\n\r\n{}")
    assert status_of(raw) == 400
    assert raw.endswith(b"Bad Request: more than one Content-Type header")


@pytest.mark.parametrize("lengths", [(b"1", b"2"), (b"2", b"2")])
def test_content_length_given_twice_is_400(server, lengths: tuple[bytes, bytes]) -> None:
    raw = send_and_read(server.port, b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: "
                        + lengths[0] + b"\r\nContent-Length: " + lengths[1] + b"\r\n\r\n{}")
    assert status_of(raw) == 400
    assert b"connection: close" in raw


# ---------------------------------------------------------------- 9. HTTP/1.0 streaming


def test_http10_streamed_response_is_close_delimited(server) -> None:
    raw = send_and_read(server.port, b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status_line, headers, rest = split_response(raw)
    assert status_line == b"HTTP/1.1 200 OK"
    assert b"transfer-encoding" not in headers and b"content-length" not in headers
    assert headers[b"connection"] == b"close"
    assert rest == b"hello world"  # and then the server closed (read_until_closed returned)


def test_http10_streamed_response_with_length_stays_alive(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /stream?length=11 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        sock.settimeout(5)
        raw = b""
        while not raw.endswith(b"hello world"):
            raw += sock.recv(65536)
        _, headers, rest = split_response(raw)
        assert headers[b"content-length"] == b"11" and headers[b"connection"] == b"keep-alive"
        assert rest == b"hello world"
        sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
        assert read_until_closed(sock).endswith(b"\r\n\r\nOK")


def test_http11_streamed_response_is_still_chunked(server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        (response, body), = read_responses(sock)
    headers = dict(response.headers)
    assert headers[b"transfer-encoding"] == b"chunked" and body == b"hello world"
