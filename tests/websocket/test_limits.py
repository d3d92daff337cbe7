"""What a peer cannot do: oversized messages (1009), deflate bombs (1009, never inflated),
protocol violations (1002, 1007), unread output (backpressure), silence (pings), vanishing."""
from __future__ import annotations

import asyncio
import threading
import tracemalloc
from typing import Any

import pytest
import websockets
from rawws import RawClient
from websockets.exceptions import ConnectionClosed
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection
from wsproto.extensions import PerMessageDeflate
from wshelp import Recorder, run, wait_for, ws_url

from packetron import WebSocket, WebSocketClosed
from packetron.http.websocket.extensions import Inflater, negotiate_deflate
from packetron.http.websocket.frames import FrameReader


def echo_server(make_server: Any, **options: Any) -> Any:
    server = make_server(**options)
    server.test_closes = []  # type: ignore[attr-defined]

    @server.websocket("echo")
    async def echo(ws: WebSocket, request: Any) -> None:
        try:
            while True:
                await ws.send(await ws.receive())
        except WebSocketClosed as exc:
            server.test_closes.append(exc.code)  # type: ignore[attr-defined]

    return server.start()


def closed_with(coro: Any) -> tuple[int, str]:
    async def client() -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as info:
            await coro()
        assert info.value.rcvd is not None, info.value
        return info.value.rcvd.code, info.value.rcvd.reason
    return run(client())


def test_a_message_over_max_message_size_is_closed_1009(make_server: Any) -> None:
    server = echo_server(make_server, max_message_size=1000)

    async def exactly_the_cap() -> None:
        async with websockets.connect(ws_url(server, "echo"), compression=None) as ws:
            await ws.send(b"x" * 1000)
            assert await ws.recv() == b"x" * 1000
            await ws.send([b"y" * 600, b"y" * 401])  # fragments add up past the cap
            await ws.recv()

    assert closed_with(exactly_the_cap) == (1009, "message too big")


def test_an_announced_oversized_frame_is_refused_before_its_payload(make_server: Any) -> None:
    server = echo_server(make_server, max_message_size=1024)
    with RawClient(server.port, "/echo") as client:
        client.send_frame(0x2, b"", length=1 << 30)  # announces 1 GiB, sends nothing
        assert client.close_code() == (1009, "message too big")


def test_deflate_is_negotiated_and_works(make_server: Any) -> None:
    server = echo_server(make_server)

    async def client() -> str | None:
        async with websockets.connect(ws_url(server, "echo"), compression="deflate",
                                      max_size=None) as ws:
            assert ws.response is not None
            for message in ("a" * 100_000, b"\x00" * 300_000, "short", "a" * 100_000):
                await ws.send(message)
                assert await ws.recv() == message
            return ws.response.headers.get("sec-websocket-extensions")

    extensions = run(client())
    assert extensions is not None and extensions.startswith("permessage-deflate")


def test_deflate_without_context_takeover_works(make_server: Any) -> None:
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    server = echo_server(make_server)
    factory = ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                             client_no_context_takeover=True,
                                             server_max_window_bits=10,
                                             client_max_window_bits=11)

    async def client() -> str | None:
        async with websockets.connect(ws_url(server, "echo"), compression=None,
                                      extensions=[factory]) as ws:
            assert ws.response is not None
            for message in ("b" * 5000, "b" * 5000, b"\x01\x02" * 3000, "", "ok"):
                await ws.send(message)
                assert await ws.recv() == message
            return ws.response.headers.get("sec-websocket-extensions")

    assert run(client()) == ("permessage-deflate; client_no_context_takeover; "
                             "server_no_context_takeover; client_max_window_bits=11; "
                             "server_max_window_bits=10")


def test_a_deflate_bomb_is_closed_1009(make_server: Any) -> None:
    server = echo_server(make_server, max_message_size=64 * 1024)

    async def bomb() -> None:
        async with websockets.connect(ws_url(server, "echo"), compression="deflate") as ws:
            await ws.send(b"\x00" * (16 * 1024 * 1024))  # ~16 KiB on the wire
            await ws.recv()

    assert closed_with(bomb) == (1009, "message too big")
    assert wait_for(lambda: server.test_closes == [1009])


