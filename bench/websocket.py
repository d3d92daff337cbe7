"""WebSocket benchmark: echo of 64-byte text messages, packetron against its peers in one run.

Workload: ``--connections`` (64) WebSockets, each playing ping-pong -- it sends a
``--size``-byte (64) text message, waits for the echo, checks it, sends the next one --
for ``--duration`` seconds after a ``--warmup``. The load generator is one Node.js process
on the ``ws`` client (bench/ws/node/load.js), pinned to its own CPU; it reports echoes per
second, round-trip percentiles and its own CPU use, so a run it could not keep up with is
flagged rather than mistaken for a slow server.

Servers, each one process pinned to one CPU (``taskset``), all echoing on ``/echo``:

- ``packetron``: bench/ws/packetron_echo.py, ``async for m in ws: await ws.send(m)``.
- ``websockets``: the ``websockets`` library's own asyncio server (bench/ws/websockets_echo.py),
  on uvloop like packetron.
- ``uvicorn-sansio``, ``uvicorn-websockets``, ``uvicorn-wsproto``: uvicorn (httptools,
  uvloop) serving a raw ASGI echo (bench/ws/asgi_echo.py) with ``--ws websockets-sansio``
  (what ``--ws auto`` picks), ``--ws websockets`` (the legacy implementation) and
  ``--ws wsproto``.
- ``node-ws``: the ``ws`` package's server on Node.js (bench/ws/node/server.js).

For each round and server (the order rotates by one each round): start the server, wait
until it listens, check one text and one binary echo with a small WebSocket client of our
own, run the load, read the server's CPU time and peak RSS, stop it. Per server it prints
the median messages/s, the median p99 round trip, CPU per message, peak RSS and the ratio to
packetron, then packetron's targets: ahead of every Python peer, and at least 1.0x Node's
``ws``. A server that fails its check or has any error under load is reported as failed,
never as fast.

Usage (from the repository root)::

    .venv/bin/python bench/websocket.py [--duration 5] [--rounds 3] [--servers LIST]
                                        [--json FILE]

See the "WebSocket benchmark" section of bench/README.md for what the numbers mean.
"""

from __future__ import annotations

import os
import sys

# Run as ``python bench/websocket.py``, Python puts bench/ first on sys.path, where
# bench/http.py would shadow the standard library's ``http`` package. The repository root
# takes its place, so that ``bench.procs`` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import base64  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import IO, Any, Self  # noqa: E402

from bench import procs  # noqa: E402
from bench.procs import HOST  # noqa: E402

WS_DIR = os.path.join(BENCH_DIR, "ws")
NODE_DIR = os.path.join(WS_DIR, "node")
LOAD_JS = os.path.join(NODE_DIR, "load.js")
NODE_SERVER_JS = os.path.join(NODE_DIR, "server.js")
NODE_MIN_MAJOR = 20
ECHO_PATH = "/echo"

# How long a server may take to listen after being started.
STARTUP_TIMEOUT_S = 30.0
# The load generator gets this much time beyond warm-up + duration before it counts as hung.
LOAD_GRACE_S = 30.0
# Above this share of one CPU over the measured window, the load generator may have set
# the pace instead of the server: the run is flagged.
CLIENT_CPU_WARN = 0.90
# RFC 6455 §1.3: the GUID the accept key is derived with.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ServerFailed(Exception):
    """A server did not start, echoed wrongly, or had errors under load."""


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSpec:
    """A WebSocket echo server under test: how to start it and what it needs."""

    name: str
    describe: str
    command: Callable[[int], list[str]]
    # "packetron", "python" (a Python peer: the target is to be ahead of it) or "node".
    kind: str
    # Python modules that must import (installed into a virtualenv when missing).
    modules: tuple[str, ...] = ()

    def why_unavailable(self) -> str | None:
        """Why this server cannot run here, or None when it can."""
        missing = [name for name in self.modules if importlib.util.find_spec(name) is None]
        if missing:
            return (f"not installed in this interpreter: {', '.join(missing)}; install with: "
                    f"{sys.executable} -m pip install {' '.join(missing)}")
        if self.kind == "node":
            return node_ws_unavailable()
        return None


