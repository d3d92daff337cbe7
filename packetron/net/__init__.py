"""The broker layer: listeners, screening, TLS, connections, framing, clients, RPC."""
from __future__ import annotations

from packetron.net.listener import bind_tcp_socket
from packetron.net.connection import Connection, open_connection
from packetron.net.screening import Screen, Verdict
from packetron.net.tcpserver import TcpServer
from packetron.net.tls import client_context, server_context
from packetron.errors import BufferFull, ConnectionClosed, IncompleteRead, ConnectionModeError
from packetron.net.broker import Broker, HandlerContext, HandlerInfo, Signal
from packetron.net.manifest import HandlerPolicy, Manifest, load_manifest, parse_manifest
from packetron.net.shared import MemoryStore, RedisStore, SharedStore, open_store
from packetron.errors import HandlerLoadError, NoPortOpened
from packetron.net.framing import LengthPrefixedFramer, LineFramer, RpcFrameFormat, RpcFramer
from packetron.net.client import RetryPolicy, TcpClient
from packetron.net.rpc import FramingSocket, serve_rpc
from packetron.net.packetstream import DuplexStream, PacketStream
from packetron.errors import (
    ConnectFailed,
    FramingError,
    FrameTooLarge,
    RemoteError,
    RpcError,
    RpcTimeout,
)

__all__ = ["bind_tcp_socket"]
__all__ += [
    "Connection",
    "open_connection",
    "TcpServer",
    "Screen",
    "Verdict",
    "server_context",
    "client_context",
    "BufferFull",
    "ConnectionClosed",
    "IncompleteRead",
    "ConnectionModeError",
    "Broker",
    "HandlerContext",
    "HandlerInfo",
    "Signal",
    "Manifest",
    "HandlerPolicy",
    "load_manifest",
    "parse_manifest",
    "SharedStore",
    "MemoryStore",
    "RedisStore",
    "open_store",
    "HandlerLoadError",
    "NoPortOpened",
]
__all__ += [
    "LengthPrefixedFramer",
    "LineFramer",
    "RpcFramer",
    "RpcFrameFormat",
    "TcpClient",
    "RetryPolicy",
    "FramingSocket",
    "serve_rpc",
    "PacketStream",
    "DuplexStream",
    "FramingError",
    "FrameTooLarge",
    "ConnectFailed",
    "RpcError",
    "RpcTimeout",
    "RemoteError",
]
