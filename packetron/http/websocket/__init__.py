"""WebSockets (RFC 6455) on packetron's HTTP protocol.

- handshake: the upgrade checks and the 101 answer (pure functions);
- extensions: permessage-deflate and the message-size cap (sans-I/O, on wsproto);
- session: `WebSocket`, wsproto driven over the asyncio transport;
- route: `server.websocket(path)` routes, upgraded by the exchange after the plugins.
"""
from __future__ import annotations

from packetron.http.websocket.session import WebSocket

__all__ = ["WebSocket"]
