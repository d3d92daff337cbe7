"""HTTP benchmark: packetron against the ceiling, uvicorn, fastify and granian, in one run.

For each server: start it pinned to one CPU, wait until it answers, check its two
responses, then load it with ``wrk`` pinned to another CPU -- ``GET /api/status`` and
``POST /api/echo`` with a ~200-byte JSON body -- and stop it. Rounds are interleaved and
the server order rotates per round, so slow drift in machine load hits every server
alike. It prints per server the median req/s, p99 latency and peak RSS, then the ratios
to the ceiling and to each peer, which peer each server came closest to, and whether
packetron met its targets: at least 0.70x the ceiling, and ahead of every peer that ran.

Usage (from the repository root)::

    .venv/bin/python bench/http.py [--duration 5] [--rounds 3] [--servers LIST] [--json FILE]

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
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

# Qualified (procs.wait_ready, ...): RunningServer's methods have the same names.
from bench import procs  # noqa: E402
from bench.procs import HOST  # noqa: E402

STATUS_PATH = "/api/status"
ECHO_PATH = "/api/echo"
ENDPOINTS = ("GET", "POST")

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

# How long a server may take to answer its first request after being started.
STARTUP_TIMEOUT_S = 30.0
# SIGTERM first; SIGKILL if the server has not exited after this long.
STOP_TIMEOUT_S = 5.0
# wrk gets this much time on top of its own duration before it is considered hung.
WRK_GRACE_S = 30.0


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server under test: how to start it and what its GET body must be."""

    name: str
    describe: str
    command: Callable[[int], list[str]]
    # None: any JSON object with a "status" key is accepted.
    expected_status_body: Any = None
    # Why the server cannot run here, or None when it can.
    unavailable: Callable[[], str | None] = lambda: None


def _ceiling_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.ceiling_server", "--host", HOST, "--port", str(port)]


def _uvicorn_cmd(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "bench.uvicorn_app:app",
        "--host", HOST, "--port", str(port),
        "--http", "httptools", "--loop", "uvloop",
        "--no-access-log", "--workers", "1", "--log-level", "warning",
    ]  # fmt: skip


PACKETRON_APP = os.path.join(REPO_ROOT, "examples", "app.py")


def _packetron_cmd(port: int) -> list[str]:
    return [sys.executable, PACKETRON_APP, "--host", HOST, "--port", str(port), "--workers", "1"]


def _packetron_unavailable() -> str | None:
    if not os.path.exists(PACKETRON_APP):
        return "examples/app.py does not exist yet; packetron is skipped"
    return None


def _uvicorn_unavailable() -> str | None:
    if importlib.util.find_spec("uvicorn") is None:
        return "uvicorn is not installed in this interpreter; install it with: " + (
            f"{sys.executable} -m pip install uvicorn"
        )
    return None


def _granian_cmd(port: int) -> list[str]:
    # One worker process with one single-threaded Rust runtime: one core, like the others.
    # (granian's supervisor process stays alive beside the worker; it is idle.)
    return [
        sys.executable, "-m", "granian", "--interface", "rsgi",
        "--host", HOST, "--port", str(port),
        "--workers", "1", "--runtime-mode", "st", "--runtime-threads", "1",
        "--loop", "uvloop", "--no-ws", "--log-level", "warning",
        "bench.granian_app:app",
    ]  # fmt: skip


def _granian_unavailable() -> str | None:
    missing = [name for name in ("granian", "uvloop") if importlib.util.find_spec(name) is None]
    if missing:
        return f"not installed in this interpreter: {', '.join(missing)}; install with: " + (
            f"{sys.executable} -m pip install {' '.join(missing)}"
        )
    return None


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


SERVERS = (
    ServerSpec(
        "ceiling",
        "asyncio.Protocol + httptools + uvloop, prebuilt responses",
        _ceiling_cmd,
        expected_status_body={"status": "ok"},
    ),
    ServerSpec(
        "uvicorn",
        "uvicorn + raw ASGI app (httptools, uvloop, no access log)",
        _uvicorn_cmd,
        expected_status_body={"status": "ok"},
        unavailable=_uvicorn_unavailable,
    ),
    ServerSpec(
        "fastify",
        "Fastify 5 on Node.js, one process (bench/fastify/server.js), logger off",
        _fastify_cmd,
        expected_status_body={"status": "ok"},
        unavailable=_fastify_unavailable,
    ),
    ServerSpec(
        "granian",
        "granian + raw RSGI app, one worker, single-threaded runtime, uvloop",
        _granian_cmd,
        expected_status_body={"status": "ok"},
        unavailable=_granian_unavailable,
    ),
    ServerSpec(
        "packetron",
        "examples/app.py --workers 1",
        _packetron_cmd,
        unavailable=_packetron_unavailable,
    ),
)
# Servers packetron is compared with. Apart from the ceiling (a measuring stick, not a
# competitor), packetron's target is to be ahead of each of them in the same run.
PEERS = ("ceiling", "uvicorn", "fastify", "granian")
RIVALS = tuple(peer for peer in PEERS if peer != "ceiling")


