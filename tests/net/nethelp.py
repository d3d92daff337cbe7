"""Helpers for the net tests: run a coroutine with a deadline, a fake transport, TLS certs,
a raw-bytes server.

Imported by name (`from nethelp import run`); pytest puts this directory on sys.path.
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Every async test body gets at most this long; a hang is a failure, not a stuck run.
ASYNC_TEST_TIMEOUT = 30.0


def run(coro: Coroutine[Any, Any, T], timeout: float = ASYNC_TEST_TIMEOUT, *,
        loop: str = "asyncio") -> T:
    """Run one async test body in a fresh event loop, bounded by `timeout` seconds.

    Args:
        loop: "asyncio" or "uvloop" (the loop packetron uses when it is installed).
    """

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    if loop == "uvloop":
        import uvloop

        return uvloop.run(bounded())
    return asyncio.run(bounded())


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# Parametrize a test over both event loops: `@pytest.mark.parametrize("loop", LOOPS)`.
LOOPS = ["asyncio", "uvloop"] if _uvloop_available() else ["asyncio"]


class FakeTransport(asyncio.Transport):
    """A transport that records what the protocol does to it (no socket)."""

    def __init__(self, peername: tuple[str, int] = ("192.0.2.1", 5555)) -> None:
        super().__init__()
        self.peername = peername
        self.written = bytearray()
        self.buffered = 0  # what get_write_buffer_size() reports; tests set it
        self.reading = True
        self.closed = False
        self.aborted = False
        self.high = self.low = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peername}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high, self.low = high or 0, low or 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: Any) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True


def make_certs(directory: Any, hostname: str = "127.0.0.1") -> tuple[str, str, str]:
    """Write a trustme CA and a server certificate for `hostname` into directory.

    Returns:
        (cert_path, key_path, ca_path) as strings.
    """
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert(hostname, "localhost")
    cert_path = str(directory / "server.pem")
    key_path = str(directory / "server.key")
    ca_path = str(directory / "ca.pem")
    server.cert_chain_pems[0].write_to_path(cert_path)
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(cert_path, append=True)
    server.private_key_pem.write_to_path(key_path)
    ca.cert_pem.write_to_path(ca_path)
    return cert_path, key_path, ca_path


def free_port(kind: int = 1) -> int:
    """A port the OS reports free right now (socket.SOCK_STREAM=1 or SOCK_DGRAM=2)."""
    import socket

    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll predicate() until it is true; fail after timeout seconds (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def write_source(path: Any, text: str) -> None:
    """Write a handler file so that its fingerprint surely changes (mtime moves on)."""
    import os
    import textwrap

    existed = os.path.exists(path)
    old_ns = os.stat(path).st_mtime_ns if existed else 0
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    st = os.stat(path)
    if st.st_mtime_ns <= old_ns:  # coarse clocks: push mtime past the old value
        os.utime(path, ns=(st.st_atime_ns, old_ns + 1_000_000))


def start_redis() -> tuple[Any, str]:
    """Start a throwaway redis-server on a free port; returns (process, url).

    Skips the calling test when redis-server is not on PATH. Stop it with
    `stop_process(proc)` (by its PID).
    """
    import shutil
    import socket
    import subprocess
    import time

    import pytest

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH (tests/prepare.d/redis.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:  # readiness: the port accepts
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                pytest.fail("redis-server did not start")
            time.sleep(0.02)


def stop_process(proc: Any) -> None:
    """SIGTERM a subprocess by its PID and reap it (SIGKILL after 10 s)."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RawServer:
    """A loopback server speaking raw bytes (asyncio streams), for wire layouts and input no
    well-behaved peer would send.

    `script(reader, writer)` runs for each connection; the connection closes when it
    returns, or, with `keep_reading=True`, once the client has sent EOF, everything it sent
    after the script kept in `received`. `done` is set when a connection has ended.
    """

    def __init__(self, script: Any, *, keep_reading: bool = False) -> None:
        self.script = script
        self.keep_reading = keep_reading
        self.received = bytearray()
        self.done = asyncio.Event()
        self.port = 0

    async def __aenter__(self) -> "RawServer":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.script(reader, writer)
            while self.keep_reading and (chunk := await reader.read(65536)):
                self.received += chunk
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.done.set()
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


LOCAL = "127.0.0.1"


def make_broker(directory: Any, **kwargs: Any) -> Any:
    """A Broker on 127.0.0.1 that scans only when the test calls rescan()."""
    from packetron.net import Broker

    kwargs.setdefault("poll_interval", None)
    kwargs.setdefault("host", LOCAL)
    return Broker(directory, **kwargs)


async def echo_once(port: int, data: bytes = b"ping", *, host: str = LOCAL,
                    **kwargs: Any) -> bytes:
    """Open a connection, send `data`, read as many bytes back, close."""
    from packetron.net import open_connection

    conn = await open_connection(host, port, **kwargs)
    try:
        conn.write(data)
        return await conn.readexactly(len(data))
    finally:
        conn.close()
        await conn.wait_closed()


async def udp_exchange(port: int, payloads: list[bytes], expect: int, *, host: str = LOCAL,
                       source: str | None = None) -> list[bytes]:
    """Send each payload as a datagram to (host, port); return the first `expect` replies."""
    import socket

    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.put_nowait(data)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(
        Client, local_addr=(source, 0) if source else None, remote_addr=(host, port),
        family=family)
    try:
        for payload in payloads:
            transport.sendto(payload)
        return [await asyncio.wait_for(got.get(), ASYNC_TEST_TIMEOUT) for _ in range(expect)]
    finally:
        transport.close()


class HeldHandler:
    """An async request handler that records each value, then waits for `release`.

    Works as serve_rpc's handler(rpc_id, payload) and PacketStream's request(value): the
    last argument is the value, and it is the answer.
    """

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.release = asyncio.Event()
        self._progress = asyncio.Event()

    async def __call__(self, *args: Any) -> Any:
        self.started.append(args[-1])
        self._progress.set()
        await self.release.wait()
        return args[-1]

    async def until(self, count: int) -> None:
        """Return once `count` calls have started."""
        while len(self.started) < count:
            self._progress.clear()
            await self._progress.wait()
