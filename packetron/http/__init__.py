"""The HTTP framework on top of packetron.net."""
from __future__ import annotations

from packetron.http.app import Application
from packetron.http.plugins import Plugin
from packetron.http.request import Request
from packetron.http.response import Response
from packetron.http.route import Route
from packetron.http.websocket import WebSocket

__all__ = ["Application", "Plugin", "Request", "Response", "Route", "WebSocket"]
