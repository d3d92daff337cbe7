"""The Broker: a folder of handler files, each serving one TCP or UDP port.

- `core`: `Broker`, its lifecycle and what a folder scan changes;
- `runtime`: one handler file's loaded versions and the port it claims;
- `ports`: opening a port, and a new manifest policy for a serving port;
- `watch`: the manifest file and the supporting code, watched for changes.
"""
from __future__ import annotations

from packetron.net.broker.core import (
    POLL_INTERVAL_SECONDS,
    RELOAD_GRACE_SECONDS,
    STOP_TIMEOUT_SECONDS,
    Broker,
)
from packetron.errors import NoPortOpened
from packetron.net.handlerctx import HandlerContext, HandlerInfo, Signal

__all__ = [
    "Broker",
    "HandlerContext",
    "HandlerInfo",
    "Signal",
    "NoPortOpened",
    "POLL_INTERVAL_SECONDS",
    "RELOAD_GRACE_SECONDS",
    "STOP_TIMEOUT_SECONDS",
]
