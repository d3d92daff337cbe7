"""WebSocket routes: a GET route whose handler performs the upgrade.

The route goes through routing, the upgrade checks (in the protocol, before anything
else: 400 / 426) and the plugin chain of the exchange like any GET route; its handler,
called last, builds the WebSocket and runs the application's `handler(ws, request)`.
"""
from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Iterable

from packetron.errors import BadRequest, ConfigError
from packetron.flags import HandlerFlags, RequestMethod
from packetron.http.plugins import Plugin
from packetron.http.route import Route, RouteOwner
from packetron.http.websocket.handshake import parse_upgrade
from packetron.http.websocket.session import Handler, WebSocket

if TYPE_CHECKING:
    from packetron.http.request import Request
    from packetron.http.response import Response

__all__ = ["WebSocketRoute"]


class WebSocketRoute(Route):
    """A `server.websocket(path)` registration (method GET)."""

    __slots__ = ("websocket",)

    def __init__(self, app: RouteOwner | None, path: str, handler: Handler, *,
                 plugins: Iterable[Plugin] = (), flags: int = 0,
                 max_requests_per_second: int | None = None,
                 rate_limit_scope: str = "worker") -> None:
        if not inspect.iscoroutinefunction(handler):
            raise ConfigError(f"the WebSocket handler for {path!r} must be an async function: "
                              "async def handler(ws, request)")
        if flags & ~HandlerFlags.LOCAL_PLUGINS_ONLY:
            raise ConfigError("a WebSocket route takes only HandlerFlags.LOCAL_PLUGINS_ONLY "
                              "(it has no request body)")
        super().__init__(app, RequestMethod.GET, path, _upgrade_handler(handler), flags=flags,
                         plugins=plugins, max_requests_per_second=max_requests_per_second,
                         rate_limit_scope=rate_limit_scope)
        self.websocket = handler
        # Never answered on the protocol's fast paths: the upgrade is checked in routing.
        self.plain = False
        self._update_plain_sync()


def _upgrade_handler(handler: Handler) -> Any:
    @functools.wraps(handler)
    async def upgrade(request: "Request", response: "Response") -> None:
        if request.upgrade_tail is None:
            # The checks passed but the parser saw no upgrade (its reading of Connection
            # differed from ours): the bytes that follow would be parsed as HTTP.
            raise BadRequest("Bad Request: the connection was not upgraded")
        await WebSocket(request, parse_upgrade(request._raw_headers))._run(handler)

    return upgrade