def _client_frames(deflate: PerMessageDeflate, payload_chunks: Any) -> bytes:
    """A compressed binary message, fragmented, as a client sends it."""
    client = Connection(ConnectionType.CLIENT, extensions=[deflate])
    parts = list(payload_chunks)
    data = b""
    for index, part in enumerate(parts):
        data += client.send(BytesMessage(data=part, message_finished=index == len(parts) - 1))
    return data


def test_capped_deflate_never_inflates_past_the_cap() -> None:
    """64 MiB of zeros compress to ~64 KiB; inflating it under a 1 MiB cap must allocate
    about the cap, not the bomb."""
    cap = 1024 * 1024
    offer = "permessage-deflate; client_max_window_bits"
    params, answer = negotiate_deflate((offer,))  # type: ignore[misc]
    client_ext = PerMessageDeflate(client_max_window_bits=15)
    client_ext.finalize(answer)
    wire = _client_frames(client_ext, (b"\x00" * (1 << 20) for _ in range(64)))
    assert len(wire) < 200_000
    recorder = Recorder()
    reader = FrameReader(recorder, cap, Inflater(params))
    tracemalloc.start()
    try:
        for start in range(0, len(wire), 16 * 1024):
            reader.feed(wire[start:start + 16 * 1024])
            if reader.stopped:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert recorder.heard == [("violation", 1009)]
    assert peak < 4 * cap, peak


def test_the_cap_counts_uncompressed_fragments() -> None:
    recorder = Recorder()
    reader = FrameReader(recorder, 10)
    client = Connection(ConnectionType.CLIENT)
    reader.feed(client.send(BytesMessage(data=b"12345", message_finished=False)))
    assert recorder.heard == [] and not reader.stopped
    reader.feed(client.send(BytesMessage(data=b"123456", message_finished=True)))
    assert recorder.heard == [("violation", 1009)]


@pytest.mark.parametrize("offer, accepted", [
    ("permessage-deflate", "permessage-deflate"),
    ("permessage-deflate; client_max_window_bits",
     "permessage-deflate; client_max_window_bits=15"),
    ("permessage-deflate; server_max_window_bits=10",
     "permessage-deflate; server_max_window_bits=10"),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
     "permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
    ("permessage-deflate; client_max_window_bits=9; server_max_window_bits=15",
     "permessage-deflate; client_max_window_bits=9; server_max_window_bits=15"),
    ("permessage-deflate; unknown_param", None),
    ("permessage-deflate; server_no_context_takeover=yes", None),
    ("permessage-deflate; client_max_window_bits=10; client_max_window_bits=11", None),
    ("permessage-deflate; client_max_window_bits=16", None),
    ("permessage-deflate; server_max_window_bits=8", None),
    ("permessage-deflate; server_max_window_bits=x", None),
    ("x-webkit-deflate-frame", None),
])
def test_deflate_offers(offer: str, accepted: str | None) -> None:
    result = negotiate_deflate((offer,))
    assert (result[1] if result else None) == accepted


@pytest.mark.parametrize("frame, code", [
    pytest.param(dict(opcode=0x1, payload=b"unmasked", mask=False), 1002, id="unmasked"),
    pytest.param(dict(opcode=0x3, payload=b"x"), 1002, id="reserved-opcode"),
    pytest.param(dict(opcode=0xB, payload=b""), 1002, id="reserved-control-opcode"),
    pytest.param(dict(opcode=0x1, payload=b"x", rsv=0b010), 1002, id="rsv2"),
    pytest.param(dict(opcode=0x1, payload=b"x", rsv=0b100), 1002, id="rsv1-not-negotiated"),
    pytest.param(dict(opcode=0x9, payload=b"p" * 126), 1002, id="control-over-125"),
    pytest.param(dict(opcode=0x9, payload=b"p", fin=False), 1002, id="fragmented-control"),
    pytest.param(dict(opcode=0x0, payload=b"orphan"), 1002, id="continuation-first"),
    pytest.param(dict(opcode=0x1, payload=b"\xff\xfe"), 1007, id="invalid-utf8"),
    pytest.param(dict(opcode=0x8, payload=b"\x03\xe8\xff"), 1007, id="close-reason-utf8"),
    pytest.param(dict(opcode=0x8, payload=b"\x03\xed"), 1002, id="close-code-1005"),
])
def test_protocol_violations_close_with_their_code(make_server: Any, frame: dict[str, Any],
                                                   code: int) -> None:
    server = echo_server(make_server)
    with RawClient(server.port, "/echo") as client:
        client.send_frame(**frame)
        assert client.close_code()[0] == code
        assert client.read_to_eof() is not None  # the server closes after its close frame
    assert wait_for(lambda: server.test_closes == [code])


