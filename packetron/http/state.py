"""State one serving loop shares with all of its connections."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from packetron.http import wire
from packetron.http.plugins import PluginManager
from packetron.http.router import Router
from packetron.options import ServerOptions

if TYPE_CHECKING:
    from packetron.http.route import Route

__all__ = ["ServerState", "ServedConnection"]


class ServedConnection(Protocol):
    """What the serving loop asks of a connection it holds: an HTTP connection, or a
    WebSocket session that took one over."""

    transport: Any

    def check_timeouts(self, now: float) -> None: ...

    def shutdown(self) -> None: ...


class ServerState:
    """Router, plugins, options and the once-a-second clock of one serving loop."""

    __slots__ = ("router", "global_plugins", "options", "date_header", "now", "connections",
                 "trusted_proxies", "app")

    def __init__(self, router: "Router[Route]", global_plugins: PluginManager,
                 options: ServerOptions, app: Any = None) -> None:
        # The application served (its lifespan hooks, error handlers); None in unit tests
        # of the protocol that build a state by hand.
        self.app = app
        self.router = router
        self.global_plugins = global_plugins
        self.options = options
        self.trusted_proxies = options.trusted_proxies
        self.date_header = wire.format_date_header(time.time())
        self.now = 1.0  # loop time; never 0, which the protocol reads as "not in a head"
        self.connections: set[ServedConnection] = set()

    def tick(self, now: float) -> None:
        """Called once a second: refresh the Date header and enforce connection timeouts."""
        self.now = now
        self.date_header = wire.format_date_header(time.time())
        for connection in list(self.connections):
            connection.check_timeouts(now)
