"""Broker: a changed manifest file applies to new connections and datagrams while running."""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from nethelp import (LOCAL, LOOPS, echo_once, free_port, make_broker, make_certs, run,
                     udp_exchange, wait_until, write_source)
from packetron.net import client_context, open_connection

TCP, UDP = socket.SOCK_STREAM, socket.SOCK_DGRAM

ECHO = """
async def handle(conn, ctx):
    async for chunk in conn:
        conn.write(chunk)
"""

# Sync, so datagrams are counted in arrival order: the reply says how many were seen.
COUNTING_UDP = """
seen = []

def message(msg, rinfo, ctx):
    seen.append(msg)
    ctx.reply(b"%d:%s" % (len(seen), msg), rinfo)
"""


async def ask(conn, data: bytes) -> bytes:
    conn.write(data)
    return await conn.readexactly(len(data))


async def screened_out(port: int) -> bool:
    """True when the port accepts the TCP connection, then closes it without a byte.

    A closed port (ConnectionRefusedError) is not "screened out": it propagates.
    """
    conn = await open_connection(LOCAL, port)
    try:
        conn.write(b"x")
        return await conn.read() == b""
    except ConnectionResetError:
        return True
    finally:
        conn.close()
        await conn.wait_closed()


def messages(caplog, level: int, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and needle in
            r.getMessage()]


@pytest.mark.parametrize("loop", LOOPS)
def test_deny_added_refuses_new_connections_while_the_open_one_echoes(tmp_path, caplog, loop):
    port = free_port(TCP)
    filename = f"echo.tcp.{port}.port.py"
    write_source(tmp_path / filename, ECHO)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, '[echo]\nallow = ["127.0.0.0/8"]\n')

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        assert await echo_once(port) == b"ping"
        old = await open_connection(LOCAL, port)
        assert await ask(old, b"before") == b"before"
        write_source(manifest, '[echo]\nallow = ["127.0.0.0/8"]\ndeny = ["127.0.0.1"]\n'
                               '[ghost]\nrate = 1\n')
        with caplog.at_level(logging.INFO, logger="packetron"):
            await broker.rescan()
        assert messages(caplog, logging.INFO, "policy changed") == [
            f"{filename}: manifest policy changed (deny); applies to new connections"]
        assert messages(caplog, logging.WARNING, "ghost") == [
            "manifest has a table for 'ghost' but no such handler file"]
        assert broker.ports == {("tcp", port): "echo"}
        assert await screened_out(port)
        assert await screened_out(port)
        # The connection from before the change is neither cut nor screened again.
        assert await ask(old, b"after") == b"after"
        assert broker.handlers[0].connections == 1
        # A second scan of the same file changes nothing and logs nothing new.
        await broker.rescan()
        assert len(messages(caplog, logging.INFO, "policy changed")) == 1
        old.close()
        await old.wait_closed()
        # The replaced listener is closed once its last connection has ended.
        await wait_until(lambda: broker._entries[filename].retired == [])
        assert broker.handlers[0].connections == 0
        await broker.stop()

    run(main(), loop=loop)


def test_a_broken_manifest_is_logged_once_and_the_old_policy_stays(tmp_path, caplog):
    port = free_port(TCP)
    write_source(tmp_path / f"echo.tcp.{port}.port.py", ECHO)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, "[echo]\nmax_connections = 1\n")

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        held = await open_connection(LOCAL, port)
        assert await ask(held, b"one") == b"one"
        assert await screened_out(port)  # the cap of 1 is reached

        with caplog.at_level(logging.ERROR, logger="packetron"):
            write_source(manifest, "[echo\nmax_connections = 2\n")  # invalid TOML
            await broker.rescan()
            await broker.rescan()  # the same bad version: not reported again
            errors = messages(caplog, logging.ERROR, "manifest")
            assert len(errors) == 1
            assert str(manifest) in errors[0] and "invalid TOML" in errors[0]
            assert await screened_out(port)  # still max_connections = 1
            assert await ask(held, b"two") == b"two"

            caplog.clear()
            write_source(manifest, "[echo]\nmax_connections = 0\n")  # invalid value
            await broker.rescan()
            errors = messages(caplog, logging.ERROR, "manifest")
            assert len(errors) == 1
            assert str(manifest) in errors[0]
            assert "max_connections must be a positive integer, got 0" in errors[0]
            assert await screened_out(port)
            assert broker.manifest.policy_for("echo").max_connections == 1

        # Fixed: the new cap of 3 counts the connection already held.
        write_source(manifest, "[echo]\nmax_connections = 3\n")
        await broker.rescan()
        assert broker.manifest.policy_for("echo").max_connections == 3
        first = await open_connection(LOCAL, port)
        second = await open_connection(LOCAL, port)
        assert [await ask(first, b"a"), await ask(second, b"b")] == [b"a", b"b"]
        assert await screened_out(port)
        assert await ask(held, b"three") == b"three"
        assert broker.handlers[0].connections == 3
        for c in (held, first, second):
            c.close()
        await broker.stop()

    run(main())


