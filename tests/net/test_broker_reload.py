"""Broker hot reload: changed, new, removed and broken files; the poller itself."""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from nethelp import LOOPS, free_port, run, wait_until, write_source
from packetron.net import Broker, open_connection

LOCAL = "127.0.0.1"

VERSIONED = """
VERSION = {v!r}

async def open(ctx):
    await ctx.shared.set("open:" + VERSION, True)

async def close(ctx):
    # Runs once, after this version's connections ended (or the grace period).
    await ctx.shared.incr("close:" + VERSION)
    await ctx.shared.set("aborted:" + VERSION, ctx.signal.aborted)
    await ctx.shared.set("reason:" + VERSION, ctx.signal.reason)

async def handle(conn, ctx):
    while line := await conn.readline():
        conn.write(VERSION.encode() + b":" + line)
"""


def make_broker(directory, **kwargs) -> Broker:
    kwargs.setdefault("poll_interval", None)
    return Broker(directory, host=LOCAL, **kwargs)


async def ask(conn, text: bytes) -> bytes:
    conn.write(text + b"\n")
    return await conn.readline()


async def one_shot(port: int, text: bytes = b"hi") -> bytes:
    conn = await open_connection(LOCAL, port)
    try:
        return await ask(conn, text)
    finally:
        conn.close()
        await conn.wait_closed()


@pytest.mark.parametrize("loop", LOOPS)
def test_reload_keeps_the_open_connection_on_old_code_and_new_ones_get_new_code(tmp_path, loop):
    port = free_port()
    path = tmp_path / f"ver.tcp.{port}.port.py"
    write_source(path, VERSIONED.format(v="v1"))

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        shared = broker.shared
        old = await open_connection(LOCAL, port)
        assert await ask(old, b"a") == b"v1:a\n"
        write_source(path, VERSIONED.format(v="v2"))
        await broker.rescan()
        assert broker.handlers[0].generation == 2
        assert await shared.get("open:v2") is True
        # The open connection was not cut and still runs the old code...
        assert await ask(old, b"b") == b"v1:b\n"
        # ...while a new one gets the new code.
        assert await one_shot(port, b"c") == b"v2:c\n"
        # Old close() waits for the old connection to end, then runs exactly once.
        assert await shared.get("close:v1") is None
        old.close()
        await _wait_shared(shared, "close:v1", 1)
        assert await shared.get("aborted:v1") is True
        assert await shared.get("reason:v1") == "reload"
        await broker.stop()
        assert await shared.get("close:v1") == 1  # not run a second time by stop()

    run(main(), loop=loop)