def _uvicorn_cmd(ws: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "bench.ws.asgi_echo:app",
            "--host", HOST, "--port", str(port), "--ws", ws,
            "--http", "httptools", "--loop", "uvloop", "--lifespan", "off",
            "--no-access-log", "--workers", "1", "--log-level", "warning",
        ]  # fmt: skip

    return command


SERVERS: list[ServerSpec] = [
    ServerSpec(
        "packetron",
        "bench/ws/packetron_echo.py, workers=1: async for m in ws: await ws.send(m)",
        lambda port: [sys.executable, os.path.join(WS_DIR, "packetron_echo.py"),
                      "--host", HOST, "--port", str(port)],
        "packetron",
        ("wsproto",),
    ),
    ServerSpec(
        "websockets",
        "websockets.asyncio.server.serve on uvloop (bench/ws/websockets_echo.py)",
        lambda port: [sys.executable, os.path.join(WS_DIR, "websockets_echo.py"),
                      "--host", HOST, "--port", str(port)],
        "python",
        ("websockets", "uvloop"),
    ),
    ServerSpec(
        "uvicorn-sansio",
        "uvicorn --ws websockets-sansio (= --ws auto) + raw ASGI echo, httptools, uvloop",
        _uvicorn_cmd("websockets-sansio"),
        "python",
        ("uvicorn", "websockets", "httptools", "uvloop"),
    ),
    ServerSpec(
        "uvicorn-websockets",
        "uvicorn --ws websockets (legacy, deprecated) + raw ASGI echo, httptools, uvloop",
        _uvicorn_cmd("websockets"),
        "python",
        ("uvicorn", "websockets", "httptools", "uvloop"),
    ),
    ServerSpec(
        "uvicorn-wsproto",
        "uvicorn --ws wsproto + raw ASGI echo, httptools, uvloop",
        _uvicorn_cmd("wsproto"),
        "python",
        ("uvicorn", "wsproto", "httptools", "uvloop"),
    ),
    ServerSpec(
        "node-ws",
        "Node.js ws package server, one process (bench/ws/node/server.js)",
        lambda port: ["node", NODE_SERVER_JS, "--host", HOST, "--port", str(port)],
        "node",
    ),
]
SERVER_NAMES = [spec.name for spec in SERVERS]


# ------------------------------------------------------------------ Node.js and ws


def node_major() -> int | None:
    """The installed Node.js major version, or None when node is missing or unreadable."""
    if not shutil.which("node"):
        return None
    try:
        done = subprocess.run(["node", "--version"], capture_output=True, text=True,
                              timeout=10, check=False)
        return int(done.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def node_ws_installed() -> bool:
    """bench/ws/node/node_modules holds the ws version package-lock.json pins."""
    try:
        with open(os.path.join(NODE_DIR, "package-lock.json")) as f:
            wanted = json.load(f)["packages"]["node_modules/ws"]["version"]
        with open(os.path.join(NODE_DIR, "node_modules", "ws", "package.json")) as f:
            installed = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return False
    return isinstance(installed, str) and installed == wanted


def node_ws_unavailable() -> str | None:
    """Why Node.js with ws cannot run here (load generator and node-ws peer), or None."""
    major = node_major()
    if major is None:
        return (f"Node.js >= {NODE_MIN_MAJOR} with npm is needed (node is missing or gives "
                "no version); install it, e.g. sudo apt-get install -y nodejs npm")
    if major < NODE_MIN_MAJOR:
        return f"Node.js {major} is too old; the bench wants Node.js >= {NODE_MIN_MAJOR}"
    if not node_ws_installed():
        return ("ws is not installed in bench/ws/node/node_modules (or does not match "
                "package-lock.json); install it with: (cd bench/ws/node && npm ci)")
    return None


def ensure_node_ws(install: bool) -> None:
    """``npm ci`` in bench/ws/node when ws is missing or stale and Node.js and npm exist."""
    if not install or node_ws_installed() or not shutil.which("npm"):
        return
    major = node_major()
    if major is None or major < NODE_MIN_MAJOR:
        return
    print("installing ws into bench/ws/node/node_modules with npm ci ...", flush=True)
    # npm ci installs exactly what package-lock.json pins, replacing any node_modules.
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=NODE_DIR, stdout=subprocess.DEVNULL, check=False)


