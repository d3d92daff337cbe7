"""Graceful stop: open WebSockets get close 1001, their handlers end, stop() returns promptly."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from wshelp import run, wait_for, ws_url

from packetron import Packetron, WebSocket


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_closes_open_sockets_with_1001(workers: int) -> None:
    server = Packetron(port=0, host="127.0.0.1", workers=workers, graceful_timeout=5)

    @server.websocket("hold")
    async def hold(ws: WebSocket, request: Any) -> None:
        await ws.send("ready")
        async for message in ws:
            await ws.send(message)

    server.start()
    stopped: list[float] = []
    try:
        async def client() -> tuple[int, str]:
            async with websockets.connect(ws_url(server, "hold")) as first, \
                    websockets.connect(ws_url(server, "hold")) as second:
                assert await first.recv() == "ready"
                assert await second.recv() == "ready"

                def stop() -> None:
                    started = time.monotonic()
                    server.stop(timeout=5)
                    stopped.append(time.monotonic() - started)

                threading.Thread(target=stop, daemon=True).start()
                codes = []
                for ws in (first, second):
                    with pytest.raises(ConnectionClosed) as info:
                        await ws.recv()
                    assert info.value.rcvd is not None
                    codes.append((info.value.rcvd.code, info.value.rcvd.reason))
                assert codes[0] == codes[1]
                return codes[0]

        assert run(client()) == (1001, "server shutting down")
        assert wait_for(lambda: stopped, 10)
        assert stopped[0] < 4, stopped  # the clients answered: no waiting for the timeout
    finally:
        server.stop(timeout=2)


def test_a_handler_waiting_elsewhere_is_cancelled_after_the_close(make_server: Any) -> None:
    server = make_server(graceful_timeout=8)
    outcome: list[str] = []

    @server.websocket("stuck")
    async def stuck(ws: WebSocket, request: Any) -> None:
        await ws.send("ready")
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    server.start()

    async def client() -> int:
        async with websockets.connect(ws_url(server, "stuck")) as ws:
            assert await ws.recv() == "ready"
            started = time.monotonic()
            threading.Thread(target=server.stop, kwargs={"timeout": 8}, daemon=True).start()
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert time.monotonic() - started < 3
            return info.value.rcvd.code

    assert run(client()) == 1001
    assert wait_for(lambda: outcome == ["cancelled"], 5)
    assert wait_for(lambda: not server.is_running or server._serving is None, 5)


def test_a_rolling_reload_closes_the_old_workers_sockets_with_1001() -> None:
    server = Packetron(port=0, host="127.0.0.1", workers=2, graceful_timeout=5)

    @server.websocket("hold")
    async def hold(ws: WebSocket, request: Any) -> None:
        await ws.send("ready")
        async for message in ws:
            await ws.send(message)

    server.start()
    try:
        async def client() -> tuple[int, str]:
            async with websockets.connect(ws_url(server, "hold")) as ws:
                assert await ws.recv() == "ready"
                # A route added after start reaches the workers by a rolling reload.
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: server.get("added", lambda q, s: s.send_ok()))
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None
                return info.value.rcvd.code, info.value.rcvd.reason

        assert run(client()) == (1001, "server shutting down")

        async def reconnect() -> str:  # the new generation serves WebSockets too
            async with websockets.connect(ws_url(server, "hold")) as ws:
                return str(await ws.recv())

        assert run(reconnect()) == "ready"
    finally:
        server.stop(timeout=3)


def test_wss_over_tls(make_server: Any, tmp_path: Any) -> None:
    import ssl

    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    certificate.private_key_pem.write_to_path(str(key_path))
    server = make_server(tls={"cert": str(cert_path), "key": str(key_path)})

    @server.websocket("secure")
    async def secure(ws: WebSocket, request: Any) -> None:
        async for message in ws:
            await ws.send(message)

    server.start()
    context = ssl.create_default_context()
    authority.configure_trust(context)

    async def client() -> Any:
        async with websockets.connect(f"wss://127.0.0.1:{server.port}/secure",
                                      ssl=context) as ws:
            await ws.send("over tls" * 10000)
            return await ws.recv()

    assert run(client()) == "over tls" * 10000
