"""permessage-deflate (RFC 7692), sans-I/O: the negotiation, and a compressor and an
inflater per connection for the frame codec (packetron.http.websocket.frames).

The inflater never produces more than the room left under `max_message_size` for the
message: a small frame that would inflate to gigabytes (a deflate bomb) is refused with
1009 after at most the cap was produced, never inflated whole. The compressor uses a
smaller memory level than zlib's default, since every connection keeps one alive.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["DeflateParams", "Inflater", "Deflater", "negotiate_deflate", "EXTENSION_NAME"]

EXTENSION_NAME = "permessage-deflate"
# zlib's deflate state is 2**(memLevel + 9) bytes plus the window: 16 KiB at level 5
# against 128 KiB at the default 8, for a compression ratio within a few percent on text.
_COMPRESSOR_MEM_LEVEL = 5
# RFC 7692 §7.2.1: the 4 bytes a sender strips from the end of each compressed message.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
# RFC 7692 §7.1.2: window sizes are 8 to 15 bits, but zlib cannot deflate raw streams with
# an 8-bit window (it silently uses 9), so an offer that insists on 8 is declined.
_MIN_WINDOW_BITS, _MAX_WINDOW_BITS = 9, 15
_CLOSE_TOO_BIG, _CLOSE_INVALID_DATA = 1009, 1007


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What the two ends agreed on (RFC 7692 §7.1)."""

    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    client_max_window_bits: int = _MAX_WINDOW_BITS
    server_max_window_bits: int = _MAX_WINDOW_BITS


class Inflater:
    """Inflates the compressed messages of one connection, each under a size cap."""

    __slots__ = ("_params", "_inflater")

    def __init__(self, params: DeflateParams) -> None:
        self._params = params
        self._inflater: zlib._Decompress | None = None

    def inflate(self, data: bytes, room: int) -> bytes | int:
        """Inflate the next piece of a compressed message.

        Args:
            data: compressed payload bytes, unmasked.
            room: how many bytes the message may still grow by.

        Returns:
            The inflated bytes, or a close code: 1009 when they would be more than
            `room`, 1007 when `data` is not a valid deflate stream.
        """
        inflater = self._inflater
        if inflater is None:
            inflater = self._inflater = zlib.decompressobj(
                -self._params.client_max_window_bits)
        try:
            # At most one byte over the room: enough to know the message is too big.
            out = inflater.decompress(data, room + 1)
        except zlib.error:
            return _CLOSE_INVALID_DATA
        if len(out) > room or inflater.unconsumed_tail:
            return _CLOSE_TOO_BIG
        return out

    def finish(self, room: int) -> bytes | int:
        """End the current message: its last inflated bytes (or a close code, as
        inflate()), after which the next message starts."""
        result = self.inflate(_DEFLATE_TAIL, room)
        inflater = self._inflater
        if inflater is not None and (self._params.client_no_context_takeover
                                     or inflater.eof):
            # A stream the client ended with a final block cannot take more input.
            self._inflater = None
        return result


class Deflater:
    """Compresses the messages the server sends on one connection."""

    __slots__ = ("_params", "_compressor")

    def __init__(self, params: DeflateParams) -> None:
        self._params = params
        self._compressor: zlib._Compress | None = None

    def compress(self, data: bytes) -> bytes:
        """One whole message's payload, compressed as RFC 7692 §7.2.1 says."""
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED,
                -self._params.server_max_window_bits, _COMPRESSOR_MEM_LEVEL)
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self._params.server_no_context_takeover:
            self._compressor = None
        return out[:-4]  # the sync flush's empty block, _DEFLATE_TAIL


def negotiate_deflate(offers: tuple[str, ...]) -> tuple[DeflateParams, str] | None:
    """Accept the first acceptable permessage-deflate offer.

    Args:
        offers: the Sec-WebSocket-Extensions entries, in the client's order.

    Returns:
        The agreed parameters and the Sec-WebSocket-Extensions value of the answer, or
        None when the client offered none this server can accept.
    """
    for offer in offers:
        name, _, _ = offer.partition(";")
        if name.strip().lower() != EXTENSION_NAME:
            continue
        accepted = _accept(offer)
        if accepted is not None:
            return accepted
    return None


_FLAGS = frozenset({"client_no_context_takeover", "server_no_context_takeover"})
_WINDOWS = frozenset({"client_max_window_bits", "server_max_window_bits"})


def _accept(offer: str) -> tuple[DeflateParams, str] | None:
    """The parameters and answer for one offer; None declines it (RFC 7692 §5: an offer
    with a parameter this server does not know, or a value it cannot take)."""
    seen: dict[str, int | None] = {}
    for part in offer.split(";")[1:]:
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if name in seen or name not in _FLAGS | _WINDOWS:
            return None
        if name in _FLAGS:
            if equals:
                return None  # §7.1.1: these take no value
            seen[name] = None
        elif not equals:
            # client_max_window_bits without a value: the client can take any window;
            # §7.1.2.1 wants one given for the server's, so 15 stands in there too.
            seen[name] = _MAX_WINDOW_BITS
        else:
            try:
                bits = int(value.strip())
            except ValueError:
                return None
            if not _MIN_WINDOW_BITS <= bits <= _MAX_WINDOW_BITS:
                return None
            seen[name] = bits
    client_bits = seen.get("client_max_window_bits")
    server_bits = seen.get("server_max_window_bits")
    params = DeflateParams(
        client_no_context_takeover="client_no_context_takeover" in seen,
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_max_window_bits=client_bits or _MAX_WINDOW_BITS,
        server_max_window_bits=server_bits or _MAX_WINDOW_BITS)
    answer = [EXTENSION_NAME]
    if params.client_no_context_takeover:
        answer.append("client_no_context_takeover")
    if params.server_no_context_takeover:
        answer.append("server_no_context_takeover")
    if client_bits is not None:
        answer.append(f"client_max_window_bits={client_bits}")
    if server_bits is not None:
        answer.append(f"server_max_window_bits={server_bits}")
    return params, "; ".join(answer)
