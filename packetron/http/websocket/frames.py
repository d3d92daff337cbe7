"""RFC 6455 frames, sans-I/O: a reader for a client's frames and the server's frames.

`FrameReader.feed(data)` takes bytes as they arrive, in pieces of any size, and calls its
listener once per complete message, control frame, or the first violation of the
protocol. Between calls it keeps at most one incomplete frame head (or one incomplete
control frame, up to 131 bytes) and the payload of the message under way: data frames
are unmasked (and inflated) as their bytes arrive, into one buffer per message, so a
message costs about its own size (at most `max_message_size`) however it is split.

A listener is called rather than a list of events returned (h11's shape) because the hot
path is one message per read: one call costs less than building and walking a list.

Checked, as RFC 6455 §5 requires of a server (the close code in brackets):
- every client frame is masked [1002]; RSV bits are 0 unless permessage-deflate was
  negotiated, which gives RSV1 a meaning on the first frame of a data message [1002];
- opcodes 3-7 and 11-15 are reserved [1002]; control frames carry at most 125 bytes and
  are never fragmented [1002]; a continuation frame needs a message to continue, and a
  new data message cannot start inside a fragmented one [1002];
- the 64-bit length has its most significant bit clear [1002];
- text is UTF-8, checked as the fragments arrive [1007]; a close frame's payload is empty
  or a valid code and a UTF-8 reason (§5.5.1, §7.4) [1002, 1007];
- a message over `max_message_size` is refused as soon as a frame head announces it (or,
  compressed, as soon as inflating passes it) [1009].
Lengths that did not use the shortest encoding are accepted: §5.2 puts that on the sender.
"""
from __future__ import annotations

import codecs
import struct
from typing import Callable, Protocol

from packetron.http.websocket.extensions import Inflater

__all__ = ["FrameListener", "FrameReader", "encode_frame", "encode_close", "text_frame",
           "binary_frame", "unmask", "TEXT_HEADS", "BINARY_HEADS", "VALID_CLOSE_CODES",
           "OP_CONTINUATION", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_FIN, _RSV1, _RSV_ALL, _MASKED = 0x80, 0x40, 0x70, 0x80
_MAX_CONTROL_PAYLOAD = 125  # §5.5
# Close codes a peer may send (§7.4.1, and the IANA registry up to 1014): 1004-1006 and
# 1015 are reserved for reports inside an endpoint, 0-999 and 1016-2999 unassigned.
VALID_CLOSE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) \
    | frozenset(range(3000, 5000))
_NO_STATUS = 1005  # §7.1.5: what a close frame without a code reports
_PROTOCOL_ERROR, _INVALID_DATA, _TOO_BIG = 1002, 1007, 1009
_FINAL_TEXT, _FINAL_BINARY = _FIN | OP_TEXT, _FIN | OP_BINARY  # first bytes of whole messages

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
_LENGTH16 = struct.Struct("!BBH")
_LENGTH64 = struct.Struct("!BBQ")
# From this size on, 4 strided bytes.translate() passes beat int arithmetic, whose cost
# per byte grows with the size (measured on CPython 3.11: even at 16 KiB, 225 against
# 129 us at 64 KiB, 3.9 against 2.1 ms at 1 MiB).
_TRANSLATE_FROM = 16384
_XOR_TABLES = [bytes(value ^ key for value in range(256)) for key in range(256)]
_from_bytes = int.from_bytes  # a global name is found faster than int's attribute


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR `payload` with the 4-byte masking `key` repeated (§5.3); it is its own
    inverse, so it masks too."""
    size = len(payload)
    if size < _TRANSLATE_FROM:
        # The key repeated to the payload's length, both read as one int: XOR once.
        # (Cheaper at every size than multiplying the key into place and masking.)
        return (_from_bytes(payload, "little")
                ^ _from_bytes((key * ((size >> 2) + 1))[:size], "little")).to_bytes(
                    size, "little")
    out = bytearray(size)
    tables = _XOR_TABLES
    out[0::4] = payload[0::4].translate(tables[key[0]])
    out[1::4] = payload[1::4].translate(tables[key[1]])
    out[2::4] = payload[2::4].translate(tables[key[2]])
    out[3::4] = payload[3::4].translate(tables[key[3]])
    return bytes(out)


class FrameListener(Protocol):
    """What a FrameReader reports to. After on_close or on_violation nothing more is
    reported: the reader ignores whatever else it is fed."""

    def on_message(self, message: str | bytes) -> None:
        """A whole message: str for text, bytes for binary (fragments joined, inflated)."""

    def on_ping(self, payload: bytes) -> None:
        """A ping; the answer is a pong with the same payload (§5.5.3)."""

    def on_pong(self, payload: bytes) -> None:
        """A pong."""

    def on_close(self, code: int, reason: str) -> None:
        """The peer's close frame: its code (1005: none given) and reason."""

    def on_violation(self, code: int, reason: str) -> None:
        """The peer broke the protocol: close with `code` (1002, 1007 or 1009);
        `reason` says what was wrong."""


