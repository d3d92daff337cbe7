"""Channels over Redis pub/sub: every process of every server on one Redis.

Chosen when `global_data_url` is `redis://...` (or `rediss://`, `unix://`). Each process
keeps one pub/sub connection, on the loop that made its first subscription, subscribed to
the channels its handlers listen to (a channel is SUBSCRIBEd when its first local
subscriber appears and UNSUBSCRIBEd when the last leaves), and one reader task fanning
what arrives out to the local subscribers. A publish goes to Redis only; the local
subscribers get it back from Redis like everybody else, so every process sees one order.

A slow local subscriber drops its oldest messages (see packetron.http.channels); Redis
itself cuts a connection that falls too far behind (client-output-buffer-limit pubsub).

Redis going away (stopped, crashed, frozen, or a network that silently drops packets):

- `publish` waits at most `timeout` seconds (2 s; `?socket_timeout=` in the URL wins),
  then raises `ChannelsUnavailable` (503 if a handler does not catch it). After a failure,
  publishes fail at once for a short while (the global data store's policy: 0.05 s
  doubling to 1 s), so a Redis that hangs costs one timeout per period, not one per call.
  The outage and its end are logged once each (then once per 10 s while it lasts).
- The pub/sub connection is watched: a reset or a closed connection is noticed at once,
  and one quiet for `heartbeat` seconds is sent a PING that must be answered within
  `timeout` (a frozen Redis, or a half-open connection, sends no reset). A lost
  connection is replaced with backoff (0.1 s doubling to 2 s), every channel with local
  subscribers is subscribed again, and the local subscriptions simply go on receiving;
  messages published while it was away are lost (Redis keeps none for a subscriber).
  One warning when the connection is lost, one when it is back.
- `async with channels.subscribe(name)` raises `ChannelsUnavailable` instead of waiting
  for ever when Redis cannot confirm the subscription (the attempt failed, or the
  connection is known to be lost).
"""
from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

from packetron.errors import ChannelsUnavailable, ConfigError
from packetron.globaldata.outage import OutageLog, RetryGate
from packetron.globaldata.redis import DEFAULT_REDIS_TIMEOUT_SECONDS, redis_location
from packetron.http.channels import LocalChannels
from packetron.http.channels.codec import check_name, encode
from packetron.http.channels.redislink import (HEARTBEAT_SECONDS, RECONNECT_FIRST_DELAY_SECONDS,
                                               RECONNECT_MAX_DELAY_SECONDS, RedisLink)
from packetron.log import server_logger

__all__ = ["RedisChannels", "REDIS_CHANNEL_PREFIX", "is_redis_url", "HEARTBEAT_SECONDS",
           "RECONNECT_FIRST_DELAY_SECONDS", "RECONNECT_MAX_DELAY_SECONDS"]

# Keeps the channels apart from anything else published on a shared Redis.
REDIS_CHANNEL_PREFIX = "packetron:channel:"
def is_redis_url(url: str | None) -> bool:
    return url is not None and url.split("://", 1)[0].lower() in ("redis", "rediss", "unix")


