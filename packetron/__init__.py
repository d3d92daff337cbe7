"""packetron: a small, very fast multi-process HTTP framework and the TCP/UDP layer beneath it."""
from __future__ import annotations

from packetron.version import __version__
from packetron.flags import (
    FileRouterFlags,
    HandlerFlags,
    PluginPriority,
    RequestMethod,
    ServerFlags,
)
from packetron.status import HttpResponseCode
from packetron.errors import GlobalDataDisabled, HttpError, PacketronError, WebSocketClosed
from packetron.http import Plugin, Request, Response, Route, WebSocket
from packetron.server import Packetron

__all__ = [
    "__version__",
    "ServerFlags",
    "HandlerFlags",
    "FileRouterFlags",
    "RequestMethod",
    "PluginPriority",
    "HttpResponseCode",
    "Packetron",
    "Plugin",
    "Request",
    "Response",
    "Route",
    "WebSocket",
    "PacketronError",
    "GlobalDataDisabled",
    "HttpError",
    "WebSocketClosed",
]
