"""The "ceiling": the least a Python HTTP server on httptools + uvloop can do.

A bare ``asyncio.Protocol`` fed by ``httptools.HttpRequestParser`` on uvloop, with no
framework between the parser and the socket:

- ``GET /api/status`` writes one prebuilt response (head and body built at import);
- ``POST /api/echo`` does the same JSON work a real echo endpoint does: decode the body
  with :func:`json.loads`, encode the result with :func:`json.dumps`, write head + body
  in one call.

With ``--batch`` the answers to the requests of one read leave in one write (pipelined
requests share each read and each write): the ceiling of the pipelined workload. Without
it every answer is written on its own, which for one request per read is the same thing
minus the bookkeeping.

Keep-alive follows ``should_keep_alive()`` (HTTP/1.1 default, ``Connection: close``,
HTTP/1.0). Anything else gets a prebuilt 404 or 405. There is no Date header, no
logging, no backpressure and no size cap: this is a measuring stick, not a server.

Run: ``python -m bench.ceiling_server --host 127.0.0.1 --port 8001 [--batch]``
"""

from __future__ import annotations

import os
import sys

# Run as a script (``python bench/ceiling_server.py``), Python puts bench/ first on
# sys.path, where bench/http.py would shadow the standard library's ``http`` package.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
from collections.abc import Callable  # noqa: E402

import httptools  # noqa: E402
import uvloop  # noqa: E402

STATUS_BODY = b'{"status":"ok"}'


def _response(status_line: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status_line,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(body)).encode("ascii"),
            b"\r\n\r\n",
            body,
        )
    )


STATUS_RESPONSE = _response(b"200 OK", STATUS_BODY)
NOT_FOUND_RESPONSE = _response(b"404 Not Found", b'{"error":"not found"}')
METHOD_NOT_ALLOWED_RESPONSE = _response(
    b"405 Method Not Allowed", b'{"error":"method not allowed"}'
)
BAD_JSON_RESPONSE = _response(b"400 Bad Request", b'{"error":"invalid json"}')
BAD_REQUEST_CLOSE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
ECHO_HEAD_PREFIX = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "

# One encoder built once: json.dumps() with any non-default keyword builds a new
# JSONEncoder on every call.
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


class CeilingProtocol(asyncio.Protocol):
    """One connection: parser callbacks collect the request, the last one answers it."""

    __slots__ = ("transport", "parser", "url", "body")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(BAD_REQUEST_CLOSE)
            self.transport.close()

    # httptools callbacks (it hooks only the ones this class defines).

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        # The target may arrive split across reads.
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        if path == b"/api/status":
            transport.write(STATUS_RESPONSE if method == b"GET" else METHOD_NOT_ALLOWED_RESPONSE)
        elif path == b"/api/echo":
            if method != b"POST":
                transport.write(METHOD_NOT_ALLOWED_RESPONSE)
            else:
                try:
                    payload = _dumps(_loads(b"".join(self.body))).encode("ascii")
                except ValueError:
                    transport.write(BAD_JSON_RESPONSE)
                else:
                    length = str(len(payload)).encode("ascii")
                    transport.write(ECHO_HEAD_PREFIX + length + b"\r\n\r\n" + payload)
        else:
            transport.write(NOT_FOUND_RESPONSE)
        if not self.parser.should_keep_alive():
            transport.close()


class _BatchTransport:
    """Collects the writes made while one read is parsed; BatchingProtocol sends them."""

    __slots__ = ("transport", "parts")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def flush(self) -> None:
        parts = self.parts
        if parts:
            self.transport.write(parts[0] if len(parts) == 1 else b"".join(parts))
            parts.clear()


class BatchingProtocol(CeilingProtocol):
    """CeilingProtocol whose answers to one read go out in one write."""

    __slots__ = ("batch",)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.batch = _BatchTransport(transport)  # type: ignore[arg-type]
        self.transport = self.batch  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.batch.flush()


async def serve_until_stopped(factory: Callable[[], asyncio.Protocol], host: str,
                              port: int) -> None:
    """Listen with `factory`'s protocols until SIGTERM or SIGINT (bench/floor_server.py
    serves the same way)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(factory, host, port, reuse_address=True, backlog=2048)
    async with server:
        await stop.wait()


async def serve(host: str, port: int, batch: bool = False) -> None:
    await serve_until_stopped(BatchingProtocol if batch else CeilingProtocol, host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--batch", action="store_true",
                        help="send the answers to one read in one write (pipelining)")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.batch))


if __name__ == "__main__":
    main()
