"""`ctx.shared`: a key-value store with publish/subscribe, shared by a broker's handlers.

Two sibling backends with one interface:

- MemoryStore: in this process; the default. Values are kept as given.
- RedisStore: in Redis (the `redis` package's asyncio client), for several brokers on
  several machines. Values and messages travel as JSON.

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

from packetron.errors import ConfigError
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
]

# Messages a subscriber may fall behind by; past this the oldest are dropped (with a
# warning) so a stalled subscriber cannot grow memory without bound. Redis does the
# same to slow subscribers (client-output-buffer-limit pubsub).
SUBSCRIPTION_QUEUE_SIZE = 1024
# Every key and channel a RedisStore touches starts with this, so a broker can share a
# Redis database with other applications.
DEFAULT_REDIS_PREFIX = "packetron:"

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
    __slots__ = ("channel", "_store", "_pubsub", "_closed")

    def __init__(self, store: RedisStore, channel: str) -> None:
        self.channel = channel
        self._store = store
        self._pubsub: Any = None
        self._closed = False

    async def _start(self) -> None:
        if self._pubsub is not None:
            return
        pubsub = self._store._client.pubsub()
        self._pubsub = pubsub
        await pubsub.subscribe(self._store._prefix + self.channel)
        # Wait for the server's confirmation: from then on no publish can be missed.
        while True:
            reply = await pubsub.get_message(timeout=None)
            if reply is not None and reply["type"] == "subscribe":
                return

    def __aiter__(self) -> _RedisSubscription:
        return self

    async def __anext__(self) -> Any:
        if self._closed:
            raise StopAsyncIteration
        await self._start()
        while True:
            try:
                reply = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            except Exception:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            if self._closed:
                raise StopAsyncIteration
            if reply is not None and reply["type"] == "message":
                return json.loads(reply["data"])

    async def __aenter__(self) -> _RedisSubscription:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pubsub is not None:
            await self._pubsub.aclose()


class RedisStore:
    """The Redis backend.

    Args:
        url: "redis://host:port/db", "rediss://..." (TLS) or "unix:///path?db=0".
        prefix: put before every key and channel name.

    Raises:
        ConfigError: the `redis` package is not installed (pip install packetron[redis]).
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_REDIS_PREFIX) -> None:
        try:
            import redis.asyncio as redis_asyncio
        except ImportError:
            raise ConfigError(
                "a redis:// shared store needs the redis package: pip install 'packetron[redis]'"
            ) from None
        self.url = url
        self._prefix = prefix
        self._client: Any = redis_asyncio.from_url(url)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value stored under key, or default."""
        raw = await self._client.get(self._prefix + key)
        return default if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any) -> None:
        """Store value (JSON-encoded) under key.

        Raises:
            TypeError: value is not JSON-serializable.
        """
        await self._client.set(self._prefix + key, json.dumps(value))

    async def delete(self, key: str) -> bool:
        """Remove key. Returns: True if it existed."""
        return bool(await self._client.delete(self._prefix + key))

    async def incr(self, key: str, amount: int = 1) -> int:
        """INCRBY: atomic across every broker sharing the database."""
        return int(await self._client.incrby(self._prefix + key, amount))

    async def publish(self, channel: str, message: Any) -> int:
        """PUBLISH message (JSON). Returns: subscribers reached (over all brokers)."""
        return int(await self._client.publish(self._prefix + channel, json.dumps(message)))

    def subscribe(self, channel: str) -> _RedisSubscription:
        """Subscribe to channel; the SUBSCRIBE is sent on `async with` or first iteration."""
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
