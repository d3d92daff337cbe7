"""packet-stream-codec, byte for byte, sans-I/O.

The wire format of Node's ``packet-stream-codec`` 1.2.0 (see PACKET-STREAM.md):

```
offset 0  1 byte   flags 0000 S E TT  (S 0x08 stream, E 0x04 end/error, TT body type)
offset 1  4 bytes  body length, unsigned big-endian
offset 5  4 bytes  request number, signed big-endian
offset 9  body     TT: 0 raw bytes, 1 UTF-8 string, 2 JSON (UTF-8); 3 is invalid
```
A header whose length is 0 is GOODBYE (Node writes nine zero bytes), whatever its
flags: decoding stops there and later bytes are ignored. So a zero-length body can
never carry a value; see `encode_packet` for how empty values are sent.

Choices where Node has none, or where Python differs:

- **Maximum body size.** Node enforces none (a header announcing 4 GiB makes it wait
  for, and buffer, 4 GiB). `PacketDecoder` refuses a header announcing more than
  `max_body_size` (default 10 MiB, the framers' default) with FrameTooLarge, before
  reading the body. Type 3 is refused at the header too, where Node reads the body first.
- **JSON** is written like ``JSON.stringify``: no spaces, keys in insertion order,
  non-ASCII as raw UTF-8, floats in JavaScript's number format (``1.0`` -> ``1``,
  ``1e-07`` -> ``1e-7``), NaN and infinities as ``null``, tuples as arrays.
- **Lone surrogates** are handled as JavaScript does: in a string body (type 1)
  each becomes U+FFFD, as ``Buffer.from(s, 'utf-8')`` does; inside JSON each is
  written as a ``\\udXXX`` escape, as ``JSON.stringify`` does.
- **Invalid UTF-8** received in a string or JSON body is replaced with U+FFFD, as
  Node's ``buf.toString()`` does, rather than failing the connection.
"""
from __future__ import annotations

import json
import json.scanner
import math
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from packetron.errors import ConfigError, FramingError, FrameTooLarge
from packetron.net.framing import feed_whole_frames

__all__ = [
    "Packet",
    "GOODBYE",
    "GOODBYE_BYTES",
    "PacketDecoder",
    "encode_packet",
    "encode_body",
    "json_dumps",
    "json_loads",
    "js_number",
    "DEFAULT_MAX_BODY_SIZE",
    "TYPE_BUFFER",
    "TYPE_STRING",
    "TYPE_JSON",
    "FLAG_STREAM",
    "FLAG_END",
]

TYPE_BUFFER = 0
TYPE_STRING = 1
TYPE_JSON = 2
FLAG_END = 0x04
FLAG_STREAM = 0x08

HEADER = struct.Struct(">BIi")
HEADER_SIZE = HEADER.size  # 9
GOODBYE_BYTES = bytes(HEADER_SIZE)

# Node sets no limit; 10 MiB matches LengthPrefixedFramer's default.
DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
# Request numbers are signed 32-bit on the wire.
MAX_REQ = 2**31 - 1


class Packet(NamedTuple):
    """One decoded frame: packet-stream's ``{req, stream, end, value}``."""

    req: int
    stream: bool
    end: bool
    value: Any


class _Goodbye:
    """The end-of-session marker (nine zero bytes on the wire)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "GOODBYE"


GOODBYE = _Goodbye()


# ---------------------------------------------------------------- JSON like JavaScript


def js_number(x: float) -> str:
    """Format a float exactly as JavaScript's ``Number.prototype.toString`` does.

    Python's repr and JavaScript both pick the shortest digits that round-trip; they
    differ only in layout (ECMA-262 Number::toString): JS writes plain digits while
    the decimal exponent n satisfies -6 < n <= 21, and ``e-7`` / ``e+21`` otherwise.

    Args:
        x: any float; NaN and infinities give "null" (what JSON.stringify writes).

    Returns:
        The JSON text of x.
    """
    if x != x or x in (math.inf, -math.inf):
        return "null"
    if x == 0:
        return "0"  # -0 too
    mantissa, _, exp = repr(abs(x)).partition("e")
    int_part, _, frac = mantissa.partition(".")
    all_digits = int_part + frac
    digits = all_digits.lstrip("0")
    # The value is 0.<digits> * 10**n (ECMA-262's n); leading zeros move the point left.
    n = len(int_part) + (int(exp) if exp else 0) - (len(all_digits) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    sign = "-" if x < 0 else ""
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        text = (digits[0] + ("." + digits[1:] if k > 1 else "")
                + "e" + ("+" if e >= 0 else "-") + str(abs(e)))
    return sign + text


class _Slow(Exception):
    """A float whose Python repr differs from JavaScript's and is not an exact int."""


# Integral floats below 2**53 print the same as the int they equal (JS and Python).
_EXACT_INT = float(2**53)


