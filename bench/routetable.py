"""The routes every app of the ``pattern`` workload of bench/http.py registers.

Each app (packetron, uvicorn + Starlette's Router, Sanic, granian RSGI) serves the same
200 routes, registered in the same order:

- 100 exact routes: ``/api/status`` and ``/x1`` ... ``/x99``;
- 100 pattern routes: ``/r0/{id:int}`` ... ``/r98/{id:int}``, then ``/users/{id:int}``.

The workload requests ``/users/4711``; the answer is the JSON object ``{"id": 4711}``,
encoded per request. ``/users`` comes last, so a router that tries its routes one by one
(Starlette's) walks all of them, as it would for the last route of a real app.

Pure data: importing it starts nothing.
"""

from __future__ import annotations

# /api/status plus 99 more exact paths: 100 exact routes.
EXACT_PATHS: tuple[str, ...] = ("/api/status", *(f"/x{i}" for i in range(1, 100)))
# The literal first segment of each pattern route ``/<prefix>/{id:int}``: 100 of them.
PATTERN_PREFIXES: tuple[str, ...] = (*(f"r{i}" for i in range(99)), "users")

# What the workload requests, and the body every app must answer it with.
PATTERN_REQUEST_PATH = "/users/4711"
PATTERN_EXPECTED_BODY: dict[str, int] = {"id": 4711}

assert len(EXACT_PATHS) == 100 and len(PATTERN_PREFIXES) == 100