class FrameReader:
    """Reads a client's frames and assembles its messages (see the module docstring).

    Args:
        listener: told about each message, control frame, or violation.
        max_message_size: the most bytes a message may have (uncompressed).
        inflater: the connection's permessage-deflate state when it was negotiated.

    Attributes:
        stopped: a close frame or a violation ended the input; feed() ignores the rest.
    """

    __slots__ = ("_on_message", "_on_ping", "_on_pong", "_on_close", "_on_violation",
                 "_max_size", "_inflater", "_tail", "stopped",
                 "_remaining", "_key", "_key_offset", "_frame_fin",
                 "_opcode", "_buffer", "_size", "_decoder", "_compressed")

    def __init__(self, listener: FrameListener, max_message_size: int,
                 inflater: Inflater | None = None) -> None:
        self._on_message: Callable[[str | bytes], None] = listener.on_message
        self._on_ping = listener.on_ping
        self._on_pong = listener.on_pong
        self._on_close = listener.on_close
        self._on_violation = listener.on_violation
        self._max_size = max_message_size
        self._inflater = inflater
        self._tail = b""             # the start of a frame whose head is incomplete
        self.stopped = False
        # The data frame whose payload is arriving (0 bytes remaining: none).
        self._remaining = 0
        self._key = b""
        self._key_offset = 0
        self._frame_fin = False
        # The message being assembled (opcode 0: none).
        self._opcode = 0
        # Its payload so far: one buffer, not a list of pieces, so that a peer dribbling
        # a message a byte per read costs its size in memory, not 40 times that.
        self._buffer = bytearray()
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._compressed = False

    def feed(self, data: bytes) -> None:
        """Take the next bytes from the peer and report what they complete."""
        if self.stopped:
            return
        if not (self._tail or self._remaining or self._opcode):
            # The usual read: exactly one whole, small, final, uncompressed data frame
            # (masked, so its second byte is 0x80 + a length under 126). Anything else,
            # including any violation, takes the loop below.
            size = len(data) - 6
            if 0 <= size < 126 and data[1] == 0x80 | size and size <= self._max_size:
                first = data[0]
                if first == _FINAL_TEXT or first == _FINAL_BINARY:
                    # unmask() written out: the key 32 times covers any length up to 125.
                    payload = (_from_bytes(data[6:], "little") ^ _from_bytes(
                        (data[2:6] * 32)[:size], "little")).to_bytes(size, "little")
                    if first == _FINAL_BINARY:
                        return self._on_message(payload)
                    try:
                        text = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        return self._violate(_INVALID_DATA, "invalid UTF-8 in text")
                    return self._on_message(text)
        if self._tail:
            data = self._tail + data
            self._tail = b""
        pos = 0
        end = len(data)
        while pos < end:
            if self._remaining:
                pos = self._payload(data, pos, end)
                if self.stopped:
                    return
                continue
            if end - pos < 2:
                break
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            # What the first two bytes alone can break, before waiting for the rest.
            if first & _RSV_ALL and not (first & _RSV_ALL == _RSV1 and self._inflater
                                         is not None and opcode in (OP_TEXT, OP_BINARY)):
                return self._violate(_PROTOCOL_ERROR, "reserved bits set")
            if opcode & 0x08:
                if opcode > OP_PONG:
                    return self._violate(_PROTOCOL_ERROR, f"reserved opcode {opcode}")
                if not first & _FIN:
                    return self._violate(_PROTOCOL_ERROR, "fragmented control frame")
                if length > _MAX_CONTROL_PAYLOAD:
                    return self._violate(_PROTOCOL_ERROR, "control frame over 125 bytes")
            elif opcode == OP_CONTINUATION:
                if not self._opcode:
                    return self._violate(_PROTOCOL_ERROR, "continuation without a message")
            elif opcode > OP_BINARY:
                return self._violate(_PROTOCOL_ERROR, f"reserved opcode {opcode}")
            elif self._opcode:
                return self._violate(_PROTOCOL_ERROR, "new message inside a fragmented one")
            if not second & _MASKED:
                return self._violate(_PROTOCOL_ERROR, "unmasked client frame")
            if length < 126:
                start = pos + 6
            elif length == 126:
                start = pos + 8
                if start > end:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
            else:
                start = pos + 14
                if start > end:
                    break
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
                if length >> 63:
                    return self._violate(_PROTOCOL_ERROR, "length over 63 bits")
            if start > end:
                break
            if opcode & 0x08:
                if start + length > end:
                    break  # control frames are handled whole
                pos = start + length
                self._control(opcode, unmask(data[start:pos], data[start - 4:start]))
                if self.stopped:
                    return
                continue
            if opcode:
                compressed = first & _RSV1
                if not compressed and first & _FIN:
                    if length > self._max_size:
                        return self._violate(_TOO_BIG, "message too big")
                    if start + length <= end:
                        # The usual case: a whole message in one frame, all here.
                        pos = start + length
                        payload = unmask(data[start:pos], data[start - 4:start])
                        if opcode == OP_TEXT:
                            try:
                                message: str | bytes = payload.decode("utf-8")
                            except UnicodeDecodeError:
                                return self._violate(_INVALID_DATA, "invalid UTF-8 in text")
                            self._on_message(message)
                        else:
                            self._on_message(payload)
                        continue
                self._compressed = bool(compressed)
                self._size = 0
                self._opcode = opcode
                self._decoder = _Utf8Decoder() if opcode == OP_TEXT else None
            else:
                compressed = self._compressed
            if not compressed:
                # Refused on the announced length: the payload is never read.
                self._size += length
                if self._size > self._max_size:
                    return self._violate(_TOO_BIG, "message too big")
            self._key = data[start - 4:start]
            self._key_offset = 0
            self._frame_fin = bool(first & _FIN)
            self._remaining = length
            pos = start
            if not length and self._frame_fin:
                self._end_message()
                if self.stopped:
                    return
        if pos < end:
            self._tail = data[pos:]

    def _payload(self, data: bytes, pos: int, end: int) -> int:
        """Take what is here of the current data frame's payload; the new position."""
        take = min(self._remaining, end - pos)
        key = self._key
        offset = self._key_offset
        if offset:
            key = key[offset:] + key[:offset]
        piece = unmask(data[pos:pos + take], key)
        self._key_offset = (offset + take) & 3
        self._remaining -= take
        self._add(piece)
        if not self._remaining and self._frame_fin and not self.stopped:
            self._end_message()
        return pos + take

    def _add(self, piece: bytes) -> None:
        """One more piece of the current message's payload (unmasked)."""
        if self._compressed:
            assert self._inflater is not None
            inflated = self._inflater.inflate(piece, self._max_size - self._size)
            if isinstance(inflated, int):
                return self._violate_inflating(inflated)
            piece = inflated
            self._size += len(piece)
        self._collect(piece)

    def _collect(self, piece: bytes) -> None:
        """Keep a piece of the message's (inflated) payload. Text is checked as it comes,
        so that invalid UTF-8 fails the connection at once (§8.1), and decoded whole at
        the end."""
        decoder = self._decoder
        if decoder is not None:
            try:
                decoder.decode(piece)
            except UnicodeDecodeError:
                return self._violate(_INVALID_DATA, "invalid UTF-8 in text")
        self._buffer += piece

    def _end_message(self) -> None:
        if self._compressed:
            assert self._inflater is not None
            inflated = self._inflater.finish(self._max_size - self._size)
            if isinstance(inflated, int):
                return self._violate_inflating(inflated)
            if inflated:
                self._size += len(inflated)
                self._collect(inflated)
                if self.stopped:
                    return
        payload = bytes(self._buffer)
        self._buffer.clear()
        message: str | bytes = payload
        if self._decoder is not None:
            self._decoder = None
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:  # only a character cut off at the end is left
                return self._violate(_INVALID_DATA, "invalid UTF-8 in text")
        self._opcode = 0
        self._on_message(message)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._on_ping(payload)
        elif opcode == OP_PONG:
            self._on_pong(payload)
        elif opcode == OP_CLOSE:
            if not payload:
                code, reason = _NO_STATUS, ""
            elif len(payload) == 1:
                return self._violate(_PROTOCOL_ERROR, "close frame with a 1-byte payload")
            else:
                code = (payload[0] << 8) | payload[1]
                if code not in VALID_CLOSE_CODES:
                    return self._violate(_PROTOCOL_ERROR, f"invalid close code {code}")
                try:
                    reason = payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    return self._violate(_INVALID_DATA, "invalid UTF-8 in the close reason")
            self.stopped = True
            self._on_close(code, reason)
        else:
            self._violate(_PROTOCOL_ERROR, f"reserved opcode {opcode}")

    def _violate_inflating(self, code: int) -> None:
        self._violate(code, "message too big" if code == _TOO_BIG
                      else "invalid compressed data")

    def _violate(self, code: int, reason: str) -> None:
        self.stopped = True
        self._tail = b""
        self._buffer = bytearray()
        self._on_violation(code, reason)


