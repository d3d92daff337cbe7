"""The "ceiling": the least a Python HTTP server on httptools + uvloop can do.

A bare ``asyncio.Protocol`` fed by ``httptools.HttpRequestParser`` on uvloop, with no
framework between the parser and the socket:

- ``GET /api/status`` writes one prebuilt response (head and body built at import);
- ``POST /api/echo`` does the same JSON work a real echo endpoint does: decode the body
  with :func:`json.loads`, encode the result with :func:`json.dumps`, write head + body
  in one call.

Keep-alive follows ``should_keep_alive()`` (HTTP/1.1 default, ``Connection: close``,
HTTP/1.0). Anything else gets a prebuilt 404 or 405. There is no Date header, no
logging, no backpressure and no size cap: this is a measuring stick, not a server.

Run: ``python -m bench.ceiling_server --host 127.0.0.1 --port 8001``
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


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        CeilingProtocol, host, port, reuse_address=True, backlog=2048
    )
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
