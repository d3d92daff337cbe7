"""packetron: a small, very fast multi-process HTTP framework and the TCP/UDP layer beneath it."""
from __future__ import annotations

__version__ = "0.1.0"

from packetron.flags import (
    FileRouterFlags,
    HandlerFlags,
    PluginPriority,
    RequestMethod,
    ServerFlags,
)
from packetron.status import HttpResponseCode
from packetron.errors import PacketronError, GlobalDataDisabled
from packetron.http import Packetron, Plugin, Request, Response, Route

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
    "PacketronError",
    "GlobalDataDisabled",
]