# Heads of unfragmented, uncompressed server frames with up to 125 bytes, by length.
TEXT_HEADS = [bytes((_FIN | OP_TEXT, size)) for size in range(126)]
BINARY_HEADS = [bytes((_FIN | OP_BINARY, size)) for size in range(126)]


def encode_frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """One unmasked, unfragmented server frame (§5.2: a server never masks).

    Args:
        opcode: OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING or OP_PONG.
        payload: its payload (text already encoded as UTF-8, compressed if `rsv1`).
        rsv1: mark a compressed message (permessage-deflate).
    """
    first = _FIN | opcode | (_RSV1 if rsv1 else 0)
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return _LENGTH16.pack(first, 126, size) + payload
    return _LENGTH64.pack(first, 127, size) + payload


def text_frame(payload: bytes) -> bytes:
    """A text message's frame; `payload` is its UTF-8."""
    size = len(payload)
    if size < 126:
        return TEXT_HEADS[size] + payload
    return encode_frame(OP_TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    """A binary message's frame."""
    size = len(payload)
    if size < 126:
        return BINARY_HEADS[size] + payload
    return encode_frame(OP_BINARY, payload)


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame; code 1005 (the peer gave none) sends an empty payload (§7.1.5)."""
    if code == _NO_STATUS:
        return encode_frame(OP_CLOSE, b"")
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8"))
