"""Server-sent events (the text/event-stream format of the HTML standard) on a response.

`stream = await response.event_stream()` starts the answer; `await stream.send(...)`
writes one event; a comment line every `heartbeat` seconds keeps proxies and browsers
from timing the connection out. When the client goes away, `send` raises
ConnectionClosed and the heartbeat stops by itself, so no timer or task outlives it.
"""
from __future__ import annotations

import asyncio
from typing import Any, Protocol

from packetron.errors import ConnectionClosed

__all__ = ["EventStream", "format_event", "SSE_HEADERS", "DEFAULT_HEARTBEAT_SECONDS"]

DEFAULT_HEARTBEAT_SECONDS = 15.0
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"),
               ("Cache-Control", "no-cache"),
               # nginx would otherwise buffer the stream and deliver events late.
               ("X-Accel-Buffering", "no")]
_HEARTBEAT = b": keep-alive\n\n"


class StreamedAnswer(Protocol):
    """The streamed response an event stream writes to (packetron.http.response)."""

    async def write(self, data: bytes) -> None: ...

    def write_now(self, data: bytes) -> bool: ...

    def end(self) -> None: ...


def format_event(data: Any, event: str | None = None, id: str | None = None,
                 retry: int | None = None) -> bytes:
    """One event in wire form: each line of `data` its own `data:` field.

    Raises:
        ValueError: a line break in `event` or `id`, NUL in `id`, or a negative `retry`.
    """
    lines = []
    if event is not None:
        _check_field("event", event)
        lines.append(f"event: {event}")
    if id is not None:
        _check_field("id", id)
        if "\0" in id:
            raise ValueError("an event id cannot contain NUL")
        lines.append(f"id: {id}")
    if retry is not None:
        if not isinstance(retry, int) or retry < 0:
            raise ValueError(f"retry must be a non-negative number of milliseconds, got {retry!r}")
        lines.append(f"retry: {retry}")
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else str(data)
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        lines.append(f"data: {line}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an event {name} cannot contain a line break")


class EventStream:
    """An open text/event-stream answer."""

    def __init__(self, response: StreamedAnswer, loop: asyncio.AbstractEventLoop,
                 heartbeat: float | None) -> None:
        self._response = response
        self._loop = loop
        self._heartbeat = heartbeat
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._schedule()

    def _schedule(self) -> None:
        if self._heartbeat and not self.closed:
            self._timer = self._loop.call_later(self._heartbeat, self._beat)

    def _beat(self) -> None:
        if self.closed:
            return
        if not self._response.write_now(_HEARTBEAT):
            self._stop()  # the client is gone: nothing more to keep alive
            return
        self._schedule()

    async def send(self, data: Any, event: str | None = None, id: str | None = None,
                   retry: int | None = None) -> None:
        """Write one event; waits while the client is slow to read.

        Raises:
            ConnectionClosed: the client went away (the stream is closed then).
            ValueError: an invalid field (see format_event).
        """
        if self.closed:
            raise ConnectionClosed("the event stream is closed")
        payload = format_event(data, event=event, id=id, retry=retry)
        try:
            await self._response.write(payload)
        except ConnectionClosed:
            self._stop()
            raise

    def close(self) -> None:
        """End the stream (the answer completes; keep-alive connections go on)."""
        if self.closed:
            return
        self._stop()
        self._response.end()

    def _stop(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
