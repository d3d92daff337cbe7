"""What a broker handler receives: its context (`ctx`), and the signal inside it."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from packetron.log import net_logger
from packetron.net.handlerfiles import EntryName
from packetron.net.shared import SharedStore

__all__ = ["Signal", "HandlerContext", "HandlerInfo"]


class Signal:
    """Fires when the handler version it belongs to is retired (reload, removal, stop).

    `aborted` tells whether it fired, `reason` why ("reload", "removed", "stop"),
    and `await signal.wait()` returns once it has.
    """

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.reason: str | None = None

    @property
    def aborted(self) -> bool:
        """True once the signal fired."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once the signal fired."""
        await self._event.wait()

    def _fire(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()


class HandlerContext:
    """The `ctx` a handler receives: who it is, the shared store, its signal, a logger."""

    __slots__ = ("name", "port", "protocol", "path", "shared", "signal", "log", "_transport")

    def __init__(
        self, entry: EntryName, path: str, shared: SharedStore, transport: Any = None
    ) -> None:
        self.name = entry.name
        self.port = entry.port
        self.protocol = entry.protocol
        self.path = path
        self.shared = shared
        self.signal = Signal()
        self.log: logging.Logger = net_logger.getChild(f"handler.{entry.name}")
        self._transport = transport

    def reply(self, data: bytes, rinfo: tuple[Any, ...]) -> None:
        """UDP: send a datagram back to `rinfo` (the address message() received).

        Raises:
            RuntimeError: called from a TCP handler (write to the connection instead).
        """
        if self._transport is None:
            raise RuntimeError("ctx.reply() is for UDP handlers; TCP handlers write to conn")
        self._transport.sendto(data, rinfo)

    def __repr__(self) -> str:
        return f"<HandlerContext {self.name} {self.protocol}/{self.port}>"


@dataclass(frozen=True, slots=True)
class HandlerInfo:
    """A handler the broker is serving (see Broker.handlers)."""

    name: str
    protocol: str
    port: int
    path: str
    generation: int  # 1 for the first load, +1 per reload
    connections: int  # live TCP connections over all its versions
