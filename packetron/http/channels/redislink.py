"""The pub/sub side of channels over Redis: one connection per process, supervised.

`RedisLink` keeps the subscriptions a process's handlers want on one Redis pub/sub
connection: it sends SUBSCRIBE / UNSUBSCRIBE, PINGs a quiet connection (a frozen Redis or
a half-open connection sends no reset), and replaces a lost connection with backoff,
subscribing again to every channel that still has local subscribers. See
packetron.http.channels.redis for the whole contract.
"""
from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from packetron.errors import ChannelsUnavailable
from packetron.globaldata.outage import OUTAGE_LOG_INTERVAL_SECONDS
from packetron.globaldata.redis import redis_location
from packetron.http.channels.codec import decode
from packetron.log import server_logger

if TYPE_CHECKING:
    from packetron.http.channels.redis import RedisChannels

__all__ = ["RedisLink", "NoAnswer", "HEARTBEAT_SECONDS",
           "RECONNECT_FIRST_DELAY_SECONDS", "RECONNECT_MAX_DELAY_SECONDS"]

# A pub/sub connection quiet for this long is sent a PING, to be answered within the
# timeout: a frozen Redis or a half-open connection is noticed within the sum of the two
# (4 s by default), not never. One PING per process per quiet period costs Redis nothing.
HEARTBEAT_SECONDS = 2.0
# A lost pub/sub connection is tried again after this delay, doubling up to the maximum.
RECONNECT_FIRST_DELAY_SECONDS = 0.1
RECONNECT_MAX_DELAY_SECONDS = 2.0


class NoAnswer(Exception):
    """Redis left a SUBSCRIBE, UNSUBSCRIBE or heartbeat PING unanswered past the timeout."""


