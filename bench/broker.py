"""Broker-layer benchmark: a bare asyncio echo server vs TcpServer vs Broker.

    .venv/bin/python bench/broker.py                    # 3 rounds, about 1.5 minutes
    .venv/bin/python bench/broker.py --duration 5 --json bench/results/broker.json

Two workloads, each against the three servers, in interleaved rounds (the order rotates
every round, so slow drift of the machine hits every server alike):

- conn/s: a connection is opened, screened (an allow list for TcpServer and Broker;
  the bare server has none), sends 64 bytes, gets them echoed, and is closed; 32 such
  loops run at once.
- MB/s: 4 connections keep 256 KiB each in flight; bytes echoed per second.

The server runs pinned to one CPU (`taskset -c 0`), the Python load generator to the
other (`taskset -c 1`). All three servers use the same event loop (uvloop when it is
installed, as the CLI does) and echo in callback style (`conn.on("message", conn.write)`).
The report gives the median of the rounds and each server's ratio to the bare one, for
the rate and for the server's CPU time per connection / per MB (which other processes on
the machine disturb much less than the rate).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SERVERS = ("bare", "tcpserver", "broker")
WORKLOADS = ("conn", "stream")
CONN_CONCURRENCY = 32
CONN_PAYLOAD = b"x" * 64
STREAM_CONNECTIONS = 4
STREAM_WINDOW_BYTES = 256 * 1024
STREAM_CHUNK_BYTES = 64 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, Python puts bench/ first on sys.path, where bench/http.py would shadow
# the standard library's http package. The repository root goes there instead.
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == HERE:
    sys.path[0] = ROOT

from bench.procs import free_port, pinned  # noqa: E402


def _loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


# ---------------------------------------------------------------- servers (subprocess)


class _BareEcho(asyncio.Protocol):
    """The baseline: the least a Python echo server can do."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve(kind: str, port: int, workdir: str) -> None:
    await _serve_kind(kind, port, workdir)
    # The orchestrator divides this by the work done: CPU per connection / per MB holds
    # up better than wall-clock rates when other processes share the machine.
    print(f"CPU {time.process_time() - _CPU_AT_READY[0]:.6f}", flush=True)


_CPU_AT_READY = [0.0]


def _ready(port: int) -> None:
    _CPU_AT_READY[0] = time.process_time()
    print(f"READY {port}", flush=True)