def _plain(v: Any) -> bool:
    # True when v holds no float at all: the C encoder then already writes what
    # JSON.stringify writes. Scalars are checked inline because flat dicts of strings
    # and ints are the common payload.
    t = type(v)
    if t is dict:
        items = v.values()
    elif t is list or t is tuple:
        items = v
    else:
        return t is not float
    for item in items:
        ti = type(item)
        if ti is str or ti is int or ti is bool or item is None:
            continue
        if ti is float or not _plain(item):
            return False
    if t is dict:
        for key in v:
            if type(key) is float:
                return False
    return True


def _jsify(v: Any) -> Any:
    # A copy of v in which every float prints the JS way through the C encoder (int
    # for integral floats, None for NaN/inf); raises _Slow when that is impossible.
    t = type(v)
    if t is float:
        if v != v or v in (math.inf, -math.inf):
            return None
        if v.is_integer() and abs(v) < _EXACT_INT:
            return int(v)
        if 1e-4 <= abs(v) < _EXACT_INT:
            return v  # fixed notation, same text in both languages
        raise _Slow
    if t is dict:
        out = {}
        for key, item in v.items():
            if type(key) is float:
                raise _Slow
            out[key] = _jsify(item)
        return out
    if t is list or t is tuple:
        return [_jsify(item) for item in v]
    return v  # str, int, bool, None, or what the C encoder accepts or refuses itself


def _slow_dumps(v: Any, out: list[str]) -> None:
    # Only for values holding floats the C encoder would print the Python way.
    if v is None or v is True or v is False or isinstance(v, (str, int)):
        out.append(_fast_dumps(v))
    elif isinstance(v, float):
        out.append(js_number(v))
    elif isinstance(v, dict):
        out.append("{")
        first = True
        for key, item in v.items():
            if not first:
                out.append(",")
            first = False
            if isinstance(key, float):
                key = js_number(key)
            elif not isinstance(key, str):
                key = _fast_dumps(key).strip('"')
            out.append(_fast_dumps(key))
            out.append(":")
            _slow_dumps(item, out)
        out.append("}")
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _slow_dumps(item, out)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The C encoder built once (JSONEncoder.encode builds one per call): half the cost.
_c_encode = getattr(json.encoder, "c_make_encoder", None)
if _c_encode is not None:
    _c_encode = _c_encode(None, _encoder.default, json.encoder.encode_basestring, None,
                          ":", ",", False, False, False)


def _fast_dumps(value: Any) -> str:
    if _c_encode is None or type(value) is str:
        return _encoder.encode(value)
    return "".join(_c_encode(value, 0))


