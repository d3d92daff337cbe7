"""One event emitter for the net layer: `on(event, fn)`, `off(event, fn)`, `emit(event, *args)`.

Connection and FramingSocket both take listeners this way. A listener may be a plain
function or a coroutine function (its coroutine then runs as a task). A listener that
raises, or whose task fails, is logged on the "packetron.net" logger and never stops
the other listeners, nor the code that emitted the event: events report what already
happened, so there is nobody to hand the error back to.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Collection
from typing import Any

from packetron.errors import ConfigError
from packetron.log import net_logger

__all__ = ["EventEmitter", "Listener"]

Listener = Callable[..., Any]


class EventEmitter:
    """Listeners by event name, for one object.

    Args:
        names: the events that exist; `on()` refuses any other name.
        kind: what emits them, for error messages ("Connection", "FramingSocket").
        label: names the emitter in log lines ("connection 7"); default `kind`. A
            string rather than the owner itself: a reference back to the owner would
            keep it in a cycle, alive until the garbage collector runs.
    """

    __slots__ = ("_names", "_kind", "_label", "_listeners", "_tasks")

    def __init__(self, names: Collection[str], kind: str, label: str | None = None) -> None:
        self._names = names
        self._kind = kind
        self._label = label or kind
        self._listeners: dict[str, list[Listener]] = {}
        # Strong references: the loop keeps only weak ones to the tasks it runs.
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, fn: Listener) -> Listener:
        """Add a listener; returns `fn`, so it also works as a decorator.

        Raises:
            ConfigError: unknown event name.
        """
        if event not in self._names:
            raise ConfigError(
                f"unknown {self._kind} event {event!r}; known: {sorted(self._names)}")
        self._listeners.setdefault(event, []).append(fn)
        return fn

    def off(self, event: str, fn: Listener) -> None:
        """Remove a listener added with on(); unknown listeners are ignored."""
        fns = self._listeners.get(event)
        if fns and fn in fns:
            fns.remove(fn)

    def has(self, event: str) -> bool:
        """Whether `event` has at least one listener."""
        return bool(self._listeners.get(event))

    def clear(self, event: str) -> None:
        """Drop every listener of `event` (an event that fires once, after it fired)."""
        self._listeners.pop(event, None)

    def emit(self, event: str, *args: Any) -> bool:
        """Call each listener of `event` with `args`, in the order they were added.

        Listeners added or removed by a listener take effect at the next emit.

        Returns:
            True if `event` had listeners.
        """
        fns = self._listeners.get(event)
        if not fns:
            return False
        for fn in list(fns):
            try:
                result = fn(*args)
                if result is not None and inspect.isawaitable(result):
                    self._run(event, result)
            except Exception:
                net_logger.exception("%s: %r listener failed", self._label, event)
        return True

    def _run(self, event: str, awaitable: Any) -> None:
        try:
            task: asyncio.Task[Any] = asyncio.ensure_future(awaitable)
        except RuntimeError:
            # No running loop: emit() logs this like a failed listener; the coroutine
            # is closed so that it is not reported as never awaited as well.
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                net_logger.error("%s: %r listener failed", self._label, event,
                                 exc_info=t.exception())

        task.add_done_callback(done)

    def __repr__(self) -> str:
        counts = {e: len(f) for e, f in self._listeners.items() if f}
        return f"<EventEmitter of {self._label} {counts}>"
