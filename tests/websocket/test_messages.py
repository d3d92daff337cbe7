"""Messages, closing, subprotocols and refusals against the `websockets` client library."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from rawws import RawClient
from wshelp import run, wait_for, ws_url
from packetron import HttpError, Plugin, WebSocket, WebSocketClosed


def echo_server(make: Any, **options: Any) -> Any:
    server = make(**options)

    @server.websocket("echo")
    async def echo(ws: WebSocket, request: Any) -> None:
        async for message in ws:
            await ws.send(message)

    return server.start()


def test_text_binary_and_big_messages_echo(make_server: Any) -> None:
    server = echo_server(make_server)

    async def client() -> None:
        async with websockets.connect(ws_url(server, "echo"), max_size=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff\x01")
            assert await ws.recv() == b"\x00\xff\x01"
            big = bytes(range(256)) * 4096  # exactly 1 MiB: the default cap still takes it
            await ws.send(big)
            assert await ws.recv() == big
            text = "ü" * (512 * 1024)  # 1 MiB of UTF-8
            await ws.send(text)
            assert await ws.recv() == text
            await ws.send("")
            assert await ws.recv() == ""

    run(client())


def test_fragmented_messages_are_joined(make_server: Any) -> None:
    server = echo_server(make_server)

    async def client() -> None:
        async with websockets.connect(ws_url(server, "echo")) as ws:
            await ws.send(["frag", "ment", "ed ✓"])
            assert await ws.recv() == "fragmented ✓"
            await ws.send([b"\x01", b"\x02" * 70000, b"\x03"])
            assert await ws.recv() == b"\x01" + b"\x02" * 70000 + b"\x03"
            # A ping between fragments is answered, and the message still arrives whole.
            pong = await ws.ping(b"between")
            await asyncio.wait_for(pong, 5)

    run(client())


def test_client_ping_gets_pong(make_server: Any) -> None:
    server = echo_server(make_server)

    async def client() -> float:
        async with websockets.connect(ws_url(server, "echo"), ping_interval=None) as ws:
            return await asyncio.wait_for(await ws.ping(b"are you there"), 5)

    assert run(client()) >= 0


def test_path_params_and_request_reach_the_handler(make_server: Any) -> None:
    server = make_server()

    @server.websocket("rooms/{room}/users/{uid:int}")
    async def room(ws: WebSocket, request: Any) -> None:
        await ws.send(f"{ws.path_params['room']}:{ws.path_params['uid'] + 1}:"
                      f"{request.get_query_params().get('q')}:{request.headers.get('x-a')}")

    server.start()

    async def client() -> str:
        async with websockets.connect(ws_url(server, "rooms/blue/users/41?q=z"),
                                      additional_headers={"X-A": "b"}) as ws:
            return str(await ws.recv())

    assert run(client()) == "blue:42:z:b"


def test_close_codes_and_reasons_both_ways(make_server: Any) -> None:
    server = make_server()
    seen: list[tuple[int, str]] = []

    @server.websocket("closer")
    async def closer(ws: WebSocket, request: Any) -> None:
        message = await ws.receive()
        if message == "close me":
            await ws.close(4000, "as you wish")
            with pytest.raises(WebSocketClosed):
                await ws.send("after close")
            return
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            seen.append((exc.code, exc.reason))
            assert (ws.close_code, ws.close_reason) == (exc.code, exc.reason)

    server.start()

    async def client() -> None:
        async with websockets.connect(ws_url(server, "closer")) as ws:
            await ws.send("close me")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "as you wish")
        async with websockets.connect(ws_url(server, "closer")) as ws:
            await ws.send("wait")
            await ws.close(4001, "bye now")

    run(client())
    assert seen == [(4001, "bye now")]


def test_a_close_without_a_code_is_answered_without_one(make_server: Any) -> None:
    server = make_server()
    seen: list[tuple[int, str]] = []

    @server.websocket("wait")
    async def wait(ws: WebSocket, request: Any) -> None:
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            seen.append((exc.code, exc.reason))

    server.start()
    with RawClient(server.port, "/wait") as client:
        client.send_frame(0x8, b"")
        assert client.read_to_eof() == b"\x88\x00"  # RFC 6455 §7.1.5: 1005 is never sent
    assert wait_for(lambda: seen == [(1005, "")])


def test_handler_returning_closes_1000_and_raising_closes_1011(make_server: Any) -> None:
    server = make_server()

    @server.websocket("done")
    async def done(ws: WebSocket, request: Any) -> None:
        await ws.send("bye")

    @server.websocket("boom")
    async def boom(ws: WebSocket, request: Any) -> None:
        await ws.accept()
        raise RuntimeError("handler bug")

    server.start()

    async def client(path: str) -> tuple[int, str]:
        async with websockets.connect(ws_url(server, path)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.recv()
            assert info.value.rcvd is not None
            return info.value.rcvd.code, info.value.rcvd.reason

    assert run(client("done")) == (1000, "")
    assert run(client("boom")) == (1011, "internal error")


def test_receive_after_close_raises_and_async_for_ends(make_server: Any) -> None:
    server = make_server()
    results: list[Any] = []

    @server.websocket("iter")
    async def iterate(ws: WebSocket, request: Any) -> None:
        results.extend([message async for message in ws])
        try:
            await ws.receive()
        except WebSocketClosed as exc:
            results.append(exc.code)

    server.start()

    async def client() -> None:
        async with websockets.connect(ws_url(server, "iter")) as ws:
            await ws.send("a")
            await ws.send(b"b")

    run(client())
    assert wait_for(lambda: len(results) == 3)
    assert results == ["a", b"b", 1000]


def test_subprotocol_negotiation_and_accept_headers(make_server: Any) -> None:
    server = make_server()

    @server.websocket("proto")
    async def proto(ws: WebSocket, request: Any) -> None:
        chosen = "chat.v1" if "chat.v1" in ws.subprotocols else None
        await ws.accept(subprotocol=chosen, headers=[("X-Room", "lobby")])
        await ws.send(",".join(ws.subprotocols))

    server.start()

    async def client(offer: list[str] | None) -> tuple[str | None, str | None, str]:
        kwargs: dict[str, Any] = {"subprotocols": offer} if offer else {}
        async with websockets.connect(ws_url(server, "proto"), **kwargs) as ws:
            assert ws.response is not None
            return ws.subprotocol, ws.response.headers.get("x-room"), str(await ws.recv())

    assert run(client(["chat.v2", "chat.v1"])) == ("chat.v1", "lobby", "chat.v2,chat.v1")
    assert run(client(None)) == (None, "lobby", "")


def test_accepting_an_unoffered_subprotocol_is_a_500(make_server: Any) -> None:
    server = make_server()

    @server.websocket("bad")
    async def bad(ws: WebSocket, request: Any) -> None:
        await ws.accept(subprotocol="never-offered")

    server.start()

    async def client() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(server, "bad"), subprotocols=["x"]):
                pass
        return info.value.response.status_code

    assert run(client()) == 500


def test_handler_refusing_before_accept(make_server: Any) -> None:
    server = make_server()

    @server.websocket("closed-first")
    async def closed_first(ws: WebSocket, request: Any) -> None:
        await ws.close()

    @server.websocket("returned")
    async def returned(ws: WebSocket, request: Any) -> None:
        return None

    @server.websocket("teapot")
    async def teapot(ws: WebSocket, request: Any) -> None:
        raise HttpError("no tea", status_code=418)

    server.start()

    async def status(path: str) -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(server, path)):
                pass
        return info.value.response.status_code

    assert run(status("closed-first")) == 403
    assert run(status("returned")) == 403
    assert run(status("teapot")) == 418


@pytest.mark.parametrize("where", ["route", "global"])
def test_plugin_refuses_the_upgrade_with_its_status(make_server: Any, where: str) -> None:
    def auth(request: Any, response: Any) -> bool:
        if request.headers.get("authorization") == "Bearer ok":
            return False
        response.send_status_code(401 if where == "route" else 403)
        return True

    plugin = Plugin.create(handler=auth)
    server = make_server(plugins=[plugin] if where == "global" else [])
    calls: list[str] = []

    @server.websocket("private", plugins=[plugin] if where == "route" else [])
    async def private(ws: WebSocket, request: Any) -> None:
        calls.append("in")
        await ws.send("welcome")

    server.start()

    async def refused() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_url(server, "private")):
                pass
        return info.value.response.status_code

    async def allowed() -> str:
        async with websockets.connect(ws_url(server, "private"),
                                      additional_headers={"Authorization": "Bearer ok"}) as ws:
            return str(await ws.recv())

    assert run(refused()) == (401 if where == "route" else 403)
    assert calls == []
    assert run(allowed()) == "welcome"
    assert calls == ["in"]


def test_async_plugin_and_after_hook_headers_reach_the_101(make_server: Any) -> None:
    async def slow_auth(request: Any, response: Any) -> bool:
        await asyncio.sleep(0)
        response.set_header("X-Checked", "yes")
        return False

    def stamp(request: Any, response: Any) -> None:
        response.set_header("X-Status", str(response.status))

    server = make_server(plugins=[Plugin.create(handler=slow_auth, after=stamp)])

    @server.websocket("stamped")
    async def stamped(ws: WebSocket, request: Any) -> None:
        await ws.send("ok")

    server.start()

    async def client() -> tuple[str | None, str | None]:
        async with websockets.connect(ws_url(server, "stamped")) as ws:
            assert ws.response is not None
            assert await ws.recv() == "ok"
            return ws.response.headers.get("x-checked"), ws.response.headers.get("x-status")

    assert run(client()) == ("yes", "101")


def test_registration_is_checked(make_server: Any) -> None:
    from packetron.errors import ConfigError
    from packetron.flags import HandlerFlags

    server = make_server()
    with pytest.raises(ConfigError, match="async"):
        server.websocket("sync", lambda ws, request: None)
    with pytest.raises(ConfigError, match="LOCAL_PLUGINS_ONLY"):
        server.websocket("json", flags=HandlerFlags.JSON_BODY)(_noop)
    route = server.websocket("ok", _noop)
    assert route.remove() is True


async def _noop(ws: WebSocket, request: Any) -> None:
    return None


def test_a_websocket_route_and_plain_routes_share_a_server(make_server: Any) -> None:
    server = echo_server(make_server)
    server.get("plain", lambda request, response: response.send_text_plain("plain"))
    import requests

    assert requests.get(f"{server.url}/plain", timeout=5).text == "plain"

    async def client() -> Any:
        async with websockets.connect(ws_url(server, "echo")) as ws:
            await ws.send("x")
            return await ws.recv()

    assert run(client()) == "x"
    assert requests.get(f"{server.url}/plain", timeout=5).text == "plain"
