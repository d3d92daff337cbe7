"""The "floor": the least any framework on httptools + uvloop can do for a handler.

The ceiling (bench/ceiling_server.py) writes prebuilt bytes. A framework cannot: it hands
the handler a request and a response object and turns what the handler gives it into an
answer. This server does exactly that and nothing more, so the distance between it and
the ceiling is what the shape ``handler(request, response)`` costs by itself, before any
of the work a real server adds:

- per request, a ``Request`` (method, target, the header list, keep-alive) and a
  ``Response``; the route found by target and method in two dicts; the handler called;
  ``response.send_json(obj)`` encodes (orjson when importable, as packetron does), builds
  the head (status, a Date refreshed once a second, Content-Type, Content-Length) and
  writes it with the body in one write;
- with ``--batch``, the answers to one read leave in one write, as the ceiling's do.

It does not validate the Host header, bound the URL, header or body sizes, time anything
out, refuse RTSP request lines, keep pipelined answers in order across handlers that
wait, log or run plugins: every one of those is the framework's, not the floor's. Only
``GET /api/status`` is served (anything else is a 404).

Run: ``python -m bench.floor_server --host 127.0.0.1 --port 8002 [--batch]``
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import email.utils  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import httptools  # noqa: E402
import uvloop  # noqa: E402

try:
    from orjson import dumps as _dumps
except ImportError:  # the standard library, compact
    _json_encode = json.JSONEncoder(separators=(",", ":")).encode

    def _dumps(obj: Any) -> bytes:
        return _json_encode(obj).encode("utf-8")

OK_LINE = b"HTTP/1.1 200 OK\r\n"
CT_JSON = b"content-type: application/json\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
BAD_REQUEST_CLOSE = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Clock:
    """The Date header line, refreshed once a second (as every real server does)."""

    date_line = b""

    @classmethod
    def tick(cls, loop: asyncio.AbstractEventLoop | None = None) -> None:
        cls.date_line = b"date: %s\r\n" % email.utils.formatdate(usegmt=True).encode("ascii")
        if loop is not None:
            loop.call_later(1.0, cls.tick, loop)


Clock.tick()


class Request:
    __slots__ = ("method", "target", "headers", "keep_alive")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive


class Response:
    __slots__ = ("_protocol", "_keep_alive")

    def __init__(self, protocol: FloorProtocol, keep_alive: bool) -> None:
        self._protocol = protocol
        self._keep_alive = keep_alive

    def send_json(self, obj: Any) -> None:
        body = _dumps(obj)
        self._protocol.write(b"".join((OK_LINE, Clock.date_line, CT_JSON,
                                       b"content-length: %d\r\n\r\n" % len(body), body)))
        if not self._keep_alive:
            self._protocol.closing = True  # closed once this read's answers are out


Handler = Callable[[Request, Response], None]
ROUTES: dict[bytes, dict[bytes, Handler]] = {
    b"/api/status": {b"GET": lambda request, response: response.send_json({"status": "ok"})},
}


class FloorProtocol(asyncio.Protocol):
    """One connection: the callbacks gather the request, the last one calls its handler."""

    __slots__ = ("transport", "parser", "url", "headers", "write", "closing")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = self.transport.write

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST_CLOSE)
            self.closing = True
        if self.closing:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        parser = self.parser
        target = self.url
        query_at = target.find(63)  # "?"
        methods = ROUTES.get(target if query_at < 0 else target[:query_at])
        method = parser.get_method()
        handler = methods.get(method) if methods is not None else None
        keep_alive = parser.should_keep_alive()
        if handler is None:
            self.write(NOT_FOUND)
            return
        handler(Request(method, target, self.headers, keep_alive), Response(self, keep_alive))


class BatchingFloorProtocol(FloorProtocol):
    """FloorProtocol whose answers to one read go out in one write."""

    __slots__ = ("batch",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.batch: list[bytes] = []
        self.write = self.batch.append

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.batch.append(BAD_REQUEST_CLOSE)
            self.closing = True
        batch = self.batch
        if batch:
            self.transport.write(b"".join(batch))
            batch.clear()
        if self.closing:
            self.transport.close()


async def serve(host: str, port: int, batch: bool = False) -> None:
    loop = asyncio.get_running_loop()
    Clock.tick(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        BatchingFloorProtocol if batch else FloorProtocol, host, port, reuse_address=True,
        backlog=2048,
    )
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--batch", action="store_true",
                        help="send the answers to one read in one write (pipelining)")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.batch))


if __name__ == "__main__":
    main()
