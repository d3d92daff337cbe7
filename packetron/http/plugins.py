"""Plugins: functions that run around a route's handler, by priority.

A plugin's `handler(request, response)`, sync or async, runs before the route's handler;
returning True short-circuits (the plugin has answered, or decided nothing else should
run). It runs before the body is read, so an authentication plugin can refuse an upload
without receiving it. Its `after(request, response)` runs just before the response head
is written, for every answer of the routes it is attached to (errors included), and may
set or remove headers; a global plugin's `after` also runs for the server's own answers.
"""
from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Union

from packetron.errors import ConfigError
from packetron.flags import PluginPriority

__all__ = ["Plugin", "PluginManager", "PluginFunction", "AfterFunction"]

PluginFunction = Callable[[Any, Any], Union[bool, None, Awaitable[Union[bool, None]]]]
AfterFunction = Callable[[Any, Any], Union[None, Awaitable[None]]]


class Plugin:
    """One plugin; attach it to the server (global) or to routes (local)."""

    __slots__ = ("priority", "handler", "after", "is_async", "after_is_async", "_managers")

    def __init__(self, priority: int, handler: PluginFunction | None,
                 after: AfterFunction | None = None) -> None:
        if handler is None and after is None:
            raise ConfigError("a plugin needs handler=fn(request, response), "
                              "after=fn(request, response), or both")
        if handler is not None and not callable(handler):
            raise ConfigError("a plugin's handler must be callable: fn(request, response)")
        if after is not None and not callable(after):
            raise ConfigError("a plugin's after must be callable: fn(request, response)")
        self.priority = PluginPriority(priority)
        self.handler = handler
        self.after = after
        self.is_async = handler is not None and inspect.iscoroutinefunction(handler)
        self.after_is_async = after is not None and inspect.iscoroutinefunction(after)
        self._managers: list[PluginManager] = []

    @classmethod
    def create(cls, priority: int = PluginPriority.MEDIUM,
               handler: PluginFunction | None = None,
               after: AfterFunction | None = None) -> "Plugin":
        """Build a plugin: `handler(request, response)` runs before the route's handler and
        returns True to short-circuit; `after(request, response)` runs before the response
        head is written."""
        return cls(priority, handler, after)

    def set_priority(self, priority: int) -> None:
        """Change the priority; every manager it is attached to re-sorts."""
        self.priority = PluginPriority(priority)
        for manager in self._managers:
            manager.resort()

    def remove(self, manager: "PluginManager | None" = None) -> None:
        """Detach from one manager, or from all of them when none is given."""
        for attached in list(self._managers):
            if manager is None or attached is manager:
                attached.remove(self)

    def __repr__(self) -> str:
        return f"Plugin(priority={self.priority.name}, handler={self.handler!r})"


class PluginManager:
    """An ordered set of plugins: higher priority first, equal priorities in insertion order."""

    __slots__ = ("plugins", "befores", "afters", "has_async", "_on_change")

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.plugins: tuple[Plugin, ...] = ()
        self.befores: tuple[Plugin, ...] = ()  # those with a handler, in priority order
        self.afters: tuple[Plugin, ...] = ()   # those with an after hook, in priority order
        self.has_async = False
        self._on_change = on_change

    def add(self, plugin: Plugin) -> None:
        if not isinstance(plugin, Plugin):
            raise ConfigError(f"expected a Plugin (use Plugin.create), got {plugin!r}")
        if plugin in self.plugins:
            return
        plugin._managers.append(self)
        self.plugins = self.plugins + (plugin,)
        self.resort()

    def remove(self, plugin: Plugin) -> None:
        if plugin in self.plugins:
            self.plugins = tuple(p for p in self.plugins if p is not plugin)
            plugin._managers.remove(self)
            self.resort()

    def resort(self) -> None:
        # sorted() is stable, so equal priorities keep the order they were added in.
        self.plugins = tuple(sorted(self.plugins, key=lambda p: -p.priority))
        self.befores = tuple(p for p in self.plugins if p.handler is not None)
        self.afters = tuple(p for p in self.plugins if p.after is not None)
        self.has_async = any(p.is_async for p in self.plugins)
        if self._on_change is not None:
            self._on_change()

    def __len__(self) -> int:
        return len(self.plugins)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.plugins)
