"""Helpers of the WebSocket tests: run a client coroutine, build URLs, wait for conditions."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run a client coroutine to completion, bounded in time."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def ws_url(server: Any, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}/{path.lstrip('/')}"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` s passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


class Recorder:
    """A FrameListener (packetron.http.websocket.frames) that keeps what it hears, in
    order: ("message", str | bytes), ("ping", bytes), ("pong", bytes), ("close", (code,
    reason)), ("violation", code)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    def on_message(self, message: str | bytes) -> None:
        self.heard.append(("message", message))

    def on_ping(self, payload: bytes) -> None:
        self.heard.append(("ping", payload))

    def on_pong(self, payload: bytes) -> None:
        self.heard.append(("pong", payload))

    def on_close(self, code: int, reason: str) -> None:
        self.heard.append(("close", (code, reason)))

    def on_violation(self, code: int, reason: str) -> None:
        self.heard.append(("violation", code))
