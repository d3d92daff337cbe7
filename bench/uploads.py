"""Upload benchmark: a 1 GiB multipart upload into packetron and into Starlette, in one run.

The client streams one `multipart/form-data` body (a small field, then a 1 GiB file part)
made on the fly from a 1 MiB random block, over a raw socket with a Content-Length.
Each server stores the file on disk and answers with its size:

- packetron: a MULTIPART_FORM_DATA route (files streamed to disk by the push parser),
  one process, uvloop + httptools.
- Starlette: `await request.form()` (python-multipart; UploadFile spools to a temporary
  file), under `uvicorn --loop uvloop --http httptools`, one process. Starlette needs
  python-multipart, which clashes with packetron's `multipart` module, so it runs from
  its own virtualenv, bench/.venv-starlette, which this script creates on first use.

A third server, the "ceiling", is a bare uvloop protocol that only counts and discards
the body: what the transport allows on this machine at this moment.

Servers are pinned to CPU 0 (`taskset -c 0`), the client to CPU 1. They start once and
serve every round (`--fresh-servers`: a new one per measured upload); rounds rotate the
order, so uploads to the servers compared alternate closely in time. It prints the median MB/s (MB = 10^6 bytes, body bytes / time until the answer),
the server's CPU seconds (user + system, all threads) per GiB of body, each server's peak
RSS (VmHWM), and the ratios to the ceiling and to Starlette. CPU s/GiB is the steadier
number: writing 1 GiB into the page cache costs from 0.25 to over 1 s on a virtual
machine (pages the host has taken back are faulted in again), which moves MB/s for every
server. So each server gets one unmeasured upload of the same size when it starts
(`--warmup-mib`, as bench/http.py warms up before each wrk run): its imports and first
allocations are done, and every measured upload writes into page-cache pages the upload
before it has just freed. `--fresh-servers --warmup-mib 0` measures the cold case: a new
process, and pages the host may have taken back. Targets: packetron >= 1.5x Starlette's
MB/s, with a peak RSS under 64 MB.

Usage (from the repository root)::

    .venv/bin/python bench/uploads.py [--size-mib 1024] [--rounds 5] [--warmup-mib 1024]
                                      [--fresh-servers]
"""
from __future__ import annotations

import os
import sys

# Run as ``python bench/uploads.py``, bench/ comes first on sys.path, where bench/http.py
# would shadow the standard library's ``http`` package. The repository root takes bench/'s
# place, so that ``bench.procs`` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from bench.procs import (  # noqa: E402
    HOST,
    NotReady,
    cpu_seconds,
    free_port,
    peak_rss_mb,
    pinned,
    stop,
    wait_ready,
)

BLOCK_SIZE = 1024 * 1024
BOUNDARY = "----packetronBenchBoundary9f8e7d6c5b4a"
STARLETTE_VENV = os.path.join(BENCH_DIR, ".venv-starlette")
STARLETTE_PACKAGES = ("starlette", "uvicorn", "python-multipart", "uvloop", "httptools")
STARTUP_TIMEOUT_S = 30.0
TARGET_RATIO = 1.5
TARGET_RSS_MB = 64

PACKETRON_SERVER = """
import os, sys
from packetron import HandlerFlags, Packetron
server = Packetron(port=int(sys.argv[1]), host="127.0.0.1", workers=1)

@server.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
             multipart_options={"file_storage_directory": sys.argv[2]})
async def upload(request, response):
    files = await request.get_files()
    entry = files["file"]
    size = os.path.getsize(entry["path"])
    os.unlink(entry["path"])  # the bench measures receiving, not keeping, 1 GiB
    response.send_json({"size": size})

server.get("ready", lambda request, response: response.send_text_plain("ok"))
server.run()
"""

# What the transport allows: a bare uvloop protocol that counts the body and discards
# it (no HTTP parser, no multipart, no disk). Ratios to it hold across machine load far
# better than MB/s do.
CEILING_SERVER = """
import asyncio, sys, uvloop

class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.head, self.length, self.received = transport, b"", None, 0

    def data_received(self, data):
        if self.length is None:
            self.head += data
            end = self.head.find(b"\\r\\n\\r\\n")
            if end < 0:
                return
            for line in self.head[:end].split(b"\\r\\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
            self.received = len(self.head) - end - 4
            if self.length is None:  # GET /ready
                self.reply(b"ok")
                return
        else:
            self.received += len(data)
        if self.received >= self.length:
            self.reply(b'{"size": %d}' % int(sys.argv[2]))

    def reply(self, body):
        self.transport.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n"
                             b"Connection: close\\r\\n\\r\\n" % len(body) + body)
        self.transport.close()

async def main():
    await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()

uvloop.run(main())
"""

STARLETTE_SERVER = """
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

async def upload(request):
    async with request.form(max_files=1000, max_fields=1000) as form:
        upload = form["file"]
        upload.file.seek(0, 2)
        size = upload.file.tell()
    return JSONResponse({"size": size})

async def ready(request):
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/upload", upload, methods=["POST"]), Route("/ready", ready)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
"""


def ensure_starlette_venv() -> str:
    """Python of bench/.venv-starlette, created and filled on first use."""
    python = os.path.join(STARLETTE_VENV, "bin", "python")
    probe = "import starlette, uvicorn, python_multipart, uvloop, httptools"
    if os.path.exists(python) and subprocess.run([python, "-c", probe]).returncode == 0:
        return python
    print(f"creating {STARLETTE_VENV} with {', '.join(STARLETTE_PACKAGES)} ...", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", STARLETTE_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", *STARLETTE_PACKAGES], check=True)
    return python


def http_get(port: int, path: str) -> bytes:
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    return bytes(data)


