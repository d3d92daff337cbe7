"""RPC benchmark: round trips per second over one TCP connection, in one run.

Three implementations do the same work: the client sends a small JSON object
(``{"op": "echo", "n": 0, "data": "x" * 32}``) and the server answers
``{"okay": true, "echo": <the object>}``, decoding and encoding JSON on both sides.

- ``framing``: packetron's FramingSocket against serve_rpc (JSON in the payload);
- ``packetstream``: packetron's PacketStream against PacketStream;
- ``node``: Node's packet-stream against Node's packet-stream (tests/node/).

Each is measured with 1 and with 64 requests in flight, the server pinned to one CPU
and the client to another, for several interleaved rounds; the report shows medians
and the ratios to Node. Python processes use uvloop when it is importable.

Usage (from the repository root)::

    .venv/bin/python bench/rpc.py [--duration 3] [--rounds 3] [--json FILE]
"""
from __future__ import annotations

import os
import sys

# Run as ``python bench/rpc.py``, Python puts bench/ first on sys.path, where bench/http.py
# would shadow the standard library's ``http`` package that packetron imports. The
# repository root takes bench/'s place, so that ``bench.procs`` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from bench.procs import HOST, pinned, stop  # noqa: E402

NODE_DIR = os.path.join(REPO_ROOT, "tests", "node")
PAYLOAD: dict[str, Any] = {"op": "echo", "n": 0, "data": "x" * 32}
IMPLS = ("framing", "packetstream", "node")
LABELS = {"framing": "FramingSocket (Python)", "packetstream": "PacketStream (Python)",
          "node": "packet-stream (Node)"}
# A server must print READY within this long; a client gets its duration plus this.
STARTUP_TIMEOUT_S = 20.0
CLIENT_GRACE_S = 30.0


# ---------------------------------------------------------------- the Python roles


def _event_loop_runner() -> tuple[Callable[..., Any], str]:
    if os.environ.get("BENCH_LOOP") == "asyncio":
        return asyncio.run, "asyncio"
    try:
        import uvloop
    except ImportError:
        return asyncio.run, "asyncio"
    return uvloop.run, "uvloop"


