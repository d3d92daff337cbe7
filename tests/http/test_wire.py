"""Response serialization without sockets, checked with h11 as the independent client."""
from __future__ import annotations

import h11
import pytest

from packetron.http import wire
from packetron.status import STATUS_LINES

DATE = wire.format_date_header(0)


def parse(raw: bytes) -> tuple[h11.Response, bytes]:
    client = h11.Connection(our_role=h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response = client.next_event()
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            break
    assert isinstance(response, h11.Response)
    return response, body


def test_date_header_is_imf_fixdate() -> None:
    assert DATE == b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"


def test_status_lines_are_prebuilt_for_every_code() -> None:
    assert STATUS_LINES[200] == b"HTTP/1.1 200 OK\r\n"
    assert STATUS_LINES[431] == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    assert STATUS_LINES[599] == b"HTTP/1.1 599\r\n"
    assert len(STATUS_LINES) == 500


def test_head_with_length_parses_in_h11() -> None:
    head = wire.build_head(201, DATE, b"content-type: application/json\r\n", 2,
                           [("X-A", "1")], b"")
    response, body = parse(head + b"{}")
    assert response.status_code == 201
    assert dict(response.headers)[b"content-length"] == b"2"
    assert dict(response.headers)[b"x-a"] == b"1"
    assert body == b"{}"


def test_chunked_body_round_trips() -> None:
    head = wire.build_head(200, DATE, None, None, None, b"")
    raw = head + wire.encode_chunk(b"hello ") + wire.encode_chunk(b"world") + wire.LAST_CHUNK
    response, body = parse(raw)
    assert dict(response.headers)[b"transfer-encoding"] == b"chunked"
    assert body == b"hello world"


def test_header_with_line_break_is_refused() -> None:
    with pytest.raises(ValueError):
        wire.build_head(200, DATE, None, 0, [("X", "a\r\nSet-Cookie: evil=1")], b"")


def test_close_header_added() -> None:
    raw = wire.simple_response(400, DATE, b"bad", close=True)
    assert b"connection: close\r\n" in raw
    response, body = parse(raw)
    assert response.status_code == 400 and body == b"bad"