class RedisLink:
    """One process's pub/sub connection, kept alive by one supervising task.

    The supervisor owns the connection: it sends SUBSCRIBE / UNSUBSCRIBE for what the
    local subscriptions want, PINGs a quiet connection, and replaces a lost one. A reader
    task only reads (no task per message) and notes when Redis last said anything.
    """

    def __init__(self, owner: "RedisChannels", loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.pid = os.getpid()
        self.client = owner._new_client(retries=1)  # for publish
        # The pub/sub connection never reconnects behind our back: a failure reaches the
        # supervisor, which replaces it (and says so).
        self._sub_client = owner._new_client(retries=0)
        self._wanted: set[str] = set()  # channels with local subscribers
        self._sent: set[str] = set()  # SUBSCRIBEd on the current connection
        self._pending: dict[str, int] = {}  # SUBSCRIBEs sent, not confirmed yet
        self._subscribed: set[str] = set()  # confirmed on the current connection
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._wake: asyncio.Future[None] | None = None
        self._closed = False
        self._last_heard = 0.0  # loop time Redis last said anything on the connection
        self._awaiting_since: float | None = None  # a command sent and not answered yet
        self._lost_since: float | None = None  # loop time the connection was lost
        self._last_warning = 0.0
        self._failures = 0
        self._delay = RECONNECT_FIRST_DELAY_SECONDS  # before the next attempt
        self._supervisor = loop.create_task(self._supervise())

    # ------------------------------------------------------------ from the channels

    def command(self, verb: str, name: str) -> None:
        """Want, or no longer want, `name` (from any thread); the supervisor sends it."""
        if asyncio.get_running_loop() is self.loop:
            self._apply(verb, name)
        else:
            self.loop.call_soon_threadsafe(self._apply, verb, name)

    def _apply(self, verb: str, name: str) -> None:
        if verb == "subscribe":
            self._wanted.add(name)
        else:
            self._wanted.discard(name)
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def confirmed(self, name: str) -> None:
        """Return once Redis confirmed the subscription to `name`.

        Raises:
            ChannelsUnavailable: the connection is lost, or the attempt to subscribe failed.
        """
        if name in self._subscribed:
            return
        if self._lost_since is not None:
            raise ChannelsUnavailable(f"channels (Redis) are unavailable: cannot subscribe "
                                     f"to {name!r} while the connection is lost")
        waiter = self.loop.create_future()
        self._waiters.setdefault(name, []).append(waiter)
        await waiter

    # ------------------------------------------------------------ the supervisor

    async def _supervise(self) -> None:
        while not self._closed:
            if not self._wanted:
                # Nothing to listen to: no connection to keep, no outage to report.
                if self._lost_since is not None:
                    self._lost_since = None
                    server_logger.info("channels: no channel to listen to any more; "
                                       "no longer reconnecting to Redis")
                self._delay = RECONNECT_FIRST_DELAY_SECONDS
                self._wake = self.loop.create_future()
                await self._wake
                continue
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                self._lost(exc)
                delay = self._delay
                self._delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        """Subscribe to what is wanted on a new connection and keep it so; returns only
        by raising (the connection failed, or Redis stopped answering), or once closed."""
        loop = self.loop
        owner = self.owner
        timeout, heartbeat = owner.timeout, owner.heartbeat
        pubsub = self._sub_client.pubsub()
        reader: asyncio.Task[None] | None = None
        self._sent.clear()
        self._pending.clear()
        self._subscribed.clear()
        self._last_heard = loop.time()
        self._awaiting_since = None
        try:
            while True:
                # Made before anything is awaited: a change wanted meanwhile resolves it.
                self._wake = wake = loop.create_future()
                await self._send_changes(pubsub)
                if self._closed:
                    # Checked, not only cancelled: on Python 3.11 redis-py's wait_for()
                    # around a send can swallow the cancellation of its caller.
                    return
                if reader is None and pubsub.connection is not None:
                    # Reading before the first SUBSCRIBE is an error in redis-py.
                    reader = loop.create_task(self._read(pubsub))
                now = loop.time()
                awaiting: float | None = self._awaiting_since
                if awaiting is not None:
                    wait = awaiting + timeout - now
                    if wait <= 0:
                        raise NoAnswer(f"no answer within {timeout:g} s")
                elif reader is not None:
                    wait = self._last_heard + heartbeat - now
                    if wait <= 0:
                        self._awaiting_since = now
                        await pubsub.ping()
                        continue
                else:
                    wait = heartbeat  # nothing sent yet: wait for something to want
                waiting: set[asyncio.Future[Any]] = {wake}
                if reader is not None:
                    waiting.add(reader)
                await asyncio.wait(waiting, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if reader is not None and reader.done():
                    reader.result()  # raises what ended it
                    raise NoAnswer("the connection was closed")
        finally:
            self._wake = None
            if reader is not None:
                reader.cancel()
            # Closed before the reader is awaited: a reader that missed its cancellation
            # ends on the closed connection instead.
            await _close_quietly(pubsub)
            if reader is not None:
                await asyncio.gather(reader, return_exceptions=True)

    async def _send_changes(self, pubsub: Any) -> None:
        prefix = self.owner.prefix
        add = self._wanted - self._sent
        drop = self._sent - self._wanted
        if not add and not drop:
            return
        if self._awaiting_since is None:
            self._awaiting_since = self.loop.time()
        if add:
            # Marked before the await: a confirmation may arrive before it returns.
            self._sent |= add
            for name in add:
                self._pending[name] = self._pending.get(name, 0) + 1
            await pubsub.subscribe(*(prefix + name for name in add))
        if drop:
            self._sent -= drop
            self._subscribed -= drop
            await pubsub.unsubscribe(*(prefix + name for name in drop))

    async def _read(self, pubsub: Any) -> None:
        loop = self.loop
        prefix = self.owner.prefix.encode("utf-8")
        deliver = self.owner._deliver_local
        while True:
            reply = await pubsub.get_message(timeout=None)
            # Whatever Redis says proves it alive, and answered what was sent before.
            self._last_heard = loop.time()
            self._awaiting_since = None
            if reply is None:
                continue
            kind = reply.get("type")
            channel = reply.get("channel")
            if not isinstance(channel, bytes) or not channel.startswith(prefix):
                continue  # a pong, or a channel of someone else's
            name = channel[len(prefix):].decode("utf-8", "replace")
            if kind == "message":
                try:
                    envelope = decode(reply["data"])
                except ValueError:
                    continue  # published there by something else
                deliver(name, envelope)
            elif kind == "subscribe":
                self._confirm(name)

    def _confirm(self, name: str) -> None:
        pending = self._pending.get(name, 0) - 1
        if pending > 0:
            self._pending[name] = pending
            return
        self._pending.pop(name, None)
        if name not in self._sent:
            return  # unsubscribed meanwhile
        self._subscribed.add(name)
        if self._lost_since is not None:
            self._back()
        for waiter in self._waiters.pop(name, ()):
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------ outages

    def _lost(self, exc: BaseException) -> None:
        """The connection failed, or could not be made: say so (once per outage, then
        once per interval), and fail whoever waits for a confirmation."""
        now = self.loop.time()
        self._subscribed.clear()
        reason = str(exc) or type(exc).__name__
        if self._lost_since is None:
            self._lost_since = self._last_warning = now
            self._failures = 1
            server_logger.warning("channels: the Redis pub/sub connection to %s failed "
                                  "(%s); resubscribing to %d channel(s) once it is back",
                                  redis_location(self.owner.url), reason, len(self._wanted))
        else:
            self._failures += 1
            if now - self._last_warning >= OUTAGE_LOG_INTERVAL_SECONDS:
                self._last_warning = now
                server_logger.warning("channels: still no Redis pub/sub connection to %s "
                                      "after %.0f s (%d failed attempt(s); %s)",
                                      redis_location(self.owner.url),
                                      now - self._lost_since, self._failures, reason)
        waiters, self._waiters = self._waiters, {}
        for name, futures in waiters.items():
            error = f"channels (Redis) are unavailable: cannot subscribe to {name!r}"
            for waiter in futures:
                if not waiter.done():
                    waiter.set_exception(ChannelsUnavailable(error))

    def _back(self) -> None:
        assert self._lost_since is not None
        server_logger.warning("channels: Redis pub/sub connection to %s is back after %.1f s "
                              "(%d failed attempt(s)); resubscribed (messages published "
                              "meanwhile are lost)", redis_location(self.owner.url),
                              self.loop.time() - self._lost_since, self._failures)
        self._lost_since = None
        self._delay = RECONNECT_FIRST_DELAY_SECONDS

    async def close(self) -> None:
        self._closed = True  # the supervisor checks it too (see _session)
        self._poke()
        self._supervisor.cancel()
        # Let it end now: the loop may be closed right after, with it still pending.
        await asyncio.gather(self._supervisor, return_exceptions=True)
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        self._waiters.clear()
        for client in (self.client, self._sub_client):
            try:
                await client.aclose()
            except Exception as exc:  # closing a broken connection: nothing left to release
                server_logger.debug("channels: closing a Redis client failed: %r", exc)


async def _close_quietly(pubsub: Any) -> None:
    """Close a pub/sub whose connection may be broken: its errors are of no interest."""
    try:
        await pubsub.aclose()
    except Exception as exc:
        server_logger.debug("channels: closing a Redis pub/sub failed: %r", exc)