class RedisChannels(LocalChannels):
    """Channels shared through Redis pub/sub.

    Args:
        url: `redis://[user:password@]host[:port][/db]`, `rediss://...` or `unix://...`.
            redis-py's query options win over `timeout`: `?socket_timeout=0.5`.
        prefix: prepended to every channel name in Redis.
        timeout: seconds to connect, and to wait for each reply (a publish, a
            subscription's confirmation, the answer to a heartbeat PING).
        heartbeat: seconds a quiet pub/sub connection waits before it sends a PING.

    Raises:
        ConfigError: the `redis` package is missing, the URL is invalid, or `timeout` or
            `heartbeat` is not a positive number.
    """

    cross_process = True

    def __init__(self, url: str, *, prefix: str = REDIS_CHANNEL_PREFIX,
                 timeout: float = DEFAULT_REDIS_TIMEOUT_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:
        super().__init__()
        for option, value in (("timeout", timeout), ("heartbeat", heartbeat)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value < math.inf:
                raise ConfigError(f"{option} must be a positive number of seconds, "
                                  f"got {value!r}")
        redis_asyncio = self._client_module()
        self._client_options: dict[str, Any] = {
            "socket_timeout": timeout, "socket_connect_timeout": timeout}
        try:  # no I/O: parses the URL and its options, as the clients will
            pool = redis_asyncio.ConnectionPool.from_url(url, **self._client_options)
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {redis_location(url)!r}: {exc}") from None
        effective = pool.connection_kwargs.get("socket_timeout")
        self.url = url
        self.prefix = prefix
        self.timeout = float(effective) if effective else float(timeout)
        self.heartbeat = float(heartbeat)
        self._call_errors: tuple[type[BaseException], ...] = (
            redis_asyncio.ConnectionError, redis_asyncio.TimeoutError, TimeoutError,
            redis_asyncio.ResponseError)
        # Publishes fail at once for a while after one failed for want of Redis.
        self._publish_gate = RetryGate(OutageLog(f"channels' Redis ({redis_location(url)})"),
                                       self.timeout, (redis_asyncio.TimeoutError, TimeoutError),
                                       redis_asyncio.ResponseError)
        self._link: RedisLink | None = None

    def _client_module(self) -> Any:
        try:
            import redis.asyncio as redis_asyncio
        except ImportError:
            raise ConfigError("channels on a redis:// URL need the 'redis' package "
                              "(pip install 'packetron[redis]')") from None
        return redis_asyncio

    def _new_client(self, *, retries: int) -> Any:
        """A client of the running loop. `retries` (0 or 1) immediate reconnections after
        a connection error: one replaces a pooled connection a Redis restart broke;
        redis-py's default (3 retries with backoff, timeouts included) would hold a
        call for several timeouts while Redis is away."""
        redis_asyncio = self._client_module()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # With no retry at all, not even the reconnection redis-py makes before giving up.
        errors = (redis_asyncio.ConnectionError,) if retries else ()
        return redis_asyncio.from_url(self.url, retry=Retry(NoBackoff(), retries,
                                                            supported_errors=errors),
                                      **self._client_options)

    def _current_link(self, create: bool) -> "RedisLink | None":
        link = self._link
        if link is not None and link.pid != os.getpid():
            link = self._link = None  # inherited through fork: its sockets are the parent's
        if link is None and create:
            link = self._link = RedisLink(self, asyncio.get_running_loop())
        return link

    async def publish(self, name: str, message: Any) -> None:
        """See `Channels.publish`.

        Raises:
            ChannelsUnavailable: Redis is unreachable or did not answer within `timeout`
                (or did so a moment ago); the redis error is `__cause__`, and the text
                names no address. After a timeout the message may still be delivered
                (a Redis that was only slow, or frozen, handles it once it runs again);
                refused at once, or for want of a connection, it was not sent.
        """
        raw_name = check_name(name)
        wire = encode(message).wire()
        channel = self.prefix.encode("utf-8") + raw_name
        gate = self._publish_gate
        refusal = gate.refusal()
        if refusal is not None:
            raise ChannelsUnavailable(f"channels (Redis) are unavailable: {refusal}")
        started = time.monotonic()
        try:
            await self._publish(channel, wire)
        except self._call_errors as exc:
            reason = gate.failed(exc, started)
            if reason is None:
                raise  # an error reply about the command itself
            raise ChannelsUnavailable(f"channels (Redis) are unavailable: {reason}") from exc
        if gate.retry_at:
            gate.succeeded()

    async def _publish(self, channel: bytes, wire: bytes) -> None:
        link = self._current_link(create=False)
        if link is not None and link.loop is asyncio.get_running_loop():
            await link.client.publish(channel, wire)
            return
        # Another loop (a thread of its own): a short-lived client of that loop.
        client = self._new_client(retries=1)
        try:
            await client.publish(channel, wire)
        finally:
            try:
                await client.aclose()
            except Exception as exc:  # a broken connection: nothing left to release
                server_logger.debug("channels: closing a Redis client failed: %r", exc)

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
        if link is None:
            return
        if link.loop is asyncio.get_running_loop():
            await link.confirmed(name)
        else:  # a subscription made in another thread's loop
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                link.confirmed(name), link.loop))

    async def close(self) -> None:
        link = self._current_link(create=False)
        if link is not None and link.loop is asyncio.get_running_loop():
            self._link = None
            await link.close()
