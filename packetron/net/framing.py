"""Message framing over a byte stream, sans-I/O.

A framer turns messages into bytes (`encode`) and bytes into messages (`feed`), with
no socket, event loop or clock inside: the caller moves the bytes. Each framer keeps
whatever is left of an incomplete frame and enforces its size cap the moment it is
crossed, so a hostile peer can never make it buffer more than one frame's worth.

- `LengthPrefixedFramer`: a 1, 2, 4 or 8 byte length header, then the payload.
- `LineFramer`: payloads separated by a delimiter (one byte or several).
- `RpcFramer`: FramingSocket's frames, ``length | rpc id | payload``.

Errors are sticky, as in httptools: once a framer has raised, every later `feed`
raises again, because the stream position is lost and the connection must close.
"""
from __future__ import annotations

import codecs
import struct
from dataclasses import dataclass
from typing import Callable, Literal, TypeVar

from packetron.errors import ConfigError, FramingError, FrameTooLarge

__all__ = [
    "LengthPrefixedFramer",
    "LineFramer",
    "RpcFramer",
    "RpcFrameFormat",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
]

# 10 MiB, the contract's default: large enough for any RPC payload a server should
# hold in memory at once, small enough that a forged header cannot exhaust memory.
DEFAULT_MAX_FRAME_SIZE = 10 * 1024 * 1024
# 64 KiB: the same order as the line limits of mature servers (nginx's
# large_client_header_buffers is 8 KiB per line, Redis' inline protocol 64 KiB).
DEFAULT_MAX_LINE_SIZE = 64 * 1024

ByteOrder = Literal["big", "little"]
_T = TypeVar("_T")
Buffer = bytes | bytearray | memoryview

# struct codes for the header sizes the contract allows.
_SIZE_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _length_struct(header_size: int, byte_order: str) -> struct.Struct:
    if header_size not in _SIZE_CODES:
        raise ConfigError(f"header_size must be 1, 2, 4 or 8, got {header_size!r}")
    if byte_order not in ("big", "little"):
        raise ConfigError(f"byte_order must be 'big' or 'little', got {byte_order!r}")
    return struct.Struct((">" if byte_order == "big" else "<") + _SIZE_CODES[header_size])


