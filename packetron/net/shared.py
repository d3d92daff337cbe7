"""`ctx.shared`: a key-value store with publish/subscribe, shared by a broker's handlers.

Two sibling backends with one interface:

- MemoryStore: in this process; the default. Values are kept as given.
- RedisStore: in Redis (the `redis` package's asyncio client), for several brokers on
  several machines. Values and messages travel as JSON. Calls are bounded by a timeout
  and raise SharedStoreUnavailable while Redis is away; subscriptions resubscribe by
  themselves once it is back.

Keep values JSON-serializable so a handler works the same on either backend.
`open_store(url)` picks the backend from a URL: None or "memory://" → MemoryStore;
"redis://", "rediss://", "unix://" → RedisStore.
"""
from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any, Protocol

from packetron.errors import ConfigError, SharedStoreUnavailable
from packetron.log import net_logger

__all__ = [
    "SharedStore",
    "Subscription",
    "MemoryStore",
    "RedisStore",
    "open_store",
    "check_store_url",
    "SUBSCRIPTION_QUEUE_SIZE",
    "DEFAULT_REDIS_PREFIX",
    "DEFAULT_REDIS_TIMEOUT_SECONDS",
    "HEARTBEAT_SECONDS",
    "RESUBSCRIBE_FIRST_DELAY_SECONDS",
    "RESUBSCRIBE_MAX_DELAY_SECONDS",
    "SharedStoreUnavailable",
]

# Messages a subscriber may fall behind by; past this the oldest are dropped (with a
# warning) so a stalled subscriber cannot grow memory without bound. Redis does the
# same to slow subscribers (client-output-buffer-limit pubsub).
SUBSCRIPTION_QUEUE_SIZE = 1024
# Every key and channel a RedisStore touches starts with this, so a broker can share a
# Redis database with other applications.
DEFAULT_REDIS_PREFIX = "packetron:"
# Seconds a RedisStore waits to connect, and for each reply.
DEFAULT_REDIS_TIMEOUT_SECONDS = 2.0
# A subscription quiet for this long sends a PING: a Redis that hangs, or a network
# that drops packets, sends no reset, and a silent subscriber would wait for ever.
HEARTBEAT_SECONDS = 5.0
# A lost subscription tries again after this delay, doubling up to the maximum.
RESUBSCRIBE_FIRST_DELAY_SECONDS = 0.1
RESUBSCRIBE_MAX_DELAY_SECONDS = 2.0
# While a subscription stays lost, one warning per this many seconds.
OUTAGE_WARNING_INTERVAL_SECONDS = 10.0

_MISSING = object()


class Subscription(Protocol):
    """An async iterator of the messages published on one channel.

    Use `async with store.subscribe(ch) as sub:` to be sure the subscription is in
    place before you publish; `aclose()` (or leaving the `with`) ends it.
    """

    channel: str

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def __anext__(self) -> Any: ...

    async def __aenter__(self) -> Subscription: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def aclose(self) -> None: ...


class SharedStore(Protocol):
    """What `ctx.shared` offers (both backends implement it)."""

    async def get(self, key: str, default: Any = None) -> Any: ...

    async def set(self, key: str, value: Any) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def incr(self, key: str, amount: int = 1) -> int: ...

    async def publish(self, channel: str, message: Any) -> int: ...

    def subscribe(self, channel: str) -> Subscription: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------- memory


class _MemorySubscription:
    __slots__ = ("channel", "_store", "_queue", "_closed", "__weakref__")

    def __init__(self, store: MemoryStore, channel: str) -> None:
        self.channel = channel
        self._store = store
        self._queue: asyncio.Queue[Any] = asyncio.Queue(SUBSCRIPTION_QUEUE_SIZE)
        self._closed = False

    def _deliver(self, message: Any) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            net_logger.warning(
                "subscriber of %r is %d messages behind; dropping the oldest",
                self.channel,
                SUBSCRIPTION_QUEUE_SIZE,
            )
        self._queue.put_nowait(message)

    def __aiter__(self) -> _MemorySubscription:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is _MISSING:  # aclose() wakes a waiting reader with this
            raise StopAsyncIteration
        return message

    async def __aenter__(self) -> _MemorySubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._store._unsubscribe(self)
        try:
            self._queue.put_nowait(_MISSING)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.put_nowait(_MISSING)


