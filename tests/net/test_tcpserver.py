"""TcpServer over real loopback sockets: echo, screening, caps, TLS, close."""
from __future__ import annotations

import asyncio
import gc
import logging
import ssl

import pytest

from nethelp import LOOPS, make_certs, run, wait_until
from packetron.errors import ConfigError
from packetron.net import (
    Connection,
    TcpServer,
    client_context,
    open_connection,
    server_context,
)
from packetron.net.screening import Verdict

LOCAL = "127.0.0.1"


async def refused(port: int, **kwargs) -> bool:
    """True when the server closes the connection without a byte (screened out)."""
    try:
        conn = await open_connection(LOCAL, port, **kwargs)
    except (ConnectionError, ssl.SSLError):
        return True
    try:
        conn.write(b"ping")
    except Exception:
        pass
    try:
        data = await conn.read()
    finally:
        conn.close()
        await conn.wait_closed()
    return data == b""


@pytest.mark.parametrize("loop", LOOPS)
def test_echo_through_a_sync_on_connection_callback(loop):
    async def main():
        server = TcpServer(0, host=LOCAL)
        server.on_connection(lambda conn: conn.on("message", conn.write))
        await server.listen()
        assert server.port > 0 and server.listening
        client = await open_connection(LOCAL, server.port)
        client.write(b"hello sync")
        assert await client.readexactly(10) == b"hello sync"
        client.close()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_echo_through_an_async_on_connection_callback(loop):
    async def main():
        server = TcpServer(0, host=LOCAL)

        @server.on_connection
        async def echo(conn):
            while line := await conn.readline():
                conn.write(line.upper())
                await conn.drain()

        await server.listen()
        client = await open_connection(LOCAL, server.port)
        for word in (b"one\n", b"two\n"):
            client.write(word)
            assert await client.readline() == word.upper()
        client.write_eof()
        # The async callback returned at EOF: the server closes the connection.
        assert await client.read() == b""
        client.close()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_denied_peer_never_reaches_the_callback(loop):
    async def main():
        server = TcpServer(0, host=LOCAL, deny=["127.0.0.0/8"])
        calls: list[object] = []
        rejects: list[tuple[str, Verdict]] = []
        server.on_connection(calls.append)
        server.on_reject(lambda host, verdict: rejects.append((host, verdict)))
        await server.listen()
        assert await refused(server.port)
        assert calls == []
        assert rejects == [(LOCAL, Verdict.DENIED)]
        await server.close()

    run(main(), loop=loop)


def test_peer_outside_the_allow_list_never_reaches_the_callback():
    async def main():
        server = TcpServer(0, host=LOCAL, allow=["10.0.0.0/8"])
        calls: list[object] = []
        server.on_connection(calls.append)
        await server.listen()
        assert await refused(server.port)
        assert calls == []
        await server.close()

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_max_connections_is_enforced_and_a_closed_slot_is_reused(loop):
    async def main():
        server = TcpServer(0, host=LOCAL, max_connections=2)
        opened: list[object] = []

        def greet(conn):
            opened.append(conn)
            conn.write(b"hi")
            conn.on("message", lambda d: None)

        server.on_connection(greet)
        await server.listen()
        first = await open_connection(LOCAL, server.port)
        second = await open_connection(LOCAL, server.port)
        assert await first.readexactly(2) == b"hi"
        assert await second.readexactly(2) == b"hi"
        assert await refused(server.port)
        assert len(opened) == 2
        first.close()
        await first.wait_closed()
        while len(server.connections) > 1:  # the server sees the close
            await asyncio.sleep(0.005)
        third = await open_connection(LOCAL, server.port)
        assert await third.readexactly(2) == b"hi"
        assert len(opened) == 3
        for c in (second, third):
            c.close()
        await server.close()

    run(main(), loop=loop)


def test_max_connections_per_ip_and_rate_options():
    async def main():
        server = TcpServer(0, host=LOCAL, max_connections_per_ip=1)
        server.on_connection(lambda conn: conn.on("message", conn.write))
        await server.listen()
        held = await open_connection(LOCAL, server.port)
        held.write(b"x")
        assert await held.readexactly(1) == b"x"
        assert await refused(server.port)
        held.close()
        await server.close()

        limited = TcpServer(0, host=LOCAL, rate=2)
        limited.on_connection(lambda conn: conn.write(b"ok") or conn.close())
        await limited.listen()
        results = []
        for _ in range(3):
            results.append(await refused(limited.port))
        # Two within the second get "ok" (read returns it, not b""), the third is refused.
        assert results == [False, False, True]
        await limited.close()

    run(main())