def test_a_client_that_never_reads_blocks_send_and_bounds_the_buffer(make_server: Any) -> None:
    server = make_server()
    progress = {"sent": 0, "in_send": False, "max_buffered": 0}
    chunk = b"z" * 65536

    @server.websocket("flood")
    async def flood(ws: WebSocket, request: Any) -> None:
        while True:
            progress["in_send"] = True
            await ws.send(chunk)
            progress["in_send"] = False
            progress["sent"] += 1
            progress["max_buffered"] = max(progress["max_buffered"], ws.buffered_amount)

    server.start()
    with RawClient(server.port, "/flood", rcvbuf=65536):
        # Wait until sending stalls: the count stops moving while send() waits.
        last, stable_since = -1, 0.0
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if progress["sent"] != last:
                last, stable_since = progress["sent"], time.monotonic()
            elif time.monotonic() - stable_since > 0.5:
                break
            time.sleep(0.02)
        assert progress["in_send"] is True
        # Far less than the flood would be by now; bounded by the kernel's socket buffers.
        assert progress["sent"] < 400, progress
        # One message over asyncio's 64 KiB high-water mark at most.
        assert progress["max_buffered"] <= 64 * 1024 + len(chunk) + 1024, progress


def test_a_handler_that_never_reads_pauses_reading(make_server: Any) -> None:
    server = make_server()
    paused: list[bool] = []
    release = threading.Event()

    @server.websocket("deaf")
    async def deaf(ws: WebSocket, request: Any) -> None:
        await ws.accept()
        while not release.is_set():
            await asyncio.sleep(0.01)
            if ws._reading_paused and not paused:
                paused.append(True)
        count = 0
        async for _ in ws:
            count += 1
            if count == 40:
                await ws.send("got 40")

    server.start()

    async def client() -> Any:
        async with websockets.connect(ws_url(server, "deaf")) as ws:
            for _ in range(40):
                await ws.send("m" * 100)
            await asyncio.get_running_loop().run_in_executor(None, wait_for, lambda: paused)
            release.set()
            return await ws.recv()

    assert run(client()) == "got 40"
    assert paused == [True]


def test_pings_keep_a_live_peer_and_close_a_silent_one(make_server: Any) -> None:
    from wsproto.events import Ping, Pong, TextMessage

    server = echo_server(make_server, ping_interval=1, ping_timeout=1)
    with RawClient(server.port, "/echo") as client:
        pings = [e for e in client.events(5) if isinstance(e, Ping)]
        assert pings, "no ping within 5 s"
        client.sock.sendall(client.conn.send(Pong(payload=pings[0].payload)))
        client.sock.sendall(client.conn.send(TextMessage(data="still here")))
        events = client.events(5)
        assert any(isinstance(e, TextMessage) and e.data == "still here" for e in events)
        # Now silent: the next ping goes unanswered and the server gives up (1011).
        code = None
        for _ in range(10):
            for event in client.events(5):
                if isinstance(event, CloseConnection):
                    code = event.code
            if code is not None:
                break
        assert code in (1011, 1006)
    assert wait_for(lambda: server.test_closes == [1011])


@pytest.mark.parametrize("options", [dict(max_message_size=0), dict(ping_interval=0),
                                     dict(ping_timeout=-1), dict(ping_interval=True)])
def test_websocket_options_are_checked(options: dict[str, Any]) -> None:
    from packetron import Packetron
    from packetron.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(options))):
        Packetron(port=0, workers=1, **options)


def test_a_vanished_peer_ends_the_handler_and_leaves_nothing(make_server: Any) -> None:
    server = echo_server(make_server)
    client = RawClient(server.port, "/echo")
    state = server._serving.state
    assert wait_for(lambda: len(state.connections) == 1)
    client.sock.close()  # no close frame
    assert wait_for(lambda: server.test_closes == [1006])
    assert wait_for(lambda: not state.connections)