def ensure_python_packages(install: bool, specs: list[ServerSpec]) -> None:
    """pip-install the modules the chosen servers need, only inside a virtualenv."""
    needed = dict.fromkeys(module for spec in specs for module in spec.modules)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if install and sys.prefix != sys.base_prefix:
        print(f"installing {', '.join(missing)} into {sys.prefix} ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing],
                       check=False)
        importlib.invalidate_caches()
    else:
        print(f"missing: {', '.join(missing)}; install with: "
              f"{sys.executable} -m pip install {' '.join(missing)}", file=sys.stderr)


# ------------------------------------------------------- a small WebSocket client


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return head + mask + masked


def _read_exact(stream: IO[bytes], count: int) -> bytes:
    data = stream.read(count)
    if data is None or len(data) != count:
        raise ServerFailed("the connection ended in the middle of a frame")
    return data


def _read_frame(stream: IO[bytes]) -> tuple[int, bytes]:
    """(opcode, payload) of the next whole server frame (unfragmented, unmasked)."""
    first, second = _read_exact(stream, 2)
    if not first & 0x80:
        raise ServerFailed("the server fragmented a 64-byte echo")
    if second & 0x80:
        raise ServerFailed("the server masked a frame (RFC 6455 §5.1 forbids it)")
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(stream, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(stream, 8))
    return first & 0x0F, _read_exact(stream, length)