class ServerFailed(Exception):
    """A server did not start, answered wrongly, or died under load."""


class RunningServer:
    """A started server process: its log, readiness, memory and stop."""

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

    def verify(self) -> None:
        """Check both endpoints once, on one keep-alive connection, before measuring."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5.0)
        try:
            conn.request("GET", STATUS_PATH)
            resp = conn.getresponse()
            body = resp.read()
            _check_json_response("GET " + STATUS_PATH, resp, body)
            data = json.loads(body)
            expected = self.spec.expected_status_body
            if expected is not None and data != expected:
                raise ServerFailed(f"GET {STATUS_PATH}: body {body!r}, expected {expected!r}")
            if expected is None and not (isinstance(data, dict) and "status" in data):
                raise ServerFailed(f'GET {STATUS_PATH}: body {body!r} has no "status" key')
            if resp.will_close:
                raise ServerFailed(f"GET {STATUS_PATH}: the server closes the connection")

            conn.request("POST", ECHO_PATH, ECHO_BODY, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            _check_json_response("POST " + ECHO_PATH, resp, body)
            if json.loads(body) != ECHO_OBJECT:
                raise ServerFailed(f"POST {ECHO_PATH}: echoed {body!r}, sent {ECHO_BODY!r}")
            if resp.will_close:
                raise ServerFailed(f"POST {ECHO_PATH}: the server closes the connection")
        except (OSError, http.client.HTTPException) as exc:
            raise ServerFailed(f"request failed: {exc!r}\n{self.log_tail()}") from None
        finally:
            conn.close()

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


def _check_json_response(what: str, resp: http.client.HTTPResponse, body: bytes) -> None:
    if resp.status != 200:
        raise ServerFailed(f"{what}: status {resp.status}, body {body[:200]!r}")
    content_type = resp.getheader("Content-Type", "")
    if "json" not in content_type:
        raise ServerFailed(f"{what}: Content-Type {content_type!r} is not JSON")
    try:
        json.loads(body)
    except ValueError:
        raise ServerFailed(f"{what}: body is not JSON: {body[:200]!r}") from None


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
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]
    # Server CPU time (user + system, whole process tree) over the run / requests served.
    cpu_us_per_request: float | None = None

    @property
    def clean(self) -> bool:
        """No error answers and no socket errors: req/s counts only good answers."""
        return self.non_2xx == 0 and not any(self.socket_errors.values())


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
        p99_ms=float(p99.group(1)) * _TIME_UNITS[p99.group(2)],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors={
            name: int(sock.group(i + 1)) if sock else 0 for i, name in enumerate(names)
        },
    )


def write_post_script(directory: str) -> str:
    """The wrk Lua script that turns every request into the echo POST."""
    path = os.path.join(directory, "post_echo.lua")
    # A Lua long bracket needs no escaping as long as the body has no "]==]".
    assert "]==]" not in ECHO_BODY
    with open(path, "w") as f:
        f.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{ECHO_BODY}]==]\n"
        )
    return path


def run_wrk(
    port: int,
    endpoint: str,
    duration_s: int,
    connections: int,
    cpu: int | None,
    post_script: str,
) -> WrkResult:
    url = f"http://{HOST}:{port}" + (STATUS_PATH if endpoint == "GET" else ECHO_PATH)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    if endpoint == "POST":
        command += ["-s", post_script]
    command.append(url)
    done = subprocess.run(
        procs.pinned(cpu, command),
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
        quiet = {"stdout": subprocess.DEVNULL, "check": False}
        if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
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
    "uvicorn": ("uvicorn", "httptools", "uvloop"),
    "granian": ("granian", "uvloop"),
}


def ensure_python_packages(install: bool, servers: set[str]) -> None:
    """Install what the chosen servers need in this venv (uvicorn, granian, httptools, uvloop)."""
    needed = dict.fromkeys(pkg for name in servers for pkg in PYTHON_PACKAGES.get(name, ()))
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


def choose_cpus(server_cpu: int, client_cpu: int) -> tuple[int | None, int | None]:
    if not shutil.which("taskset"):
        print("taskset not found (package util-linux): processes are not pinned", file=sys.stderr)
        return None, None
    allowed = os.sched_getaffinity(0)
    if server_cpu not in allowed or client_cpu not in allowed or server_cpu == client_cpu:
        print(
            f"CPUs {server_cpu} and {client_cpu} are not two distinct usable CPUs "
            f"(usable: {sorted(allowed)}): processes are not pinned",
            file=sys.stderr,
        )
        return None, None
    return server_cpu, client_cpu


# ------------------------------------------------------------------------ report


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    results: dict[str, dict[str, list[WrkResult]]], rss: dict[str, list[int]]
) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name, per_endpoint in results.items():
        entry: dict[str, Any] = {}
        for endpoint in ENDPOINTS:
            runs = per_endpoint.get(endpoint, [])
            rps = [r.rps for r in runs]
            cpu = [r.cpu_us_per_request for r in runs if r.cpu_us_per_request is not None]
            entry[endpoint] = {
                "rps": _median(rps),
                "p99_ms": _median([r.p99_ms for r in runs]),
                "cpu_us_per_request": _median(cpu),
                "rps_min": min(rps) if rps else None,
                "rps_max": max(rps) if rps else None,
                "rounds": len(runs),
                "unclean_rounds": sum(not r.clean for r in runs),
            }
        kib = rss.get(name, [])
        entry["rss_mib"] = _median([k / 1024 for k in kib])
        summary[name] = entry
    return summary


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, entry in summary.items():
        row: dict[str, float | None] = {}
        for endpoint in ENDPOINTS:
            for peer in PEERS:
                peer_rps = summary.get(peer, {}).get(endpoint, {}).get("rps")
                row[f"{endpoint}/{peer}"] = _ratio(entry[endpoint]["rps"], peer_rps)
            # CPU efficiency: the ceiling's CPU per request over this server's.
            ceiling_cpu = summary.get("ceiling", {}).get(endpoint, {}).get("cpu_us_per_request")
            row[f"{endpoint}/ceiling_cpu"] = _ratio(
                ceiling_cpu, entry[endpoint]["cpu_us_per_request"]
            )
        out[name] = row
    return out


def closest_peer(
    summary: dict[str, dict[str, Any]], name: str, endpoint: str
) -> tuple[str, float] | None:
    """The other server whose median req/s is nearest (on a log scale) to this one's."""
    own = summary[name][endpoint]["rps"]
    best: tuple[float, str, float] | None = None
    for peer, entry in summary.items():
        other = entry[endpoint]["rps"]
        if peer == name or not own or not other:
            continue
        distance = abs(math.log(own / other))
        if best is None or distance < best[0]:
            best = (distance, peer, own / other)
    return None if best is None else (best[1], best[2])


