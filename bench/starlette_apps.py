"""Starlette apps for the ``pattern`` and ``plugins`` workloads of bench/http.py.

Both run under uvicorn (httptools, uvloop, one worker, no access log):

- ``pattern_app``: a bare ``starlette.routing.Router`` (no Starlette application around
  it, so no middleware stack) with the 200 routes of :mod:`bench.routetable`;
  ``GET /users/4711`` answers ``JSONResponse({"id": 4711})``.
- ``plugins_app``: a ``Starlette`` application with one route, ``GET /api/status``
  answering ``JSONResponse({"status": "ok"})``, behind ``CORSMiddleware``
  (``allow_origins=["https://example.com"]``), a middleware adding the four headers
  packetron's ``security_headers()`` adds, and one giving each request an id
  (``X-Request-ID``: the client's when well-formed, else a new uuid4 hex), as
  packetron's ``request_id()`` does. Both are pure ASGI middlewares (they wrap ``send``),
  Starlette's fast way to write one; ``BaseHTTPMiddleware`` would cost more.

The bench runs them as::

    python -m uvicorn bench.starlette_apps:pattern_app --http httptools --loop uvloop \\
        --no-access-log --workers 1 --host 127.0.0.1 --port 8020
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.routetable import EXACT_PATHS, PATTERN_PREFIXES

ALLOWED_ORIGIN = "https://example.com"
# The headers (and values) packetron's security_headers() sends by default.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
]
REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,200}")


async def status(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _exact(path: str) -> Any:
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"path": path})

    return endpoint


async def by_id(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["id"]})


def _pattern_routes() -> list[Route]:
    routes = [
        Route(path, status if path == "/api/status" else _exact(path), methods=["GET"])
        for path in EXACT_PATHS
    ]
    routes += [Route(f"/{prefix}/{{id:int}}", by_id, methods=["GET"]) for prefix in PATTERN_PREFIXES]
    return routes


pattern_app = Router(routes=_pattern_routes())


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP answer (a header already set is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestIdMiddleware:
    """Gives each request an id (scope["state"]["request_id"]) and echoes it in X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER), None)
        rid = given if given is not None and _VALID_ID.fullmatch(given) else uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = rid.decode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


plugins_app = Starlette(
    routes=[Route("/api/status", status, methods=["GET"])],
    middleware=[
        # The request id first, as packetron's request_id() runs first (EXTREMELY_HIGH).
        Middleware(RequestIdMiddleware),
        Middleware(CORSMiddleware, allow_origins=[ALLOWED_ORIGIN]),
        Middleware(SecurityHeadersMiddleware),
    ],
)
