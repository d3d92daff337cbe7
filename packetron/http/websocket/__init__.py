"""WebSockets (RFC 6455) on packetron's HTTP protocol.

- handshake: the upgrade checks and the 101 answer (pure functions);
- frames: the frame codec, reading a client's frames into messages and writing the
  server's (sans-I/O);
- extensions: permessage-deflate, negotiated, and inflation capped per message (sans-I/O);
- session: `WebSocket`, the frame codec driven over the asyncio transport;
- route: `server.websocket(path)` routes, upgraded by the exchange after the plugins.
"""
from __future__ import annotations

from packetron.http.websocket.session import WebSocket

__all__ = ["WebSocket"]
