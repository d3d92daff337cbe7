"""wsproto extensions that bound what one message may cost, sans-I/O.

- `SizeGuard` refuses (1009) an uncompressed message as soon as the frame headers
  announce more than `max_message_size` bytes, before the payload arrives.
- `CappedDeflate` is permessage-deflate (RFC 7692) whose inflation stops at
  `max_message_size` bytes per message: a small frame that would inflate to gigabytes (a
  deflate bomb) is refused with 1009 after at most the cap was produced, never inflated
  whole. Its compressor uses a smaller memory level than zlib's default, since every
  connection keeps one alive.

wsproto's own PerMessageDeflate inflates each received piece without any limit.
"""
from __future__ import annotations

import zlib
from typing import Any

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

__all__ = ["SizeGuard", "CappedDeflate", "negotiate_deflate"]

# zlib's deflate state is 2**(memLevel + 9) bytes plus the window: 16 KiB at level 5
# against 128 KiB at the default 8, for a compression ratio within a few percent on text.
_COMPRESSOR_MEM_LEVEL = 5
# RFC 7692 §7.2.1: the 4 bytes a sender strips from the end of each compressed message.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


class SizeGuard(Extension):
    """Counts the announced payload of uncompressed data messages; 1009 past the cap.

    Never negotiated: it is always enabled and claims no RSV bit. Compressed messages are
    left to CappedDeflate, which counts what they inflate to.
    """

    name = "packetron-size-guard"

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._size = 0
        self._compressed = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def frame_inbound_header(self, proto: Any, opcode: Opcode, rsv: RsvBits,
                             payload_length: int) -> CloseReason | RsvBits:
        if not opcode.iscontrol():
            if opcode is not Opcode.CONTINUATION:  # a new message begins
                self._size = 0
                self._compressed = rsv.rsv1
            if not self._compressed:
                self._size += payload_length
                if self._size > self.max_message_size:
                    return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(False, False, False)


class CappedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates one message past `max_message_size`."""

    def __init__(self, max_message_size: int) -> None:
        super().__init__()
        self.max_message_size = max_message_size
        self._inflated = 0

    def frame_inbound_header(self, proto: Any, opcode: Opcode, rsv: RsvBits,
                             payload_length: int) -> CloseReason | RsvBits:
        if self._inbound_compressed is None and not opcode.iscontrol():
            self._inflated = 0  # the first frame of a message
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        room = self.max_message_size - self._inflated
        try:
            # At most one byte over the room: enough to know the message is too big.
            out = self._decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(out) > room or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        self._inflated += len(out)
        return out

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        # PerMessageDeflate's logic, with the last piece inflated under the cap too.
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        result = self._inflate(_DEFLATE_TAIL)
        if isinstance(result, CloseReason):
            return result
        no_context_takeover = (self.server_no_context_takeover if proto.client
                               else self.client_no_context_takeover)
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return result

    def frame_outbound(self, proto: Any, opcode: Opcode, rsv: RsvBits, data: bytes,
                       fin: bool) -> tuple[RsvBits, bytes]:
        if self._compressor is None and self._compressible_opcode(opcode):
            bits = self.client_max_window_bits if proto.client else self.server_max_window_bits
            self._compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED,
                                                -bits, _COMPRESSOR_MEM_LEVEL)
        return super().frame_outbound(proto, opcode, rsv, data, fin)


def negotiate_deflate(offers: tuple[str, ...],
                      max_message_size: int) -> tuple[CappedDeflate, str] | None:
    """Accept the first acceptable permessage-deflate offer.

    Returns:
        The extension and the Sec-WebSocket-Extensions value of the answer, or None when
        the client offered none this server can accept.
    """
    for offer in offers:
        name, _, _ = offer.partition(";")
        if name.strip().lower() != PerMessageDeflate.name:
            continue
        if not _known_parameters(offer):
            continue  # RFC 7692 §5: an offer with a parameter we do not know is declined
        extension = CappedDeflate(max_message_size)
        try:
            params = extension.accept(offer)
        except ValueError:
            continue  # a window size that is not a number
        if params is None or params is False:
            continue
        answer = PerMessageDeflate.name if params is True or not params \
            else f"{PerMessageDeflate.name}; {params}"
        return extension, answer
    return None


_PARAMETERS = frozenset({"client_no_context_takeover", "server_no_context_takeover",
                         "client_max_window_bits", "server_max_window_bits"})


def _known_parameters(offer: str) -> bool:
    seen = set()
    for part in offer.split(";")[1:]:
        name = part.partition("=")[0].strip().lower()
        if name not in _PARAMETERS or name in seen:
            return False
        seen.add(name)
    return True
