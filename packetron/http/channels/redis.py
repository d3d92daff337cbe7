"""Channels over Redis pub/sub: every process of every server on one Redis.

Chosen when `global_data_url` is `redis://...` (or `rediss://`, `unix://`). Each process
keeps one pub/sub connection, on the loop that made its first subscription, subscribed to
the channels its handlers listen to (a channel is SUBSCRIBEd when its first local
subscriber appears and UNSUBSCRIBEd when the last leaves), and one reader task fanning
what arrives out to the local subscribers. A publish goes to Redis only; the local
subscribers get it back from Redis like everybody else, so every process sees one order.

A slow local subscriber drops its oldest messages (see packetron.http.channels); Redis
itself cuts a connection that falls too far behind (client-output-buffer-limit pubsub).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

from packetron.errors import ConfigError
from packetron.http.channels import LocalChannels
from packetron.http.channels.codec import check_name, decode, encode
from packetron.log import server_logger

__all__ = ["RedisChannels", "REDIS_CHANNEL_PREFIX", "is_redis_url"]

# Keeps the channels apart from anything else published on a shared Redis.
REDIS_CHANNEL_PREFIX = "packetron:channel:"
# After a failed read the reader waits this long before it tries again (redis-py
# reconnects and resubscribes by itself on the next read).
_RETRY_SECONDS = 1.0


def is_redis_url(url: str | None) -> bool:
    return url is not None and url.split("://", 1)[0].lower() in ("redis", "rediss", "unix")


class RedisChannels(LocalChannels):
    """Channels shared through Redis pub/sub.

    Args:
        url: `redis://[user:password@]host[:port][/db]`, `rediss://...` or `unix://...`.
        prefix: prepended to every channel name in Redis.
    """

    cross_process = True

    def __init__(self, url: str, *, prefix: str = REDIS_CHANNEL_PREFIX) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._link: _RedisLink | None = None

    def _client_module(self) -> Any:
        try:
            import redis.asyncio as redis_asyncio
        except ImportError:
            raise ConfigError("channels on a redis:// URL need the 'redis' package "
                              "(pip install 'packetron[redis]')") from None
        return redis_asyncio

    def _current_link(self, create: bool) -> "_RedisLink | None":
        link = self._link
        if link is not None and link.pid != os.getpid():
            link = self._link = None  # inherited through fork: its sockets are the parent's
        if link is None and create:
            link = self._link = _RedisLink(self, asyncio.get_running_loop())
        return link

    async def publish(self, name: str, message: Any) -> None:
        raw_name = check_name(name)
        wire = encode(message).wire()
        channel = self.prefix.encode("utf-8") + raw_name
        link = self._current_link(create=False)
        if link is not None and link.loop is asyncio.get_running_loop():
            await link.client.publish(channel, wire)
            return
        # Another loop (a thread of its own): a short-lived client of that loop.
        client = self._client_module().from_url(self.url)
        try:
            await client.publish(channel, wire)
        finally:
            await client.aclose()

    def _first_subscriber(self, name: str) -> None:
        link = self._current_link(create=True)
        assert link is not None
        link.command("subscribe", name)

    def _last_unsubscribed(self, name: str) -> None:
        link = self._current_link(create=False)
        if link is not None:
            link.command("unsubscribe", name)

    async def _ready(self, name: str) -> None:
        link = self._current_link(create=False)
        if link is not None:
            await link.confirmed(name)

    async def close(self) -> None:
        link = self._current_link(create=False)
        if link is not None and link.loop is asyncio.get_running_loop():
            self._link = None
            await link.close()


class _RedisLink:
    """One process's pub/sub connection, its command queue and its reader task."""

    def __init__(self, owner: RedisChannels, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.pid = os.getpid()
        self.client = owner._client_module().from_url(owner.url)
        self.pubsub = self.client.pubsub()
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._subscribed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._worker = loop.create_task(self._run_commands())

    def command(self, verb: str, name: str) -> None:
        """Queue a SUBSCRIBE or UNSUBSCRIBE; they run in order, one at a time."""
        if asyncio.get_running_loop() is self.loop:
            self._commands.put_nowait((verb, name))
        else:
            self.loop.call_soon_threadsafe(self._commands.put_nowait, (verb, name))

    async def confirmed(self, name: str) -> None:
        if name in self._subscribed:
            return
        waiter = self.loop.create_future()
        self._waiters.setdefault(name, []).append(waiter)
        await waiter

    async def _run_commands(self) -> None:
        prefix = self.owner.prefix
        while True:
            verb, name = await self._commands.get()
            try:
                if verb == "subscribe":
                    await self.pubsub.subscribe(prefix + name)
                    if self._reader is None:
                        # Reading before the first SUBSCRIBE is an error in redis-py.
                        self._reader = self.loop.create_task(self._read())
                else:
                    self._subscribed.discard(name)
                    await self.pubsub.unsubscribe(prefix + name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                server_logger.warning("channels: Redis %s %r failed: %s", verb, name, exc)

    async def _read(self) -> None:
        prefix = self.owner.prefix.encode("utf-8")
        failing = False
        while True:
            try:
                reply = await self.pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    server_logger.warning("channels: reading from Redis failed (%s); "
                                          "retrying", exc)
                failing = True
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            failing = False
            if reply is None:
                continue
            kind = reply.get("type")
            channel = reply.get("channel")
            if not isinstance(channel, bytes) or not channel.startswith(prefix):
                continue
            name = channel[len(prefix):].decode("utf-8", "replace")
            if kind == "message":
                try:
                    envelope = decode(reply["data"])
                except ValueError:
                    continue  # published there by something else
                self.owner._deliver_local(name, envelope)
            elif kind == "subscribe":
                self._subscribed.add(name)
                for waiter in self._waiters.pop(name, ()):
                    if not waiter.done():
                        waiter.set_result(None)

    async def close(self) -> None:
        tasks = [task for task in (self._worker, self._reader) if task is not None]
        for task in tasks:
            task.cancel()
        # Let them end now: the loop may be closed right after, with them still pending.
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        try:
            await self.pubsub.aclose()
            await self.client.aclose()
        except Exception:  # closing a broken connection: nothing left to release
            pass