def test_a_deleted_manifest_keeps_the_current_policy_until_it_returns(tmp_path, caplog):
    port = free_port(TCP)
    write_source(tmp_path / f"echo.tcp.{port}.port.py", ECHO)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, '[echo]\ndeny = ["127.0.0.1"]\n')

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        assert await screened_out(port)
        manifest.unlink()
        with caplog.at_level(logging.ERROR, logger="packetron"):
            await broker.rescan()
            await broker.rescan()
        assert messages(caplog, logging.ERROR, "manifest") == [
            f"manifest {manifest} was deleted; the current policies stay"]
        assert await screened_out(port)
        write_source(manifest, '[echo]\nallow = ["127.0.0.0/8"]\n')
        await broker.rescan()
        assert await echo_once(port, b"back") == b"back"
        await broker.stop()

    run(main())


def test_max_connections_lowered_counts_the_connections_already_open(tmp_path):
    port = free_port(TCP)
    write_source(tmp_path / f"echo.tcp.{port}.port.py", ECHO)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, "[echo]\nmax_connections = 10\n")

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        early = [await open_connection(LOCAL, port) for _ in range(3)]
        assert [await ask(c, b"%d" % i) for i, c in enumerate(early)] == [b"0", b"1", b"2"]
        write_source(manifest, "[echo]\nmax_connections = 4\n")
        await broker.rescan()
        # The 3 still open count against the new cap: one more fits, not four.
        late = await open_connection(LOCAL, port)
        assert await ask(late, b"late") == b"late"
        assert await screened_out(port)
        assert [await ask(c, b"x") for c in early] == [b"x"] * 3
        assert broker.handlers[0].connections == 4
        # Lowered below what is open: nobody is cut, nobody new gets in...
        write_source(manifest, "[echo]\nmax_connections = 2\n")
        await broker.rescan()
        assert await screened_out(port)
        assert [await ask(c, b"y") for c in early] == [b"y"] * 3
        # ...until enough of them have ended (old listeners' connections included).
        for conn in (late, early[0], early[1]):
            conn.close()
            await conn.wait_closed()
        await wait_until(lambda: broker.handlers[0].connections == 1)
        assert await echo_once(port, b"again") == b"again"
        early[2].close()
        await broker.stop()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_udp_deny_added_drops_datagrams_before_the_handler(tmp_path, loop):
    port = free_port(UDP)
    write_source(tmp_path / f"count.udp.{port}.port.py", COUNTING_UDP)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, '[count]\nallow = ["127.0.0.0/8"]\n')

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        assert await udp_exchange(port, [b"a"], 1) == [b"1:a"]
        write_source(manifest, '[count]\nallow = ["127.0.0.0/8"]\ndeny = ["127.0.0.1"]\n')
        await broker.rescan()
        await udp_exchange(port, [b"x", b"y", b"z"], 0)
        # One socket delivers in arrival order: once the probe from another source is
        # answered, the three denied datagrams were dropped before the handler saw them.
        assert await udp_exchange(port, [b"p"], 1, source="127.0.0.2") == [b"2:p"]
        await broker.stop()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_turned_on_by_the_manifest_keeps_the_plain_connection(tmp_path, loop):
    cert, key, ca = make_certs(tmp_path)
    port = free_port(TCP)
    write_source(tmp_path / f"secure.tcp.{port}.port.py", ECHO)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, '[secure]\nallow = ["127.0.0.0/8"]\n')

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        plain = await open_connection(LOCAL, port)
        assert await ask(plain, b"plain") == b"plain"
        write_source(manifest, '[secure]\ntls = { cert = "server.pem", key = "server.key" }\n')
        await broker.rescan()
        assert await echo_once(port, b"over tls", ssl=client_context(ca)) == b"over tls"
        assert await ask(plain, b"still plain") == b"still plain"
        plain.close()
        await broker.stop()

    run(main(), loop=loop)