async def _serve_kind(kind: str, port: int, workdir: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "bare":
        server = await loop.create_server(_BareEcho, "127.0.0.1", port, backlog=4096)
        ready_port = server.sockets[0].getsockname()[1]
        _ready(ready_port)
        await stop.wait()
        server.close()
    elif kind == "tcpserver":
        from packetron.net import TcpServer

        tcp = TcpServer(port, host="127.0.0.1", allow=["127.0.0.0/8"], max_connections=100_000)
        tcp.on_connection(lambda conn: conn.on("message", conn.write))
        await tcp.listen()
        _ready(tcp.port)
        await stop.wait()
        await tcp.close()
    else:
        from packetron.net import Broker

        with open(os.path.join(workdir, f"echo.tcp.{port}.port.py"), "w") as f:
            f.write('def handle(conn, ctx):\n    conn.on("message", conn.write)\n')
        manifest = {"echo": {"allow": ["127.0.0.0/8"], "max_connections": 100_000}}
        broker = Broker(workdir, manifest=manifest, host="127.0.0.1", poll_interval=1.0)
        await broker.start()
        _ready(port)
        await stop.wait()
        await broker.stop()


# ---------------------------------------------------------------- load (subprocess)


class _OneShot(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.got = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(CONN_PAYLOAD)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= len(CONN_PAYLOAD):
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Streamer(asyncio.Protocol):
    def __init__(self, counter: list[int]) -> None:
        self.counter = counter
        self.chunk = b"s" * STREAM_CHUNK_BYTES

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for _ in range(STREAM_WINDOW_BYTES // STREAM_CHUNK_BYTES):
            transport.write(self.chunk)

    def data_received(self, data: bytes) -> None:
        # Keep the window full: send as much as came back.
        self.counter[0] += len(data)
        self.transport.write(self.chunk[: len(data)] if len(data) <= STREAM_CHUNK_BYTES
                             else b"s" * len(data))


async def _load(workload: str, port: int, duration: float) -> tuple[float, float]:
    """Returns (rate, work): conn/s and connections, or MB/s and MB echoed in all."""
    loop = asyncio.get_running_loop()
    if workload == "conn":
        count = 0
        deadline = loop.time() + duration

        async def worker() -> None:
            nonlocal count
            while loop.time() < deadline:
                done = loop.create_future()
                await loop.create_connection(lambda: _OneShot(done), "127.0.0.1", port)
                await done
                count += 1

        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(CONN_CONCURRENCY)))
        return count / (loop.time() - started), float(count)
    counter = [0]
    transports = []
    for _ in range(STREAM_CONNECTIONS):
        t, _ = await loop.create_connection(lambda: _Streamer(counter), "127.0.0.1", port)
        transports.append(t)
    await asyncio.sleep(0.3)  # ramp up: fill the windows and the socket buffers
    start_bytes, started = counter[0], loop.time()
    await asyncio.sleep(duration)
    rate = (counter[0] - start_bytes) / (loop.time() - started) / 1e6
    for t in transports:
        t.abort()
    return rate, counter[0] / 1e6


# ---------------------------------------------------------------- orchestration


def _measure(kind: str, workload: str, args: argparse.Namespace) -> tuple[float, float]:
    """One run: (rate, server CPU microseconds per connection or per MB)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            pinned(args.server_cpu, [sys.executable, __file__, "--_serve", kind,
                                     "--_port", str(port), "--_workdir", workdir]),
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            if not line.startswith("READY"):
                raise RuntimeError(f"{kind} server did not start: {line!r}")
            port = int(line.split()[1])
            load = subprocess.run(
                pinned(args.client_cpu, [sys.executable, __file__, "--_load", workload,
                                         "--_port", str(port), "--duration", str(args.duration)]),
                capture_output=True, text=True, timeout=args.duration + 60, cwd=ROOT,
            )
            if load.returncode != 0:
                raise RuntimeError(f"load generator failed: {load.stderr}")
            rate, work = json.loads(load.stdout)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                out, _ = server.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                out, _ = server.communicate()
        cpu = next((float(x.split()[1]) for x in out.splitlines() if x.startswith("CPU ")), 0.0)
        return rate, (cpu * 1e6 / work if work else float("nan"))


def _report(results: dict[str, dict[str, list[tuple[float, float]]]]) -> dict[str, Any]:
    units = {"conn": ("conn/s", "us/conn"), "stream": ("MB/s", "us/MB")}
    summary: dict[str, Any] = {}
    print()
    print(f"{'workload':<9}{'server':<11}{'rate':>10} {'unit':<7}{'vs bare':>8}"
          f"{'server CPU':>13} {'unit':<8}{'vs bare':>8}   rates per round")
    for workload in WORKLOADS:
        bare_rate = statistics.median(r for r, _ in results[workload]["bare"])
        bare_cpu = statistics.median(c for _, c in results[workload]["bare"])
        for kind in SERVERS:
            runs = results[workload][kind]
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            summary[f"{workload}/{kind}"] = {
                "rate": rate, "rate_ratio": rate / bare_rate,
                "cpu_per_unit_us": cpu, "cpu_ratio": bare_cpu / cpu, "runs": runs,
            }
            shown = ", ".join(f"{r:.0f}" for r, _ in runs)
            rate_unit, cpu_unit = units[workload]
            print(f"{workload:<9}{kind:<11}{rate:>10.0f} {rate_unit:<7}{rate / bare_rate:>7.2f}x"
                  f"{cpu:>13.1f} {cpu_unit:<8}{bare_cpu / cpu:>7.2f}x   {shown}")
    print("(CPU 'vs bare' is bare's CPU per unit divided by this server's: 1.00x = as cheap)")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--_serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--_load", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--_port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = _loop_runner()
    if args._serve:
        run(_serve(args._serve, args._port, args._workdir))
        return
    if args._load:
        print(json.dumps(run(_load(args._load, args._port, args.duration))))
        return
    if (os.cpu_count() or 1) < 2:
        print("fewer than 2 CPUs: nothing is pinned; ratios are less reliable")
        args.server_cpu = args.client_cpu = None
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        w: {k: [] for k in SERVERS} for w in WORKLOADS
    }
    started = time.monotonic()
    for rnd in range(args.rounds):
        order = SERVERS[rnd % 3:] + SERVERS[: rnd % 3]
        for workload in WORKLOADS:
            for kind in order:
                rate, cpu = _measure(kind, workload, args)
                results[workload][kind].append((rate, cpu))
                print(f"round {rnd + 1} {workload:<7}{kind:<10} {rate:12.1f}  cpu {cpu:8.1f}",
                      flush=True)
    summary = _report(results)
    print(f"\n{args.rounds} rounds in {time.monotonic() - started:.0f}s; "
          f"loop: {'uvloop' if run is not asyncio.run else 'asyncio'}; "
          f"server on CPU {args.server_cpu}, load on CPU {args.client_cpu}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"duration": args.duration, "rounds": args.rounds, "results": summary}, f,
                      indent=2)


if __name__ == "__main__":
    main()
