"""Startup and shutdown hooks of an application, run by each serving loop.

A hook is `fn(server)`, sync or async. Startup hooks run in every process that serves,
after the fork and before it accepts a connection; shutdown hooks run after its in-flight
requests have finished at stop. A startup hook that raises stops that serving loop from
starting (the error reaches start()/run()); a shutdown hook that raises is logged and the
others still run.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from packetron.errors import ConfigError
from packetron.log import server_logger

__all__ = ["Lifespan", "Hook", "is_startup_failure", "STARTUP_FAILURE_NOTE"]

STARTUP_FAILURE_NOTE = "raised by the packetron startup hook"

Hook = Callable[[Any], Any]


class Lifespan:
    """The hooks of one application, in registration order."""

    __slots__ = ("startup", "shutdown")

    def __init__(self) -> None:
        self.startup: list[Hook] = []
        self.shutdown: list[Hook] = []

    @staticmethod
    def _checked(fn: Hook) -> Hook:
        if not callable(fn):
            raise ConfigError(f"a lifespan hook must be callable, got {fn!r}")
        return fn

    def add_startup(self, fn: Hook) -> Hook:
        self.startup.append(self._checked(fn))
        return fn

    def add_shutdown(self, fn: Hook) -> Hook:
        self.shutdown.append(self._checked(fn))
        return fn

    async def run_startup(self, target: Any) -> None:
        """Run every startup hook with `target`; the first one that raises stops the rest.

        Raises:
            whatever the failing hook raised (logged here with its name).
        """
        for fn in self.startup:
            try:
                result = fn(target)
                if inspect.isawaitable(result):
                    await result
            except BaseException as exc:
                server_logger.error("startup hook %s failed: %s", _name(fn), exc, exc_info=exc)
                # Marks it as told: whoever passes it on need not log its traceback again.
                exc.add_note(f"{STARTUP_FAILURE_NOTE} {_name(fn)}")
                raise

    async def run_shutdown(self, target: Any) -> None:
        """Run every shutdown hook with `target`; failures are logged, never raised."""
        for fn in self.shutdown:
            try:
                result = fn(target)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                server_logger.error("shutdown hook %s failed: %s", _name(fn), exc, exc_info=exc)


def _name(fn: Hook) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def is_startup_failure(exc: BaseException) -> bool:
    """Whether `exc` came out of a startup hook (and was logged there with its traceback)."""
    return any(note.startswith(STARTUP_FAILURE_NOTE)
               for note in getattr(exc, "__notes__", ()))
