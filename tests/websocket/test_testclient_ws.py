"""TestClient.websocket_connect: the same session, driven in memory."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from packetron import Packetron, Plugin, WebSocket, WebSocketClosed
from packetron.testing import AsyncTestClient, TestClient, WebSocketRejected


@pytest.fixture
def app() -> Packetron:
    server = Packetron(port=0, workers=1, max_message_size=1000)

    @server.websocket("echo/{name}")
    async def echo(ws: WebSocket, request: Any) -> None:
        await ws.accept(subprotocol="v1" if "v1" in ws.subprotocols else None)
        await ws.send(f"hello {ws.path_params['name']} {request.get_cookie('c')}")
        async for message in ws:
            if message == "bye":
                await ws.close(4000, "see you")
                return
            await ws.send(message)

    @server.websocket("room")
    async def room(ws: WebSocket, request: Any) -> None:
        async with server.channels.subscribe("room") as messages:
            await ws.send("joined")

            async def pump() -> None:
                async for message in messages:
                    await ws.send(message)

            pumping = asyncio.create_task(pump())
            try:
                async for message in ws:
                    await server.channels.publish("room", message)
            finally:
                pumping.cancel()

    def deny(request: Any, response: Any) -> bool:
        response.send_text_plain("no", status=401)
        return True

    @server.websocket("race")
    async def race(ws: WebSocket, request: Any) -> None:
        # A message handed to a waiting receive() whose task is cancelled before it runs
        # (a timeout firing in the same loop turn): the next receive() gets it.
        await ws.accept()
        waiting = asyncio.create_task(ws.receive())
        while ws._receiver is None:
            await asyncio.sleep(0)
        ws._on_message("kept")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await ws.send(await ws.receive())
        await ws.send(await ws.receive())  # and the client's own message after it

    @server.websocket("private", plugins=[Plugin.create(handler=deny)])
    async def private(ws: WebSocket, request: Any) -> None:
        await ws.send("never")

    return server


def test_sync_client_round_trip(app: Packetron) -> None:
    with TestClient(app, cookies={"c": "k"}) as client:
        with client.websocket_connect("/echo/ann", subprotocols=["v1"]) as ws:
            assert ws.subprotocol == "v1"
            assert ws.receive_text() == "hello ann k"
            ws.send_text("text")
            assert ws.receive_text() == "text"
            ws.send_bytes(b"\x00\x01")
            assert ws.receive_bytes() == b"\x00\x01"
            ws.send_json({"a": 1})
            assert ws.receive_json() == {"a": 1}
            ws.send_text("bye")
            with pytest.raises(WebSocketClosed) as info:
                ws.receive()
            assert (info.value.code, info.value.reason) == (4000, "see you")
            assert ws.close_code == 4000


def test_a_cancelled_receive_loses_no_message(app: Packetron) -> None:
    with TestClient(app) as client, client.websocket_connect("/race") as ws:
        assert ws.receive_text() == "kept"
        ws.send_text("next")
        assert ws.receive_text() == "next"


def test_sync_client_sees_1009_and_refusals(app: Packetron) -> None:
    with TestClient(app) as client:
        with client.websocket_connect("/echo/x") as ws:
            ws.receive_text()
            ws.send_bytes(b"z" * 1001)
            with pytest.raises(WebSocketClosed) as info:
                ws.receive()
            assert info.value.code == 1009
        with pytest.raises(WebSocketRejected) as refused:
            client.websocket_connect("/private")
        assert refused.value.response.status_code == 401
        assert refused.value.response.text == "no"
        assert client.get("/echo/x").status_code == 426


def test_two_clients_share_channels_in_memory(app: Packetron) -> None:
    with TestClient(app) as client:
        with client.websocket_connect("/room") as ann, client.websocket_connect("/room") as bob:
            assert ann.receive_text() == "joined"
            assert bob.receive_text() == "joined"
            ann.send_text("hi all")
            assert ann.receive_text() == "hi all"
            assert bob.receive_text() == "hi all"


def test_async_client_round_trip(app: Packetron) -> None:
    async def main() -> None:
        async with AsyncTestClient(app) as client:
            async with client.websocket_connect("/echo/bob") as ws:
                assert await ws.receive_text() == "hello bob None"
                await ws.send_text("ping")
                assert await ws.receive_text() == "ping"
            ws2 = await client.websocket_connect("/echo/eve")
            assert await ws2.receive_text() == "hello eve None"
            await ws2.close()

    asyncio.run(main())


def test_leaving_the_client_hangs_up_open_sockets(app: Packetron) -> None:
    ended: list[Any] = []

    @app.websocket("wait")
    async def wait(ws: WebSocket, request: Any) -> None:
        try:
            while True:
                await ws.send(await ws.receive())
        except WebSocketClosed as exc:
            ended.append(exc.code)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    with TestClient(app) as client:
        ws = client.websocket_connect("/wait")
        ws.send_text("first")
        assert ws.receive_text() == "first"
    # Hung up without a close frame: the handler saw the loss, or was cancelled with the
    # client's loop; either way it is not left pending.
    assert ended in ([1006], ["cancelled"])
