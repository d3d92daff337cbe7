"""Compression benchmark: packetron's `compress` plugin against Starlette's GZipMiddleware.

Both servers answer ``GET /data`` with the same ~100 KiB JSON document (already encoded to
bytes at startup, so JSON encoding is not what is measured) and gzip it for every request
that sends ``Accept-Encoding: gzip``:

- ``packetron``: ``Packetron(workers=1, plugins=[compress()])`` (gzip level 6);
- ``starlette``: a Starlette app with ``GZipMiddleware`` as shipped (compresslevel 9) on
  uvicorn (httptools, uvloop, one worker, no access log);
- ``starlette-6``: the same with ``compresslevel=6``, packetron's level, so the ratio also
  shows what is left once both do the same zlib work.

Each server is pinned to one CPU with ``taskset -c 0`` and loaded by ``wrk -t1 -c64
-H 'Accept-Encoding: gzip'`` pinned to CPU 1, after one unmeasured warm-up second. Before
it is loaded, each server's answer is checked: gzip, and decompressing to the document.

Usage (from the repository root)::

    .venv/bin/python bench/compress.py [--duration 5] [--rounds 1]

Needs wrk and taskset (``apt-get install wrk``), starlette and uvicorn in the interpreter
(``pip install starlette uvicorn``; uvicorn is in the ``bench`` extra). Target: packetron
at least 1.5x Starlette's GZipMiddleware as shipped.
"""
from __future__ import annotations

import os
import sys

# Run as ``python bench/compress.py``, bench/ comes first on sys.path, where bench/http.py
# would shadow the standard library's ``http`` package. The repository root takes its
# place, so that ``bench.procs`` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import functools  # noqa: E402
import gzip  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import urllib.request  # noqa: E402

from bench.procs import HOST, free_port, pinned, stop, wait_ready  # noqa: E402

PAYLOAD_SIZE = 100 * 1024
STARTUP_TIMEOUT_S = 20.0
TARGET_RATIO = 1.5
PATH = "/data"

PACKETRON_SERVER = """
import sys
from packetron import Packetron
from packetron.plugins import compress
payload = open(sys.argv[2], "rb").read()
server = Packetron(port=int(sys.argv[1]), host="127.0.0.1", workers=1, plugins=[compress()])

@server.get("data")
def data(request, response):
    response.set_header("Content-Type", "application/json")
    response.send(payload)

server.run()
"""

STARLETTE_SERVER = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.routing import Route
payload = open(sys.argv[2], "rb").read()
gzip_options = {} if sys.argv[3] == "default" else {"compresslevel": int(sys.argv[3])}

async def data(request):
    return Response(payload, media_type="application/json")

app = Starlette(routes=[Route("/data", data)],
                middleware=[Middleware(GZipMiddleware, minimum_size=1024, **gzip_options)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", loop="uvloop",
            access_log=False, log_level="warning", workers=1)
"""

# name -> (script, extra argument)
SERVERS = {
    "packetron": (PACKETRON_SERVER, None),
    "starlette": (STARLETTE_SERVER, "default"),
    "starlette-6": (STARLETTE_SERVER, "6"),
}


def make_payload(size: int = PAYLOAD_SIZE) -> bytes:
    """A JSON array of ordinary records, just over `size` bytes, the same on every run."""
    rng = random.Random(20240611)
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
    records = []
    while len(json.dumps(records, separators=(",", ":"))) < size:
        i = len(records)
        records.append({
            "id": i, "uuid": f"{rng.getrandbits(128):032x}", "name": f"user-{rng.randint(1, 10**6)}",
            "email": f"u{rng.randint(1, 10**6)}@example.com", "active": rng.random() < 0.5,
            "score": round(rng.uniform(0, 1000), 3), "tags": rng.sample(words, 3),
            "created": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                       f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
        })
    return json.dumps(records, separators=(",", ":")).encode()


def fetch_gzip(url: str, timeout: float) -> tuple[str | None, bytes]:
    """(Content-Encoding, raw body) of one GET that accepts gzip."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.headers.get("Content-Encoding"), bytes(response.read())


def run_wrk(url: str, duration: int, connections: int, cpu: int) -> tuple[float, float, float]:
    """(req/s, MB/s on the wire, p99 ms) of one wrk run."""
    out = subprocess.run(pinned(cpu, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s",
                                      "--latency", "-H", "Accept-Encoding: gzip", url]),
                         capture_output=True, text=True, timeout=duration + 30).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024**2 / 1e6, "GB": 1024**3 / 1e6}
    mbps = float(transfer.group(1)) * scale[transfer.group(2)] if transfer else 0.0
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)] if p99 else 0.0
    if re.search(r"Non-2xx|Socket errors", out):
        print(f"  warning: {url}: " + " ".join(line.strip() for line in out.splitlines()
                                               if "rror" in line or "Non-2xx" in line),
              file=sys.stderr)
    return float(found.group(1)), mbps, p99_ms


