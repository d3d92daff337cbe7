"""An RSGI app (granian's native interface, no framework) with the two benchmark endpoints.

- ``GET /api/status`` answers the prebuilt ``{"status":"ok"}``;
- ``POST /api/echo`` reads the whole body, decodes it with :func:`json.loads` and sends it
  back encoded with :func:`json.dumps` (the same work as the ceiling's echo).

Anything else gets a JSON 404 (or 405 for a known path with the wrong method).
``pattern_app`` (at the end) serves the 200 routes of the ``pattern`` workload.

The bench runs it as::

    granian --interface rsgi --host 127.0.0.1 --port 8004 --workers 1 \\
        --runtime-mode st --runtime-threads 1 --loop uvloop --no-ws \\
        --log-level warning bench.granian_app:app

RSGI is used rather than ASGI because it is the interface granian is fastest with: the
response goes to the Rust side in one call, with no message dicts in between.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bench.routetable import EXACT_PATHS, PATTERN_PREFIXES

JSON_HEADERS: list[tuple[str, str]] = [("content-type", "application/json")]
STATUS_BODY = b'{"status":"ok"}'
NOT_FOUND_BODY = b'{"error":"not found"}'
METHOD_NOT_ALLOWED_BODY = b'{"error":"method not allowed"}'
BAD_JSON_BODY = b'{"error":"invalid json"}'

# Built once: json.dumps() with any non-default keyword builds a new encoder per call.
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


async def app(scope: Any, proto: Any) -> None:
    """The RSGI entry point: ``scope`` is granian's Scope, ``proto`` its HTTP protocol."""
    if scope.proto != "http":
        # Websockets are off (--no-ws); nothing else is served.
        return
    path = scope.path
    method = scope.method
    if path == "/api/status":
        if method == "GET":
            proto.response_bytes(200, JSON_HEADERS, STATUS_BODY)
        else:
            proto.response_bytes(405, JSON_HEADERS, METHOD_NOT_ALLOWED_BODY)
    elif path == "/api/echo":
        if method != "POST":
            proto.response_bytes(405, JSON_HEADERS, METHOD_NOT_ALLOWED_BODY)
            return
        # Awaiting the protocol gives the whole request body as bytes.
        raw = await proto()
        try:
            payload = _dumps(_loads(raw)).encode("ascii")
        except ValueError:
            proto.response_bytes(400, JSON_HEADERS, BAD_JSON_BODY)
        else:
            proto.response_bytes(200, JSON_HEADERS, payload)
    else:
        proto.response_bytes(404, JSON_HEADERS, NOT_FOUND_BODY)


# ------------------------------------------------------------------ pattern workload
#
# ``bench.granian_app:pattern_app``: the 200 routes of bench/routetable.py, matched by the
# app itself as a hand-written RSGI app would: a dict for the 100 exact paths, then one
# compiled regex that splits ``/<prefix>/<digits>`` and a set lookup of the prefix.

_EXACT_BODIES: dict[str, bytes] = {
    path: STATUS_BODY if path == "/api/status" else _dumps({"path": path}).encode("ascii")
    for path in EXACT_PATHS
}
_PATTERN_PREFIX_SET = frozenset(PATTERN_PREFIXES)
_PATTERN = re.compile(r"/([^/]+)/([0-9]{1,18})")


async def pattern_app(scope: Any, proto: Any) -> None:
    """RSGI entry point of the pattern workload: exact dict first, then the id patterns."""
    if scope.proto != "http":
        return
    path = scope.path
    if scope.method != "GET":
        proto.response_bytes(405, JSON_HEADERS, METHOD_NOT_ALLOWED_BODY)
        return
    body = _EXACT_BODIES.get(path)
    if body is not None:
        proto.response_bytes(200, JSON_HEADERS, body)
        return
    match = _PATTERN.fullmatch(path)
    if match is not None and match.group(1) in _PATTERN_PREFIX_SET:
        payload = _dumps({"id": int(match.group(2))}).encode("ascii")
        proto.response_bytes(200, JSON_HEADERS, payload)
        return
    proto.response_bytes(404, JSON_HEADERS, NOT_FOUND_BODY)