def _fmt(value: float | None, spec: str, width: int) -> str:
    return (format(value, spec) if value is not None else "-").rjust(width)


def print_report(summary: dict[str, dict[str, Any]], rounds: int) -> None:
    print()
    print(f"Medians of {rounds} interleaved round(s); spread = (max - min) / median.")
    print()
    head = (
        f"{'server':<11}{'GET req/s':>11}{'spread':>8}{'GET p99':>11}"
        f"{'POST req/s':>12}{'spread':>8}{'POST p99':>11}{'peak RSS':>11}"
    )
    print(head)
    print("-" * len(head))
    for name, entry in summary.items():
        cells = [f"{name:<11}"]
        for endpoint, width in (("GET", 11), ("POST", 12)):
            e = entry[endpoint]
            spread = (
                (e["rps_max"] - e["rps_min"]) / e["rps"] * 100 if e["rps"] else None
            )
            flag = "!" if e["unclean_rounds"] else ""
            cells.append((_fmt(e["rps"], ",.0f", 0) + flag).rjust(width))
            cells.append(_fmt(spread, ".0f", 7) + "%")
            cells.append(_fmt(e["p99_ms"], ".2f", 8) + " ms")
        cells.append(_fmt(entry["rss_mib"], ".1f", 7) + " MiB")
        print("".join(cells))
    if any(e[ep]["unclean_rounds"] for e in summary.values() for ep in ENDPOINTS):
        print("! = some rounds had non-2xx answers or socket errors (see the log above)")

    table = ratios(summary)
    # Only the peers that ran get a column: a column of "-" says nothing.
    peers_run = [peer for peer in PEERS if peer in summary]
    print()
    print("Ratios of median req/s, same run (read 'x uvicorn' through the ceiling):")
    for endpoint in ENDPOINTS:
        head = f"{'server':<11}" + "".join(
            f"{endpoint + ' / ' + peer:>16}" for peer in peers_run
        )
        print(head)
        print("-" * len(head))
        for name, row in table.items():
            print(
                f"{name:<11}"
                + "".join(_fmt(row[f"{endpoint}/{peer}"], ".2f", 15) + "x" for peer in peers_run)
            )
        if endpoint != ENDPOINTS[-1]:
            print()

    print()
    print("Server CPU time per request (user + system; hardly moved by other load on the")
    print("server's CPU) and the ceiling's CPU per request over the server's:")
    head = f"{'server':<11}{'GET us/req':>12}{'POST us/req':>13}{'GET eff.':>10}{'POST eff.':>11}"
    print(head)
    print("-" * len(head))
    for name, entry in summary.items():
        cells = [f"{name:<11}"]
        for endpoint, width in (("GET", 12), ("POST", 13)):
            cells.append(_fmt(entry[endpoint]["cpu_us_per_request"], ".1f", width))
        for endpoint, width in (("GET", 9), ("POST", 10)):
            cells.append(_fmt(table[name][f"{endpoint}/ceiling_cpu"], ".2f", width) + "x")
        print("".join(cells))

    print()
    for name in summary:
        if name in PEERS:
            continue
        parts = []
        for endpoint in ENDPOINTS:
            near = closest_peer(summary, name, endpoint)
            if near:
                parts.append(f"{endpoint}: {near[0]} ({near[1]:.2f}x)")
        if parts:
            print(f"{name} is closest to -> " + "; ".join(parts))
        for endpoint in ENDPOINTS:
            for line in target_lines(table[name], endpoint, set(summary)):
                print("  " + line)