def start(name: str, payload_path: str, cpu: int) -> tuple[subprocess.Popen[bytes], str]:
    script, extra = SERVERS[name]
    port = free_port()
    command = [sys.executable, "-c", script, str(port), payload_path]
    if extra is not None:
        command.append(extra)
    proc = subprocess.Popen(pinned(cpu, command), cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return proc, f"http://{HOST}:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description="gzip answers: packetron vs Starlette")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("needs wrk and taskset: apt-get install wrk util-linux", file=sys.stderr)
        return 2
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"needs {' and '.join(missing)}: {sys.executable} -m pip install "
              f"{' '.join(missing)}", file=sys.stderr)
        return 2
    payload = make_payload()
    names = list(SERVERS)
    results: dict[str, list[tuple[float, float, float]]] = {}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="packetron-compress-bench-") as tmp:
        payload_path = os.path.join(tmp, "payload.json")
        with open(payload_path, "wb") as file:
            file.write(payload)
        for round_number in range(args.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                proc, base = start(name, payload_path, args.server_cpu)
                url = base + PATH
                try:
                    wait_ready(proc, functools.partial(fetch_gzip, url, 1), STARTUP_TIMEOUT_S)
                    coding, body = fetch_gzip(url, 5)  # a fast wrong answer must not count
                    if coding != "gzip" or gzip.decompress(body) != payload:
                        raise RuntimeError(f"{name}: not a gzip of the document ({coding})")
                    sizes[name] = len(body)
                    if args.warmup:
                        run_wrk(url, args.warmup, args.connections, args.client_cpu)
                    run = run_wrk(url, args.duration, args.connections, args.client_cpu)
                    results.setdefault(name, []).append(run)
                    print(f"round {round_number + 1} {name:12} {run[0]:10.0f} req/s",
                          file=sys.stderr)
                finally:
                    stop(proc)
    medians = {name: tuple(statistics.median(r[i] for r in runs) for i in range(3))
               for name, runs in results.items()}
    print()
    print(f"GET {PATH}: {len(payload):,} bytes of JSON, gzip; wrk -t1 -c{args.connections} "
          f"-d{args.duration}s -H 'Accept-Encoding: gzip', {args.rounds} round(s), medians; "
          f"server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}")
    print()
    print("| server | req/s | gzip bytes | MB/s on the wire | p99 ms | packetron / this |")
    print("|---|---|---|---|---|---|")
    ours = medians["packetron"][0]
    for name in names:
        rps, mbps, p99 = medians[name]
        print(f"| {name} | {rps:,.0f} | {sizes[name]:,} | {mbps:,.1f} | {p99:.1f} | "
              f"{ours / rps:.2f}x |")
    ratio = ours / medians["starlette"][0]
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"\ntarget packetron >= {TARGET_RATIO}x Starlette GZipMiddleware (as shipped): "
          f"{ratio:.2f}x, {verdict}; at the same level (6): "
          f"{ours / medians['starlette-6'][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
