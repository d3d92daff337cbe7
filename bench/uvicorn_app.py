"""A raw ASGI app (no framework) with the two benchmark endpoints, for uvicorn.

- ``GET /api/status`` answers ``{"status":"ok"}``;
- ``POST /api/echo`` collects the body, decodes it with :func:`json.loads` and sends it
  back encoded with :func:`json.dumps` (the same work as the ceiling's echo).

The bench runs it as::

    python -m uvicorn bench.uvicorn_app:app --host 127.0.0.1 --port 8002 \\
        --http httptools --loop uvloop --no-access-log --workers 1

``python -m bench.uvicorn_app --host H --port P`` does the same programmatically.
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts bench/ first on sys.path, where bench/http.py would
# shadow the standard library's ``http`` package (which uvicorn imports).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import json  # noqa: E402
from typing import Any, Awaitable, Callable, MutableMapping  # noqa: E402

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
STATUS_BODY = b'{"status":"ok"}'

# Built once: json.dumps() with any non-default keyword builds a new encoder per call.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": JSON_HEADERS + [(b"content-length", str(len(body)).encode("ascii"))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    method = scope["method"]
    if path == "/api/status":
        if method == "GET":
            await _reply(send, 200, STATUS_BODY)
        else:
            await _reply(send, 405, b'{"error":"method not allowed"}')
    elif path == "/api/echo":
        if method != "POST":
            await _reply(send, 405, b'{"error":"method not allowed"}')
            return
        raw = await _read_body(receive)
        try:
            payload = _dumps(json.loads(raw)).encode("ascii")
        except ValueError:
            await _reply(send, 400, b'{"error":"invalid json"}')
        else:
            await _reply(send, 200, payload)
    else:
        await _reply(send, 404, b'{"error":"not found"}')


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="uvicorn + raw ASGI peer for bench/http.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        workers=1,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