def json_dumps(value: Any) -> str:
    """Serialize like ``JSON.stringify`` (see the module docstring).

    Raises:
        TypeError: value holds something JSON cannot carry (bytes, sets, objects).
    """
    try:
        text = _fast_dumps(value)
    except ValueError:  # NaN or an infinity: JS writes null
        text = None
    # Python writes every float with a "." or an exponent; text with neither holds no
    # float, which skips walking the value in the common case. (A "." inside a string
    # only costs the walk.)
    if text is not None and "." not in text and "e-" not in text and "e+" not in text:
        return text
    try:
        if text is not None and _plain(value):
            return text
        return _fast_dumps(_jsify(value))
    except _Slow:
        out: list[str] = []
        _slow_dumps(value, out)
        return "".join(out)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _utf8_json(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Join surrogate pairs into real characters, then escape the lone ones the way
        # JSON.stringify does; in JSON text they can only sit inside strings.
        joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", joined).encode("utf-8")


def _utf8_string(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Buffer.from(s, 'utf-8'): pairs become one character, lone surrogates U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode(
            "utf-16-le", "replace").encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse refuses NaN / Infinity too


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
# The scanner alone skips decode()'s regex calls; anything unusual (surrounding
# whitespace, errors) falls back to decode() for its checks and messages.
# (typeshed describes make_scanner as a class whose argument is itself, hence the ignore)
_scan_once: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(
    _decoder)  # type: ignore[arg-type]


def json_loads(body: bytes) -> Any:
    """Parse a JSON body like ``JSON.parse(buf.toString())``.

    Raises:
        FramingError: the body is not JSON.
    """
    text = body.decode("utf-8", "replace")
    try:
        try:
            value, end = _scan_once(text, 0)
            if end == len(text):
                return value
        except StopIteration:
            pass
        return _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise FramingError(f"packet body is not valid JSON: {exc}") from None


# ---------------------------------------------------------------- encoder


def encode_body(value: Any) -> tuple[int, bytes]:
    """Pick the body type and bytes for a value, as the Node encoder does.

    bytes-like -> type 0; str -> type 1; anything else -> JSON, type 2. The empty
    string goes out as JSON ``""`` (2 bytes), because a zero-length body would read as
    GOODBYE; it arrives as "" on both Node and Python.

    Raises:
        FramingError: value is empty bytes, which no frame can carry.
        TypeError: value is not JSON-serializable.
    """
    t = type(value)
    if t is str:
        if value:
            return TYPE_STRING, _utf8_string(value)
        return TYPE_JSON, b'""'
    if t is bytes or t is bytearray or t is memoryview:
        if not value:
            raise FramingError(
                "an empty bytes value cannot be sent: a zero-length body means GOODBYE")
        return TYPE_BUFFER, bytes(value)
    if isinstance(value, str):
        return encode_body(str(value))
    return TYPE_JSON, _utf8_json(json_dumps(value))


def encode_packet(req: int, value: Any, *, stream: bool = False, end: bool = False) -> bytes:
    """Encode one frame, header and body together (one write: no Nagle stall).

    Args:
        req: the request number: 0 for a message, n for the sender's own request or
            stream n, -n for an answer about the receiver's request or stream n.
        value: the body (see encode_body).
        stream: the S flag.
        end: the E flag (end of a stream, or an error response).

    Returns:
        The frame bytes.

    Raises:
        FramingError: req is outside signed 32 bits, or value is empty bytes.
        TypeError: value is not JSON-serializable.
    """
    t = type(value)
    if t is dict or t is list:  # the common case first, without the dispatch below
        typ = TYPE_JSON
        text = json_dumps(value)
        try:
            body = text.encode("utf-8")
        except UnicodeEncodeError:
            body = _utf8_json(text)
    else:
        typ, body = encode_body(value)
    flags = typ | (FLAG_STREAM if stream else 0) | (FLAG_END if end else 0)
    try:
        return HEADER.pack(flags, len(body), req) + body
    except struct.error:
        raise FramingError(f"request number {req} does not fit in signed 32 bits") from None


# ---------------------------------------------------------------- decoder


class PacketDecoder:
    """Turns bytes into Packet objects and, at the end, GOODBYE.

    Args:
        max_body_size: largest body accepted, in bytes; a header announcing more
            raises FrameTooLarge at once.

    Raises:
        ConfigError: max_body_size is not a positive integer.
    """

    __slots__ = ("max_body_size", "ended", "_buf", "_need", "_error", "_raw")

    def __init__(self, max_body_size: int = DEFAULT_MAX_BODY_SIZE) -> None:
        if not isinstance(max_body_size, int) or max_body_size < 1:
            raise ConfigError(f"max_body_size must be a positive integer, got {max_body_size!r}")
        self.max_body_size = max_body_size
        #: True once GOODBYE was decoded; everything after it is ignored.
        self.ended = False
        self._buf = bytearray()
        self._need = HEADER_SIZE
        self._error: FramingError | None = None
        # Plain tuples instead of Packet objects (same fields, cheaper to build): for
        # the PacketStream machine, which only unpacks them.
        self._raw = False

    @property
    def buffered(self) -> int:
        """Bytes held from an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet | _Goodbye]:
        """Take bytes from the stream and return every frame they complete.

        Args:
            data: the next bytes, split anywhere.

        Returns:
            Packets in order; GOODBYE is the last item when it arrives, and bytes after
            it are dropped (as Node's decoder never reads them).

        Raises:
            FrameTooLarge: a header announced more than max_body_size.
            FramingError: body type 3, or a JSON body that does not parse.
        """
        if self._error is not None:
            raise type(self._error)(str(self._error))
        if self.ended:
            return []
        out = feed_whole_frames(self._buf, self._need, data, self._parse)
        if self.ended:
            self._buf.clear()  # nothing after GOODBYE is ever read
        return out

    def _parse(self, src: bytes | memoryview) -> tuple[list[Packet | _Goodbye], int]:
        out: list[Packet | _Goodbye] = []
        unpack_from = HEADER.unpack_from
        limit = self.max_body_size
        n = len(src)
        pos = 0
        need = HEADER_SIZE
        while n - pos >= HEADER_SIZE:
            flags, length, req = unpack_from(src, pos)
            if length == 0:
                # Whatever the flags: Node's decoder ends here.
                out.append(GOODBYE)
                self.ended = True
                pos = n
                break
            typ = flags & 3
            if typ == 3:
                self._error = FramingError("unknown message type 3 in packet header")
                raise self._error
            if length > limit:
                self._error = FrameTooLarge(
                    f"packet header announces {length} bytes, over max_body_size {limit}")
                raise self._error
            end = pos + HEADER_SIZE + length
            if end > n:
                need = end - pos
                break
            body = bytes(src[pos + HEADER_SIZE:end])
            if typ == TYPE_BUFFER:
                value: Any = body
            elif typ == TYPE_STRING:
                value = body.decode("utf-8", "replace")
            else:
                try:
                    value = json_loads(body)
                except FramingError as exc:
                    self._error = exc
                    raise
            if self._raw:
                raw = (req, flags & FLAG_STREAM, flags & FLAG_END, value)
                out.append(raw)  # type: ignore[arg-type]
            else:
                out.append(Packet(req, bool(flags & FLAG_STREAM), bool(flags & FLAG_END), value))
            pos = end
        self._need = need
        return out, pos
