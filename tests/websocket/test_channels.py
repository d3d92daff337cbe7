"""server.channels: in one process, across worker processes (the pool's hub), across
servers on one Redis; slow subscribers drop their oldest messages, never the publisher."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import threading
from typing import Any, Iterator

import pytest
import websockets
from wshelp import run, wait_for, ws_url

from packetron import Packetron, WebSocket
from packetron.http.channels import LocalChannels
from packetron.http.channels.codec import MAX_MESSAGE_BYTES, decode, encode
from packetron.server.channelhub import (ACK, SUBSCRIBE, ChannelHub, new_framer,
                                         parse_publish, publish_frame)


def add_room(server: Packetron) -> None:
    """A chat room: every message a client sends reaches every client of the room."""

    @server.websocket("room/{name}")
    async def room(ws: WebSocket, request: Any) -> None:
        name = ws.path_params["name"]
        async with server.channels.subscribe(name) as messages:
            await ws.send(f"pid {os.getpid()}")

            async def pump() -> None:
                async for message in messages:
                    await ws.send(message)

            pumping = asyncio.create_task(pump())
            try:
                async for message in ws:
                    await server.channels.publish(name, message)
            finally:
                pumping.cancel()


def test_channels_in_one_process(make_server: Any) -> None:
    server = make_server()
    add_room(server)
    server.start()

    async def client() -> None:
        async with websockets.connect(ws_url(server, "room/a")) as ann, \
                websockets.connect(ws_url(server, "room/a")) as bob, \
                websockets.connect(ws_url(server, "room/b")) as eve:
            for ws in (ann, bob, eve):
                assert str(await ws.recv()).startswith("pid ")
            await ann.send("hello room a")
            assert await ann.recv() == "hello room a"
            assert await bob.recv() == "hello room a"
            await eve.send(b"only b")
            assert await eve.recv() == b"only b"
            await bob.send("second")
            assert await ann.recv() == "second"
            assert await bob.recv() == "second"

    run(client())


async def connect_to_two_workers(server: Packetron, path: str) -> list[tuple[str, Any]]:
    """Open fresh connections until two different worker processes answered."""
    found: dict[str, Any] = {}
    for _ in range(200):
        ws = await websockets.connect(ws_url(server, path))
        pid = str(await ws.recv()).split()[1]
        if pid in found:
            await ws.close()
            continue
        found[pid] = ws
        if len(found) == 2:
            return list(found.items())
    for ws in found.values():
        await ws.close()
    raise AssertionError("every connection went to the same worker")


def test_channels_across_two_worker_processes() -> None:
    server = Packetron(port=0, host="127.0.0.1", workers=2)
    add_room(server)

    @server.get("pid")
    def pid(request: Any, response: Any) -> None:
        response.send_text_plain(str(os.getpid()))

    server.start()
    try:
        async def client() -> None:
            (pid1, ws1), (pid2, ws2) = await connect_to_two_workers(server, "room/x")
            try:
                assert pid1 != pid2 and str(os.getpid()) not in (pid1, pid2)
                await ws1.send("from the first worker")
                assert await ws1.recv() == "from the first worker"
                assert await ws2.recv() == "from the first worker"
                await ws2.send(b"\x00 from the second")
                assert await ws1.recv() == b"\x00 from the second"
                assert await ws2.recv() == b"\x00 from the second"
            finally:
                await ws1.close()
                await ws2.close()

        run(client())
        # The HTTP side reports the same worker pids (fresh connections, one per request).
        import requests

        pids = {requests.get(f"{server.url}/pid", headers={"Connection": "close"},
                             timeout=5).text for _ in range(20)}
        assert str(os.getpid()) not in pids
    finally:
        server.stop(timeout=5)


# ---------------------------------------------------------------- in-process backend


def test_message_types_survive(make_server: Any) -> None:
    async def main() -> list[Any]:
        channels = LocalChannels()
        received = []
        async with channels.subscribe("t") as sub:
            for message in ("text", b"bytes", {"a": [1, 2.5, None, True]}, [1], 7, None):
                await channels.publish("t", message)
            for _ in range(6):
                received.append(await sub.__anext__())
        return received

    assert run(main()) == ["text", b"bytes", {"a": [1, 2.5, None, True]}, [1], 7, None]


def test_json_messages_are_copied_per_subscriber() -> None:
    async def main() -> None:
        channels = LocalChannels()
        first, second = channels.subscribe("c"), channels.subscribe("c")
        await channels.publish("c", {"n": 1})
        a = await first.__anext__()
        a["n"] = 2
        assert await second.__anext__() == {"n": 1}

    run(main())


def test_bad_messages_and_names_are_refused() -> None:
    async def main() -> None:
        channels = LocalChannels()
        with pytest.raises(TypeError):
            await channels.publish("c", object())
        with pytest.raises(ValueError):
            await channels.publish("", "x")
        with pytest.raises(TypeError):
            channels.subscribe(b"c")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await channels.publish("c", b"x" * (MAX_MESSAGE_BYTES + 1))

    run(main())
    with pytest.raises(ValueError):
        decode(b"?garbage")
    assert decode(encode("é").wire()).value() == "é"


def test_a_slow_subscriber_drops_its_oldest_with_a_warning(caplog: Any) -> None:
    async def main() -> tuple[list[Any], list[Any], int]:
        channels = LocalChannels()
        slow = channels.subscribe("feed", max_queue=10)
        fast = channels.subscribe("feed", max_queue=1000)
        for n in range(100):
            await channels.publish("feed", n)  # never waits, whoever lags
        got_slow = [await slow.__anext__() for _ in range(10)]
        got_fast = [await fast.__anext__() for _ in range(100)]
        return got_slow, got_fast, slow.dropped

    with caplog.at_level(logging.WARNING, logger="packetron"):
        got_slow, got_fast, dropped = run(main())
    assert got_slow == list(range(90, 100))
    assert got_fast == list(range(100))
    assert dropped == 90
    warnings = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(warnings) == 1  # once per backlog, not once per message


def test_close_ends_iteration_and_unsubscribes() -> None:
    async def main() -> bool:
        channels = LocalChannels()
        sub = channels.subscribe("c")

        async def read_all() -> list[Any]:
            return [message async for message in sub]

        reader = asyncio.create_task(read_all())
        await channels.publish("c", "one")
        await asyncio.sleep(0)
        await sub.aclose()
        assert await reader == ["one"]
        return channels.has_subscribers("c")

    assert run(main()) is False


def test_a_dropped_subscription_is_forgotten() -> None:
    import gc

    async def main() -> bool:
        channels = LocalChannels()
        channels.subscribe("c")  # never kept
        gc.collect()
        await channels.publish("c", "nobody")
        return channels.has_subscribers("c")

    assert run(main()) is False


def test_publish_from_another_thread_reaches_the_serving_loop(make_server: Any) -> None:
    server = make_server()
    add_room(server)
    server.start()

    async def client() -> Any:
        async with websockets.connect(ws_url(server, "room/news")) as ws:
            await ws.recv()
            # From this thread's own loop: the subscriber lives on the server's.
            await server.channels.publish("news", "from outside")
            return await ws.recv()

    assert run(client()) == "from outside"


# ---------------------------------------------------------------- the hub, in-process


def test_the_hub_forwards_to_subscribed_links_and_sheds_a_stalled_one(caplog: Any) -> None:
    hub = ChannelHub(link_buffer_bytes=256 * 1024)
    ends = []
    for pid in (101, 102, 103):
        hub_fd, worker_fd = hub.open_link()
        hub.attach(pid, hub_fd)
        ends.append(socket.socket(fileno=worker_fd))
    publisher, listener, stalled = ends
    framer = new_framer()
    try:
        for sock in (listener, stalled):
            sock.sendall(framer.encode(SUBSCRIBE + b"room"))
        for fd in hub.read_fds():
            hub.on_readable(fd)
        for sock in (listener, stalled):
            assert new_framer().feed(sock.recv(100)) == [ACK + b"room"]
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        payload = encode(b"m" * 10_000).wire()
        listener.setblocking(False)
        received = 0
        reader = new_framer()
        with caplog.at_level(logging.WARNING, logger="packetron"):
            for _ in range(200):  # 2 MB, far over the stalled link's cap
                publisher.sendall(publish_frame(framer, b"room", payload))
                for fd in hub.read_fds():
                    hub.on_readable(fd)
                for fd in hub.write_fds():
                    hub.on_writable(fd)
                try:
                    while True:
                        for frame in reader.feed(listener.recv(1 << 20)):
                            name, wire = parse_publish(frame)
                            assert name == b"room" and wire == payload
                            received += 1
                except BlockingIOError:
                    pass
        assert received == 200  # the reading worker got every message
        link = hub._by_pid[103]
        assert link.queued <= 256 * 1024 and link.dropped > 0
        assert any("not reading" in r.getMessage() for r in caplog.records)
        publisher.sendall(publish_frame(framer, b"other", payload))  # nobody subscribed
        hub.on_readable(hub._by_pid[101].fd)
        assert hub._by_pid[102].out == type(hub._by_pid[102].out)()
        hub.detach(103)
        assert set(hub._by_pid) == {101, 102}
    finally:
        hub.close()
        for sock in ends:
            sock.close()


# ---------------------------------------------------------------- Redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH; run `bash tests/prepare.sh` to install it")
    from tests.test_globaldata import RedisServer

    redis = RedisServer(executable, tmp_path_factory.mktemp("redis-channels"))
    redis.start()
    try:
        yield redis.url
    finally:
        redis.stop()


def test_channels_across_servers_through_redis(redis_url: str) -> None:
    first = Packetron(port=0, host="127.0.0.1", workers=1, global_data_url=redis_url)
    second = Packetron(port=0, host="127.0.0.1", workers=2, global_data_url=redis_url)
    for server in (first, second):
        add_room(server)
    first.start()
    second.start()
    try:
        async def client() -> None:
            async with websockets.connect(ws_url(first, "room/r")) as ann, \
                    websockets.connect(ws_url(second, "room/r")) as bob:
                await ann.recv()
                await bob.recv()
                await ann.send("over redis")
                assert await ann.recv() == "over redis"
                assert await bob.recv() == "over redis"
                await bob.send(b"back")
                assert await ann.recv() == b"back"
                assert await bob.recv() == b"back"

        run(client())
    finally:
        first.stop(timeout=3)
        second.stop(timeout=3)


def test_redis_channels_types_and_unsubscribe(redis_url: str) -> None:
    from packetron.http.channels.redis import RedisChannels

    async def main() -> list[Any]:
        channels = RedisChannels(redis_url)
        try:
            got = []
            async with channels.subscribe("typed") as sub:
                for message in ("s", b"b", {"k": [1]}):
                    await channels.publish("typed", message)
                for _ in range(3):
                    got.append(await asyncio.wait_for(sub.__anext__(), 5))
            assert not channels.has_subscribers("typed")
            return got
        finally:
            await channels.close()

    assert run(main()) == ["s", b"b", {"k": [1]}]


def test_publish_from_a_thread_without_the_link_uses_its_own_client(redis_url: str) -> None:
    server = Packetron(port=0, host="127.0.0.1", workers=1, global_data_url=redis_url)
    add_room(server)
    server.start()
    try:
        async def client() -> Any:
            async with websockets.connect(ws_url(server, "room/t")) as ws:
                await ws.recv()
                result: list[Exception] = []

                def publish() -> None:
                    try:
                        asyncio.run(server.channels.publish("t", "via a thread"))
                    except Exception as exc:  # reported below
                        result.append(exc)

                thread = threading.Thread(target=publish)
                thread.start()
                message = await ws.recv()
                thread.join(5)
                assert result == []
                return message

        assert run(client()) == "via a thread"
    finally:
        server.stop(timeout=3)


def test_many_publishers_never_wait_on_a_stalled_subscriber(make_server: Any) -> None:
    """Handlers publishing in a loop finish while a subscriber never reads."""
    server = make_server()
    done = threading.Event()

    @server.on_startup
    async def stall(app: Any) -> None:
        app.state.stalled = app.channels.subscribe("firehose", max_queue=5)

    @server.get("burst")
    async def burst(request: Any, response: Any) -> None:
        for n in range(5000):
            await server.channels.publish("firehose", n)
        done.set()
        response.send_text_plain("ok")

    server.start()
    import requests

    assert requests.get(f"{server.url}/burst", timeout=10).text == "ok"
    assert done.is_set()
    assert wait_for(lambda: server.state.stalled.dropped == 4995)