def check_echo(port: int, timeout: float = 5.0) -> None:
    """Open a WebSocket to the server, check a text and a binary echo, close it.

    Raises:
        ServerFailed: the upgrade or an echo was not what RFC 6455 and an echo require.
        OSError: the server is not reachable.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    expected_accept = base64.b64encode(
        hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {ECHO_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        stream = sock.makefile("rb")
        status = stream.readline()
        if not status.startswith(b"HTTP/1.1 101"):
            raise ServerFailed(f"the upgrade was answered with {status.strip()!r}, not 101")
        headers: dict[str, str] = {}
        while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != expected_accept:
            raise ServerFailed("wrong or missing Sec-WebSocket-Accept in the 101 answer")
        if "sec-websocket-extensions" in headers:
            raise ServerFailed("the server negotiated an extension nobody offered")
        for opcode, payload in ((0x1, ("check " * 11)[:64].encode()),
                                (0x2, bytes(range(64)))):
            sock.sendall(_client_frame(opcode, payload))
            got_opcode, got = _read_frame(stream)
            if (got_opcode, got) != (opcode, payload):
                kind = "text" if opcode == 1 else "binary"
                raise ServerFailed(f"a {kind} message came back as opcode {got_opcode} with "
                                   f"{got[:40]!r}")
        sock.sendall(_client_frame(0x8, struct.pack("!H", 1000)))
        try:
            _read_frame(stream)  # the server's close frame; not judged
        except (ServerFailed, OSError):
            pass


def idle_rss_per_connection(pid: int, port: int, count: int) -> float:
    """Open `count` WebSockets that then say nothing; the server's RSS growth per
    connection in KiB (VmRSS summed over its processes, before and with them open)."""
    before = procs.rss_kib(pid, children=True)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((HOST, port), timeout=10)
            sockets.append(sock)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(f"GET {ECHO_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         .encode())
        for sock in sockets:  # every 101 read: the server holds each as a WebSocket
            head = b""
            while b"\r\n\r\n" not in head:
                piece = sock.recv(4096)
                if not piece:
                    raise ServerFailed("an idle WebSocket was closed before its 101")
                head += piece
            if not head.startswith(b"HTTP/1.1 101"):
                raise ServerFailed(f"an idle WebSocket was answered {head[:40]!r}")
        return (procs.rss_kib(pid, children=True) - before) / count
    finally:
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass(slots=True)
class RunResult:
    """One measured load run against one server."""

    server: str
    round: int
    messages_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_us_per_msg: float | None
    peak_rss_mb: float
    client_cpu: float
    raw: dict[str, Any]
    # Another benchmark was seen running during this run.
    disturbed: bool = False
    # Server RSS per idle open WebSocket (KiB), measured before the load (--idle).
    idle_kib_per_connection: float | None = None

    @property
    def server_busy(self) -> float | None:
        """Share of one CPU the server used while loaded (msgs/s x CPU per message)."""
        if self.cpu_us_per_msg is None:
            return None
        return self.messages_per_s * self.cpu_us_per_msg / 1e6


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip()
    except OSError:
        return ""


def run_load(port: int, args: argparse.Namespace, client_cpu: int | None) -> dict[str, Any]:
    """Run bench/ws/node/load.js against the server; its JSON report.

    Raises:
        ServerFailed: the load generator failed or reported any error.
    """
    command = procs.pinned(client_cpu, [
        "node", LOAD_JS, "--url", f"ws://{HOST}:{port}{ECHO_PATH}",
        "--connections", str(args.connections), "--size", str(args.size),
        "--duration", str(args.duration), "--warmup", str(args.warmup),
    ])
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=args.duration + args.warmup + LOAD_GRACE_S)
    except subprocess.TimeoutExpired as exc:
        raise ServerFailed("the load generator hung") from exc
    if done.returncode != 0:
        raise ServerFailed(f"the load generator exited with {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-400:]}")
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise ServerFailed(f"no JSON from the load generator: {done.stdout[-400:]!r}") from exc
    errors = {kind: count for kind, count in report["errors"].items() if count}
    if errors or report["connected"] != args.connections or not report["messages"]:
        detail = "; ".join(report.get("error_samples") or []) or "no echoes"
        raise ServerFailed(f"errors under load {errors or ''} "
                           f"({report['connected']}/{args.connections} connected): {detail}")
    return report


def measure(spec: ServerSpec, round_no: int, args: argparse.Namespace,
            cpus: tuple[int | None, int | None]) -> RunResult:
    """Start spec's server, check it, load it once, stop it.

    Raises:
        ServerFailed: anything went wrong; the message says what.
    """
    server_cpu, client_cpu = cpus
    port = procs.free_port()
    with tempfile.NamedTemporaryFile("w+", prefix=f"ws-{spec.name}-", suffix=".log",
                                     delete=False) as log:
        log_path = log.name
        proc = subprocess.Popen(procs.pinned(server_cpu, spec.command(port)), cwd=REPO_ROOT,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        try:
            procs.wait_ready(proc, lambda: socket.create_connection((HOST, port), 1).close(),
                             STARTUP_TIMEOUT_S)
            check_echo(port)
        except (procs.NotReady, OSError) as exc:
            raise ServerFailed(f"{exc}\n{_tail(log_path)}") from exc
        idle_kib = None
        if args.idle and round_no == 1:
            try:
                idle_kib = idle_rss_per_connection(proc.pid, port, args.idle)
            except OSError as exc:
                raise ServerFailed(f"{args.idle} idle WebSockets: {exc}") from exc
        cpu_before = procs.cpu_seconds(proc.pid, children=True)
        report = run_load(port, args, client_cpu)
        cpu_used = procs.cpu_seconds(proc.pid, children=True) - cpu_before
        if proc.poll() is not None:
            raise ServerFailed(f"exited with {proc.returncode} under load\n{_tail(log_path)}")
        rss = procs.peak_rss_mb(proc.pid, children=True)
    finally:
        procs.stop(proc, group=True)
        try:
            os.unlink(log_path)
        except OSError:
            pass
    latency = report["latency_ms"]
    echoes = report["echoes_total"]
    return RunResult(
        server=spec.name,
        round=round_no,
        messages_per_s=report["messages_per_s"],
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        p999_ms=latency["p999"],
        cpu_us_per_msg=cpu_used * 1e6 / echoes if echoes else None,
        peak_rss_mb=rss,
        client_cpu=report["client_cpu"],
        raw=report,
        idle_kib_per_connection=idle_kib,
    )


# ------------------------------------------------------------------------ report


@dataclasses.dataclass(slots=True)
class Summary:
    """Medians over one server's rounds (or why it has none)."""

    name: str
    kind: str
    runs: list[RunResult]
    failed: str | None = None
    disturbed: bool = False

    @property
    def ok(self) -> bool:
        return self.failed is None and bool(self.runs)

    def median(self, field: str) -> float:
        values = [getattr(run, field) for run in self.runs if getattr(run, field) is not None]
        return statistics.median(values) if values else float("nan")

    @property
    def spread(self) -> float:
        rates = [run.messages_per_s for run in self.runs]
        return (max(rates) - min(rates)) / statistics.median(rates) if len(rates) > 1 else 0.0

    @property
    def peak_rss_mb(self) -> float:
        return max(run.peak_rss_mb for run in self.runs)


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_idle(value: float) -> str:
    return "–" if value != value else f"{value:.1f}"  # NaN: not measured


