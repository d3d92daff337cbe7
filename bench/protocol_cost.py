"""CPU cost per request of the HTTP protocol object, without sockets or an event loop.

Feeds wrk-like requests one per data_received() into packetron's HttpProtocol and into the
bare ceiling protocol, with a transport that only counts bytes, and prints microseconds
per request. This isolates the framework's own work from syscalls and machine noise, so
it is the number to watch while tuning the hot path (bench/http.py gives the real req/s).

    python bench/protocol_cost.py
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
# Run as a file, Python puts bench/ first on sys.path, where bench/http.py would shadow the
# standard library's http package: the repository root takes its place.
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

from bench.ceiling_server import CeilingProtocol  # noqa: E402
from packetron import HandlerFlags, Packetron  # noqa: E402
from packetron.http.protocol import HttpProtocol  # noqa: E402

GET = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BODY = (b'{"id":12345,"name":"packetron benchmark","tags":["fast","python","http"],'
        b'"nested":{"a":1,"b":[1,2,3],"c":"some text to fill the payload"},"flag":true,'
        b'"value":3.14159,"more":"padding padding"}')
POST = (b"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


class CountingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is gone at once

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (16 * 1024, 64 * 1024)  # uvloop's defaults

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def close(self) -> None:
        pass


def measure(protocol: asyncio.Protocol, payload: bytes, count: int) -> float:
    transport = CountingTransport()
    protocol.connection_made(transport)
    feed = protocol.data_received
    started = time.perf_counter()
    for _ in range(count):
        feed(payload)
    elapsed = time.perf_counter() - started
    assert transport.written > count * 20, "the protocol did not answer"
    return elapsed / count * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    server = Packetron(port=0, workers=1)
    server.get("api/status", lambda q, s: s.send_json({"status": "ok", "server": "packetron"}))
    server.post("api/echo", lambda q, s: s.send_json(q.body), flags=HandlerFlags.JSON_BODY)
    loop = asyncio.new_event_loop()
    state = server.serving_state()
    rows = []
    for name, payload in (("GET /api/status", GET), ("POST /api/echo", POST)):
        ceiling = min(measure(CeilingProtocol(), payload, count) for _ in range(3))
        ours = min(measure(HttpProtocol(state, loop), payload, count) for _ in range(3))
        rows.append((name, ceiling, ours))
    loop.close()
    print(f"{'request':<18}{'ceiling us':>12}{'packetron us':>14}{'overhead us':>13}")
    for name, ceiling, ours in rows:
        print(f"{name:<18}{ceiling:>12.2f}{ours:>14.2f}{ours - ceiling:>13.2f}")


if __name__ == "__main__":
    main()