def _check_max(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")


def _check_text_encoding(encoding: str) -> None:
    """Refuse, at construction, a codec that does not exist or that does not turn bytes
    into str (base64, rot13, zlib...): `feed` would otherwise fail on the first line."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    try:
        "".encode(encoding)
        b"".decode(encoding)
    except LookupError:
        raise ConfigError(f"encoding {encoding!r} is not a text encoding") from None


def _decode_reason(exc: ValueError) -> str:
    """What a codec said about bytes it could not decode, in a few words."""
    if isinstance(exc, UnicodeDecodeError):
        return f"{exc.reason} at byte {exc.start}"
    return str(exc) or type(exc).__name__


def _as_payload(msg: str | Buffer) -> bytes:
    if isinstance(msg, bytes):
        return msg
    if isinstance(msg, str):
        return msg.encode("utf-8")
    if isinstance(msg, (bytearray, memoryview)):
        return bytes(msg)
    raise TypeError(f"a frame payload must be bytes-like or str, not {type(msg).__name__}")


def feed_whole_frames(buf: bytearray, need: int, data: Buffer,
                      parse: Callable[[bytes | memoryview], tuple[list[_T], int]]) -> list[_T]:
    """The buffering half of a length-prefixed decoder's feed().

    Args:
        buf: bytes kept from earlier calls (an incomplete frame); updated in place.
        need: how many bytes `buf` must hold before another frame can complete, so a
            large frame arriving in many small pieces is not re-parsed on every call.
        data: the next bytes.
        parse: reads whole frames from the start of a buffer and returns them with the
            offset just past the last one.

    Returns:
        The frames completed by `data`; the rest stays in `buf`.
    """
    if buf:
        buf += data
        if len(buf) < need:
            return []
        with memoryview(buf) as view:
            frames, pos = parse(view)
        del buf[:pos]
        return frames
    # Fast path: nothing buffered, parse the caller's bytes without copying them.
    src = data if isinstance(data, bytes) else memoryview(data)
    frames, pos = parse(src)
    if pos < len(src):
        buf += src[pos:]
    return frames


class LengthPrefixedFramer:
    """Frames as ``length header | payload``; the header counts the payload only.

    Args:
        header_size: bytes in the length header: 1, 2, 4 or 8.
        byte_order: "big" (network order) or "little".
        max_frame_size: largest payload accepted or sent, in bytes. A header that
            announces more raises FrameTooLarge at once, before any payload byte.

    Raises:
        ConfigError: an option is out of range.
    """

    __slots__ = ("header_size", "byte_order", "max_frame_size", "_struct", "_unpack_from",
                 "_buf", "_need", "_error")

    def __init__(
        self,
        header_size: int = 4,
        byte_order: ByteOrder = "big",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self._struct = _length_struct(header_size, byte_order)
        _check_max("max_frame_size", max_frame_size)
        self.header_size = header_size
        self.byte_order = byte_order
        # A 1-byte header cannot announce more than 255: cap the limit to what fits.
        self.max_frame_size = min(max_frame_size, (1 << (8 * header_size)) - 1)
        self._unpack_from = self._struct.unpack_from
        self._buf = bytearray()
        # Bytes the buffer must hold before another frame can complete; lets a large
        # frame arriving in many small pieces skip re-parsing on every feed.
        self._need = header_size
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held from an incomplete frame."""
        return len(self._buf)

    def encode(self, msg: str | Buffer) -> bytes:
        """Frame one message.

        Args:
            msg: the payload; a str is encoded as UTF-8.

        Returns:
            header + payload, ready to write.

        Raises:
            FrameTooLarge: the payload is over max_frame_size.
            TypeError: msg is not bytes-like or str.
        """
        payload = _as_payload(msg)
        if len(payload) > self.max_frame_size:
            raise FrameTooLarge(
                f"payload of {len(payload)} bytes is over max_frame_size {self.max_frame_size}"
            )
        return self._struct.pack(len(payload)) + payload

    def feed(self, data: Buffer) -> list[bytes]:
        """Take bytes from the stream and return every frame they complete.

        Args:
            data: the next bytes, split anywhere.

        Returns:
            The payloads completed by this call, oldest first (possibly empty).
            Bytes of an incomplete frame stay buffered for the next call.

        Raises:
            FrameTooLarge: a header announced more than max_frame_size.
        """
        if self._error is not None:
            raise type(self._error)(str(self._error))
        return feed_whole_frames(self._buf, self._need, data, self._parse)

    def _parse(self, src: bytes | memoryview) -> tuple[list[bytes], int]:
        frames: list[bytes] = []
        hs = self.header_size
        limit = self.max_frame_size
        unpack_from = self._unpack_from
        n = len(src)
        pos = 0
        need = hs
        while n - pos >= hs:
            (length,) = unpack_from(src, pos)
            if length > limit:
                self._error = FrameTooLarge(
                    f"frame header announces {length} bytes, over max_frame_size {limit}"
                )
                raise self._error
            end = pos + hs + length
            if end > n:
                need = end - pos
                break
            frames.append(bytes(src[pos + hs:end]))
            pos = end
            need = hs
        self._need = need
        return frames, pos


class LineFramer:
    """Frames as ``line | delimiter``.

    Args:
        delimiter: the separator, one byte or more (b"\\r\\n" works); never part of a frame.
        encoding: frames are decoded with it and `encode` encodes str with it; None
            returns and accepts raw bytes.
        max_line_size: largest line in bytes, delimiter excluded. A line that grows
            past it raises FrameTooLarge before its delimiter arrives.

    Raises:
        ConfigError: an option is out of range, or `encoding` names no codec, or one
            that is not a text encoding (base64, rot13, ...).
    """

    __slots__ = ("delimiter", "encoding", "max_line_size", "_buf", "_scanned", "_error")

    def __init__(
        self,
        delimiter: bytes = b"\n",
        encoding: str | None = "utf-8",
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    ) -> None:
        if not isinstance(delimiter, (bytes, bytearray)) or not delimiter:
            raise ConfigError(f"delimiter must be non-empty bytes, got {delimiter!r}")
        _check_max("max_line_size", max_line_size)
        if encoding is not None:
            _check_text_encoding(encoding)  # a bad codec fails here, not on the first line
        self.delimiter = bytes(delimiter)
        self.encoding = encoding
        self.max_line_size = max_line_size
        self._buf = bytearray()
        # Buffered bytes already searched for the delimiter; the next search starts a
        # delimiter's length before it, so a long line fed byte by byte stays O(n).
        self._scanned = 0
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held from an incomplete line."""
        return len(self._buf)

    def encode(self, msg: str | Buffer) -> bytes:
        """Frame one line.

        Args:
            msg: the line, without delimiter; str is encoded with `encoding`
                (UTF-8 when encoding is None).

        Returns:
            line + delimiter.

        Raises:
            FramingError: the line contains the delimiter (it would arrive as two lines).
            FrameTooLarge: the line is over max_line_size.
        """
        if isinstance(msg, str):
            payload = msg.encode(self.encoding or "utf-8")
        else:
            payload = _as_payload(msg)
        if len(payload) > self.max_line_size:
            raise FrameTooLarge(
                f"line of {len(payload)} bytes is over max_line_size {self.max_line_size}"
            )
        if self.delimiter in payload:
            raise FramingError("a line must not contain the delimiter")
        return payload + self.delimiter

    def feed(self, data: Buffer) -> list[str] | list[bytes]:
        """Take bytes from the stream and return every line they complete.

        Args:
            data: the next bytes, split anywhere (a multi-byte delimiter too).

        Returns:
            The lines completed by this call without their delimiter, as str (or bytes
            when encoding is None). The incomplete last line stays buffered.

        Raises:
            FrameTooLarge: a line is, or has grown, over max_line_size.
            FramingError: a line could not be decoded with `encoding` (whatever the
                codec raised; it is the error's context).
        """
        if self._error is not None:
            raise type(self._error)(str(self._error))
        delim = self.delimiter
        buf = self._buf
        raw: list[bytes] = []
        if buf:
            # Finish the buffered line first: search only the bytes not searched yet.
            start = self._scanned
            buf += data
            i = buf.find(delim, start)
            if i < 0:
                self._scanned = max(0, len(buf) - len(delim) + 1)
                self._check_partial(buf)
                return []
            raw.append(bytes(buf[:i]))
            rest = bytes(buf[i + len(delim):])
            buf.clear()
        else:
            rest = data if isinstance(data, bytes) else bytes(data)
        # Everything after the first complete line is fresh: one C-level split.
        parts = rest.split(delim)
        raw.extend(parts[:-1])
        tail = parts[-1]
        limit = self.max_line_size
        for line in raw:
            if len(line) > limit:
                self._fail(FrameTooLarge(
                    f"line of {len(line)} bytes is over max_line_size {limit}"))
        if tail:
            buf += tail
            self._scanned = max(0, len(buf) - len(delim) + 1)
            self._check_partial(buf)
        else:
            self._scanned = 0
        if self.encoding is None:
            return raw
        encoding = self.encoding
        try:
            return [line.decode(encoding) for line in raw]
        except ValueError as exc:
            # UnicodeDecodeError from most codecs, a bare UnicodeError from some (idna,
            # punycode), ValueError from a third-party one: all mean the peer sent bytes
            # that are not text in this encoding, and the stream cannot be trusted after.
            self._fail(FramingError(f"line is not valid {encoding}: {_decode_reason(exc)}"))
            raise AssertionError("unreachable") from None

    def _check_partial(self, buf: bytearray) -> None:
        # A line of exactly max_line_size bytes is fine while the bytes after it could
        # still be the start of the delimiter; anything else already proves it too long.
        limit = self.max_line_size
        if len(buf) <= limit:
            return
        tail = bytes(buf[limit:])
        if len(tail) >= len(self.delimiter) or not self.delimiter.startswith(tail):
            self._fail(FrameTooLarge(
                f"line grew over max_line_size {limit} before its delimiter arrived"))

    def _fail(self, exc: FramingError) -> None:
        self._error = exc
        raise exc


# ---------------------------------------------------------------- RPC frames

LengthReader = Callable[[bytes], int]
LengthWriter = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class RpcFrameFormat:
    """The layout of a FramingSocket frame: ``length | rpc id | payload``.

    ``length`` (frame_length_size bytes) counts the rpc id and the payload, not
    itself: it is what follows it in the frame. By default it is an unsigned
    big-endian integer, and the rpc id a signed big-endian one (Node's
    ``readInt32BE``), so the default layout is byte-compatible with framing-socket.

    Args:
        frame_length_size: bytes in the length field.
        frame_length_reader: bytes of the length field -> length (None: big-endian).
        frame_length_writer: length -> exactly frame_length_size bytes.
        rpc_id_size: bytes in the rpc id field.
        rpc_id_reader: bytes of the rpc id field -> rpc id (None: signed big-endian).
        rpc_id_writer: rpc id -> exactly rpc_id_size bytes.
        max_frame_size: largest payload (rpc id excluded) accepted or sent.

    Raises:
        ConfigError: a size is out of range.
    """

    frame_length_size: int = 4
    frame_length_reader: LengthReader | None = None
    frame_length_writer: LengthWriter | None = None
    rpc_id_size: int = 4
    rpc_id_reader: LengthReader | None = None
    rpc_id_writer: LengthWriter | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE

    def __post_init__(self) -> None:
        for name in ("frame_length_size", "rpc_id_size"):
            size = getattr(self, name)
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 8:
                raise ConfigError(f"{name} must be an integer in 1..8, got {size!r}")
        _check_max("max_frame_size", self.max_frame_size)


class RpcFramer:
    """Sans-I/O codec of FramingSocket frames (see RpcFrameFormat for the layout).

    Args:
        fmt: the frame layout; the default is 4-byte length, 4-byte signed rpc id.
    """

    __slots__ = ("fmt", "_ls", "_is", "_read_len", "_write_len", "_read_id", "_write_id",
                 "_max_len", "_max_body", "_unpack_head", "_pack_head", "_buf", "_need",
                 "_error")

    def __init__(self, fmt: RpcFrameFormat | None = None) -> None:
        fmt = fmt or RpcFrameFormat()
        self.fmt = fmt
        self._ls = fmt.frame_length_size
        self._is = fmt.rpc_id_size
        self._read_len = fmt.frame_length_reader or _default_length_reader
        self._write_len = fmt.frame_length_writer or _default_writer(fmt.frame_length_size,
                                                                     signed=False)
        self._read_id = fmt.rpc_id_reader or _default_id_reader
        self._write_id = fmt.rpc_id_writer or _default_writer(fmt.rpc_id_size, signed=True)
        # The length field counts the rpc id too.
        self._max_len = fmt.max_frame_size + fmt.rpc_id_size
        # Default readers on standard sizes: one struct call reads length and id.
        self._max_body = fmt.max_frame_size
        self._unpack_head: Callable[..., tuple[int, int]] | None = None
        self._pack_head: Callable[..., bytes] | None = None
        if fmt.frame_length_size in _SIZE_CODES and fmt.rpc_id_size in _SIZE_CODES:
            code = ">" + _SIZE_CODES[fmt.frame_length_size] + _SIZE_CODES[fmt.rpc_id_size].lower()
            if fmt.frame_length_reader is None and fmt.rpc_id_reader is None:
                self._unpack_head = struct.Struct(code).unpack_from
            if fmt.frame_length_writer is None and fmt.rpc_id_writer is None:
                self._pack_head = struct.Struct(code).pack
        self._buf = bytearray()
        self._need = self._ls
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held from an incomplete frame."""
        return len(self._buf)

    def encode(self, rpc_id: int, payload: str | Buffer) -> bytes:
        """Frame one request or response.

        Args:
            rpc_id: the id that pairs a response with its request.
            payload: the body; str is encoded as UTF-8.

        Returns:
            length + rpc id + payload.

        Raises:
            FrameTooLarge: the payload is over max_frame_size.
            FramingError: rpc_id does not fit rpc_id_size bytes, or a custom writer
                returned the wrong number of bytes.
        """
        body = payload if type(payload) is bytes else _as_payload(payload)
        size = len(body)
        if size > self._max_body:
            raise FrameTooLarge(
                f"payload of {size} bytes is over max_frame_size {self._max_body}")
        pack = self._pack_head
        if pack is not None:
            try:
                return pack(self._is + size, rpc_id) + body
            except struct.error as exc:
                raise FramingError(f"rpc id or length does not fit its field: {exc}") from None
        try:
            head = self._write_len(self._is + size) + self._write_id(rpc_id)
        except OverflowError as exc:
            raise FramingError(f"rpc id or length does not fit its field: {exc}") from None
        if len(head) != self._ls + self._is:
            raise FramingError("a frame_length_writer / rpc_id_writer returned the wrong size")
        return head + body

    def feed(self, data: Buffer) -> list[tuple[int, bytes]]:
        """Take bytes from the stream and return every (rpc_id, payload) they complete.

        Raises:
            FrameTooLarge: a length field announced more than max_frame_size (+ the id).
            FramingError: a length field too short to hold the rpc id.
        """
        if self._error is not None:
            raise type(self._error)(str(self._error))
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return []
        with memoryview(buf) as view:
            out, pos = self._parse(view)
        del buf[:pos]
        return out

    def _parse(self, view: memoryview) -> tuple[list[tuple[int, bytes]], int]:
        out: list[tuple[int, bytes]] = []
        ls, ids = self._ls, self._is
        head = ls + ids
        max_len = self._max_len
        unpack_from = self._unpack_head
        n = len(view)
        pos = 0
        need = ls
        while n - pos >= ls:
            if unpack_from is not None and n - pos >= head:
                length, rpc_id = unpack_from(view, pos)
            else:
                length = self._read_len(bytes(view[pos:pos + ls]))
                rpc_id = None
            if length > max_len:
                self._error = FrameTooLarge(
                    f"frame header announces {length} bytes, over the maximum {max_len}")
                raise self._error
            if length < ids:
                self._error = FramingError(
                    f"frame length {length} cannot hold the {ids}-byte rpc id")
                raise self._error
            end = pos + ls + length
            if end > n:
                need = end - pos
                break
            if rpc_id is None:
                rpc_id = self._read_id(bytes(view[pos + ls:pos + head]))
            out.append((rpc_id, bytes(view[pos + head:end])))
            pos = end
        self._need = need
        return out, pos


def _default_length_reader(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _default_id_reader(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


def _default_writer(size: int, *, signed: bool) -> LengthWriter:
    def write(value: int) -> bytes:
        return value.to_bytes(size, "big", signed=signed)
    return write