def print_table(summaries: list[Summary], reference: Summary | None) -> None:
    """The per-server table, markdown-shaped so it can be pasted into bench/README.md."""
    print()
    print("| server | msgs/s | spread | p50 ms | p99 ms | CPU us/msg | server CPU | "
          "peak RSS MB | KiB per idle WS | client CPU | x packetron |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = reference.median("messages_per_s") if reference and reference.ok else None
    for s in summaries:
        if not s.ok:
            print(f"| {s.name} | error: {(s.failed or 'no runs').splitlines()[0][:120]} "
                  "| | | | | | | | | |")
            continue
        rate = s.median("messages_per_s")
        client = s.median("client_cpu")
        flag = " (!)" if client > CLIENT_CPU_WARN else ""
        name = f"{s.name} (disturbed)" if s.disturbed else s.name
        ratio = f"{rate / base:.2f}" if base else "–"
        print(f"| {name} | {_fmt_rate(rate)} | {s.spread:.0%} | {s.median('p50_ms'):.2f} "
              f"| {s.median('p99_ms'):.2f} | {s.median('cpu_us_per_msg'):.1f} "
              f"| {s.median('server_busy'):.0%} | {s.peak_rss_mb:.1f} "
              f"| {_fmt_idle(s.median('idle_kib_per_connection'))} | {client:.0%}{flag} "
              f"| {ratio} |")
    print("\nserver CPU: msgs/s x CPU per message, the share of its one core the server was "
          "busy;\nwell under 100% means the ping-pong, not the server's CPU, set the pace.")
    if any(s.ok and s.disturbed for s in summaries):
        print("\n(disturbed) another benchmark ran beside at least one of its runs: "
              "rerun before trusting it (--wait-idle).")
    if any(s.ok and s.median("client_cpu") > CLIENT_CPU_WARN for s in summaries):
        print(f"\n(!) the load generator used over {CLIENT_CPU_WARN:.0%} of its CPU: it may "
              "have set the pace for that server.")


def targets(summaries: list[Summary]) -> dict[str, Any]:
    """packetron's targets, printed and returned: ahead of every Python peer, >= 1.0x node-ws."""
    by_name = {s.name: s for s in summaries}
    me = by_name.get("packetron")
    verdicts: dict[str, Any] = {}
    print("\nTargets (packetron, same run):")
    if me is None or not me.ok:
        why = "not run" if me is None else f"failed: {(me.failed or '').splitlines()[0]}"
        print(f"  packetron {why}: no target can be met")
        return {"ahead_of_python_peers": False, "node_ws_ratio_ok": False}
    mine = me.median("messages_per_s")
    python_peers = [s for s in summaries if s.kind == "python"]
    ran = [s for s in python_peers if s.ok]
    missing = [s.name for s in python_peers if not s.ok]
    ratios = {s.name: mine / s.median("messages_per_s") for s in ran}
    ahead = bool(ran) and all(r > 1.0 for r in ratios.values())
    listed = ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items()) or "none ran"
    note = f" (not run or failed: {', '.join(missing)})" if missing else ""
    print(f"  ahead of every Python peer: {'MET' if ahead else 'NOT MET'} -- "
          f"packetron / {listed}{note}")
    verdicts["ahead_of_python_peers"] = ahead
    verdicts["python_ratios"] = ratios
    verdicts["python_not_run"] = missing
    node = by_name.get("node-ws")
    if node is not None and node.ok:
        ratio = mine / node.median("messages_per_s")
        print(f"  >= 1.0x Node ws: {'MET' if ratio >= 1.0 else 'NOT MET'} -- {ratio:.2f}x")
        verdicts["node_ws_ratio"] = ratio
        verdicts["node_ws_ratio_ok"] = ratio >= 1.0
    else:
        print("  >= 1.0x Node ws: NOT CHECKED -- node-ws "
              + ("not run" if node is None else "failed"))
        verdicts["node_ws_ratio_ok"] = False
    return verdicts