class MemoryStore:
    """The in-process backend: a dict and a set of subscriber queues per channel.

    Subscribers are held weakly: one that is dropped without aclose() stops receiving
    when it is garbage collected.
    """

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._channels: dict[str, weakref.WeakSet[_MemorySubscription]] = {}

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under key, or default."""
        return self._data.get(key, default)

    async def set(self, key: str, value: Any) -> None:
        """Store value under key."""
        self._data[key] = value

    async def delete(self, key: str) -> bool:
        """Remove key. Returns: True if it existed."""
        return self._data.pop(key, _MISSING) is not _MISSING

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add amount to the integer under key (0 when missing), atomically.

        Raises:
            TypeError: the stored value is not an int.
        """
        value = self._data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value of {key!r} is not an integer")
        value += amount
        self._data[key] = value
        return value

    async def publish(self, channel: str, message: Any) -> int:
        """Send message to every current subscriber of channel.

        Returns:
            How many subscribers it reached.
        """
        subs = self._channels.get(channel)
        if not subs:
            return 0
        receivers = list(subs)
        for sub in receivers:
            sub._deliver(message)
        return len(receivers)

    def subscribe(self, channel: str) -> _MemorySubscription:
        """Subscribe to channel; messages published from now on are queued for it."""
        sub = _MemorySubscription(self, channel)
        self._channels.setdefault(channel, weakref.WeakSet()).add(sub)
        return sub

    def _unsubscribe(self, sub: _MemorySubscription) -> None:
        subs = self._channels.get(sub.channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._channels[sub.channel]

    async def close(self) -> None:
        """Nothing to release; present for symmetry with RedisStore."""


# ---------------------------------------------------------------- redis


class _RedisSubscription:
    """One channel's subscriber on its own Redis connection, which outlives Redis outages.

    The connection is watched: a reset or a closed connection is noticed at once, and
    one that goes quiet is sent a PING after HEARTBEAT_SECONDS whose answer must come
    within the store's timeout (a Redis that hangs, or a network that drops packets,
    sends no reset). A lost connection is replaced, and the channel subscribed again,
    with backoff (RESUBSCRIBE_FIRST_DELAY_SECONDS doubling to
    RESUBSCRIBE_MAX_DELAY_SECONDS); iteration just goes on. Messages published while
    the subscriber was away are not delivered: Redis keeps none for it.
    """

    __slots__ = ("channel", "_store", "_pubsub", "_closed", "_last_heard", "_ping_sent",
                 "_lost_since", "_delay", "_last_warning")

    def __init__(self, store: RedisStore, channel: str) -> None:
        self.channel = channel
        self._store = store
        self._pubsub: Any = None
        self._closed = False
        self._last_heard = 0.0  # loop time of the last reply on the connection
        self._ping_sent: float | None = None  # loop time of a PING not answered yet
        self._lost_since: float | None = None  # loop time the connection was lost
        self._delay = RESUBSCRIBE_FIRST_DELAY_SECONDS
        self._last_warning = 0.0

    async def _start(self) -> None:
        """Connect, SUBSCRIBE, and wait for Redis to confirm (within the store's timeout):
        from then on no publish can be missed."""
        if self._pubsub is not None:
            return
        store = self._store
        pubsub = store._client.pubsub()
        self._pubsub = pubsub
        loop = asyncio.get_running_loop()
        try:
            await pubsub.subscribe(store._prefix + self.channel)
            deadline = loop.time() + store.timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(f"Redis did not confirm the subscription within "
                                       f"{store.timeout:g} s")
                reply = await pubsub.get_message(timeout=remaining)
                if reply is not None and reply["type"] == "subscribe":
                    break
        except BaseException:
            self._pubsub = None
            await _close_quietly(pubsub)
            raise
        self._last_heard = loop.time()
        self._ping_sent = None

    def __aiter__(self) -> _RedisSubscription:
        return self

    async def __anext__(self) -> Any:
        loop = asyncio.get_running_loop()
        outage = self._store._outage_errors
        timeout = self._store.timeout
        while True:
            if self._closed:
                raise StopAsyncIteration
            try:
                if self._pubsub is None:
                    await self._start()
                    if self._lost_since is not None:
                        self._resubscribed(loop.time())
                ping_sent = self._ping_sent
                wait = HEARTBEAT_SECONDS if ping_sent is None \
                    else max(0.0, ping_sent + timeout - loop.time())
                reply = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=wait)
                now = loop.time()
                if reply is None:  # nothing came for `wait` seconds
                    if ping_sent is not None:
                        raise TimeoutError(f"no answer to PING within {timeout:g} s")
                    if now - self._last_heard >= HEARTBEAT_SECONDS:
                        self._ping_sent = now
                        await self._pubsub.ping()
                    continue
            except outage as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                await self._lost(exc, loop.time())
                continue
            except Exception:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            if self._closed:
                raise StopAsyncIteration
            self._last_heard = now
            self._ping_sent = None
            if reply["type"] == "message":
                return json.loads(reply["data"])

    async def _lost(self, exc: BaseException, now: float) -> None:
        """The connection failed: drop it, say so (once per outage, then once per
        interval), and wait before the next attempt."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)
        if self._lost_since is None:
            self._lost_since = self._last_warning = now
            net_logger.warning("subscription to %r lost its Redis connection (%s); "
                               "resubscribing", self.channel, exc or type(exc).__name__)
        elif now - self._last_warning >= OUTAGE_WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            net_logger.warning("subscription to %r still has no Redis connection after "
                               "%.0f s (%s)", self.channel, now - self._lost_since,
                               exc or type(exc).__name__)
        delay = self._delay
        self._delay = min(delay * 2, RESUBSCRIBE_MAX_DELAY_SECONDS)
        await asyncio.sleep(delay)

    def _resubscribed(self, now: float) -> None:
        assert self._lost_since is not None
        net_logger.warning("subscription to %r is back after %.1f s (messages published "
                           "meanwhile are lost)", self.channel, now - self._lost_since)
        self._lost_since = None
        self._delay = RESUBSCRIBE_FIRST_DELAY_SECONDS

    async def __aenter__(self) -> _RedisSubscription:
        try:
            await self._start()
        except self._store._outage_errors as exc:
            raise SharedStoreUnavailable(
                f"cannot subscribe to {self.channel!r}: Redis is unavailable ({exc})") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)


async def _close_quietly(pubsub: Any) -> None:
    """Close a pubsub whose connection may be broken: its errors are of no interest."""
    try:
        await pubsub.aclose()
    except Exception as exc:
        net_logger.debug("closing a Redis subscription failed: %r", exc)


class RedisStore:
    """The Redis backend.

    Each call waits at most `timeout` seconds to connect and as long for the reply.
    While Redis is away, calls raise `SharedStoreUnavailable` (the redis error is its
    `__cause__`); once it is back they work again, over a new connection, without
    anything being restarted. Subscriptions outlive outages (see `subscribe`).

    Args:
        url: "redis://host:port/db", "rediss://..." (TLS) or "unix:///path?db=0";
            redis-py's query options (`?socket_timeout=...`) win over `timeout`.
        prefix: put before every key and channel name.
        timeout: seconds to connect and to wait for each reply.

    Raises:
        ConfigError: the `redis` package is not installed (pip install packetron[redis]),
            or `timeout` is not a positive number.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_REDIS_PREFIX,
                 timeout: float = DEFAULT_REDIS_TIMEOUT_SECONDS) -> None:
        try:
            import redis.asyncio as redis_asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:
            raise ConfigError(
                "a redis:// shared store needs the redis package: pip install 'packetron[redis]'"
            ) from None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout < float("inf"):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.url = url
        self.timeout = float(timeout)
        self._prefix = prefix
        # One immediate retry, after a connection error only, replaces a pooled
        # connection that a Redis restart broke; redis-py's default (10 retries with
        # backoff, timeouts included) holds a call for several timeouts instead.
        self._client: Any = redis_asyncio.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis_asyncio.ConnectionError,)))
        # asyncio's TimeoutError too: raised here while waiting for a subscription.
        self._outage_errors: tuple[type[BaseException], ...] = (
            redis_asyncio.ConnectionError, redis_asyncio.TimeoutError, TimeoutError)

    async def _call(self, what: str, op: Any, *args: Any) -> Any:
        try:
            return await op(*args)
        except self._outage_errors as exc:
            raise SharedStoreUnavailable(f"shared store {what} failed: Redis is unavailable "
                                         f"({exc or type(exc).__name__})") from exc

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under key, or default.

        Raises:
            SharedStoreUnavailable: Redis is away or did not answer in time.
        """
        raw = await self._call("get", self._client.get, self._prefix + key)
        return default if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any) -> None:
        """Store value (JSON-encoded) under key.

        Raises:
            TypeError: value is not JSON-serializable.
            SharedStoreUnavailable: Redis is away or did not answer in time.
        """
        await self._call("set", self._client.set, self._prefix + key, json.dumps(value))

    async def delete(self, key: str) -> bool:
        """Remove key. Returns: True if it existed.

        Raises:
            SharedStoreUnavailable: Redis is away or did not answer in time.
        """
        return bool(await self._call("delete", self._client.delete, self._prefix + key))

    async def incr(self, key: str, amount: int = 1) -> int:
        """INCRBY: atomic across every broker sharing the database.

        Raises:
            SharedStoreUnavailable: Redis is away or did not answer in time.
        """
        return int(await self._call("incr", self._client.incrby, self._prefix + key, amount))

    async def publish(self, channel: str, message: Any) -> int:
        """PUBLISH message (JSON). Returns: subscribers reached (over all brokers).

        Raises:
            SharedStoreUnavailable: Redis is away or did not answer in time.
        """
        return int(await self._call("publish", self._client.publish, self._prefix + channel,
                                    json.dumps(message)))

    def subscribe(self, channel: str) -> _RedisSubscription:
        """Subscribe to channel; the SUBSCRIBE is sent on `async with` or first iteration.

        `async with` raises SharedStoreUnavailable when Redis does not confirm the
        subscription within the timeout. Once iterating, an outage is waited out: the
        connection is replaced and the channel subscribed again, with backoff (logged
        when it starts and ends); messages published meanwhile are lost.
        """
        return _RedisSubscription(self, channel)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def check_store_url(url: str | None) -> str:
    """Validate a shared-store URL without connecting.

    Returns:
        "memory" or "redis".

    Raises:
        ConfigError: unknown scheme.
    """
    if url is None or url in ("memory://", "memory:"):
        return "memory"
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return "redis"
    raise ConfigError(
        f"unknown shared store URL {url!r}: use memory://, redis://, rediss:// or unix://"
    )


def open_store(url: str | None = None) -> MemoryStore | RedisStore:
    """The store a URL names.

    Args:
        url: None or "memory://" for MemoryStore; "redis://", "rediss://" or "unix://"
            for RedisStore.

    Returns:
        A new store (close() it when done).

    Raises:
        ConfigError: unknown scheme, or redis not installed.
    """
    if check_store_url(url) == "memory":
        return MemoryStore()
    assert url is not None
    return RedisStore(url)
