"""Node's packet-stream over a Connection: messages, requests and duplex streams.

One module per concern:

- `codec`: packet-stream-codec's wire format, byte for byte (sans-I/O);
- `machine`: the protocol state of one session, bytes in and bytes out (sans-I/O);
- `errorobjects`: `{"message", "name", "stack"}` to and from exceptions (sans-I/O);
- `duplex`: `DuplexStream`, one substream as the application sees it;
- `session`: `PacketStream`, the async driver over a Connection.
"""
from __future__ import annotations

from packetron.net.packetstream.duplex import DuplexStream
from packetron.net.packetstream.errorobjects import (
    NO_REQUEST_HANDLER,
    NO_STREAM_HANDLER,
    UNEXPECTED_END,
    error_payload,
    remote_error,
)
from packetron.net.packetstream.machine import MachineHandler, PacketStreamMachine
from packetron.net.packetstream.session import PacketStream

__all__ = [
    "PacketStream",
    "DuplexStream",
    "PacketStreamMachine",
    "MachineHandler",
    "error_payload",
    "remote_error",
    "NO_REQUEST_HANDLER",
    "NO_STREAM_HANDLER",
    "UNEXPECTED_END",
]
