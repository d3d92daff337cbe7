"""Raw-socket WebSocket helpers: a handshake by hand, frames built byte by byte, and the
server's frames parsed by wsproto as the client side."""
from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Any

from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Event

KEY = base64.b64encode(b"0123456789abcdef")
OPCODES = {"cont": 0x0, "text": 0x1, "binary": 0x2, "close": 0x8, "ping": 0x9, "pong": 0xA}


def upgrade_request(path: str = "/ws", *, headers: bytes = b"", key: bytes = KEY,
                    version: bytes = b"13", method: bytes = b"GET",
                    http: bytes = b"HTTP/1.1") -> bytes:
    return (method + b" " + path.encode() + b" " + http + b"\r\nHost: t\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: " + version + b"\r\n"
            + headers + b"\r\n")


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head (up to the blank line) and the bytes after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class RawClient:
    """A hand-driven WebSocket client over a plain socket."""

    def __init__(self, port: int, path: str = "/ws", *, headers: bytes = b"",
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(upgrade_request(path, headers=headers))
        head, rest = read_head(self.sock)
        self.head = head
        assert head.startswith(b"HTTP/1.1 101 "), head
        self.conn = Connection(ConnectionType.CLIENT)
        self.conn.receive_data(rest)

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                   mask: bool = True, length: int | None = None) -> None:
        self.sock.sendall(frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length=length))

    def events(self, timeout: float = 10.0) -> list[Event]:
        """Events parsed from what arrives next (waits for at least one, or end of file)."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(self.conn.events())
            if found:
                return found
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.conn.receive_data(data or None)

    def close_code(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read until the server's close frame (or end of file: 1006)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(deadline - time.monotonic()):
                if isinstance(event, CloseConnection):
                    return int(event.code), event.reason
        raise TimeoutError("no close frame")

    def read_to_eof(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        data = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3, byte by byte: octet i XOR key octet i mod 4 (the reference)."""
    return bytes(octet ^ key[index % 4] for index, octet in enumerate(payload))


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
          length: int | None = None, key: bytes | None = None) -> bytes:
    """One frame, exactly as given (invalid ones included). `length` overrides the
    announced payload length; `key` is the masking key (a random one by default)."""
    announced = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if announced < 126:
        head = bytes((first, mask_bit | announced))
    elif announced < 1 << 16:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", announced)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", announced)
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + mask_bytes(payload, key)
