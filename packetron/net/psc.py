"""Kept for old imports: the packet-stream codec is `packetron.net.packetstream.codec`."""
from __future__ import annotations

from packetron.net.packetstream.codec import (
    Packet,
    GOODBYE,
    GOODBYE_BYTES,
    PacketDecoder,
    encode_packet,
    encode_body,
    json_dumps,
    json_loads,
    js_number,
    DEFAULT_MAX_BODY_SIZE,
    TYPE_BUFFER,
    TYPE_STRING,
    TYPE_JSON,
    FLAG_STREAM,
    FLAG_END,
)

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
