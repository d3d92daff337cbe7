"""How channel messages travel between processes, sans-I/O.

A message is a str, bytes, or a JSON value (dict, list, number, bool, None); subscribers
get it back as the same type. On the wire (the worker hub, Redis) it is one kind byte
followed by the body: UTF-8 text, the bytes as they are, or compact JSON.
"""
from __future__ import annotations

import json
from typing import Any

__all__ = ["Envelope", "encode", "decode", "check_name", "TEXT", "BINARY", "JSON",
           "MAX_MESSAGE_BYTES", "MAX_NAME_BYTES"]

TEXT, BINARY, JSON = 0x74, 0x62, 0x6A  # "t", "b", "j"
# Bounds what one publish can make every process buffer; the hub refuses larger frames.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_NAME_BYTES = 1024

_UNSET: Any = object()


class Envelope:
    """One published message, shared by every local subscriber of its channel.

    `value()` decodes it: str and bytes once (they are immutable, so subscribers share
    them), a JSON value once per call (each subscriber gets its own copy to mutate).
    """

    __slots__ = ("kind", "body", "_value")

    def __init__(self, kind: int, body: bytes) -> None:
        self.kind = kind
        self.body = body
        self._value = _UNSET

    def value(self) -> Any:
        if self.kind == JSON:
            return json.loads(self.body)
        value = self._value
        if value is _UNSET:
            value = self._value = self.body.decode("utf-8") if self.kind == TEXT else self.body
        return value

    def wire(self) -> bytes:
        """The kind byte and the body, as sent to other processes."""
        return bytes((self.kind,)) + self.body

    def __len__(self) -> int:
        return len(self.body) + 1


def encode(message: Any) -> Envelope:
    """Wrap a message for publishing.

    Raises:
        TypeError: not str, bytes or a JSON-serializable value.
        ValueError: over MAX_MESSAGE_BYTES once encoded.
    """
    if isinstance(message, str):
        envelope = Envelope(TEXT, message.encode("utf-8"))
        envelope._value = message
    elif isinstance(message, (bytes, bytearray, memoryview)):
        body = bytes(message)
        envelope = Envelope(BINARY, body)
    else:
        envelope = Envelope(JSON, json.dumps(message, separators=(",", ":"),
                                             ensure_ascii=False).encode("utf-8"))
    if len(envelope.body) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a channel message is at most {MAX_MESSAGE_BYTES} bytes "
                         f"encoded, got {len(envelope.body)}")
    return envelope


def decode(wire: bytes) -> Envelope:
    """The envelope of bytes made by `Envelope.wire()`.

    Raises:
        ValueError: an empty or unknown message.
    """
    if not wire or wire[0] not in (TEXT, BINARY, JSON):
        raise ValueError("not a channel message")
    return Envelope(wire[0], wire[1:])


def check_name(name: str) -> bytes:
    """The UTF-8 bytes of a channel name.

    Raises:
        TypeError: the name is not a str.
        ValueError: empty, or over MAX_NAME_BYTES.
    """
    if not isinstance(name, str):
        raise TypeError(f"a channel name is a str, not {type(name).__name__}")
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"a channel name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    return raw