async def echoes(port: int, data: bytes = b"ping") -> bool:
    """True when a new connection to port gets `data` echoed back."""
    client = await open_connection(LOCAL, port)
    try:
        client.write(data)
        return await client.readexactly(len(data)) == data
    finally:
        client.close()
        await client.wait_closed()


@pytest.mark.parametrize("loop", LOOPS)
def test_failing_on_reject_hook_is_logged_and_the_next_peer_is_served(loop, caplog):
    async def main():
        server = TcpServer(0, host=LOCAL, max_connections=1)
        server.on_connection(lambda conn: conn.on("message", conn.write))
        rejects: list[Verdict] = []

        def hook(host: str, verdict: Verdict) -> None:
            rejects.append(verdict)
            raise RuntimeError("hook failed")

        server.on_reject(hook)
        await server.listen()
        held = await open_connection(LOCAL, server.port)
        held.write(b"a")
        assert await held.readexactly(1) == b"a"
        assert await refused(server.port)
        assert rejects == [Verdict.MAX_CONNECTIONS]
        held.close()
        await held.wait_closed()
        await wait_until(lambda: not server.connections)
        assert await echoes(server.port)
        await server.close()

    with caplog.at_level(logging.ERROR, logger="packetron.net"):
        run(main(), loop=loop)
    assert "on_reject hook failed" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failing_sync_callback_gives_its_screening_slot_back(loop):
    async def main():
        server = TcpServer(0, host=LOCAL, allow=["127.0.0.0/8"], max_connections=1)
        errors: list[type] = []
        server.on_error(lambda exc, conn: errors.append(type(exc)))
        calls: list[object] = []

        def handler(conn):
            calls.append(conn)
            if len(calls) == 1:
                raise RuntimeError("first one fails")
            conn.on("message", conn.write)

        server.on_connection(handler)
        await server.listen()
        first = await open_connection(LOCAL, server.port)
        assert await first.read() == b""
        first.close()
        await wait_until(lambda: not server.connections)
        assert await echoes(server.port)
        assert errors == [RuntimeError]
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_awaitable_returned_by_a_sync_callback_is_awaited_then_the_connection_closes(loop):
    async def main():
        server = TcpServer(0, host=LOCAL)

        async def greet(conn):
            await asyncio.sleep(0)
            conn.write(b"hi")

        server.on_connection(lambda conn: greet(conn))
        await server.listen()
        client = await open_connection(LOCAL, server.port)
        assert await client.read() == b"hi"  # then EOF: the server closed after greet()
        client.close()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_screened_connection_is_freed_at_close_without_the_garbage_collector(loop):
    async def main():
        server = TcpServer(0, host=LOCAL, allow=["127.0.0.0/8"])
        ids: list[int] = []
        closes: list[int] = []

        def handler(conn):
            ids.append(conn.id)
            # Both listeners refer back to conn: the usual cycles of callback style.
            conn.on("message", conn.write)
            conn.on("close", lambda: closes.append(conn.id))

        server.on_connection(handler)
        await server.listen()
        gc.collect()
        gc.disable()
        try:
            assert await echoes(server.port)
            await wait_until(lambda: not server.connections and closes)
            for _ in range(3):
                await asyncio.sleep(0)
            # With the collector off, a connection left in a cycle would still be here.
            alive = [o for o in gc.get_objects() if isinstance(o, Connection) and o.id in ids]
            assert ids and alive == []
        finally:
            # Not beyond this test: uvloop's close() waits for handles the collector frees.
            gc.enable()
            await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_remote_address_of_a_tls_connection_is_still_known_after_close(tmp_path, loop):
    cert, key, ca = make_certs(tmp_path)

    async def main():
        server = TcpServer(0, host=LOCAL, ssl=server_context(cert, key))
        opened = asyncio.get_running_loop().create_future()

        def handler(conn):
            opened.set_result(conn)
            conn.on("message", conn.write)

        server.on_connection(handler)
        await server.listen()
        client = await open_connection(LOCAL, server.port, ssl=client_context(ca))
        client_port = client.get_extra_info("sockname")[1]
        client.write(b"x")
        assert await client.readexactly(1) == b"x"
        client.close()
        conn = await opened
        await conn.wait_closed()
        assert conn.remote_address == (LOCAL, client_port)
        assert repr(conn).endswith(f"{LOCAL}:{client_port} closed>")
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_echo_with_a_trustme_certificate(tmp_path, loop):
    cert, key, ca = make_certs(tmp_path)

    async def main():
        server = TcpServer(0, host=LOCAL, ssl=server_context(cert, key))
        server.on_connection(lambda conn: conn.on("message", conn.write))
        await server.listen()
        client = await open_connection(LOCAL, server.port, ssl=client_context(ca))
        assert client.get_extra_info("sslcontext") is not None
        client.write(b"secret")
        assert await client.readexactly(6) == b"secret"
        client.close()
        await client.wait_closed()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_peer_screened_out_before_any_handshake(tmp_path, loop):
    cert, key, ca = make_certs(tmp_path)

    async def main():
        server = TcpServer(0, host=LOCAL, ssl=server_context(cert, key), deny=["127.0.0.1"])
        calls: list[object] = []
        server.on_connection(calls.append)
        await server.listen()
        with pytest.raises((ConnectionError, ssl.SSLError)):
            conn = await open_connection(LOCAL, server.port, ssl=client_context(ca))
            conn.close()
        assert calls == []
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_with_screening_admits_handshakes_and_frees_failed_ones(tmp_path, loop):
    # Screening and TLS together: the TLS layer goes onto the transport before the loop
    # reads, so the ClientHello cannot be missed (it was, on uvloop), and a handshake that
    # fails or is abandoned gives its max_connections slot back.
    cert, key, ca = make_certs(tmp_path)

    async def main():
        server = TcpServer(0, host=LOCAL, ssl=server_context(cert, key),
                           allow=["127.0.0.0/8"], max_connections=1)
        server.on_connection(lambda conn: conn.on("message", conn.write))
        await server.listen()
        for attempt in range(3):
            # Plain bytes where a ClientHello belongs: that handshake fails...
            raw = await open_connection(LOCAL, server.port)
            raw.write(b"GET / HTTP/1.1\r\n\r\n")
            assert await asyncio.wait_for(raw.read(), 5) == b""
            raw.close()
            # ...and a peer that leaves before saying anything.
            silent = await open_connection(LOCAL, server.port)
            silent.close()
            await silent.wait_closed()
            # Neither keeps the only slot (freed just after the peer sees the close)...
            await wait_until(lambda: server._screen.live_connections == 0)
            # ...so a real TLS client gets through each time.
            client = await asyncio.wait_for(
                open_connection(LOCAL, server.port, ssl=client_context(ca)), 5)
            client.write(b"round %d" % attempt)
            assert await asyncio.wait_for(client.readexactly(7), 5) == b"round %d" % attempt
            client.close()
            await client.wait_closed()
            await wait_until(lambda: not server.connections)
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_with_screening_works_with_asyncios_tls_protocol_too(tmp_path, loop, monkeypatch):
    # The fallback used when a loop has no TLS protocol of its own.
    from asyncio import sslproto

    from packetron.net import listener

    monkeypatch.setattr(listener, "_tls_protocol_class", lambda _loop: sslproto.SSLProtocol)
    cert, key, ca = make_certs(tmp_path)

    async def main():
        server = TcpServer(0, host=LOCAL, ssl=server_context(cert, key), allow=["127.0.0.0/8"])
        server.on_connection(lambda conn: conn.on("message", conn.write))
        await server.listen()
        client = await asyncio.wait_for(
            open_connection(LOCAL, server.port, ssl=client_context(ca)), 5)
        client.write(b"fallback")
        assert await asyncio.wait_for(client.readexactly(8), 5) == b"fallback"
        client.close()
        await client.wait_closed()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_take_over_keeps_the_port_and_counts_the_old_connections(loop):
    async def main():
        first = TcpServer(0, host=LOCAL, max_connections=2)
        first.on_connection(lambda conn: conn.on("message", conn.write))
        await first.listen()
        port = first.port
        old = [await open_connection(LOCAL, port) for _ in range(2)]
        for conn in old:
            conn.write(b"old")
            assert await conn.readexactly(3) == b"old"
        second = TcpServer(port, host=LOCAL, max_connections=3)
        second.on_connection(lambda conn: conn.on("message", lambda data: conn.write(data.upper())))
        await second.take_over(first)
        assert second.port == port and second.listening and not first.listening
        new = await open_connection(LOCAL, port)  # the 3rd of 3, served by the new code
        new.write(b"new")
        assert await new.readexactly(3) == b"NEW"
        assert await refused(port)  # a 4th: the old two still count
        old[0].write(b"still")
        assert await old[0].readexactly(5) == b"still"  # never cut, old code
        old[0].close()
        await old[0].wait_closed()
        await wait_until(lambda: second._screen.live_connections == 2)
        extra = await open_connection(LOCAL, port)
        extra.write(b"x")
        assert await extra.readexactly(1) == b"X"
        for conn in (old[1], new, extra):
            conn.close()
        await first.close()
        await second.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_handler_exception_closes_only_its_connection_and_reaches_on_error(loop):
    async def main():
        server = TcpServer(0, host=LOCAL)
        errors: list[tuple[type, object]] = []
        server.on_error(lambda exc, conn: errors.append((type(exc), conn)))

        @server.on_connection
        async def handler(conn):
            line = await conn.readline()
            if line == b"boom\n":
                raise RuntimeError("handler failed")
            conn.write(line)
            await conn.read()  # stay until the client is done

        await server.listen()
        good = await open_connection(LOCAL, server.port)
        bad = await open_connection(LOCAL, server.port)
        bad.write(b"boom\n")
        assert await bad.read() == b""
        good.write(b"fine\n")
        assert await good.readline() == b"fine\n"
        assert [e[0] for e in errors] == [RuntimeError]
        good.close()
        bad.close()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_with_100_live_connections_fires_exactly_100_close_events(loop):
    async def main():
        server = TcpServer(0, host=LOCAL)
        closes: list[int] = []
        conns = []

        def keep(conn):
            conns.append(conn)
            conn.on("close", lambda: closes.append(conn.id))
            conn.on("message", lambda d: None)
            conn.write(b"+")

        server.on_connection(keep)
        await server.listen()
        clients = [await open_connection(LOCAL, server.port) for _ in range(100)]
        for c in clients:
            assert await c.readexactly(1) == b"+"
        assert len(server.connections) == 100
        await server.close()
        assert len(closes) == 100 and len(set(closes)) == 100
        assert all(c.state == "closed" for c in conns)
        assert not server.connections and not server.listening
        for c in clients:
            assert await c.read() == b""
            c.close()
        # Stopped accepting: a new client is refused outright.
        with pytest.raises(ConnectionRefusedError):
            await open_connection(LOCAL, server.port)
        await server.close()  # idempotent

    run(main(), loop=loop)