# packetron's targets: this share of the ceiling's req/s, and more req/s than each rival.
CEILING_TARGET = 0.70


def target_lines(row: dict[str, float | None], endpoint: str, ran: set[str]) -> list[str]:
    """The target verdicts for one server and endpoint, from its row of ``ratios()``."""
    lines = []
    vs_ceiling = row[f"{endpoint}/ceiling"]
    if vs_ceiling is not None:
        verdict = "met" if vs_ceiling >= CEILING_TARGET else "NOT met"
        lines.append(
            f"target {endpoint}: >= {CEILING_TARGET:.2f}x ceiling -> "
            f"{verdict} ({vs_ceiling:.2f}x ceiling)"
        )
    # A rival that did not run (skipped, or failed in some round) cannot be claimed beaten.
    measured = [peer for peer in RIVALS if peer in ran and row[f"{endpoint}/{peer}"] is not None]
    absent = [peer for peer in RIVALS if peer not in measured]
    if not measured:
        lines.append(f"target {endpoint}: ahead of every peer -> not measured (no peer ran)")
        return lines
    ahead = all((row[f"{endpoint}/{peer}"] or 0.0) > 1.0 for peer in measured)
    which = ", ".join(measured)
    scope = (
        f"every peer ({which})"
        if not absent
        else f"every peer that ran ({which}; not run: {', '.join(absent)})"
    )
    figures = ", ".join(f"{row[f'{endpoint}/{peer}']:.2f}x {peer}" for peer in measured)
    lines.append(
        f"target {endpoint}: ahead of {scope} -> {'met' if ahead else 'NOT met'} ({figures})"
    )
    return lines


# -------------------------------------------------------------------------- main


