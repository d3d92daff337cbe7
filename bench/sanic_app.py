"""A Sanic app for the ``pattern`` workload of bench/http.py.

The 200 routes of :mod:`bench.routetable` (100 exact, 100 ``<prefix>/<id:int>``), matched
by Sanic's own router; ``GET /users/4711`` answers ``sanic.response.json({"id": 4711})``.

The bench runs it in one process, access log off::

    python -m sanic bench.sanic_app:app --host 127.0.0.1 --port 8030 \\
        --single-process --no-access-logs --no-motd
"""

from __future__ import annotations

from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json

from bench.routetable import EXACT_PATHS, PATTERN_PREFIXES

app = Sanic("packetron_bench")
app.config.ACCESS_LOG = False


async def status(request: Request) -> HTTPResponse:
    return json({"status": "ok"})


def _exact(path: str) -> Any:
    async def endpoint(request: Request) -> HTTPResponse:
        return json({"path": path})

    return endpoint


async def by_id(request: Request, id: int) -> HTTPResponse:
    return json({"id": id})


for _i, _path in enumerate(EXACT_PATHS):
    app.add_route(
        status if _path == "/api/status" else _exact(_path), _path, methods=["GET"], name=f"e{_i}"
    )
for _prefix in PATTERN_PREFIXES:
    app.add_route(by_id, f"/{_prefix}/<id:int>", methods=["GET"], name=f"p_{_prefix}")