# -------------------------------------------------------------------------- main


# What other_benchmarks() looks for (pgrep -f patterns): load generators, the other bench
# scripts, and the heavy jobs of a development machine (test suite, type checker).
BUSY_PATTERNS = (
    "^wrk( |$)",
    "bench/[a-z_]+\\.py",
    "-m pytest",
    "(bin/|-m )mypy",
)


def _ancestors(pid: int) -> list[int]:
    """The PIDs of the processes above `pid`, up to init (Linux /proc; [] elsewhere)."""
    found: list[int] = []
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                # The command name may hold spaces and parentheses: fields follow the last ")".
                pid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        found.append(pid)
    return found


def other_benchmarks() -> list[str]:
    """Command lines of other benchmarks or heavy jobs running now (they skew our numbers)."""
    found: list[str] = []
    if not shutil.which("pgrep"):
        return found
    # This run's own processes: its children, and what started it (a `flock ... python
    # bench/websocket.py` wrapper names a bench script too).
    mine = {os.getpid(), *procs.process_tree(os.getpid()), *_ancestors(os.getpid())}
    for pattern in BUSY_PATTERNS:
        done = subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True,
                              check=False)
        for line in done.stdout.splitlines():
            pid = int(line.split(maxsplit=1)[0])
            if pid not in mine and "pgrep" not in line and line not in found:
                found.append(line)
    return found


