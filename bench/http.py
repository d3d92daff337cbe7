"""HTTP benchmark: packetron against the ceiling and its peers, workload by workload, in one run.

Workloads (``--workloads``, default all):

- ``get``: ``GET /api/status``; ceiling, floor, uvicorn, Fastify, granian, packetron. The
  floor (bench/floor_server.py) is the ceiling plus only what ``handler(request,
  response)`` and ``send_json`` cost: the least any framework of this shape pays.
- ``post``: ``POST /api/echo`` with a ~200-byte JSON body; the same servers.
- ``auto``: the same POST to a packetron app whose echo is registered with
  ``HandlerFlags.AUTO_BODY``, beside the same app with ``JSON_BODY`` (A/B).
- ``pipelined``: ``GET /api/status``, 16 requests per write (``wrk -c256 -s pipeline.lua
  -- 16``, as TechEmpower's plaintext test); ceiling, floor, uvicorn, packetron.
- ``pattern``: ``GET /users/4711`` among 200 routes (100 exact, 100 ``{id:int}`` patterns);
  packetron, uvicorn + Starlette's Router, Sanic, granian RSGI matching in the app, the
  floor serving the same routes, and the ceiling's plain GET as the yardstick.
- ``plugins``: ``GET /api/status`` with ``Origin``, through packetron's cors,
  security_headers and request_id plugins, and uvicorn + Starlette with the same three
  middlewares; the ceiling's plain GET as the yardstick, and the floor with the least
  the three plugins' work costs.

For each run: start the server pinned to one CPU (``taskset``), wait until it answers,
check its answers once (status, body, and the headers a workload is about), then load it
with ``wrk`` pinned to another CPU -- one unmeasured warm-up, one measured run -- and stop
it. Rounds are interleaved and, within each workload, the server order rotates per round,
so slow drift in machine load hits every server alike. Per workload it prints median
req/s, p99, server CPU per request and peak RSS, the ratio of every server to every other,
and packetron's targets (met or not). A server that fails or answers with errors under
load is reported as such, never as fast.

Usage (from the repository root)::

    .venv/bin/python bench/http.py [--workloads LIST] [--servers LIST] [--duration 5]
                                   [--rounds 3] [--json FILE]

See bench/README.md for what the numbers mean.
"""

from __future__ import annotations

import os
import sys

# Run as ``python bench/http.py``, Python puts bench/ first on sys.path, and this very
# file would then shadow the standard library's ``http`` package. The repository root
# takes bench/'s place, so that ``bench.procs`` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import http.client  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from typing import Any  # noqa: E402

# Qualified (procs.wait_ready, ...): RunningServer's methods have the same names.
from bench import procs  # noqa: E402
from bench.procs import HOST  # noqa: E402
from bench.routetable import PATTERN_EXPECTED_BODY, PATTERN_REQUEST_PATH  # noqa: E402

STATUS_PATH = "/api/status"
ECHO_PATH = "/api/echo"
ALLOWED_ORIGIN = "https://example.com"
PIPELINE_DEPTH = 16
PIPELINE_CONNECTIONS = 256
PIPELINE_SCRIPT = os.path.join(BENCH_DIR, "wrk", "pipeline.lua")

# The POST body: ~200 bytes of ordinary JSON (nesting, strings, numbers, a list).
ECHO_OBJECT: dict[str, Any] = {
    "id": 48213,
    "user": "bench-user",
    "active": True,
    "score": 98.25,
    "tags": ["alpha", "beta", "gamma"],
    "items": [
        {"sku": "A-1001", "qty": 2, "price": 9.99},
        {"sku": "B-2002", "qty": 1, "price": 24.5},
    ],
}
ECHO_BODY = json.dumps(ECHO_OBJECT)

# The headers packetron's security_headers() adds by default, and the Starlette peer too.
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# How long a server may take to answer its first request after being started.
STARTUP_TIMEOUT_S = 30.0
# SIGTERM first; SIGKILL if the server has not exited after this long.
STOP_TIMEOUT_S = 5.0
# wrk gets this much time on top of its own duration before it is considered hung.
WRK_GRACE_S = 30.0


class ServerFailed(Exception):
    """A server did not start, answered wrongly, or died under load."""


# --------------------------------------------------------------------------- servers


def _missing_modules(*modules: str) -> str | None:
    """Why a server cannot run when one of `modules` does not import, else None."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return f"not installed in this interpreter: {', '.join(missing)}; install with: " + (
        f"{sys.executable} -m pip install {' '.join(missing)}"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server process under test: how to start it and what it needs."""

    # The name --servers selects (several specs share one: packetron runs several apps).
    name: str
    describe: str
    command: Callable[[int], list[str]]
    # Python modules that must import (installed into a virtualenv when missing).
    modules: tuple[str, ...] = ()
    # Why the server cannot run here besides missing modules, or None when it can.
    unavailable: Callable[[], str | None] = lambda: None

    def why_unavailable(self) -> str | None:
        return _missing_modules(*self.modules) or self.unavailable()


def _uvicorn_cmd(app: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", app,
            "--host", HOST, "--port", str(port),
            "--http", "httptools", "--loop", "uvloop",
            "--no-access-log", "--workers", "1", "--log-level", "warning",
        ]  # fmt: skip

    return command


def _granian_cmd(app: str) -> Callable[[int], list[str]]:
    # One worker process with one single-threaded Rust runtime: one core, like the others.
    # (granian's supervisor process stays alive beside the worker; it is idle.)
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "granian", "--interface", "rsgi",
            "--host", HOST, "--port", str(port),
            "--workers", "1", "--runtime-mode", "st", "--runtime-threads", "1",
            "--loop", "uvloop", "--no-ws", "--log-level", "warning",
            app,
        ]  # fmt: skip

    return command


PACKETRON_EXAMPLE = os.path.join(REPO_ROOT, "examples", "app.py")
PACKETRON_APPS = os.path.join(BENCH_DIR, "packetron_apps.py")


def _packetron_example_cmd(port: int) -> list[str]:
    return [sys.executable, PACKETRON_EXAMPLE, "--host", HOST, "--port", str(port),
            "--workers", "1"]


def _packetron_example_unavailable() -> str | None:
    if not os.path.exists(PACKETRON_EXAMPLE):
        return "examples/app.py does not exist; packetron is skipped"
    return None


