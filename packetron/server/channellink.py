"""`server.channels` in a worker process: local delivery plus the link to the pool's hub.

A message published here goes to this worker's own subscribers at once and to the hub,
which passes it to the other workers that have subscribers for its channel (see
packetron.server.channelhub). The first local subscriber of a channel tells the hub, the
last one leaving tells it too; `async with channels.subscribe(name)` returns once the hub
has the subscription, so a publish made after it in any worker is delivered.

publish() waits while the link's write buffer is over its high-water mark; the hub reads
links as fast as they come (it drops at the slow receivers instead), so that wait is
bounded by the hub's speed, never by a slow subscriber.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any

from packetron.errors import FramingError
from packetron.http.channels import LocalChannels
from packetron.http.channels.codec import check_name, decode, encode
from packetron.log import worker_logger
from packetron.server.channelhub import (ACK, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, new_framer,
                                         parse_publish, publish_frame)

__all__ = ["HubChannels"]


class HubChannels(LocalChannels):
    """Channels of a worker whose pool runs a ChannelHub.

    Args:
        fd: this worker's end of its link (a connected UNIX stream socket).
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._framer = new_framer()
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def connect(self) -> None:
        """Drive the link on the running loop (the worker's serving loop)."""
        loop = self._loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=self._fd)
        transport, _ = await loop.create_unix_connection(lambda: _LinkProtocol(self),
                                                         sock=sock)
        self._transport = transport
        # Subscriptions made before the link was up (a startup hook) are announced now.
        for name in list(self._subscribers):
            self._write(SUBSCRIBE + name.encode("utf-8"))

    # ------------------------------------------------------------ Channels

    async def publish(self, name: str, message: Any) -> None:
        raw_name = check_name(name)
        envelope = encode(message)
        self._deliver_local(name, envelope)
        transport = self._transport
        if transport is None or self._lost:
            return  # not linked (yet, or any more): this worker's subscribers only
        transport.write(publish_frame(self._framer, raw_name, envelope.wire()))
        if self._write_paused:
            waiter = self._drain
            if waiter is None:
                assert self._loop is not None
                waiter = self._drain = self._loop.create_future()
            await waiter

    def _first_subscriber(self, name: str) -> None:
        self._write(SUBSCRIBE + name.encode("utf-8"))

    def _last_unsubscribed(self, name: str) -> None:
        self._confirmed.discard(name)
        self._write(UNSUBSCRIBE + name.encode("utf-8"))

    async def _ready(self, name: str) -> None:
        if name in self._confirmed or self._transport is None or self._lost:
            return
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.setdefault(name, []).append(waiter)
        await waiter

    async def close(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------ the link

    def _write(self, frame: bytes) -> None:
        transport = self._transport
        if transport is not None and not self._lost and not transport.is_closing():
            transport.write(self._framer.encode(frame))

    def _on_frame(self, frame: bytes) -> None:
        kind = frame[:1]
        if kind == PUBLISH:
            try:
                raw_name, wire = parse_publish(frame)
                envelope = decode(wire)
            except ValueError:
                return
            self._deliver_local(raw_name.decode("utf-8", "replace"), envelope)
        elif kind == ACK:
            name = frame[1:].decode("utf-8", "replace")
            if self.has_subscribers(name):
                self._confirmed.add(name)
            self._wake(name)

    def _wake(self, name: str) -> None:
        for waiter in self._waiters.pop(name, ()):
            if not waiter.done():
                waiter.set_result(None)

    def _on_lost(self) -> None:
        if not self._lost:
            self._lost = True
            worker_logger.debug("channels: the link to the pool is closed; "
                                "messages reach this worker's subscribers only")
        for name in list(self._waiters):
            self._wake(name)
        self._on_resume()

    def _on_resume(self) -> None:
        self._write_paused = False
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _LinkProtocol(asyncio.Protocol):
    def __init__(self, channels: HubChannels) -> None:
        self.channels = channels
        self.framer = new_framer()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            worker_logger.error("channels: bad frame from the pool's hub (%s)", exc)
            transport = self.channels._transport
            if transport is not None:
                transport.close()
            return
        for frame in frames:
            self.channels._on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.channels._on_lost()

    def pause_writing(self) -> None:
        self.channels._write_paused = True

    def resume_writing(self) -> None:
        self.channels._on_resume()