def start(python: str, code: str, port: int, cpu: int, *args: str,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(pinned(cpu, [python, "-c", code, str(port), *args]), env=env)
    try:
        wait_ready(proc, lambda: http_get(port, "/ready").startswith(b"HTTP/1.1 200"),
                   STARTUP_TIMEOUT_S)
    except NotReady:
        proc.kill()
        raise
    return proc


def upload(port: int, size_mib: int, block: bytes) -> tuple[float, int]:
    """Stream one body; (seconds until the answer, size the server reported)."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nbench\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + size_mib * len(block) + len(tail)
    request_head = (f"POST /upload HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                    f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                    f"Content-Length: {length}\r\n\r\n").encode()
    with socket.create_connection((HOST, port), timeout=120) as sock:
        started = time.perf_counter()
        sock.sendall(request_head + head)
        for _ in range(size_mib):
            sock.sendall(block)
        sock.sendall(tail)
        answer = bytearray()
        while chunk := sock.recv(65536):
            answer += chunk
        elapsed = time.perf_counter() - started
    status_line, _, rest = bytes(answer).partition(b"\r\n")
    if b" 200 " not in status_line:
        raise RuntimeError(f"upload failed: {bytes(answer[:300])!r}")
    body = rest.partition(b"\r\n\r\n")[2]
    if body[:1] != b"{":  # chunked framing: one chunk of JSON
        body = body.split(b"\r\n")[1]
    return elapsed, json.loads(body)["size"]


def main() -> int:
    parser = argparse.ArgumentParser(description="1 GiB multipart upload: packetron vs Starlette")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-mib", type=int, default=1024,
                        help="an unmeasured upload of this size to each server it starts "
                             "(0: none)")
    parser.add_argument("--fresh-servers", action="store_true",
                        help="start a new server for every measured upload")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--skip-starlette", action="store_true")
    args = parser.parse_args()
    if not shutil.which("taskset"):
        print("needs taskset (util-linux)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {args.client_cpu})
    servers = {"ceiling": (sys.executable, CEILING_SERVER),
               "packetron": (sys.executable, PACKETRON_SERVER)}
    if not args.skip_starlette:
        servers["starlette"] = (ensure_starlette_venv(), STARLETTE_SERVER)
    block = os.urandom(BLOCK_SIZE)
    expected = args.size_mib * BLOCK_SIZE
    rates: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="packetron-upload-bench-") as tmp:
        running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

        def launch(name: str) -> tuple[subprocess.Popen[bytes], int]:
            python, code = servers[name]
            store = os.path.join(tmp, name)
            os.makedirs(store, exist_ok=True)
            port = free_port()
            # Both servers write under the same directory: Starlette's spooled temporary
            # files follow TMPDIR.
            extra = str(expected) if name == "ceiling" else store
            proc = start(python, code, port, args.server_cpu, extra,
                         env={**os.environ, "TMPDIR": store})
            running[name] = (proc, port)
            if args.warmup_mib:
                upload(port, args.warmup_mib, block)  # not measured
            return proc, port

        def retire(name: str) -> None:
            proc, _ = running.pop(name)
            rss[name] = max(rss.get(name, 0.0), peak_rss_mb(proc.pid))
            stop(proc)
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)

        try:
            if not args.fresh_servers:
                for name in servers:
                    launch(name)
            for round_number in range(args.rounds):
                shift = round_number % len(servers)  # rotate: no server always goes first
                for name in list(servers)[shift:] + list(servers)[:shift]:
                    proc, port = launch(name) if args.fresh_servers else running[name]
                    body_bytes = expected + 400  # head and tail are ~400 bytes
                    cpu_before = cpu_seconds(proc.pid)
                    elapsed, size = upload(port, args.size_mib, block)
                    cpu[name].append((cpu_seconds(proc.pid) - cpu_before) / (expected / 2**30))
                    if size != expected:
                        raise RuntimeError(f"{name} stored {size} bytes, not {expected}")
                    rates[name].append(body_bytes / elapsed / 1e6)
                    print(f"round {round_number + 1} {name:9}: {rates[name][-1]:7.0f} MB/s, "
                          f"{cpu[name][-1]:.2f} CPU s/GiB, peak RSS "
                          f"{peak_rss_mb(proc.pid):.1f} MB", file=sys.stderr)
                    if args.fresh_servers:
                        retire(name)
        finally:
            for name in list(running):
                retire(name)
    print()
    servers_were = "a new server per round" if args.fresh_servers else "servers kept across rounds"
    print(f"{args.size_mib} MiB file in one multipart body, {args.rounds} rounds, "
          f"{servers_were}, {args.warmup_mib} MiB warm-up upload per server start; server "
          f"on CPU {args.server_cpu}, client on CPU {args.client_cpu}")
    print()
    print("| server | median MB/s | best MB/s | CPU s/GiB | peak RSS MB | / ceiling "
          "| / Starlette |")
    print("|---|---|---|---|---|---|---|")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        ratio = medians[name] / medians["starlette"] if "starlette" in medians else float("nan")
        print(f"| {name} | {medians[name]:,.0f} | {max(values):,.0f} | "
              f"{statistics.median(cpu[name]):.2f} | {rss[name]:.1f} | "
              f"{medians[name] / medians['ceiling']:.2f} | {ratio:.2f} |")
    if "starlette" in medians:
        ratio = medians["packetron"] / medians["starlette"]
        met = ratio >= TARGET_RATIO and rss["packetron"] < TARGET_RSS_MB
        print(f"\ntarget packetron >= {TARGET_RATIO}x Starlette with RSS < {TARGET_RSS_MB} MB: "
              f"{ratio:.2f}x, {rss['packetron']:.1f} MB, {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