def measure_server(
    spec: ServerSpec,
    args: argparse.Namespace,
    cpus: tuple[int | None, int | None],
    post_script: str,
) -> tuple[dict[str, WrkResult], int | None]:
    server = RunningServer(spec, cpus[0])
    try:
        took = server.wait_ready()
        server.verify()
        print(f"  {spec.name:<10} ready in {took:.2f}s, responses verified", flush=True)
        out: dict[str, WrkResult] = {}
        for endpoint in ENDPOINTS:
            if args.warmup > 0:
                run_wrk(server.port, endpoint, args.warmup, args.connections, cpus[1], post_script)
            cpu_before = server.cpu_seconds()
            result = run_wrk(
                server.port, endpoint, args.duration, args.connections, cpus[1], post_script
            )
            if result.requests:
                cpu_used = server.cpu_seconds() - cpu_before
                result.cpu_us_per_request = cpu_used / result.requests * 1e6
            if not server.alive():
                raise ServerFailed(f"died under load\n{server.log_tail()}")
            out[endpoint] = result
            note = "" if result.clean else (
                f"  (non-2xx {result.non_2xx}, socket errors {result.socket_errors})"
            )
            print(
                f"  {spec.name:<10} {endpoint:<4} {result.rps:>11,.0f} req/s  "
                f"p99 {result.p99_ms:7.2f} ms  "
                f"CPU {_fmt(result.cpu_us_per_request, '.1f', 0)} us/req{note}",
                flush=True,
            )
        return out, server.peak_rss_kib()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark packetron's HTTP server against the ceiling, uvicorn, "
        "fastify and granian."
    )
    parser.add_argument("--duration", type=int, default=5, help="whole seconds per wrk run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unmeasured load before each run (1; 0 = none)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk is pinned to")
    parser.add_argument("--servers", default=",".join(s.name for s in SERVERS),
                        help="comma-separated subset of: " + ", ".join(s.name for s in SERVERS))
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-install", action="store_true",
                        help="never install wrk, Node.js, Python or npm packages; "
                        "just say what is missing")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration, --rounds and --connections must be positive (whole seconds)")

    wanted = {name.strip() for name in args.servers.split(",") if name.strip()}
    unknown = wanted - {s.name for s in SERVERS}
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")

    if not ensure_wrk(not args.no_install):
        return 2
    ensure_python_packages(not args.no_install, wanted)
    ensure_fastify(not args.no_install, wanted)
    cpus = choose_cpus(args.server_cpu, args.client_cpu)

    specs: list[ServerSpec] = []
    for spec in SERVERS:
        if spec.name not in wanted:
            continue
        reason = spec.unavailable()
        if reason:
            print(f"SKIP {spec.name}: {reason}", file=sys.stderr)
        else:
            specs.append(spec)
    if not specs:
        print("nothing to benchmark", file=sys.stderr)
        return 2

    per_server = 2 * (args.duration + args.warmup) + 1
    print(
        f"servers: {', '.join(s.name for s in specs)}; {args.rounds} round(s) x "
        f"{{GET {STATUS_PATH}, POST {ECHO_PATH} ({len(ECHO_BODY)}-byte JSON)}}; "
        f"wrk -t1 -c{args.connections} -d{args.duration}s; "
        f"server on CPU {cpus[0]}, wrk on CPU {cpus[1]}; "
        f"about {per_server * len(specs) * args.rounds:.0f}s",
        flush=True,
    )

    results: dict[str, dict[str, list[WrkResult]]] = {
        s.name: {e: [] for e in ENDPOINTS} for s in specs
    }
    rss: dict[str, list[int]] = {s.name: [] for s in specs}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="packetron-bench-") as tmp:
        post_script = write_post_script(tmp)
        for round_no in range(args.rounds):
            order = specs[round_no % len(specs):] + specs[: round_no % len(specs)]
            print(f"round {round_no + 1}/{args.rounds}: {' -> '.join(s.name for s in order)}",
                  flush=True)
            for spec in order:
                if spec.name in failed:
                    continue
                try:
                    out, kib = measure_server(spec, args, cpus, post_script)
                except (ServerFailed, subprocess.TimeoutExpired, ValueError) as exc:
                    failed[spec.name] = str(exc)
                    print(f"  {spec.name:<10} FAILED: {exc}", file=sys.stderr, flush=True)
                    continue
                for endpoint, result in out.items():
                    results[spec.name][endpoint].append(result)
                if kib is not None:
                    rss[spec.name].append(kib)

    # A server that failed in any round is left out: its numbers are not comparable.
    for name in failed:
        results.pop(name, None)
        rss.pop(name, None)
    summary = summarize(results, rss)
    if summary:
        print_report(summary, args.rounds)
    for name, reason in failed.items():
        print(f"\n{name} is left out: {reason.splitlines()[0]}", file=sys.stderr)

    if args.json:
        document = {
            "config": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "connections": args.connections,
                "server_cpu": cpus[0],
                "client_cpu": cpus[1],
                "echo_body_bytes": len(ECHO_BODY),
                "python": sys.version.split()[0],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "summary": summary,
            "ratios": ratios(summary),
            "runs": {
                name: {e: [dataclasses.asdict(r) for r in runs] for e, runs in per.items()}
                for name, per in results.items()
            },
            "peak_rss_kib": rss,
            "failed": failed,
        }
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
        print(f"\nresults written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
