"""What a request, its response and the exchange need of the connection serving them.

The HTTP protocol (packetron.http.protocol) implements it; Request, Response and the
exchange are written against this interface only, so they never import the protocol.
"""
from __future__ import annotations

import asyncio
from typing import Any, BinaryIO, Coroutine, Protocol

from packetron.http.state import ServerState

__all__ = ["Connection"]


class Connection(Protocol):
    """One client connection, as the objects of one request see it."""

    state: ServerState
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    peer_host: str
    reuse: bool  # the connection may serve another request after this answer

    def write(self, data: bytes) -> None:
        """Write bytes of an answer (with the other answers of this read, if any)."""

    def write_whole(self, request: Any, data: bytes) -> None:
        """Write a whole answer to `request` and finish it."""

    async def drain(self) -> None:
        """Wait while the client is slow to read."""

    async def sendfile(self, file: BinaryIO | int, offset: int, count: int,
                       head: bytes = b"") -> None:
        """Write `head`, then `count` bytes of a file from `offset`."""

    def spawn(self, request: Any, coro: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        """Run a coroutine for `request`, keeping it referenced until it ends."""

    def connection_header(self, request: Any) -> bytes:
        """The Connection header line an answer to `request` carries (or b"")."""

    def response_finished(self, request: Any) -> None:
        """The whole answer to `request` is written: close, or answer the next one."""

    def pause_body(self) -> None:
        """Stop reading: a streaming handler has not taken the body read so far."""

    def resume_body(self) -> None:
        """Read again: the streaming handler caught up."""

    def close_now(self) -> None:
        """Close after what is already written (half an answer is out)."""

    def detach_for_upgrade(self, request: Any) -> tuple[bytes, bool]:
        """Hand the connection to a protocol upgrade (a WebSocket session): returns the
        bytes already received after the request and whether writing is paused."""