def _packetron_app_cmd(app: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [sys.executable, PACKETRON_APPS, app, "--host", HOST, "--port", str(port)]

    return command


def _sanic_cmd(port: int) -> list[str]:
    return [
        sys.executable, "-m", "sanic", "bench.sanic_app:app",
        "--host", HOST, "--port", str(port),
        "--single-process", "--no-access-logs", "--no-motd",
    ]  # fmt: skip


FASTIFY_DIR = os.path.join(BENCH_DIR, "fastify")
FASTIFY_SERVER = os.path.join(FASTIFY_DIR, "server.js")
# Fastify 5 supports Node.js 20 and later.
NODE_MIN_MAJOR = 20


def _fastify_cmd(port: int) -> list[str]:
    return ["node", FASTIFY_SERVER, "--host", HOST, "--port", str(port)]


def _node_major() -> int | None:
    """The installed Node.js major version, or None when node is missing or unreadable."""
    if not shutil.which("node"):
        return None
    try:
        done = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        return int(done.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def _fastify_installed() -> bool:
    """node_modules holds the Fastify version package-lock.json pins (not a stale one)."""
    try:
        with open(os.path.join(FASTIFY_DIR, "package-lock.json")) as f:
            wanted = json.load(f)["packages"]["node_modules/fastify"]["version"]
        with open(os.path.join(FASTIFY_DIR, "node_modules", "fastify", "package.json")) as f:
            installed = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return False
    return isinstance(installed, str) and installed == wanted


def _fastify_unavailable() -> str | None:
    if not shutil.which("node"):
        return (
            f"node is not installed; install Node.js >= {NODE_MIN_MAJOR} with npm "
            "(Debian/Ubuntu: sudo apt-get install -y nodejs npm, if the release ships "
            f"Node.js >= {NODE_MIN_MAJOR}; otherwise from nodejs.org)"
        )
    major = _node_major()
    if major is None:
        return "`node --version` gave no version number; check the Node.js install"
    if major < NODE_MIN_MAJOR:
        return f"Node.js {major} is too old for Fastify 5; it needs Node.js >= {NODE_MIN_MAJOR}"
    if not _fastify_installed():
        npm_hint = "" if shutil.which("npm") else " once npm is installed (Debian: npm)"
        return (
            "Fastify is not installed in bench/fastify/node_modules (or does not match "
            f"package-lock.json); install it with: (cd bench/fastify && npm ci){npm_hint}"
        )
    return None



def _yardstick(name: str, description: str, *flags: str) -> ServerSpec:
    """The ceiling or the floor (bench/<name>_server.py), run with `flags`."""
    module = f"bench.{name}_server"
    return ServerSpec(
        name, f"bench/{name}_server.py{''.join(' ' + flag for flag in flags)}: {description}",
        lambda port: [sys.executable, "-m", module, "--host", HOST, "--port", str(port),
                      *flags],
        modules=("httptools", "uvloop"),
    )


CEILING = _yardstick("ceiling", "asyncio.Protocol + httptools + uvloop, prebuilt responses")
CEILING_BATCH = _yardstick(
    "ceiling", "the same, the answers to one read sent in one write", "--batch")
FLOOR = _yardstick("floor", "the ceiling plus what handler(request, response) costs alone")
FLOOR_BATCH = _yardstick(
    "floor", "the same, the answers to one read sent in one write", "--batch")
FLOOR_PLUGINS = _yardstick(
    "floor", "the floor plus the least the three plugins' work costs", "--plugins")
FLOOR_PATTERN = _yardstick(
    "floor", "the floor serving the 200 routes (dict, regex, memo)", "--pattern")
UVICORN = ServerSpec(
    "uvicorn",
    "uvicorn + raw ASGI app (bench/uvicorn_app.py; httptools, uvloop, no access log)",
    _uvicorn_cmd("bench.uvicorn_app:app"),
    modules=("uvicorn", "httptools", "uvloop"),
)
FASTIFY = ServerSpec(
    "fastify",
    "Fastify 5 on Node.js, one process (bench/fastify/server.js), logger off",
    _fastify_cmd,
    unavailable=_fastify_unavailable,
)
GRANIAN = ServerSpec(
    "granian",
    "granian + raw RSGI app (bench/granian_app.py), one worker, st runtime, uvloop",
    _granian_cmd("bench.granian_app:app"),
    modules=("granian", "uvloop"),
)
PACKETRON = ServerSpec(
    "packetron",
    "examples/app.py --workers 1 (/api/echo with JSON_BODY)",
    _packetron_example_cmd,
    unavailable=_packetron_example_unavailable,
)
PACKETRON_PATTERN = ServerSpec(
    "packetron",
    "bench/packetron_apps.py pattern: 200 routes, request.path_params",
    _packetron_app_cmd("pattern"),
)
PACKETRON_PLUGINS = ServerSpec(
    "packetron",
    "bench/packetron_apps.py plugins: cors + security_headers + request_id, global",
    _packetron_app_cmd("plugins"),
)
PACKETRON_AUTO = ServerSpec(
    "packetron",
    "bench/packetron_apps.py auto: /api/echo with AUTO_BODY",
    _packetron_app_cmd("auto"),
)
PACKETRON_JSON = ServerSpec(
    "packetron",
    "bench/packetron_apps.py json: the same app, /api/echo with JSON_BODY",
    _packetron_app_cmd("json"),
)
STARLETTE_PATTERN = ServerSpec(
    "starlette",
    "uvicorn + starlette.routing.Router, the same 200 routes (bench/starlette_apps.py)",
    _uvicorn_cmd("bench.starlette_apps:pattern_app"),
    modules=("starlette", "uvicorn", "httptools", "uvloop"),
)
STARLETTE_PLUGINS = ServerSpec(
    "starlette",
    "uvicorn + Starlette, CORSMiddleware + security-header + request-id ASGI middlewares",
    _uvicorn_cmd("bench.starlette_apps:plugins_app"),
    modules=("starlette", "uvicorn", "httptools", "uvloop"),
)
SANIC = ServerSpec(
    "sanic",
    "Sanic, --single-process, access log off, its own router (bench/sanic_app.py)",
    _sanic_cmd,
    modules=("sanic", "uvloop"),
)
GRANIAN_PATTERN = ServerSpec(
    "granian",
    "granian RSGI, the app matches the 200 routes itself (dict + regex)",
    _granian_cmd("bench.granian_app:pattern_app"),
    modules=("granian", "uvloop"),
)
SERVER_NAMES = ("ceiling", "floor", "uvicorn", "fastify", "granian", "starlette", "sanic",
                "packetron")


# ---------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    """What wrk sends: one request, repeated (``pipeline`` copies per write)."""

    method: str = "GET"
    path: str = STATUS_PATH
    # Sent with Content-Type: application/json, through a Lua script.
    body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    pipeline: int = 1
    # wrk -c for this load; None: --connections.
    connections: int | None = None

    def describe(self) -> str:
        text = f"{self.method} {self.path}"
        if self.body is not None:
            text += f" ({len(self.body)}-byte JSON)"
        for name, value in self.headers:
            text += f", {name}: {value}"
        if self.pipeline > 1:
            text += f", {self.pipeline} per write"
        return text


# A check gets the server's port and raises ServerFailed (or OSError/HTTPException) when
# an answer is wrong.
Check = Callable[[int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One server in one workload: what runs, what it is sent, how its answer is checked."""

    label: str
    spec: ServerSpec
    load: Load
    check: Check
    # A yardstick measured on another request than the workload's (the ceiling's plain GET
    # in the pattern and plugins workloads): compared with, never judged.
    reference: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """packetron's target in one workload, against entries of the same workload."""

    # Its req/s at least this multiple of the entry labelled "ceiling".
    ceiling: float | None = None
    # More req/s than each of these entries.
    ahead_of: tuple[str, ...] = ()
    # (label, ratio): its req/s at least ratio x that entry's.
    versus: tuple[str, float] | None = None
    subject: str = "packetron"

    def describe(self) -> str:
        parts = []
        if self.ceiling is not None:
            parts.append(f">= {self.ceiling:.2f}x ceiling")
        if self.versus is not None:
            parts.append(f">= {self.versus[1]:.2f}x {self.versus[0]}")
        if self.ahead_of:
            parts.append("ahead of " + ", ".join(self.ahead_of))
        return "; ".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class Workload:
    name: str
    title: str
    entries: tuple[Entry, ...]
    target: Target


def _fetch(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    sent = dict(headers or {})
    if body is not None:
        sent["Content-Type"] = "application/json"
    conn.request(method, path, body, sent)
    resp = conn.getresponse()
    return resp, resp.read()


def _json_answer(what: str, resp: http.client.HTTPResponse, body: bytes) -> Any:
    """The decoded body of a 200 JSON answer on a kept-alive connection."""
    if resp.status != 200:
        raise ServerFailed(f"{what}: status {resp.status}, body {body[:200]!r}")
    content_type = resp.getheader("Content-Type", "")
    if "json" not in content_type:
        raise ServerFailed(f"{what}: Content-Type {content_type!r} is not JSON")
    try:
        data = json.loads(body)
    except ValueError:
        raise ServerFailed(f"{what}: body is not JSON: {body[:200]!r}") from None
    if resp.will_close:
        raise ServerFailed(f"{what}: the server closes the connection")
    return data


def _status_ok(what: str, data: Any, expected: Any) -> None:
    """expected None: any JSON object with a "status" key (examples/app.py adds a field)."""
    if expected is not None and data != expected:
        raise ServerFailed(f"{what}: body {data!r}, expected {expected!r}")
    if expected is None and not (isinstance(data, dict) and "status" in data):
        raise ServerFailed(f'{what}: body {data!r} has no "status" key')


def _on_connection(port: int, steps: Callable[[http.client.HTTPConnection], None]) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=5.0)
    try:
        steps(conn)
    finally:
        conn.close()


def check_status(expected: Any = None) -> Check:
    """GET /api/status answers 200 JSON with the expected body, connection kept."""

    def check(port: int) -> None:
        def steps(conn: http.client.HTTPConnection) -> None:
            what = "GET " + STATUS_PATH
            _status_ok(what, _json_answer(what, *_fetch(conn, "GET", STATUS_PATH)), expected)

        _on_connection(port, steps)

    return check


def check_echo(port: int) -> None:
    """POST /api/echo answers 200 with the JSON it was sent, connection kept."""

    def steps(conn: http.client.HTTPConnection) -> None:
        what = "POST " + ECHO_PATH
        data = _json_answer(what, *_fetch(conn, "POST", ECHO_PATH, ECHO_BODY))
        if data != ECHO_OBJECT:
            raise ServerFailed(f"{what}: echoed {data!r}, sent {ECHO_BODY!r}")

    _on_connection(port, steps)


def check_pattern(port: int) -> None:
    """/users/4711 and another pattern route answer their id; an exact route answers."""

    def steps(conn: http.client.HTTPConnection) -> None:
        for path, expected in ((PATTERN_REQUEST_PATH, PATTERN_EXPECTED_BODY),
                               ("/r42/7", {"id": 7})):
            data = _json_answer("GET " + path, *_fetch(conn, "GET", path))
            if data != expected:
                raise ServerFailed(f"GET {path}: body {data!r}, expected {expected!r}")
        data = _json_answer("GET /x50", *_fetch(conn, "GET", "/x50"))
        if data != {"path": "/x50"}:
            raise ServerFailed(f"GET /x50: body {data!r}, expected {{'path': '/x50'}}")

    _on_connection(port, steps)


_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")


def check_plugins(port: int) -> None:
    """GET /api/status with Origin: the body, CORS, security headers and a request id."""

    def steps(conn: http.client.HTTPConnection) -> None:
        what = f"GET {STATUS_PATH} (Origin: {ALLOWED_ORIGIN})"
        resp, body = _fetch(conn, "GET", STATUS_PATH, headers={"Origin": ALLOWED_ORIGIN})
        _status_ok(what, _json_answer(what, resp, body), {"status": "ok"})
        got = {name.lower(): value for name, value in resp.getheaders()}
        wanted = {"access-control-allow-origin": ALLOWED_ORIGIN, **SECURITY_HEADERS}
        for name, value in wanted.items():
            if got.get(name) != value:
                raise ServerFailed(f"{what}: {name}: {got.get(name)!r}, expected {value!r}")
        if "origin" not in got.get("vary", "").lower():
            raise ServerFailed(f"{what}: Vary {got.get('vary')!r} does not name Origin")
        rid = got.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(rid):
            raise ServerFailed(f"{what}: X-Request-ID {rid!r} is not a request id")
        # A new id for every request.
        again, body = _fetch(conn, "GET", STATUS_PATH, headers={"Origin": ALLOWED_ORIGIN})
        _json_answer(what, again, body)
        if again.getheader("X-Request-ID") == rid:
            raise ServerFailed(f"{what}: the same X-Request-ID {rid!r} twice")

    _on_connection(port, steps)


def check_pipelined(expected: Any = None, depth: int = PIPELINE_DEPTH) -> Check:
    """`depth` GETs of /api/status in one write come back as `depth` good answers, in order."""
    import httptools

    def check(port: int) -> None:
        answers: list[tuple[int, bytes]] = []

        class Collect:
            def __init__(self) -> None:
                self.body: list[bytes] = []

            def on_message_begin(self) -> None:
                self.body = []

            def on_body(self, body: bytes) -> None:
                self.body.append(body)

            def on_message_complete(self) -> None:
                answers.append((parser.get_status_code(), b"".join(self.body)))

        parser = httptools.HttpResponseParser(Collect())
        one = f"GET {STATUS_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode("ascii")
        with socket.create_connection((HOST, port), timeout=5.0) as sock:
            sock.sendall(one * depth)
            while len(answers) < depth:
                data = sock.recv(65536)
                if not data:
                    raise ServerFailed(
                        f"pipelined GETs: closed after {len(answers)} of {depth} answers")
                parser.feed_data(data)
        for status, body in answers:
            what = f"pipelined GET {STATUS_PATH}"
            if status != 200:
                raise ServerFailed(f"{what}: status {status}, body {body[:200]!r}")
            try:
                _status_ok(what, json.loads(body), expected)
            except ValueError:
                raise ServerFailed(f"{what}: body is not JSON: {body[:200]!r}") from None

    return check


GET_LOAD = Load()
POST_LOAD = Load("POST", ECHO_PATH, ECHO_BODY)
PIPELINED_LOAD = Load(pipeline=PIPELINE_DEPTH, connections=PIPELINE_CONNECTIONS)
PATTERN_LOAD = Load(path=PATTERN_REQUEST_PATH)
PLUGINS_LOAD = Load(headers=(("Origin", ALLOWED_ORIGIN),))

OK_BODY = {"status": "ok"}
# The ceiling's plain GET: the yardstick of the pattern and plugins workloads.
CEILING_GET = Entry("ceiling", CEILING, GET_LOAD, check_status(OK_BODY), reference=True)

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "get",
        f"GET {STATUS_PATH}",
        (
            Entry("ceiling", CEILING, GET_LOAD, check_status(OK_BODY)),
            Entry("floor", FLOOR, GET_LOAD, check_status(OK_BODY)),
            Entry("uvicorn", UVICORN, GET_LOAD, check_status(OK_BODY)),
            Entry("fastify", FASTIFY, GET_LOAD, check_status(OK_BODY)),
            Entry("granian", GRANIAN, GET_LOAD, check_status(OK_BODY)),
            Entry("packetron", PACKETRON, GET_LOAD, check_status()),
        ),
        Target(ceiling=0.9, ahead_of=("uvicorn", "fastify", "granian")),
    ),
    Workload(
        "post",
        f"POST {ECHO_PATH}, {len(ECHO_BODY)}-byte JSON",
        (
            Entry("ceiling", CEILING, POST_LOAD, check_echo),
            Entry("uvicorn", UVICORN, POST_LOAD, check_echo),
            Entry("fastify", FASTIFY, POST_LOAD, check_echo),
            Entry("granian", GRANIAN, POST_LOAD, check_echo),
            Entry("packetron", PACKETRON, POST_LOAD, check_echo),
        ),
        Target(ceiling=1.1, ahead_of=("uvicorn", "fastify", "granian")),
    ),
    Workload(
        "auto",
        f"POST {ECHO_PATH} with AUTO_BODY against the same app with JSON_BODY",
        (
            Entry("packetron", PACKETRON_AUTO, POST_LOAD, check_echo),
            Entry("packetron-json", PACKETRON_JSON, POST_LOAD, check_echo),
        ),
        Target(versus=("packetron-json", 0.95)),
    ),
    Workload(
        "pipelined",
        f"GET {STATUS_PATH}, {PIPELINE_DEPTH} requests per write, "
        f"wrk -c{PIPELINE_CONNECTIONS}",
        (
            Entry("ceiling", CEILING_BATCH, PIPELINED_LOAD, check_pipelined(OK_BODY)),
            Entry("floor", FLOOR_BATCH, PIPELINED_LOAD, check_pipelined(OK_BODY)),
            Entry("uvicorn", UVICORN, PIPELINED_LOAD, check_pipelined(OK_BODY)),
            Entry("packetron", PACKETRON, PIPELINED_LOAD, check_pipelined()),
        ),
        Target(ceiling=0.5),
    ),
    Workload(
        "pattern",
        f"GET {PATTERN_REQUEST_PATH} among 100 exact + 100 {{id:int}} routes "
        "(ceiling: plain GET)",
        (
            CEILING_GET,
            Entry("floor", FLOOR_PATTERN, PATTERN_LOAD, check_pattern),
            Entry("starlette", STARLETTE_PATTERN, PATTERN_LOAD, check_pattern),
            Entry("sanic", SANIC, PATTERN_LOAD, check_pattern),
            Entry("granian", GRANIAN_PATTERN, PATTERN_LOAD, check_pattern),
            Entry("packetron", PACKETRON_PATTERN, PATTERN_LOAD, check_pattern),
        ),
        Target(ceiling=0.8, ahead_of=("starlette", "sanic", "granian")),
    ),
    Workload(
        "plugins",
        f"GET {STATUS_PATH} + Origin through CORS, security headers and request id "
        "(ceiling: plain GET)",
        (
            CEILING_GET,
            Entry("floor", FLOOR_PLUGINS, PLUGINS_LOAD, check_plugins),
            Entry("starlette", STARLETTE_PLUGINS, PLUGINS_LOAD, check_plugins),
            Entry("packetron", PACKETRON_PLUGINS, PLUGINS_LOAD, check_plugins),
        ),
        Target(ceiling=0.6, ahead_of=("starlette",)),
    ),
)
WORKLOAD_NAMES = tuple(w.name for w in WORKLOADS)


class RunningServer:
    """A started server process: its log, readiness, check, memory, CPU time and stop."""

    def __init__(self, spec: ServerSpec, cpu: int | None) -> None:
        self.spec = spec
        self.port = procs.free_port()
        self.log = tempfile.TemporaryFile(mode="w+b")
        # taskset execs the command, so the PID is the server's own.
        self.proc = subprocess.Popen(
            procs.pinned(cpu, spec.command(self.port)),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 15) -> str:
        self.log.seek(0)
        text = self.log.read().decode("utf-8", "replace").rstrip()
        return "\n".join("    | " + line for line in text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> float:
        """Poll until the server answers an HTTP request; return the seconds it took."""
        try:
            return procs.wait_ready(
                self.proc, self._answers, timeout, errors=(OSError, http.client.HTTPException)
            )
        except procs.NotReady as exc:
            raise ServerFailed(f"{exc}\n{self.log_tail()}") from None

    def _answers(self) -> None:
        """One GET of the status path, answered whatever the answer; raises until then."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
        try:
            conn.request("GET", STATUS_PATH)
            conn.getresponse().read()
        finally:
            conn.close()

    def verify(self, check: Check) -> None:
        """Run the workload's check once before the load: a wrong answer fails the server."""
        try:
            check(self.port)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerFailed(f"request failed: {exc!r}\n{self.log_tail()}") from None

    def peak_rss_kib(self) -> int | None:
        """VmHWM (peak resident set) summed over the process tree, in KiB."""
        return procs.peak_rss_kib(self.proc.pid, children=True)

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's process tree."""
        return procs.cpu_seconds(self.proc.pid, children=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the server (and any workers it forked), SIGKILL after a timeout."""
        pids = procs.process_tree(self.proc.pid)
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _signal(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for pid in pids[1:]:
            while _exists(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _exists(pid):
                _signal(pid, signal.SIGKILL)
        self.log.close()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False



# ------------------------------------------------------------------------------ wrk

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_RE_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_RE_P99 = re.compile(r"^\s+99(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RE_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.M)
_RE_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_RE_SOCKERR = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


@dataclasses.dataclass(slots=True)
class WrkResult:
    rps: float
    # None when wrk printed 0 (it does with pipelining, where its latencies are per write).
    p99_ms: float | None
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    # Server CPU time (user + system, whole process tree) over the run / requests served.
    cpu_us_per_request: float | None = None
    # Share of the pinned CPUs' time that other processes (not the server, not wrk) used
    # during the run: how disturbed it was. None when it could not be read.
    other_load: float | None = None
    # Measured runs made to get this one (more than 1 when disturbed runs were redone).
    attempts: int = 1

    @property
    def clean(self) -> bool:
        """No error answers and no socket errors: req/s counts only good answers."""
        return self.non_2xx == 0 and not any(self.socket_errors.values())

    def errors(self) -> str:
        """The errors of an unclean run, in words."""
        parts = [f"non-2xx {self.non_2xx}"] if self.non_2xx else []
        parts += [f"{kind} {count}" for kind, count in self.socket_errors.items() if count]
        return ", ".join(parts)



def parse_wrk(output: str) -> WrkResult:
    """Parse the text ``wrk --latency`` prints.

    Raises:
        ValueError: a field the bench needs is missing.
    """
    rps = _RE_RPS.search(output)
    p99 = _RE_P99.search(output)
    total = _RE_TOTAL.search(output)
    if rps is None or p99 is None or total is None:
        raise ValueError("unrecognised wrk output:\n" + output)
    non_2xx = _RE_NON2XX.search(output)
    sock = _RE_SOCKERR.search(output)
    names = ("connect", "read", "write", "timeout")
    return WrkResult(
        rps=float(rps.group(1)),
        p99_ms=(float(p99.group(1)) * _TIME_UNITS[p99.group(2)]) or None,
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors={
            name: int(sock.group(i + 1)) if sock else 0 for i, name in enumerate(names)
        },
    )



def _body_script(directory: str, load: Load) -> str:
    """The wrk Lua script that sends load's method and JSON body (written once per load)."""
    assert load.body is not None
    # A Lua long bracket needs no escaping as long as the body has no "]==]".
    assert "]==]" not in load.body
    name = f"{load.method.lower()}_{abs(hash((load.path, load.body))):x}.lua"
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(
                f'wrk.method = "{load.method}"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = [==[{load.body}]==]\n"
            )
    return path


def wrk_command(port: int, load: Load, duration_s: int, connections: int,
                script_dir: str) -> list[str]:
    """The wrk command line for one run of `load` against the server on `port`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    for name, value in load.headers:
        command += ["-H", f"{name}: {value}"]
    if load.body is not None:
        if load.pipeline > 1:
            raise ValueError("a pipelined load with a body is not supported")
        command += ["-s", _body_script(script_dir, load)]
    elif load.pipeline > 1:
        command += ["-s", PIPELINE_SCRIPT]
    command.append(f"http://{HOST}:{port}{load.path}")
    if load.pipeline > 1:
        command += ["--", str(load.pipeline)]  # the script's args[1]
    return command


def run_wrk(port: int, load: Load, duration_s: int, connections: int, cpu: int | None,
            script_dir: str) -> WrkResult:
    done = subprocess.run(
        procs.pinned(cpu, wrk_command(port, load, duration_s, connections, script_dir)),
        capture_output=True,
        text=True,
        timeout=duration_s + WRK_GRACE_S,
        check=False,
    )
    if done.returncode != 0:
        raise ServerFailed(
            f"wrk exited with {done.returncode}: {(done.stderr + done.stdout).strip()}"
        )
    return parse_wrk(done.stdout)


# ------------------------------------------------------------------------ set-up


def ensure_wrk(install: bool) -> bool:
    if shutil.which("wrk"):
        return True
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing; installing it with apt-get ...", flush=True)

        def apt_get(*words: str) -> int:
            return subprocess.run(
                ["apt-get", *words], stdout=subprocess.DEVNULL, check=False
            ).returncode

        if apt_get("install", "-y", "wrk") != 0:
            apt_get("update")
            apt_get("install", "-y", "wrk")
        if shutil.which("wrk"):
            return True
    print(
        "wrk is required and missing. Install it, then run again:\n"
        "    sudo apt-get install -y wrk        (Debian/Ubuntu)\n"
        "    brew install wrk                   (macOS)",
        file=sys.stderr,
    )
    return False


# The Python packages each server needs in this interpreter (packetron's own come with it).
PYTHON_PACKAGES = {
    "ceiling": ("httptools", "uvloop"),
    "floor": ("httptools", "uvloop"),
    "uvicorn": ("uvicorn", "httptools", "uvloop"),
    "granian": ("granian", "uvloop"),
}


def ensure_python_packages(install: bool, specs: list[ServerSpec]) -> None:
    """Install the modules the chosen servers need into this venv (pip, only in a venv)."""
    needed = dict.fromkeys(module for spec in specs for module in spec.modules)
    missing = [name for name in needed if not importlib.util.find_spec(name)]
    if not missing:
        return
    in_venv = sys.prefix != sys.base_prefix
    if install and in_venv:
        print(f"installing {', '.join(missing)} into {sys.prefix} ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *missing], check=False
        )
        importlib.invalidate_caches()
    else:
        print(
            f"missing: {', '.join(missing)}; install with: "
            f"{sys.executable} -m pip install {' '.join(missing)}",
            file=sys.stderr,
        )


def ensure_fastify(install: bool, servers: set[str]) -> None:
    """Get Node.js (as wrk: apt-get, only as root) and ``npm ci`` Fastify into bench/fastify.

    Whatever is still missing afterwards is reported by the fastify server's
    ``unavailable`` check, which skips it.
    """
    if "fastify" not in servers or not install:
        return
    if not shutil.which("node") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("node is missing; installing nodejs and npm with apt-get ...", flush=True)

        def apt_get(*words: str) -> int:
            return subprocess.run(
                ["apt-get", *words], stdout=subprocess.DEVNULL, check=False
            ).returncode

        if apt_get("install", "-y", "nodejs", "npm") != 0:
            apt_get("update")
            apt_get("install", "-y", "nodejs", "npm")
    major = _node_major()
    if (
        major is None
        or major < NODE_MIN_MAJOR
        or not shutil.which("npm")
        or _fastify_installed()
    ):
        return
    where = os.path.relpath(FASTIFY_DIR, REPO_ROOT)
    print(f"installing Fastify into {where}/node_modules with npm ci ...", flush=True)
    # npm ci installs exactly what package-lock.json pins, replacing any node_modules.
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=FASTIFY_DIR,
        stdout=subprocess.DEVNULL,
        check=False,
    )


# ------------------------------------------------------------------------ report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(
    workload: Workload, runs: dict[str, list[WrkResult]], rss: dict[str, list[int]],
    connections: int,
) -> dict[str, dict[str, Any]]:
    """Per entry label: medians over the rounds, spread, errors, what was sent."""
    by_label = {entry.label: entry for entry in workload.entries}
    summary: dict[str, dict[str, Any]] = {}
    for label, results in runs.items():
        entry = by_label[label]
        rps = [r.rps for r in results]
        cpu = [r.cpu_us_per_request for r in results if r.cpu_us_per_request is not None]
        median = _median(rps)
        summary[label] = {
            "server": entry.spec.name,
            "describe": entry.spec.describe,
            "request": entry.load.describe(),
            "connections": entry.load.connections or connections,
            "reference": entry.reference,
            "rps": median,
            "p99_ms": _median([r.p99_ms for r in results if r.p99_ms is not None]),
            "cpu_us_per_request": _median(cpu),
            "rps_min": min(rps) if rps else None,
            "rps_max": max(rps) if rps else None,
            "spread": (max(rps) - min(rps)) / median if median else None,
            "rounds": len(results),
            "unclean_rounds": sum(not r.clean for r in results),
            "errors": "; ".join(r.errors() for r in results if not r.clean),
            "rss_mib": _median([k / 1024 for k in rss.get(label, [])]),
            "other_load": _median([r.other_load for r in results if r.other_load is not None]),
        }
    ceiling = summary.get("ceiling", {})
    for item in summary.values():
        item["cpu_eff_vs_ceiling"] = _ratio(
            ceiling.get("cpu_us_per_request"), item["cpu_us_per_request"])
    return summary


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """row label -> column label -> row's median req/s over the column's."""
    return {
        name: {other: _ratio(entry["rps"], o["rps"]) for other, o in summary.items()}
        for name, entry in summary.items()
    }


def evaluate_target(
    workload: Workload, summary: dict[str, dict[str, Any]], failed: dict[str, str],
) -> list[dict[str, Any]]:
    """The verdicts of the workload's target: [{"text", "met": True/False/None}]."""
    target = workload.target
    subject = target.subject
    verdicts: list[dict[str, Any]] = []
    own = summary.get(subject)
    if own is None:
        why = f"failed: {failed[subject].splitlines()[0]}" if subject in failed else "not run"
        return [{"text": f"{target.describe()} -> NOT measured ({subject} {why})",
                 "met": False if subject in failed else None}]
    if own["unclean_rounds"]:
        return [{"text": f"{target.describe()} -> NOT met ({subject} had errors under load: "
                 f"{own['errors']})", "met": False}]

    def against(label: str, minimum: float, name: str) -> None:
        other = summary.get(label)
        if other is None:
            why = f"failed: {failed[label].splitlines()[0]}" if label in failed else "not run"
            verdicts.append({"text": f"{name} -> not measured ({label} {why})", "met": None})
            return
        ratio = _ratio(own["rps"], other["rps"])
        by_cpu = _ratio(other["cpu_us_per_request"], own["cpu_us_per_request"])
        note = f"; by CPU per request {by_cpu:.2f}x" if by_cpu else ""
        if other["unclean_rounds"]:
            note += f"; {label} had errors under load"
        met = ratio is not None and ratio >= minimum
        verdicts.append({"text": f"{name} -> {'met' if met else 'NOT met'} "
                         f"({ratio or 0:.2f}x{note})", "met": met, "ratio": ratio,
                         "cpu_ratio": by_cpu})

    if target.ceiling is not None:
        against("ceiling", target.ceiling, f">= {target.ceiling:.2f}x ceiling")
    if target.versus is not None:
        against(target.versus[0], target.versus[1],
                f">= {target.versus[1]:.2f}x {target.versus[0]}")
    if target.ahead_of:
        beaten: list[str] = []
        lost: list[str] = []
        errored: list[str] = []
        absent: list[str] = []
        for peer in target.ahead_of:
            other = summary.get(peer)
            if other is None:
                absent.append(peer + (" failed" if peer in failed else " not run"))
            elif other["unclean_rounds"]:
                errored.append(peer + " had errors")
            else:
                ratio = _ratio(own["rps"], other["rps"]) or 0.0
                by_cpu = _ratio(other["cpu_us_per_request"], own["cpu_us_per_request"])
                cpu_note = f" (CPU {by_cpu:.2f}x)" if by_cpu else ""
                (beaten if ratio > 1.0 else lost).append(f"{ratio:.2f}x {peer}{cpu_note}")
        notes = []
        if errored:
            notes.append("not counted: " + ", ".join(errored))
        if absent:
            notes.append("not measured: " + ", ".join(absent))
        measured = beaten + lost
        met: bool | None = None if not measured else not lost
        text = f"ahead of {', '.join(target.ahead_of)} -> "
        if met is None:
            text += "not measured (" + ", ".join(absent + errored) + ")"
        else:
            text += f"{'met' if met else 'NOT met'} ({', '.join(measured)})"
            if notes:
                text += "; " + "; ".join(notes)
        verdicts.append({"text": text, "met": met})
    return verdicts


def _fmt(value: float | None, spec: str, width: int) -> str:
    return (format(value, spec) if value is not None else "-").rjust(width)


def print_workload(workload: Workload, summary: dict[str, dict[str, Any]],
                   failed: dict[str, str], verdicts: list[dict[str, Any]]) -> None:
    print()
    print(f"== {workload.name}: {workload.title}")
    width = max([len(label) for label in summary] + [9]) + 2
    head = (f"{'server':<{width}}{'req/s':>11}{'spread':>8}{'p99':>11}{'CPU us/req':>12}"
            f"{'CPU eff.':>10}{'peak RSS':>12}{'other':>7}  errors")
    print(head)
    print("-" * len(head))
    for label, item in summary.items():
        name = label + ("*" if item["reference"] else "")
        spread = item["spread"] * 100 if item["spread"] is not None else None
        print(
            f"{name:<{width}}"
            + _fmt(item["rps"], ",.0f", 11)
            + _fmt(spread, ".0f", 7) + "%"
            + (_fmt(item["p99_ms"], ".2f", 8) + " ms" if item["p99_ms"] else _fmt(None, "", 11))
            + _fmt(item["cpu_us_per_request"], ".1f", 12)
            + _fmt(item["cpu_eff_vs_ceiling"], ".2f", 9) + "x"
            + _fmt(item["rss_mib"], ".1f", 8) + " MiB"
            + _fmt(item["other_load"] * 100 if item["other_load"] is not None else None,
                   ".0f", 6) + "%"
            + ("  ERRORS: " + item["errors"] if item["unclean_rounds"] else "")
        )
    for label, reason in failed.items():
        print(f"{label:<{width}}FAILED: {reason.splitlines()[0]}")
    if any(item["reference"] for item in summary.values()):
        print("* measured on a plain GET /api/status: the yardstick, not this workload")
    table = ratios(summary)
    labels = list(summary)
    if len(labels) > 1:
        print("ratios of median req/s (row / column):")
        col = max(len(label) for label in labels) + 2
        print(" " * width + "".join(f"{label:>{col}}" for label in labels))
        for label in labels:
            print(f"{label:<{width}}"
                  + "".join(_fmt(table[label][other], ".2f", col - 1) + "x" for other in labels))
    for verdict in verdicts:
        print(f"target {workload.name}: {verdict['text']}")


# -------------------------------------------------------------------------- main


def _cpu_ticks(cpus: list[int] | None) -> tuple[int, int]:
    """(busy, total) clock ticks of these CPUs (all when None) from /proc/stat."""
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *fields = line.split()
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                ticks = [int(value) for value in fields[:8]]
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]  # idle and iowait
    except (OSError, ValueError):
        return 0, 0
    return busy, total


def _children_cpu_seconds() -> float:
    """CPU time of this process's waited-for children so far (wrk, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_until_quiet(cpus: list[int] | None, limit: float, timeout: float) -> float:
    """Wait (at most `timeout` s) until the CPUs were busier than `limit` for less than
    half a second; return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        busy0, total0 = _cpu_ticks(cpus)
        time.sleep(0.5)
        busy1, total1 = _cpu_ticks(cpus)
        if total1 <= total0 or (busy1 - busy0) / (total1 - total0) <= limit:
            break
    return time.monotonic() - started


def measured_run(server: RunningServer, load: Load, args: argparse.Namespace,
                 cpus: tuple[int | None, int | None], script_dir: str) -> WrkResult:
    """One measured wrk run, with the server's CPU per request and the other load."""
    pinned = None if cpus[0] is None or cpus[1] is None else [cpus[0], cpus[1]]
    connections = load.connections or args.connections
    busy_before, total_before = _cpu_ticks(pinned)
    wrk_before = _children_cpu_seconds()
    server_before = server.cpu_seconds()
    result = run_wrk(server.port, load, args.duration, connections, cpus[1], script_dir)
    server_used = server.cpu_seconds() - server_before
    wrk_used = _children_cpu_seconds() - wrk_before
    busy_after, total_after = _cpu_ticks(pinned)
    if result.requests:
        result.cpu_us_per_request = server_used / result.requests * 1e6
    if total_after > total_before:
        busy = (busy_after - busy_before) / CLOCK_TICKS
        elapsed = (total_after - total_before) / CLOCK_TICKS  # summed over the CPUs
        result.other_load = max(0.0, busy - server_used - wrk_used) / elapsed
    if load.pipeline > 1:
        # wrk times a pipelined batch, not each request: its percentiles say nothing.
        result.p99_ms = None
    return result


def measure(entry: Entry, args: argparse.Namespace, cpus: tuple[int | None, int | None],
            script_dir: str) -> tuple[WrkResult, int | None]:
    """Start the entry's server, check it, warm it up, measure it, stop it.

    A measured run during which other processes took more than --max-other-load of the
    pinned CPUs is redone (up to --retries times); the least disturbed one is kept.
    """
    server = RunningServer(entry.spec, cpus[0])
    try:
        took = server.wait_ready()
        server.verify(entry.check)
        connections = entry.load.connections or args.connections
        if args.warmup > 0:
            run_wrk(server.port, entry.load, args.warmup, connections, cpus[1], script_dir)
        pinned = None if cpus[0] is None or cpus[1] is None else [cpus[0], cpus[1]]
        best: WrkResult | None = None
        for attempt in range(1, args.retries + 2):
            if args.settle > 0:
                wait_until_quiet(pinned, args.max_other_load, args.settle)
            result = measured_run(server, entry.load, args, cpus, script_dir)
            if not server.alive():
                raise ServerFailed(f"died under load\n{server.log_tail()}")
            if best is None or (result.other_load or 0.0) < (best.other_load or 0.0):
                best = result
            best.attempts = attempt
            if (result.other_load or 0.0) <= args.max_other_load:
                break
        assert best is not None
        note = "" if best.clean else f"  ERRORS: {best.errors()}"
        other = _fmt(best.other_load * 100 if best.other_load is not None else None, ".0f", 0)
        print(
            f"  {entry.label:<15} ready in {took:4.2f}s, checked; {best.rps:>11,.0f} req/s  "
            f"p99 {_fmt(best.p99_ms, '.2f', 7)} {'ms' if best.p99_ms else '  '}  "
            f"CPU {_fmt(best.cpu_us_per_request, '.1f', 0)} us/req  other load {other}%"
            + (f" (best of {best.attempts})" if best.attempts > 1 else "") + note,
            flush=True,
        )
        return best, server.peak_rss_kib()
    finally:
        server.stop()


def _names(text: str, known: tuple[str, ...], what: str,
           parser: argparse.ArgumentParser) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark packetron's HTTP server against the ceiling and its peers, "
        "workload by workload."
    )
    parser.add_argument("--workloads", default=",".join(WORKLOAD_NAMES),
                        help="comma-separated subset of: " + ", ".join(WORKLOAD_NAMES))
    parser.add_argument("--servers", default=",".join(SERVER_NAMES),
                        help="comma-separated subset of: " + ", ".join(SERVER_NAMES))
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unmeasured load before each run (1; 0 = none)")
    parser.add_argument("--connections", type=int, default=64,
                        help="wrk connections (64; pipelined always uses 256)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk is pinned to")
    parser.add_argument("--max-other-load", type=float, default=0.10,
                        help="redo a measured run when other processes took more than this "
                        "share of the two pinned CPUs during it (0.10)")
    parser.add_argument("--retries", type=int, default=2,
                        help="how often a disturbed run is redone; the least disturbed is "
                        "kept (2; 0 = never)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="before each measured run, wait up to this many seconds for "
                        "the pinned CPUs to be quiet (10; 0 = don't wait)")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON")
    parser.add_argument("--no-install", action="store_true",
                        help="never install wrk, Node.js, Python or npm packages; "
                        "just say what is missing")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration, --rounds and --connections must be positive (whole seconds)")
    if args.retries < 0 or args.settle < 0 or not 0 <= args.max_other_load <= 1:
        parser.error("--retries and --settle must be >= 0, --max-other-load in [0, 1]")
    wanted_workloads = _names(args.workloads, WORKLOAD_NAMES, "workload(s)", parser)
    wanted_servers = set(_names(args.servers, SERVER_NAMES, "server(s)", parser))

    if not ensure_wrk(not args.no_install):
        return 2
    chosen = [
        dataclasses.replace(w, entries=tuple(e for e in w.entries
                                             if e.spec.name in wanted_servers))
        for w in WORKLOADS if w.name in wanted_workloads
    ]
    specs = list({id(e.spec): e.spec for w in chosen for e in w.entries}.values())
    ensure_python_packages(not args.no_install, specs)
    ensure_fastify(not args.no_install, {spec.name for spec in specs})
    cpus = procs.choose_cpus(args.server_cpu, args.client_cpu)

    skipped: dict[str, dict[str, str]] = {w.name: {} for w in chosen}
    workloads: list[Workload] = []
    for workload in chosen:
        entries = []
        for entry in workload.entries:
            reason = entry.spec.why_unavailable()
            if reason:
                skipped[workload.name][entry.label] = reason
                print(f"SKIP {workload.name}/{entry.label}: {reason}", file=sys.stderr)
            else:
                entries.append(entry)
        if entries:
            workloads.append(dataclasses.replace(workload, entries=tuple(entries)))
    if not workloads:
        print("nothing to benchmark", file=sys.stderr)
        return 2

    runs_per_round = sum(len(w.entries) for w in workloads)
    print(
        f"workloads: {', '.join(w.name for w in workloads)}; {runs_per_round} server runs "
        f"per round x {args.rounds} round(s); wrk -t1 -c{args.connections} "
        f"(pipelined -c{PIPELINE_CONNECTIONS}) -d{args.duration}s after {args.warmup}s "
        f"of warm-up; server on CPU {cpus[0]}, wrk on CPU {cpus[1]}; about "
        f"{(args.duration + args.warmup + 2) * runs_per_round * args.rounds / 60:.0f} min",
        flush=True,
    )

    results: dict[str, dict[str, list[WrkResult]]] = {
        w.name: {e.label: [] for e in w.entries} for w in workloads}
    rss: dict[str, dict[str, list[int]]] = {w.name: {} for w in workloads}
    failed: dict[str, dict[str, str]] = {w.name: {} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="packetron-bench-") as script_dir:
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}", flush=True)
            for workload in workloads:
                shift = round_no % len(workload.entries)
                order = workload.entries[shift:] + workload.entries[:shift]
                print(f" {workload.name}: {' -> '.join(e.label for e in order)}", flush=True)
                for entry in order:
                    if entry.label in failed[workload.name]:
                        continue
                    try:
                        result, kib = measure(entry, args, cpus, script_dir)
                    except (ServerFailed, subprocess.TimeoutExpired, ValueError) as exc:
                        failed[workload.name][entry.label] = str(exc)
                        print(f"  {entry.label:<15} FAILED: {exc}", file=sys.stderr, flush=True)
                        continue
                    results[workload.name][entry.label].append(result)
                    if kib is not None:
                        rss[workload.name].setdefault(entry.label, []).append(kib)

    document: dict[str, Any] = {
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "pipeline_connections": PIPELINE_CONNECTIONS,
            "pipeline_depth": PIPELINE_DEPTH,
            "server_cpu": cpus[0],
            "client_cpu": cpus[1],
            "echo_body_bytes": len(ECHO_BODY),
            "python": sys.version.split()[0],
            **procs.git_state(REPO_ROOT),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "max_other_load": args.max_other_load,
            "retries": args.retries,
            "settle_s": args.settle,
        },
        "workloads": {},
    }
    print()
    print(f"Medians of {args.rounds} interleaved round(s); spread = (max - min) / median; "
          "CPU eff. = the ceiling's CPU us/req over the server's; other = share of the "
          "pinned CPUs other processes used during the measured runs.")
    all_verdicts: list[tuple[str, dict[str, Any]]] = []
    for workload in workloads:
        # A server that failed in any round is left out: its numbers are not comparable.
        runs = {label: r for label, r in results[workload.name].items()
                if label not in failed[workload.name] and r}
        summary = summarize(workload, runs, rss[workload.name], args.connections)
        absent = {**skipped[workload.name], **failed[workload.name]}
        verdicts = evaluate_target(workload, summary, absent)
        print_workload(workload, summary, failed[workload.name], verdicts)
        all_verdicts += [(workload.name, v) for v in verdicts]
        document["workloads"][workload.name] = {
            "title": workload.title,
            "target": workload.target.describe(),
            "summary": summary,
            "ratios": ratios(summary),
            "verdicts": verdicts,
            "runs": {label: [dataclasses.asdict(r) for r in rs] for label, rs in runs.items()},
            "peak_rss_kib": rss[workload.name],
            "failed": failed[workload.name],
            "skipped": skipped[workload.name],
        }

    print()
    print("packetron's targets (same run):")
    for name, verdict in all_verdicts:
        mark = {True: "met    ", False: "NOT met", None: "n/a    "}[verdict["met"]]
        print(f"  {mark} {name:<10} {verdict['text']}")

    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
        print(f"\nresults written to {args.json}")
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
