"""Multi-worker benchmark: req/s with 1 and 2 workers, and how the listening socket is shared.

Default run (about 20 s): for ``--workers 1`` and ``--workers 2``, start a packetron server
(``Packetron.run()``, the code path of ``packetron serve``), load ``GET /api/status`` with
``wrk`` and print req/s and latency. The load generator runs on the same machine and
shares its CPUs with the workers, so on a 2-core machine two workers cannot double the
rate: the numbers show the scaling left after wrk took its share.

``--sockets`` (about 30 s) compares the two ways workers can share a port, on a minimal
pre-fork harness (the same ServingLoop, no pool process): one listening socket inherited by
every worker, or one SO_REUSEPORT socket per worker. It measures how evenly short
connections spread over two workers (one client, then ``--clients`` concurrent ones, 16 by
default) and how many requests fail while workers are restarted gracefully or killed with
SIGKILL under load.

Usage (from the repository root)::

    .venv/bin/python bench/workers.py [--duration 5] [--connections 64]
    .venv/bin/python bench/workers.py --sockets
"""
from __future__ import annotations

import os
import sys

# `python bench/workers.py` puts bench/ first on sys.path, where bench/http.py would
# shadow the standard library's http package. The repository root takes bench/'s place,
# so that `bench.procs` imports.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from bench.procs import HOST, NotReady, free_port, stop, wait_ready  # noqa: E402

STATUS_PATH = "/api/status"
STARTUP_TIMEOUT_S = 30.0
# The server runs in its own session; a SIGKILL after this long takes its workers too.
STOP_TIMEOUT_S = 15.0
REQUEST = (b"GET " + STATUS_PATH.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
           b"Connection: close\r\n\r\n")


