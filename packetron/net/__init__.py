"""The broker layer: listeners, screening, TLS, connections, framing, clients, RPC."""
from __future__ import annotations

from packetron.net.listener import bind_tcp_socket

__all__ = ["bind_tcp_socket"]