def test_close_aborts_connections_that_cannot_flush():
    async def main():
        server = TcpServer(0, host=LOCAL, max_buffer_bytes=None)
        opened = asyncio.get_running_loop().create_future()
        server.on_connection(opened.set_result)
        await server.listen()
        client = await open_connection(LOCAL, server.port)
        conn = await opened
        while conn.send(b"x" * 65536):  # the client reads nothing
            pass
        await server.close(timeout=0.2)
        assert conn.state == "closed"
        client.abort()

    run(main())


def test_idle_timeout_option_closes_silent_connections():
    async def main():
        server = TcpServer(0, host=LOCAL, idle_timeout=0.05)
        server.on_connection(lambda conn: conn.on("message", conn.write))
        await server.listen()
        client = await open_connection(LOCAL, server.port)
        assert await client.read() == b""
        client.close()
        await server.close()

    run(main())


def test_bad_options_raise_config_error_at_construction():
    with pytest.raises(ConfigError):
        TcpServer(0, deny=["not-a-network"])
    with pytest.raises(ConfigError):
        TcpServer(0, max_connections=0)
    with pytest.raises(ConfigError):
        TcpServer(0, ssl="cert.pem")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TcpServer(70000)


def test_port_before_listen_is_an_error():
    with pytest.raises(RuntimeError):
        TcpServer(0).port
