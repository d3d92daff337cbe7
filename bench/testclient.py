"""TestClient in memory against requests.Session over loopback: the same 1,000 requests.

One small app (GET /api/status and POST /api/echo with a JSON body, half of each) is asked
the same requests twice: through packetron.testing.TestClient, which feeds the real
protocol in memory, and through a requests.Session on one keep-alive connection to the
same app served by Packetron(port=0, workers=1) in this process. Every answer is checked
in both runs. Each figure is the best of --rounds runs (other load on the machine only
ever adds time); the ratio is loopback time / in-memory time.

    .venv/bin/python bench/testclient.py [--requests 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
# Run as a file, Python puts bench/ first on sys.path, where bench/http.py would shadow the
# standard library's http package: the repository root takes its place.
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

import requests  # noqa: E402

from bench.procs import HOST  # noqa: E402
from packetron import HandlerFlags, Packetron  # noqa: E402
from packetron.testing import TestClient  # noqa: E402

PAYLOAD = {"id": 12345, "name": "packetron benchmark", "tags": ["fast", "python", "http"],
           "nested": {"a": 1, "b": [1, 2, 3]}, "flag": True}
WARMUP = 20


def build_app() -> Packetron:
    app = Packetron(port=0, host=HOST, workers=1)

    @app.get("api/status")
    def status(request: Any, response: Any) -> None:
        response.send_json({"status": "ok"})

    @app.post("api/echo", flags=HandlerFlags.JSON_BODY)
    def echo(request: Any, response: Any) -> None:
        response.send_json(request.body)

    return app


def workload(count: int) -> list[tuple[str, str, Any]]:
    """The requests: GET and POST alternating, so both paths are half the mix."""
    return [("GET", "/api/status", None) if i % 2 == 0 else ("POST", "/api/echo", PAYLOAD)
            for i in range(count)]


def run(send: Callable[[str, str, Any], tuple[int, Any]],
        requests_: list[tuple[str, str, Any]]) -> float:
    for method, path, body in requests_[:WARMUP]:
        send(method, path, body)
    started = time.perf_counter()
    for method, path, body in requests_:
        status, answer = send(method, path, body)
        expected = {"status": "ok"} if body is None else body
        if status != 200 or answer != expected:
            raise SystemExit(f"wrong answer to {method} {path}: {status} {answer!r}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    requests_ = workload(args.requests)
    app = build_app()

    memory_times: list[float] = []
    with TestClient(app) as client:
        def send_memory(method: str, path: str, body: Any) -> tuple[int, Any]:
            response = client.request(method, path, json=body)
            return response.status_code, response.json()

        for _ in range(args.rounds):
            memory_times.append(run(send_memory, requests_))
        connections = client.connections_opened

    loopback_times: list[float] = []
    app.start()
    try:
        with requests.Session() as session:
            base = app.url

            def send_loopback(method: str, path: str, body: Any) -> tuple[int, Any]:
                response = session.request(method, base + path, json=body, timeout=10)
                return response.status_code, response.json()

            for _ in range(args.rounds):
                loopback_times.append(run(send_loopback, requests_))
    finally:
        app.stop()

    memory, loopback = min(memory_times), min(loopback_times)
    n = args.requests
    print(f"{n} requests (GET JSON / POST JSON, half each), best of {args.rounds} rounds")
    print(f"  TestClient (in memory)      {memory * 1000:8.1f} ms  {n / memory:9.0f} req/s  "
          f"{memory / n * 1e6:6.1f} us/req  ({connections} connection)")
    print(f"  requests.Session (loopback) {loopback * 1000:8.1f} ms  {n / loopback:9.0f} req/s  "
          f"{loopback / n * 1e6:6.1f} us/req")
    print(f"  ratio loopback / in memory  {loopback / memory:8.1f}x")


if __name__ == "__main__":
    main()