async def _wait_shared(shared, key, value, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await shared.get(key) != value:
        assert loop.time() < deadline, f"{key} never became {value!r}"
        await asyncio.sleep(0.01)


def test_old_close_runs_after_the_grace_period_even_if_connections_remain(tmp_path):
    port = free_port()
    path = tmp_path / f"ver.tcp.{port}.port.py"
    write_source(path, VERSIONED.format(v="v1"))

    async def main():
        broker = make_broker(tmp_path, reload_grace=0.1)
        await broker.start()
        shared = broker.shared
        old = await open_connection(LOCAL, port)
        assert await ask(old, b"a") == b"v1:a\n"
        write_source(path, VERSIONED.format(v="v2"))
        await broker.rescan()
        await _wait_shared(shared, "close:v1", 1)
        assert await ask(old, b"still") == b"v1:still\n"  # and the connection lives on
        old.close()
        await broker.stop()

    run(main())


def test_an_import_error_during_reload_keeps_the_old_version(tmp_path, caplog):
    port = free_port()
    path = tmp_path / f"ver.tcp.{port}.port.py"
    write_source(path, VERSIONED.format(v="v1"))

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        with caplog.at_level(logging.ERROR, logger="packetron"):
            write_source(path, "def handle(conn, ctx)\n    return 1\n")
            await broker.rescan()
        errors = [r for r in caplog.records if "previous version keeps serving" in r.getMessage()]
        assert len(errors) == 1 and "SyntaxError" in errors[0].getMessage()
        assert await one_shot(port) == b"v1:hi\n"
        assert broker.handlers[0].generation == 1
        await broker.rescan()  # the same broken file is not reported again
        assert len([r for r in caplog.records if "keeps serving" in r.getMessage()]) == 1
        # A module that imports but lacks handle() is refused the same way.
        write_source(path, "def handler(conn, ctx):\n    pass\n")
        await broker.rescan()
        assert await one_shot(port) == b"v1:hi\n"
        # Fixed: the next version loads.
        write_source(path, VERSIONED.format(v="v3"))
        await broker.rescan()
        assert await one_shot(port) == b"v3:hi\n"
        await broker.stop()

    run(main())


def test_new_file_opens_its_port_and_removed_file_closes_it(tmp_path):
    port = free_port()

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        assert broker.ports == {}
        path = tmp_path / f"late.tcp.{port}.port.py"
        write_source(path, VERSIONED.format(v="late"))
        await broker.rescan()
        assert broker.ports == {("tcp", port): "late"}
        held = await open_connection(LOCAL, port)
        assert await ask(held, b"x") == b"late:x\n"
        path.unlink()
        await broker.rescan()
        assert broker.ports == {}
        try:
            refused = await open_connection(LOCAL, port)
        except ConnectionRefusedError:
            pass
        else:
            refused.close()
            raise AssertionError("the port of a removed file still accepts")
        assert await broker.shared.get("reason:late") is None  # close waits for `held`
        held.close()
        await _wait_shared(broker.shared, "close:late", 1)
        assert await broker.shared.get("reason:late") == "removed"
        await broker.stop()

    run(main())


def test_udp_reload_switches_code_for_the_next_datagram(tmp_path):
    port = free_port(socket.SOCK_DGRAM)
    path = tmp_path / f"tag.udp.{port}.port.py"
    write_source(path, "def message(m, r, ctx):\n    ctx.reply(b'v1:' + m, r)\n")

    async def main():
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                got.put_nowait(data)

        broker = make_broker(tmp_path)
        await broker.start()
        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(LOCAL, port))
        transport.sendto(b"a")
        assert await got.get() == b"v1:a"
        write_source(path, "async def message(m, r, ctx):\n    ctx.reply(b'v2:' + m, r)\n")
        await broker.rescan()
        transport.sendto(b"b")
        assert await got.get() == b"v2:b"
        transport.close()
        await broker.stop()

    run(main())


def test_the_poller_notices_changes_without_rescan_calls(tmp_path):
    port = free_port()

    async def main():
        broker = make_broker(tmp_path, poll_interval=0.02)
        await broker.start()
        path = tmp_path / f"polled.tcp.{port}.port.py"
        write_source(path, VERSIONED.format(v="p1"))
        await wait_until(lambda: ("tcp", port) in broker.ports)
        assert await one_shot(port) == b"p1:hi\n"
        write_source(path, VERSIONED.format(v="p2"))
        await wait_until(lambda: broker.handlers and broker.handlers[0].generation == 2)
        assert await one_shot(port) == b"p2:hi\n"
        await broker.stop()

    run(main())


def test_stop_fires_signals_and_runs_close_once(tmp_path):
    port = free_port()
    write_source(tmp_path / f"ver.tcp.{port}.port.py", VERSIONED.format(v="s"))

    async def main():
        broker = make_broker(tmp_path)
        await broker.start()
        shared = broker.shared
        held = await open_connection(LOCAL, port)
        assert await ask(held, b"x") == b"s:x\n"
        await broker.stop()
        assert await held.read() == b""
        held.close()
        assert await shared.get("close:s") == 1
        assert await shared.get("reason:s") == "stop"
        await broker.stop()  # idempotent

    run(main())