class BusyMonitor:
    """Polls other_benchmarks() in a thread while a run lasts; remembers what it saw."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            found = other_benchmarks()
            if found:
                self.seen.extend(line for line in found if line not in self.seen)
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_until_idle(limit_s: float) -> bool:
    """Wait (polling every 5 s) until no other benchmark runs; False after limit_s."""
    deadline = time.monotonic() + limit_s
    announced = False
    while busy := other_benchmarks():
        if time.monotonic() >= deadline:
            return False
        if not announced:
            print("  waiting for other benchmarks to finish: " + "; ".join(busy)[:200],
                  flush=True)
            announced = True
        time.sleep(5)
    return True


def measure_undisturbed(spec: ServerSpec, round_no: int, args: argparse.Namespace,
                        cpus: tuple[int | None, int | None]) -> tuple[RunResult, list[str]]:
    """measure(), repeated (up to 3 times) when another benchmark ran alongside it.

    Only with --wait-idle: without it, one run, and what was seen beside it is returned
    for the report to flag.
    """
    attempts = 3 if args.wait_idle > 0 else 1
    seen: list[str] = []
    for attempt in range(attempts):
        if args.wait_idle > 0:
            wait_until_idle(args.wait_idle)
        with BusyMonitor() as monitor:
            result = measure(spec, round_no, args, cpus)
        seen = monitor.seen
        if not seen:
            break
        if attempt + 1 < attempts:
            print(f"  {spec.name}: another benchmark ran alongside ({seen[0][:100]}); "
                  "measuring again", flush=True)
    return result, seen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0,
                        help="seconds of each measured window (default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; medians are over them (default 3)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of unmeasured load before each window (default 1)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="message size in bytes")
    parser.add_argument("--idle", type=int, default=500, metavar="N",
                        help="before the first round's load, open N idle WebSockets and "
                             "report the server's RSS per connection (0: skip; default 500)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--servers", default=",".join(SERVER_NAMES),
                        help=f"comma-separated subset of {','.join(SERVER_NAMES)}")
    parser.add_argument("--json", metavar="FILE", help="also write everything as JSON")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                        help="before each run, wait up to this long while other benchmarks "
                             "(wrk, bench/*.py) run, and measure again (up to 3 times) a run "
                             "they overlapped (default 0: only warn)")
    parser.add_argument("--no-install", action="store_true",
                        help="never install anything (pip or npm); say what is missing")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.connections < 1 \
            or args.size < 16 or args.idle < 0:
        parser.error("--rounds and --connections must be >= 1, --duration > 0, "
                     "--warmup >= 0, --size >= 16, --idle >= 0")
    chosen = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SERVER_NAMES]
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)} (known: {', '.join(SERVER_NAMES)})")
    args.servers = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install = not args.no_install
    specs = [spec for spec in SERVERS if spec.name in args.servers]
    ensure_python_packages(install, specs)
    ensure_node_ws(install)
    why = node_ws_unavailable()
    if why is not None:
        print(f"the load generator cannot run: {why}", file=sys.stderr)
        return 2
    cpus = procs.choose_cpus(args.server_cpu, args.client_cpu)
    busy = other_benchmarks()
    if busy and args.wait_idle <= 0:
        print("warning: other benchmarks are running and will skew this one (see "
              "--wait-idle):\n  " + "\n  ".join(busy), flush=True)

    summaries = {spec.name: Summary(spec.name, spec.kind, []) for spec in specs}
    runnable: list[ServerSpec] = []
    for spec in specs:
        reason = spec.why_unavailable()
        if reason is None:
            runnable.append(spec)
        else:
            summaries[spec.name].failed = f"not run: {reason}"
            print(f"{spec.name}: skipped: {reason}", file=sys.stderr)

    started = datetime.datetime.now(datetime.UTC)
    print(f"WebSocket echo: {args.connections} connections, {args.size}-byte text messages, "
          f"ping-pong, {args.warmup:g} s warm-up + {args.duration:g} s, {args.rounds} rounds; "
          f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}", flush=True)
    for spec in runnable:
        print(f"  {spec.name}: {spec.describe}")
    for round_no in range(args.rounds):
        shift = round_no % len(runnable) if runnable else 0
        for spec in runnable[shift:] + runnable[:shift]:
            summary = summaries[spec.name]
            if summary.failed is not None:
                continue  # failed once: reported as failed, not measured again
            try:
                result, disturbed = measure_undisturbed(spec, round_no + 1, args, cpus)
            except ServerFailed as exc:
                summary.failed = str(exc)
                print(f"round {round_no + 1} {spec.name:>18}: FAILED: {exc}", flush=True)
                continue
            summary.runs.append(result)
            print(f"round {round_no + 1} {spec.name:>18}: {_fmt_rate(result.messages_per_s):>8} "
                  f"msgs/s, p99 {result.p99_ms:6.2f} ms, "
                  f"{result.cpu_us_per_msg or float('nan'):5.1f} us CPU/msg "
                  f"({result.server_busy or 0:.0%} busy), "
                  f"RSS {result.peak_rss_mb:5.1f} MB, client CPU {result.client_cpu:.0%}"
                  + (" [DISTURBED: another benchmark ran alongside]" if disturbed else ""),
                  flush=True)
            if disturbed:
                result.disturbed = True
                summary.disturbed = True

    ordered = [summaries[spec.name] for spec in specs]
    print_table(ordered, summaries.get("packetron"))
    verdicts = targets(ordered)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({
                "started": started.isoformat(),
                "config": {key: value for key, value in vars(args).items() if key != "json"},
                "cpus": cpus,
                "summary": {
                    s.name: ({"failed": s.failed} if not s.ok else {
                        "messages_per_s": s.median("messages_per_s"),
                        "spread": s.spread,
                        "p50_ms": s.median("p50_ms"),
                        "p99_ms": s.median("p99_ms"),
                        "cpu_us_per_msg": s.median("cpu_us_per_msg"),
                        "server_busy": s.median("server_busy"),
                        "peak_rss_mb": s.peak_rss_mb,
                        "client_cpu": s.median("client_cpu"),
                        "disturbed": s.disturbed,
                    }) for s in ordered
                },
                "targets": verdicts,
                "runs": [dataclasses.asdict(run) for s in ordered for run in s.runs],
            }, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