def one_request(port: int, timeout: float = 3.0) -> int:
    """One short connection: connect, GET, read to the end; returns the worker's pid.

    Raises:
        OSError: connect, send or receive failed (refused, reset, timeout).
        ValueError: the answer was not a 200 with a pid.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(REQUEST)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    answer = b"".join(chunks)
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ValueError(f"unexpected answer {answer[:40]!r}")
    return int(json.loads(answer.partition(b"\r\n\r\n")[2])["pid"])


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    try:
        wait_ready(proc, lambda: one_request(port, timeout=1.0), STARTUP_TIMEOUT_S,
                   errors=(OSError, ValueError), interval=0.02)
    except NotReady as exc:
        raise SystemExit(f"the server {exc}") from None


# --------------------------------------------------------------------------- servers


def serve_app(port: int, workers: int) -> None:
    """The benchmarked server: Packetron.run(), as `packetron serve` runs it."""
    from packetron import Packetron

    app = Packetron(port=port, host=HOST, workers=workers)
    app.get("api/status", lambda request, response: response.send_json(
        {"status": "ok", "pid": os.getpid()}))
    app.run()


def serve_socket_variant(variant: str, port: int, workers: int) -> None:
    """Minimal pre-fork server for --sockets: `variant` is "inherited" or "reuseport".

    SIGUSR1 restarts the oldest worker gracefully (a new one is forked and serving first),
    SIGUSR2 SIGKILLs the oldest worker and forks a replacement, SIGTERM stops.
    """
    import asyncio

    from packetron import Packetron
    from packetron.http.runtime import ServingLoop, new_event_loop
    from packetron.net.listener import bind_tcp_socket

    app = Packetron(port=port, host=HOST, workers=1)
    app.get("api/status", lambda request, response: response.send_json(
        {"status": "ok", "pid": os.getpid()}))
    shared = bind_tcp_socket(HOST, port) if variant == "inherited" else None
    handled = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGCHLD)
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    children: list[int] = []

    def spawn() -> None:
        ready_read, ready_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_read)
                sock = shared if shared is not None else bind_tcp_socket(HOST, port,
                                                                         reuse_port=True)
                serving = ServingLoop(app.serving_state(), sock)
                loop = new_event_loop()
                asyncio.set_event_loop(loop)
                loop.add_signal_handler(signal.SIGTERM, serving.request_stop)
                signal.pthread_sigmask(signal.SIG_SETMASK, ())
                loop.run_until_complete(serving.serve(
                    on_ready=lambda: os.write(ready_write, b"r")))
                code = 0
            finally:
                os._exit(code)
        os.close(ready_write)
        os.read(ready_read, 1)
        os.close(ready_read)
        children.append(pid)

    for _ in range(workers):
        spawn()
    while True:
        signum = signal.sigwait(handled)
        if signum == signal.SIGCHLD:
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
            continue
        if signum == signal.SIGTERM:
            for pid in children:
                os.kill(pid, signal.SIGTERM)
            for pid in children:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            return
        oldest = children.pop(0)
        if signum == signal.SIGUSR1:
            spawn()
            os.kill(oldest, signal.SIGTERM)
        else:
            os.kill(oldest, signal.SIGKILL)
            spawn()


# --------------------------------------------------------------------------- wrk


def run_wrk(port: int, duration: int, connections: int) -> dict[str, float]:
    url = f"http://{HOST}:{port}{STATUS_PATH}"
    subprocess.run(["wrk", "-t2", "-c", str(connections), "-d1s", url], check=True,
                   capture_output=True)  # warm-up
    out = subprocess.run(["wrk", "-t2", "-c", str(connections), f"-d{duration}s",
                          "--latency", url], check=True, capture_output=True,
                         text=True).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if rate is None:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": float(rate.group(1)),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "errors": 0.0 if errors is None else 1.0,
    }


def bench_wrk(duration: int, connections: int) -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed: sudo apt-get install wrk  (or build it from its sources)")
        raise SystemExit(2)
    print(f"GET {STATUS_PATH}, wrk -t2 -c{connections} -d{duration}s on {os.cpu_count()} CPUs;"
          " wrk runs on the same CPUs as the workers, so the 2-worker figure is what is"
          " left after the load generator took its share.")
    results: dict[int, dict[str, float]] = {}
    for workers in (1, 2):
        port = free_port()
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-app",
                                 "--workers", str(workers), "--port", str(port)],
                                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            _wait_ready(proc, port)
            results[workers] = run_wrk(port, duration, connections)
        finally:
            stop(proc, STOP_TIMEOUT_S, group=True)
            log.close()
        r = results[workers]
        print(f"  workers={workers}: {r['rps']:>9.0f} req/s   p99 {r['p99_ms']:.2f} ms"
              + ("   (wrk reported errors)" if r["errors"] else ""))
    print(f"  2 workers / 1 worker: {results[2]['rps'] / results[1]['rps']:.2f}x")


# --------------------------------------------------------------------------- --sockets


def _load(port: int, concurrency: int, seconds: float, stats: dict[str, Any]) -> None:
    """Short connections from `concurrency` threads for `seconds`; counts into stats."""
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def client() -> None:
        while time.monotonic() < deadline:
            try:
                pid = one_request(port)
            except (OSError, ValueError) as exc:
                with lock:
                    stats["errors"][type(exc).__name__] += 1
                continue
            with lock:
                stats["pids"][pid] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _new_stats() -> dict[str, Any]:
    return {"pids": collections.Counter(), "errors": collections.Counter()}


def _spread(counter: collections.Counter[int]) -> str:
    counts = sorted(counter.values(), reverse=True)
    total = sum(counts)
    shares = " / ".join(f"{100 * c / total:.0f}%" for c in counts)
    return f"{total} requests, split {shares}"


def _signals_under_load(proc: subprocess.Popen[bytes], port: int, clients: int,
                        seconds: float, signum: int, times: int, every: float) -> dict[str, Any]:
    """Load the server for `seconds` while sending it `signum` `times` times, `every` s apart."""
    stats = _new_stats()
    loader = threading.Thread(target=_load, args=(port, clients, seconds, stats))
    loader.start()
    for _ in range(times):
        time.sleep(every)
        proc.send_signal(signum)
    loader.join()
    return stats


def bench_sockets(clients: int, workers: int = 2) -> None:
    print(f"How {workers} workers share one port (short connections, Connection: close,"
          f" {clients} client threads):")
    for variant in ("inherited", "reuseport"):
        port = free_port()
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--socket-server",
                                 variant, "--workers", str(workers), "--port", str(port)],
                                cwd=REPO_ROOT, start_new_session=True)
        try:
            _wait_ready(proc, port)
            sequential = collections.Counter(one_request(port) for _ in range(400))
            concurrent = _new_stats()
            _load(port, clients, 3.0, concurrent)

            # 12 graceful worker restarts, one every 0.3 s, under load.
            restarts = _signals_under_load(proc, port, clients, 4.0, signal.SIGUSR1, 12, 0.3)
            # 5 SIGKILLs of a worker, one every 0.5 s, under load.
            kills = _signals_under_load(proc, port, clients, 3.0, signal.SIGUSR2, 5, 0.5)
        finally:
            stop(proc, STOP_TIMEOUT_S, group=True)

        def failed(stats: dict[str, Any]) -> str:
            total = sum(stats["pids"].values()) + sum(stats["errors"].values())
            detail = ", ".join(f"{n} {name}" for name, n in stats["errors"].items())
            return f"{sum(stats['errors'].values())} failed of {total}" + \
                (f" ({detail})" if detail else "")

        print(f"  {variant}:")
        for label, text in (("one client", _spread(sequential)),
                            (f"{clients} clients, 3 s", _spread(concurrent["pids"])),
                            ("12 graceful restarts", failed(restarts)),
                            ("5 SIGKILLs", failed(kills))):
            print(f"    {label + ':':<24}{text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--sockets", action="store_true",
                        help="compare an inherited socket with SO_REUSEPORT instead")
    parser.add_argument("--clients", type=int, default=16,
                        help="client threads of --sockets")
    parser.add_argument("--serve-app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--socket-server", choices=("inherited", "reuseport"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_app:
        serve_app(args.port, args.workers)
    elif args.socket_server:
        serve_socket_variant(args.socket_server, args.port, args.workers)
    elif args.sockets:
        bench_sockets(args.clients)
    else:
        bench_wrk(args.duration, args.connections)


if __name__ == "__main__":
    main()