def test_tls_files_that_fail_to_load_keep_the_previous_policy(tmp_path, caplog):
    port, other = free_port(TCP), free_port(TCP)
    write_source(tmp_path / f"echo.tcp.{port}.port.py", ECHO)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, '[echo]\nallow = ["127.0.0.0/8"]\n')

    async def main():
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        with caplog.at_level(logging.ERROR, logger="packetron"):
            write_source(manifest, '[echo]\ntls = { cert = "missing.pem" }\n'
                                   '[late]\ntls = { cert = "missing.pem" }\n')
            write_source(tmp_path / f"late.tcp.{other}.port.py", ECHO)
            await broker.rescan()
        assert [m.split(": ")[0] for m in messages(caplog, logging.ERROR, "missing.pem")] == [
            f"late.tcp.{other}.port.py", f"echo.tcp.{port}.port.py"]
        assert await echo_once(port, b"plain") == b"plain"  # the running one is unchanged
        assert broker.ports == {("tcp", port): "echo"}
        # A fixed manifest also retries the handler whose port could not be opened.
        write_source(manifest, '[echo]\nallow = ["127.0.0.0/8"]\n')
        await broker.rescan()
        assert await echo_once(other, b"late") == b"late"
        assert broker.ports == {("tcp", port): "echo", ("tcp", other): "late"}
        await broker.stop()

    run(main())


def test_stop_after_policy_changes_closes_everything_and_frees_the_ports(tmp_path):
    tcp, udp = free_port(TCP), free_port(UDP)
    write_source(tmp_path / f"echo.tcp.{tcp}.port.py", ECHO)
    write_source(tmp_path / f"count.udp.{udp}.port.py", COUNTING_UDP)
    manifest = tmp_path / "broker.toml"
    write_source(manifest, "[echo]\nrate = 100\n[count]\nrate = 100\n")

    async def main():
        tasks_before = asyncio.all_tasks()  # this body and run()'s timeout wrapper
        broker = make_broker(tmp_path, manifest=str(manifest))
        await broker.start()
        held = []
        # One connection on each of three listeners: the first two are replaced.
        for rate in (200, 300, None):
            conn = await open_connection(LOCAL, tcp)
            assert await ask(conn, b"hi") == b"hi"
            held.append(conn)
            if rate is not None:
                write_source(manifest, f"[echo]\nrate = {rate}\n[count]\nrate = {rate}\n")
                await broker.rescan()
        assert len(broker._entries[f"echo.tcp.{tcp}.port.py"].retired) == 2
        assert broker.handlers[0].connections == 3
        assert await udp_exchange(udp, [b"u"], 1) == [b"1:u"]
        await broker.stop()
        assert [await c.read() for c in held] == [b""] * 3
        for c in held:
            c.close()
            await c.wait_closed()
        assert broker._background == set()
        assert asyncio.all_tasks() == tasks_before
        # Nothing holds the ports any more. SO_REUSEADDR for TCP only skips TIME_WAIT:
        # it still fails while a listening socket (or a duplicate of it) is open.
        with socket.socket(socket.AF_INET, TCP) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOCAL, tcp))
            s.listen()
        with socket.socket(socket.AF_INET, UDP) as s:
            s.bind((LOCAL, udp))

    run(main())
