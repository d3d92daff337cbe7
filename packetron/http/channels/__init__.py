"""`server.channels`: publish/subscribe between the handlers of a server.

    await server.channels.publish("room:1", {"from": "ann", "text": "hi"})
    async with server.channels.subscribe("room:1") as messages:
        async for message in messages:
            ...

`Channels` is the interface; `LocalChannels` delivers within one process (the backend of
a single-process server and of the in-memory test client). The server layer plugs in
one that also reaches every worker process (packetron.server.channellink), and a
`redis://` global_data_url selects Redis pub/sub (packetron.http.channels.redis), which
reaches every process of every server on that Redis.

A subscriber that falls behind never slows the publisher: each subscription holds at most
`max_queue` messages; past that the oldest is dropped and a warning is logged.
"""
from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from typing import Any

from packetron.http.channels.codec import Envelope, check_name, encode
from packetron.log import server_logger

__all__ = ["Channels", "LocalChannels", "Subscription", "DEFAULT_QUEUE_SIZE"]

# Messages one subscription may fall behind by before the oldest are dropped.
DEFAULT_QUEUE_SIZE = 1024


class Subscription:
    """The messages of one channel, from the moment `subscribe()` was called.

    An async iterator; `async with channels.subscribe(name) as sub:` also waits until the
    subscription is in place in every process the backend reaches (so a publish made
    after it, anywhere, is delivered), and ends it on exit. `aclose()` ends it too; one
    that is simply dropped ends when it is garbage collected.
    """

    __slots__ = ("name", "max_queue", "dropped", "_channels", "_queue", "_waiter",
                 "_loop", "_closed", "_warned", "__weakref__")

    def __init__(self, channels: "LocalChannels", name: str, max_queue: int) -> None:
        self.name = name
        self.max_queue = max_queue
        self.dropped = 0  # messages lost because this subscriber fell behind
        self._channels = channels
        self._queue: deque[Envelope] = deque()
        self._waiter: asyncio.Future[None] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # bound on first use
        self._closed = False
        self._warned = False

    def _deliver(self, envelope: Envelope) -> None:
        """Queue a message (in this subscription's loop)."""
        if self._closed:
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            queue.popleft()
            self.dropped += 1
            if not self._warned:
                # Once per backlog, not once per message: a stalled reader would flood the log.
                self._warned = True
                server_logger.warning("channel %r: a subscriber is %d messages behind; "
                                      "dropping the oldest", self.name, self.max_queue)
        queue.append(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _deliver_from_anywhere(self, envelope: Envelope) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._deliver(envelope)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, envelope)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Any:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        while True:
            if self._queue:
                envelope = self._queue.popleft()
                if not self._queue:
                    self._warned = False  # caught up: warn again at the next backlog
                return envelope.value()
            if self._closed:
                raise StopAsyncIteration
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def __aenter__(self) -> "Subscription":
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        try:
            await self._channels._ready(self.name)
        except BaseException:
            self.close()  # not entered: nothing else would end it (or its Redis SUBSCRIBE)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """End the subscription: a reader waiting for a message stops iterating."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._channels._remove(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Channels:
    """The interface of `server.channels` (see the module docstring)."""

    # True when the backend itself reaches every process (Redis): the server then sets
    # up nothing of its own between its workers.
    cross_process = False

    async def publish(self, name: str, message: Any) -> None:
        """Deliver `message` (str, bytes or a JSON value) to every subscriber of `name`.

        Raises:
            TypeError: a message of another type, or a name that is not a str.
            ValueError: a message over 8 MiB encoded, or an empty name.
        """
        raise NotImplementedError

    def subscribe(self, name: str, *, max_queue: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        """Subscribe to `name`; messages published from now on are queued for it."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the serving loop opened (connections); called when it stops."""


class LocalChannels(Channels):
    """Delivery within this process; the base of the backends that reach further.

    Subclasses are told when a channel gets its first local subscriber and loses its
    last (`_first_subscriber`, `_last_unsubscribed`), and deliver what arrives from
    elsewhere with `_deliver_local`.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, weakref.WeakSet[Subscription]] = {}
        # Subscriptions may be made, and messages published, from several threads (a
        # single-process server runs its loop in a thread of its own).
        self._lock = threading.Lock()

    async def publish(self, name: str, message: Any) -> None:
        check_name(name)
        self._deliver_local(name, encode(message))

    def subscribe(self, name: str, *, max_queue: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        check_name(name)
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive integer, got {max_queue!r}")
        subscription = Subscription(self, name, max_queue)
        with self._lock:
            subscribers = self._subscribers.get(name)
            first = not subscribers
            if subscribers is None:
                subscribers = self._subscribers[name] = weakref.WeakSet()
            subscribers.add(subscription)
        if first:
            self._first_subscriber(name)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        name = subscription.name
        with self._lock:
            subscribers = self._subscribers.get(name)
            if subscribers is None:
                return
            subscribers.discard(subscription)
            if subscribers:
                return
            del self._subscribers[name]
        self._last_unsubscribed(name)

    def _deliver_local(self, name: str, envelope: Envelope) -> int:
        """Queue `envelope` for this process's subscribers of `name`; returns how many."""
        with self._lock:
            subscribers = self._subscribers.get(name)
            receivers = list(subscribers) if subscribers is not None else []
            gone = subscribers is not None and not receivers
            if gone:
                del self._subscribers[name]  # every subscription was garbage collected
        if gone:
            self._last_unsubscribed(name)
        for subscription in receivers:
            subscription._deliver_from_anywhere(envelope)
        return len(receivers)

    def has_subscribers(self, name: str) -> bool:
        with self._lock:
            return bool(self._subscribers.get(name))

    # Hooks for backends that reach other processes.

    def _first_subscriber(self, name: str) -> None:
        """`name` got its first subscriber in this process."""

    def _last_unsubscribed(self, name: str) -> None:
        """`name` lost its last subscriber in this process."""

    async def _ready(self, name: str) -> None:
        """Return once a subscription to `name` receives what any process publishes."""
