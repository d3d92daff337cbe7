"""packetron apps for the workloads of bench/http.py beyond plain GET and POST.

(``get``, ``post`` and ``pipelined`` run ``examples/app.py``.) One process, one worker,
like every server in the bench:

- ``pattern``: the 200 routes of :mod:`bench.routetable` (100 exact, 100 ``{id:int}``
  patterns); ``GET /users/4711`` answers ``{"id": 4711}`` from ``request.path_params``.
- ``plugins``: ``GET /api/status`` answering ``{"status":"ok"}``, with ``cors()``,
  ``security_headers()`` and ``request_id()`` attached globally.
- ``auto``: ``POST /api/echo`` registered with ``HandlerFlags.AUTO_BODY`` (the body parser
  chosen by the request's Content-Type) and ``GET /api/status``.
- ``json``: the same app with ``HandlerFlags.JSON_BODY`` instead: the A/B partner of
  ``auto``, so the two differ in that flag alone.

Run (from the repository root)::

    python bench/packetron_apps.py pattern --host 127.0.0.1 --port 8010
"""

from __future__ import annotations

import os
import sys

# Run as ``python bench/packetron_apps.py``, Python puts bench/ first on sys.path, where
# bench/http.py would shadow the standard library's ``http`` package. The repository root
# takes its place, so that ``packetron`` and ``bench.routetable`` import.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from bench.routetable import EXACT_PATHS, PATTERN_PREFIXES  # noqa: E402
from packetron import HandlerFlags, Packetron  # noqa: E402
from packetron.plugins import cors, request_id, security_headers  # noqa: E402

ALLOWED_ORIGIN = "https://example.com"


def _status(request: Any, response: Any) -> None:
    response.send_json({"status": "ok"})


def _exact_handler(path: str) -> Callable[[Any, Any], None]:
    """A handler for one exact route that is registered but not requested."""

    def handler(request: Any, response: Any) -> None:
        response.send_json({"path": path})

    return handler


def build_pattern(host: str, port: int) -> Packetron:
    """The pattern-routing app: 100 exact routes, then 100 ``<prefix>/{id:int}`` patterns."""
    server = Packetron(host=host, port=port, workers=1)
    for path in EXACT_PATHS:
        server.get(path.lstrip("/"), _status if path == "/api/status" else _exact_handler(path))

    def by_id(request: Any, response: Any) -> None:
        response.send_json({"id": request.path_params["id"]})

    for prefix in PATTERN_PREFIXES:
        server.get(f"{prefix}/{{id:int}}", by_id)
    return server


def build_plugins(host: str, port: int) -> Packetron:
    """GET /api/status behind the cors, security_headers and request_id plugins."""
    server = Packetron(
        plugins=[cors(allow_origins=[ALLOWED_ORIGIN]), security_headers(), request_id()],
        host=host,
        port=port,
        workers=1,
    )
    server.get("api/status", _status)
    return server


def _build_echo(host: str, port: int, flags: HandlerFlags) -> Packetron:
    """GET /api/status and POST /api/echo, the echo's body read as `flags` says."""
    server = Packetron(host=host, port=port, workers=1)
    server.get("api/status", _status)

    def echo(request: Any, response: Any) -> None:
        response.send_json(request.body)

    server.post("api/echo", echo, flags=flags)
    return server


def build_auto(host: str, port: int) -> Packetron:
    """POST /api/echo with AUTO_BODY, the parser picked by Content-Type."""
    return _build_echo(host, port, HandlerFlags.AUTO_BODY)


def build_json(host: str, port: int) -> Packetron:
    """POST /api/echo with JSON_BODY (what examples/app.py registers)."""
    return _build_echo(host, port, HandlerFlags.JSON_BODY)


APPS: dict[str, Callable[[str, int], Packetron]] = {
    "pattern": build_pattern,
    "plugins": build_plugins,
    "auto": build_auto,
    "json": build_json,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args(argv)
    APPS[args.app](args.host, args.port).run()


if __name__ == "__main__":
    main()