async def _python_server(impl: str) -> None:
    from packetron.net import PacketStream, TcpServer, serve_rpc

    server = TcpServer(0, host=HOST)
    if impl == "packetstream":
        def answer(value: Any) -> Any:
            return {"okay": True, "echo": value}

        @server.on_connection
        async def handle(conn: Any) -> None:
            await PacketStream(request=answer).attach(conn)
    else:
        # The JSON functions PacketStream uses, so both do the same work.
        from packetron.net.packetstream.codec import json_dumps, json_loads

        def rpc(rpc_id: int, payload: bytes) -> bytes:
            return json_dumps({"okay": True, "echo": json_loads(payload)}).encode()

        @server.on_connection
        async def handle(conn: Any) -> None:
            await serve_rpc(conn, rpc)

    await server.listen()
    print(f"READY {server.port}", flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.close(timeout=1)


async def _python_client(impl: str, port: int, inflight: int, seconds: float,
                         warmup: float) -> dict[str, float]:
    from packetron.net import FramingSocket, PacketStream, TcpClient

    loop = asyncio.get_running_loop()
    conn = await TcpClient(HOST, port).connect()
    if impl == "packetstream":
        ps = PacketStream()
        session = ps.start(conn)

        async def call(rpc_id: int) -> None:
            await ps.request(PAYLOAD)
    else:
        from packetron.net.packetstream.codec import json_dumps, json_loads

        fs = FramingSocket(timeout=30)
        fs.attach(conn)

        async def call(rpc_id: int) -> None:
            json_loads(await fs.request(rpc_id, json_dumps(PAYLOAD).encode()))

    async def phase(secs: float) -> tuple[int, float]:
        count = 0
        start = loop.time()
        deadline = start + secs

        async def worker(first_id: int) -> None:
            nonlocal count
            rpc_id = first_id
            while loop.time() < deadline:
                await call(rpc_id)
                count += 1
                rpc_id = (rpc_id + inflight) % 2**31  # ids stay unique per worker
        await asyncio.gather(*(worker(i) for i in range(inflight)))
        return count, loop.time() - start

    await phase(warmup)
    count, elapsed = await phase(seconds)
    if impl == "packetstream":
        await ps.close()
        await session
    else:
        fs.close()
    return {"requests": count, "seconds": elapsed}


def _role_main(args: argparse.Namespace) -> None:
    run, _ = _event_loop_runner()
    if args.role == "server":
        run(_python_server(args.impl))
    else:
        result = run(_python_client(args.impl, args.port, args.inflight, args.duration,
                                    args.warmup))
        print(json.dumps(result), flush=True)


# ---------------------------------------------------------------- the orchestrator


def _python_argv(*extra: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *extra]


def _start_server(impl: str, cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    if impl == "node":
        argv = ["node", os.path.join(NODE_DIR, "ps_server.js"), "0"]
        env = {**os.environ, "PS_QUIET": "1"}
    else:
        argv = _python_argv("--role", "server", "--impl", impl)
        env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    proc = subprocess.Popen(pinned(cpu, argv), stdout=subprocess.PIPE, text=True, env=env,
                            cwd=REPO_ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                if line.startswith("READY "):
                    return proc, int(line.split()[1])
                if not line:
                    break
    _stop(proc)
    raise RuntimeError(f"{impl} server did not become ready")


def _stop(proc: subprocess.Popen[str]) -> None:
    """stop() the server, then close the pipe its READY line came through."""
    stop(proc)
    if proc.stdout is not None:
        proc.stdout.close()


def _run_client(impl: str, port: int, inflight: int, args: argparse.Namespace) -> float:
    if impl == "node":
        argv = ["node", os.path.join(NODE_DIR, "bench_client.js"), str(port), str(inflight),
                str(args.duration), str(args.warmup)]
        env = dict(os.environ)
    else:
        argv = _python_argv("--role", "client", "--impl", impl, "--port", str(port),
                            "--inflight", str(inflight), "--duration", str(args.duration),
                            "--warmup", str(args.warmup))
        env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    out = subprocess.run(pinned(args.client_cpu, argv), capture_output=True, text=True,
                         env=env, cwd=REPO_ROOT,
                         timeout=args.duration + args.warmup + CLIENT_GRACE_S, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["requests"] / result["seconds"])


def _check_tools(impls: list[str], args: argparse.Namespace) -> list[str]:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("note: taskset or a second CPU is missing; nothing is pinned", file=sys.stderr)
        args.server_cpu = args.client_cpu = None
    if "node" in impls:
        if shutil.which("node") is None or not os.path.isdir(
                os.path.join(NODE_DIR, "node_modules", "packet-stream")):
            print("note: node or tests/node/node_modules is missing (bash tests/prepare.sh); "
                  "skipping the Node peer", file=sys.stderr)
            impls = [i for i in impls if i != "node"]
    return impls


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", default="1,64", help="comma-separated levels")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--json", help="also write every run and the medians here")
    # Internal: the roles the orchestrator starts.
    parser.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        args.inflight = int(args.inflight) if args.role == "client" else 0
        _role_main(args)
        return

    impls = _check_tools([i for i in args.impls.split(",") if i], args)
    levels = [int(x) for x in args.inflight.split(",")]
    _, loop_name = _event_loop_runner()
    print(f"rpc bench: {args.rounds} rounds x {args.duration:g}s (+{args.warmup:g}s warm-up), "
          f"server on CPU {args.server_cpu}, client on CPU {args.client_cpu}, "
          f"Python loop {loop_name}", flush=True)
    runs: dict[str, dict[int, list[float]]] = {i: {n: [] for n in levels} for i in impls}
    for rnd in range(args.rounds):
        order = impls[rnd % len(impls):] + impls[:rnd % len(impls)]  # rotate who goes first
        for impl in order:
            proc, port = _start_server(impl, args.server_cpu)
            try:
                for n in levels:
                    rate = _run_client(impl, port, n, args)
                    runs[impl][n].append(rate)
                    print(f"  round {rnd + 1} {impl:>12} {n:>3} in flight: {rate:>9,.0f} rt/s",
                          flush=True)
            finally:
                _stop(proc)

    med = {i: {n: statistics.median(v) for n, v in runs[i].items()} for i in impls}
    node = med.get("node")
    print()
    header = "| implementation | " + " | ".join(f"{n} in flight (rt/s)" for n in levels)
    if node:
        header += " | " + " | ".join(f"x Node @{n}" for n in levels)
    print(header + " |")
    print("|" + "---|" * (1 + len(levels) * (2 if node else 1)))
    for impl in impls:
        cells = [_fmt(med[impl][n]) for n in levels]
        if node:
            cells += [f"{med[impl][n] / node[n]:.2f}x" for n in levels]
        print(f"| {LABELS[impl]} | " + " | ".join(cells) + " |")
    if node and "packetstream" in med and 64 in levels:
        ratio = med["packetstream"][64] / node[64]
        verdict = "met" if ratio >= 1.0 else "NOT met"
        print(f"\ntarget PacketStream >= 1.0x Node at 64 in flight: {ratio:.2f}x ({verdict})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"config": {k: v for k, v in vars(args).items() if k not in ("role",)},
                       "loop": loop_name, "runs": runs, "medians": med}, fh, indent=2)


if __name__ == "__main__":
    main()
