"""CPU cost per connection of TcpServer and Broker, without sockets.

Takes the protocol factory each server hands the event loop (the same one its listener
uses) and drives one connection's life through it per iteration, as in the conn/s workload
of bench/broker.py: connection_made, 64 bytes in and echoed, EOF, connection_lost. A
transport that only counts bytes stands in for the socket, so what is left is the Python
work per connection: screening, the Connection object, connection tracking, handler
dispatch. The bare echo protocol of bench/broker.py is the baseline. Each figure is the
best of REPEATS runs in CPU time of this process, which other load on the machine disturbs
far less than the wall clock. The garbage collector stays on: reference cycles left behind
per connection cost real time there too.

    .venv/bin/python bench/connection_cost.py [connections-per-repeat]

bench/broker.py gives the real rates; this is the number to watch while tuning.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, Python puts bench/ first on sys.path, where bench/http.py would shadow
# the standard library's http package. The repository root goes there instead.
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == HERE:
    sys.path[0] = ROOT

from bench.broker import CONN_PAYLOAD, _BareEcho, _loop_runner
from bench.procs import free_port
from packetron.net import Broker, TcpServer
from packetron.net import tcpserver as tcpserver_module
from packetron.net.listener import tcp_protocol_factory

REPEATS = 7
PEER = ("127.0.0.1", 50000)
ALLOW = ["127.0.0.0/8"]
MAX_CONNECTIONS = 100_000


class CountingTransport:
    """The least of a transport the protocols use; close() is acted on by the driver."""

    __slots__ = ("closing", "written")

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    abort = close


def measure(factory: Callable[[], Any], count: int) -> float:
    """Microseconds per connection for `count` connections built by `factory`."""
    payload = CONN_PAYLOAD
    written = 0
    # CPU time of this process: other processes on the machine disturb it much less
    # than the wall clock.
    started = time.process_time()
    for _ in range(count):
        transport = CountingTransport()
        protocol = factory()
        protocol.connection_made(transport)
        protocol.data_received(payload)
        if not protocol.eof_received():
            transport.closing = True
        protocol.connection_lost(None)
        written += transport.written
    elapsed = time.process_time() - started
    assert written == count * len(payload), "the server did not echo"
    return elapsed / count * 1e6


async def _listener_factory(start: Callable[[], Any]) -> Callable[[], Any]:
    """The protocol factory the TcpServer that `start` opens passes to its listener."""
    captured: dict[str, Any] = {}
    original = tcpserver_module.start_tcp_listener

    async def spy(protocol_factory: Any, sock: Any, **kwargs: Any) -> Any:
        captured.update(kwargs, protocol_factory=protocol_factory)
        return await original(protocol_factory, sock, **kwargs)

    tcpserver_module.start_tcp_listener = spy  # type: ignore[assignment]
    try:
        await start()
    finally:
        tcpserver_module.start_tcp_listener = original  # type: ignore[assignment]
    return tcp_protocol_factory(captured["protocol_factory"], ssl=captured.get("ssl"),
                                screen=captured.get("screen"),
                                on_reject=captured.get("on_reject"))


async def _main(count: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        await _compare(count, workdir)


async def _compare(count: int, workdir: str) -> None:
    rows: list[tuple[str, Callable[[], Any]]] = [("bare", _BareEcho)]

    plain = TcpServer(0, host="127.0.0.1")
    plain.on_connection(lambda conn: conn.on("message", conn.write))
    rows.append(("tcpserver, no screen", await _listener_factory(plain.listen)))

    # The servers exactly as bench/broker.py runs them.
    tcp = TcpServer(0, host="127.0.0.1", allow=ALLOW, max_connections=MAX_CONNECTIONS)
    tcp.on_connection(lambda conn: conn.on("message", conn.write))
    rows.append(("tcpserver", await _listener_factory(tcp.listen)))

    _write_echo_handler(workdir, free_port())  # the Broker takes the port from the file name
    manifest = {"echo": {"allow": ALLOW, "max_connections": MAX_CONNECTIONS}}
    broker = Broker(workdir, manifest=manifest, host="127.0.0.1", poll_interval=None)
    rows.append(("broker", await _listener_factory(broker.start)))

    results = []
    for name, factory in rows:
        measure(factory, min(count, 2000))  # warm up
        results.append((name, min(measure(factory, count) for _ in range(REPEATS))))
    await plain.close()
    await tcp.close()
    await broker.stop()
    bare = results[0][1]
    print(f"{'server':<22}{'us/conn':>9}{'over bare':>11}")
    for name, cost in results:
        print(f"{name:<22}{cost:>9.2f}{cost - bare:>11.2f}")


def _write_echo_handler(workdir: str, port: int) -> None:
    """The handler file bench/broker.py gives its Broker."""
    with open(os.path.join(workdir, f"echo.tcp.{port}.port.py"), "w") as f:
        f.write('def handle(conn, ctx):\n    conn.on("message", conn.write)\n')


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    _loop_runner()(_main(count))


if __name__ == "__main__":
    main()
