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
- with ``--batch``, the answers to one read leave in one write, as the ceiling's do;
- with ``--plugins``, the least that CORS, security headers and a request id cost (the
  yardstick of the ``plugins`` workload): the headers looked up case-insensitively, the
  Origin checked against the allowed one, four prebuilt security header lines, the
  client's X-Request-ID kept when printable and short or a new random one made, and these
  lines joined into the head. No plugin machinery: one function wraps the handler;
- with ``--pattern``, the 200 routes of bench/routetable.py (the ``pattern`` workload):
  the exact ones in a dict, the ``/<prefix>/{id:int}`` ones matched by one regex whose
  results are remembered per path (as packetron's and Sanic's routers do), each request
  getting its own ``path_params``.

It does not validate the Host header, bound the URL, header or body sizes, time anything
out, refuse RTSP request lines, keep pipelined answers in order across handlers that
wait, log or run plugins: every one of those is the framework's, not the floor's. Only
``GET /api/status`` is served (anything else is a 404), unless ``--pattern``.

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
from random import getrandbits  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import re  # noqa: E402

import httptools  # noqa: E402
import uvloop  # noqa: E402

from bench.ceiling_server import serve_until_stopped  # noqa: E402
from bench.routetable import EXACT_PATHS, PATTERN_PREFIXES  # noqa: E402

_dumps: Callable[[Any], bytes]
try:
    from orjson import dumps as _dumps
except ImportError:  # the standard library, compact
    _json_encode = json.JSONEncoder(separators=(",", ":")).encode
    _dumps = lambda obj: _json_encode(obj).encode("utf-8")  # noqa: E731

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


ALLOWED_ORIGINS = frozenset({"https://example.com"})
SECURITY_LINES = (b"strict-transport-security: max-age=63072000; includeSubDomains\r\n"
                  b"x-content-type-options: nosniff\r\nx-frame-options: DENY\r\n"
                  b"referrer-policy: strict-origin-when-cross-origin\r\n")
_UUID4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48


class Request:
    __slots__ = ("method", "target", "headers", "keep_alive", "path_params")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
                 keep_alive: bool, path_params: dict[str, Any] | None) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.path_params = path_params


class Response:
    __slots__ = ("_protocol", "_keep_alive", "extra")

    def __init__(self, protocol: FloorProtocol, keep_alive: bool) -> None:
        self._protocol = protocol
        self._keep_alive = keep_alive
        self.extra = b""  # header lines set before the handler answers

    def send_json(self, obj: Any) -> None:
        body = _dumps(obj)
        self._protocol.write(b"".join((OK_LINE, Clock.date_line, CT_JSON, self.extra,
                                       b"content-length: %d\r\n\r\n" % len(body), body)))
        if not self._keep_alive:
            self._protocol.closing = True  # closed once this read's answers are out


Handler = Callable[[Request, Response], None]


def status(request: Request, response: Response) -> None:
    response.send_json({"status": "ok"})


def with_plugins(handler: Handler) -> Handler:
    """`handler` behind the least CORS + security headers + request id can do."""

    def run(request: Request, response: Response) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in request.headers}
        lines = [SECURITY_LINES]
        origin = headers.get("origin")
        if origin is not None and origin in ALLOWED_ORIGINS:
            lines.append(b"access-control-allow-origin: %s\r\nvary: Origin\r\n"
                         % origin.encode("latin-1"))
        request_id = headers.get("x-request-id")
        if request_id is None or len(request_id) > 200 or not request_id.isprintable():
            request_id = "%032x" % (getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)
        lines.append(b"x-request-id: %s\r\n" % request_id.encode("latin-1"))
        response.extra = b"".join(lines)
        handler(request, response)

    return run


ROUTES: dict[bytes, dict[bytes, Handler]] = {b"/api/status": {b"GET": status}}
Found = tuple[dict[bytes, Handler], dict[str, Any]]
PATTERN: re.Pattern[bytes] | None = None  # set by --pattern
_PATTERN_PREFIXES = frozenset(prefix.encode("ascii") for prefix in PATTERN_PREFIXES)
_pattern_memo: dict[bytes, Found | None] = {}


def _id_handler(request: Request, response: Response) -> None:
    response.send_json({"id": request.path_params["id"]})  # type: ignore[index]


def _path_handler(path: str) -> Handler:
    return lambda request, response: response.send_json({"path": path})


def match_pattern(path: bytes) -> Found | None:
    """(methods, path params) of the pattern route `path` names; None when none does."""
    found = _pattern_memo.get(path, False)
    if found is False:
        match = PATTERN.fullmatch(path)  # type: ignore[union-attr]
        found = None
        if match is not None and match.group(1) in _PATTERN_PREFIXES:
            found = ({b"GET": _id_handler}, {"id": int(match.group(2))})
        if len(_pattern_memo) >= 1024:
            _pattern_memo.clear()
        _pattern_memo[path] = found
    return found  # type: ignore[return-value]


def use_pattern_routes() -> None:
    global PATTERN
    ROUTES.clear()
    for path in EXACT_PATHS:
        ROUTES[path.encode("ascii")] = {b"GET": _path_handler(path)}
    PATTERN = re.compile(rb"/([^/]+)/([0-9]{1,18})")


class FloorProtocol(asyncio.Protocol):
    """One connection: the callbacks gather the request, the last one calls its handler."""

    __slots__ = ("transport", "parser", "url", "headers", "write", "closing", "batch")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.closing = False
        self.batch: list[bytes] | None = None  # BatchingFloorProtocol's

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = self.transport.write

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(BAD_REQUEST_CLOSE)
            self.closing = True
        batch = self.batch
        if batch:  # BatchingFloorProtocol: the answers to this read, in one write
            self.transport.write(b"".join(batch))
            batch.clear()
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
        path = target if query_at < 0 else target[:query_at]
        methods = ROUTES.get(path)
        params = None
        if methods is None and PATTERN is not None:
            found = match_pattern(path)
            if found is not None:
                methods, params = found[0], found[1].copy()
        method = parser.get_method()
        handler = methods.get(method) if methods is not None else None
        keep_alive = parser.should_keep_alive()
        if handler is None:
            self.write(NOT_FOUND)
            return
        handler(Request(method, target, self.headers, keep_alive, params),
                Response(self, keep_alive))


class BatchingFloorProtocol(FloorProtocol):
    """FloorProtocol whose answers to one read go out in one write."""

    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        batch: list[bytes] = []
        self.batch = batch
        self.write = batch.append  # type: ignore[assignment]


async def serve(host: str, port: int, batch: bool = False) -> None:
    Clock.tick(asyncio.get_running_loop())
    await serve_until_stopped(BatchingFloorProtocol if batch else FloorProtocol, host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--batch", action="store_true",
                        help="send the answers to one read in one write (pipelining)")
    parser.add_argument("--plugins", action="store_true",
                        help="CORS, security headers and a request id around the handler")
    parser.add_argument("--pattern", action="store_true",
                        help="the 200 routes of the pattern workload")
    args = parser.parse_args(argv)
    if args.pattern:
        use_pattern_routes()
    if args.plugins:
        ROUTES[b"/api/status"][b"GET"] = with_plugins(status)
    uvloop.run(serve(args.host, args.port, args.batch))


if __name__ == "__main__":
    main()
