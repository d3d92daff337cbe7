"""The opening handshake: exact answers to bad upgrade requests over raw sockets, and the
pure handshake functions."""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from rawws import KEY, read_head, upgrade_request

from packetron import WebSocket
from packetron.http.websocket.handshake import (accept_token, parse_upgrade, switching_head,
                                                upgrade_refusal)


@pytest.fixture
def server(make_server: Any) -> Any:
    server = make_server()

    @server.websocket("ws")
    async def ws_route(ws: WebSocket, request: Any) -> None:
        await ws.send("hi")

    server.get("plain", lambda request, response: response.send_text_plain("plain"))
    return server.start()


def answer(port: int, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and everything after the head, until the server closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        head, rest = read_head(sock)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def test_a_valid_upgrade_gets_101_with_the_accept_token(server: Any) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(upgrade_request())
        head, rest = read_head(sock)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    expected = base64.b64encode(hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                .digest()).decode()
    assert headers["sec-websocket-accept"] == expected
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert "sec-websocket-extensions" not in headers  # nothing offered, nothing agreed


def test_no_upgrade_header_is_426(server: Any) -> None:
    status, headers, _ = answer(server.port, b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    assert headers["upgrade"] == "websocket"


def test_wrong_version_is_426_with_version_13(server: Any) -> None:
    status, headers, _ = answer(server.port, upgrade_request(version=b"8"))
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize("payload", [
    pytest.param(upgrade_request(key=b"short"), id="key-not-16-bytes"),
    pytest.param(upgrade_request(key=b"!!!!!!!!!!!!!!!!!!!!!!=="), id="key-not-base64"),
    pytest.param(upgrade_request(key=base64.b64encode(b"x" * 17)), id="key-17-bytes"),
    pytest.param(upgrade_request(headers=b"Sec-WebSocket-Key: " + KEY + b"\r\n"), id="key-twice"),
    pytest.param(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n", id="no-key"),
    pytest.param(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + KEY + b"\r\n\r\n", id="no-version"),
    pytest.param(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 id="no-connection-upgrade"),
    pytest.param(upgrade_request(http=b"HTTP/1.0"), id="http-1.0"),
    pytest.param(upgrade_request(method=b"HEAD"), id="head"),
    pytest.param(upgrade_request(headers=b"Content-Length: 3\r\n") + b"abc", id="with-body"),
])
def test_malformed_upgrades_are_400(server: Any, payload: bytes) -> None:
    status, _, _ = answer(server.port, payload)
    assert status == 400


def test_other_methods_get_405_with_allow(server: Any) -> None:
    status, headers, _ = answer(server.port, upgrade_request(method=b"POST"))
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_an_upgrade_to_a_plain_route_is_answered_as_http_and_closed(server: Any) -> None:
    status, _, rest = answer(server.port, upgrade_request("/plain") + b"\x81\x80trailing")
    assert status == 200
    assert rest == b"plain"


def test_frames_sent_right_behind_the_handshake_are_not_lost(make_server: Any) -> None:
    """A client may pipeline its first frame with the upgrade request; the bytes after the
    head go to the session."""
    import socket

    from rawws import frame

    server = make_server()

    @server.websocket("echo")
    async def echo(ws: WebSocket, request: Any) -> None:
        await ws.send(await ws.receive())

    server.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(upgrade_request("/echo") + frame(0x1, b"early bird"))
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101")
        while len(rest) < 12:
            rest += sock.recv(100)
    assert rest[:12] == b"\x81\x0aearly bird"


# ---------------------------------------------------------------- pure functions


def headers_of(raw: bytes) -> list[tuple[bytes, bytes]]:
    return [tuple(line.split(b": ", 1)) for line in raw.split(b"\r\n")  # type: ignore[misc]
            if line]


GOOD = headers_of(b"Host: t\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Protocol: a, b\r\nSec-WebSocket-Protocol: c\r\n"
                  b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo")


def test_refusal_checks_in_order() -> None:
    assert upgrade_refusal("GET", "1.1", GOOD, False) is None
    assert upgrade_refusal("GET", "1.1", GOOD, True).status_code == 400  # type: ignore[union-attr]
    assert upgrade_refusal("GET", "1.1", [(b"Host", b"t")], False).status_code == 426  # type: ignore[union-attr]
    assert upgrade_refusal("PUT", "1.1", GOOD, False).status_code == 400  # type: ignore[union-attr]


def test_offers_are_parsed() -> None:
    offer = parse_upgrade(GOOD)
    assert offer.key == KEY
    assert offer.subprotocols == ("a", "b", "c")
    assert offer.extensions == ("permessage-deflate; client_max_window_bits", "x-foo")


def test_switching_head_refuses_header_injection() -> None:
    with pytest.raises(ValueError):
        switching_head(KEY, headers=[("X-A", "b\r\nX-Evil: 1")])
    with pytest.raises(ValueError):
        switching_head(KEY, subprotocol="bad proto")
    head = switching_head(KEY, subprotocol="chat", extensions="permessage-deflate")
    assert b"sec-websocket-accept: " + accept_token(KEY) in head
    assert head.endswith(b"sec-websocket-protocol: chat\r\n"
                         b"sec-websocket-extensions: permessage-deflate\r\n\r\n")
