"""Connection: reading, callbacks, write buffer marks, flow control, states, client side."""
from __future__ import annotations

import asyncio
import socket

import pytest

from nethelp import LOOPS, FakeTransport, run
from packetron.errors import (
    BufferFull,
    ConfigError,
    ConnectionClosed,
    ConnectionModeError,
    FrameTooLarge,
    IncompleteRead,
)
from packetron.net.connection import (
    READ_HIGH_WATER_BYTES,
    READ_LOW_WATER_BYTES,
    Connection,
    open_connection,
)

LOCAL = "127.0.0.1"


async def serve(on_conn, **conn_kwargs):
    """A bare asyncio server whose protocol is Connection; on_conn(conn) per accept."""
    loop = asyncio.get_running_loop()
    conns: list[Connection] = []

    def factory() -> Connection:
        def opened(conn: Connection) -> None:
            conns.append(conn)
            result = on_conn(conn)
            if asyncio.iscoroutine(result):
                loop.create_task(result)

        return Connection(on_open=opened, **conn_kwargs)

    server = await loop.create_server(factory, LOCAL, 0)
    return server, server.sockets[0].getsockname()[1], conns


async def shutdown(server, conns):
    server.close()
    for c in conns:
        c.abort()
    for c in conns:
        await c.wait_closed()
    await server.wait_closed()


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("loop", LOOPS)
def test_read_readexactly_readline_over_loopback(loop):
    async def main():
        got = asyncio.get_running_loop().create_future()

        async def handler(conn):
            line = await conn.readline()
            exact = await conn.readexactly(5)
            rest = await conn.read()
            got.set_result((line, exact, rest))
            conn.close()

        server, port, conns = await serve(handler)
        client = await open_connection(LOCAL, port)
        client.write(b"first line\nABCDEtail bytes")
        client.write_eof()
        assert await got == (b"first line\n", b"ABCDE", b"tail bytes")
        assert await client.read() == b""
        await client.wait_closed()
        await shutdown(server, conns)

    run(main(), loop=loop)


def test_readexactly_at_eof_raises_incomplete_read_with_partial():
    async def main():
        got = asyncio.get_running_loop().create_future()

        async def handler(conn):
            try:
                await conn.readexactly(10)
            except IncompleteRead as exc:
                got.set_result(exc)
            conn.close()

        server, port, conns = await serve(handler)
        client = await open_connection(LOCAL, port)
        client.write(b"abc")
        client.write_eof()
        exc = await got
        assert (exc.partial, exc.expected) == (b"abc", 10)
        assert isinstance(exc, EOFError) and isinstance(exc, ConnectionClosed)
        client.close()
        await shutdown(server, conns)

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_half_close_lets_the_server_answer_after_client_eof(loop):
    async def main():
        async def handler(conn):
            data = await conn.read()
            conn.write(data[::-1])
            conn.close()

        server, port, conns = await serve(handler)
        client = await open_connection(LOCAL, port)
        client.write(b"0123456789")
        client.write_eof()
        assert await client.read() == b"9876543210"
        await client.wait_closed()
        await shutdown(server, conns)

    run(main(), loop=loop)


def test_async_for_yields_every_byte_of_the_stream():
    async def main():
        payload = bytes(range(256)) * 4096  # 1 MiB
        done = asyncio.get_running_loop().create_future()

        async def handler(conn):
            buf = bytearray()
            async for chunk in conn:
                buf += chunk
            done.set_result(bytes(buf))
            conn.close()

        server, port, conns = await serve(handler)
        client = await open_connection(LOCAL, port)
        client.write(payload)
        client.write_eof()
        assert await done == payload
        client.close()
        await shutdown(server, conns)

    run(main())


def test_readline_over_max_size_raises_frame_too_large():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        conn.data_received(b"x" * 20)
        with pytest.raises(FrameTooLarge):
            await conn.readline(max_size=10)
        conn.data_received(b"\nnext\n")
        with pytest.raises(FrameTooLarge):
            await conn.readline(max_size=10)
        assert await conn.readline(max_size=100) == b"x" * 20 + b"\n"
        assert await conn.readline() == b"next\n"

    run(main())


class LineSplitter:
    """A duck-typed framer: feed(bytes) -> list of lines, with a size cap."""

    def __init__(self, max_size: int = 1024) -> None:
        self.buf = b""
        self.max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        if len(self.buf) > self.max_size:
            raise FrameTooLarge("line too long")
        return lines


def test_frames_yields_what_the_framer_decodes_across_splits():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        for piece in (b"on", b"e\ntw", b"o\n", b"\nthree\nfour"):
            conn.data_received(piece)
        conn.eof_received()
        assert [f async for f in conn.frames(LineSplitter())] == [b"one", b"two", b"", b"three"]

    run(main())


def test_frames_framer_error_aborts_the_connection():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        conn.data_received(b"y" * 50)
        with pytest.raises(FrameTooLarge):
            async for _ in conn.frames(LineSplitter(max_size=10)):
                pass
        assert t.aborted and conn.state == "closing"

    run(main())


# ------------------------------------------------------------------ callback style


@pytest.mark.parametrize("loop", LOOPS)
def test_message_chunks_add_up_exactly_to_a_5_mb_stream(loop):
    async def main():
        payload = (b"packetron" * 600_000)[: 5 * 1024 * 1024]
        done = asyncio.get_running_loop().create_future()

        def handler(conn):
            chunks: list[bytes] = []
            conn.on("message", chunks.append)
            conn.on("close", lambda: done.set_result(chunks))

        server, port, conns = await serve(handler)
        client = await open_connection(LOCAL, port)
        client.write(payload)
        await client.drain()
        client.close()
        chunks = await done
        assert sum(map(len, chunks)) == len(payload)
        assert b"".join(chunks) == payload
        await shutdown(server, conns)

    run(main(), loop=loop)


def test_bytes_buffered_before_the_first_message_listener_are_delivered_first():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        conn.data_received(b"early")
        got: list[bytes] = []
        conn.on("message", got.append)
        conn.data_received(b"late")
        assert got == [b"early", b"late"]

    run(main())


def test_reading_and_message_listeners_exclude_each_other():
    t = FakeTransport()

    async def main():
        reader = Connection()
        reader.connection_made(t)
        reader.data_received(b"a")
        assert await reader.read(1) == b"a"
        with pytest.raises(ConnectionModeError, match="being read"):
            reader.on("message", lambda d: None)

        listener = Connection()
        listener.connection_made(FakeTransport())
        listener.on("message", lambda d: None)
        with pytest.raises(ConnectionModeError, match="message"):
            await listener.read()
        with pytest.raises(ConnectionModeError):
            listener.__aiter__()

    run(main())


def test_message_listener_exception_closes_only_that_connection_and_fires_error():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        errors: list[BaseException] = []
        conn.on("error", errors.append)

        def boom(data: bytes) -> None:
            raise ValueError("bad chunk")

        conn.on("message", boom)
        conn.data_received(b"x")
        assert [type(e) for e in errors] == [ValueError]
        assert conn.state == "closing" and t.closed

    run(main())


def test_off_removes_a_listener_and_unknown_events_are_refused():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        got: list[bytes] = []
        conn.on("message", got.append)
        conn.data_received(b"1")
        conn.off("message", got.append)
        conn.data_received(b"2")
        assert got == [b"1"]
        # Kept for the next listener, in order, not lost.
        conn.on("message", got.append)
        conn.data_received(b"3")
        assert got == [b"1", b"2", b"3"]
        with pytest.raises(ConfigError):
            conn.on("data", print)

    run(main())


# ------------------------------------------------------------------ inbound flow control


def test_reading_pauses_above_64_kib_unread_and_resumes_when_drained():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        conn.data_received(b"x" * READ_HIGH_WATER_BYTES)
        assert t.reading, "exactly at the high mark: still reading"
        conn.data_received(b"x")
        assert not t.reading, "one byte above the high mark: paused"
        # Taking the buffer down to just above the low mark keeps it paused...
        await conn.readexactly(READ_HIGH_WATER_BYTES + 1 - READ_LOW_WATER_BYTES - 1)
        assert not t.reading
        # ...and one more byte brings it to the low mark: reading resumes.
        await conn.readexactly(1)
        assert t.reading

    run(main())


def test_a_reader_waiting_for_more_than_the_mark_resumes_reading():
    t = FakeTransport()

    async def main():
        conn = Connection()
        conn.connection_made(t)
        conn.data_received(b"x" * (READ_HIGH_WATER_BYTES + 1))
        assert not t.reading
        task = asyncio.ensure_future(conn.readexactly(READ_HIGH_WATER_BYTES * 2))
        await asyncio.sleep(0)
        assert t.reading
        conn.data_received(b"y" * READ_HIGH_WATER_BYTES)
        assert len(await task) == READ_HIGH_WATER_BYTES * 2

    run(main())


# ------------------------------------------------------------------ outgoing buffer


async def _slow_reader(port: int) -> socket.socket:
    """A raw client socket with a tiny receive buffer that reads nothing until told."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (LOCAL, port))
    return sock


def _shrink_send_buffer(conn: Connection) -> None:
    conn.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


@pytest.mark.parametrize("loop", LOOPS)
def test_send_returns_false_above_warn_and_drain_fires_once_the_peer_reads(loop):
    async def main():
        loop = asyncio.get_running_loop()
        opened = loop.create_future()
        server, port, conns = await serve(
            opened.set_result, warn_buffer_bytes=64 * 1024, max_buffer_bytes=None
        )
        sock = await _slow_reader(port)
        conn = await opened
        _shrink_send_buffer(conn)
        events: list[str] = []
        drained = loop.create_future()
        conn.on("pause", lambda: events.append("pause"))
        conn.on("resume", lambda: events.append("resume"))
        conn.on("drain", lambda: drained.done() or drained.set_result(None))
        chunk = b"z" * 16384
        sent = 0
        while conn.send(chunk):
            sent += len(chunk)
            assert sent < 64 * 1024 * 1024, "send() never reported a full buffer"
        sent += len(chunk)
        assert conn.buffered_amount > 64 * 1024
        assert events == ["pause"] and not drained.done()
        received = 0
        while received < sent:
            data = await loop.sock_recv(sock, 1 << 20)
            assert data
            received += len(data)
        await drained
        assert events == ["pause", "resume"]
        assert received == sent
        sock.close()
        await shutdown(server, conns)

    run(main(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_write_raises_buffer_full_above_max_buffer_bytes(loop):
    async def main():
        opened = asyncio.get_running_loop().create_future()
        server, port, conns = await serve(
            opened.set_result, warn_buffer_bytes=32 * 1024, max_buffer_bytes=128 * 1024
        )
        sock = await _slow_reader(port)
        conn = await opened
        _shrink_send_buffer(conn)
        chunk = b"q" * 8192
        with pytest.raises(BufferFull):
            for _ in range(100_000):
                conn.send(chunk)
        assert conn.buffered_amount > 128 * 1024
        with pytest.raises(BufferFull):
            conn.write(b"!")
        sock.close()
        await shutdown(server, conns)

    run(main(), loop=loop)


def test_buffer_limits_set_on_an_open_connection_reach_the_transport():
    t = FakeTransport()

    async def main():
        conn = Connection(warn_buffer_bytes=1000, max_buffer_bytes=4000)
        conn.connection_made(t)
        assert (t.high, t.low) == (1000, 250)
        conn.warn_buffer_bytes = 400
        assert (t.high, t.low) == (400, 100)
        conn.max_buffer_bytes = 800
        t.buffered = 801
        with pytest.raises(BufferFull, match="max_buffer_bytes=800"):
            conn.write(b"x")
        conn.set_buffer_limits(2000, None)
        assert (t.high, t.low) == (2000, 500)
        assert (conn.warn_buffer_bytes, conn.max_buffer_bytes) == (2000, None)
        conn.write(b"no limit now")
        assert t.written == b"no limit now"

    run(main())


def test_invalid_buffer_limits_on_an_open_connection_change_nothing():
    t = FakeTransport()

    async def main():
        conn = Connection(warn_buffer_bytes=1000, max_buffer_bytes=4000)
        conn.connection_made(t)
        for attribute, bad in (("warn_buffer_bytes", 0), ("warn_buffer_bytes", 5000),
                               ("warn_buffer_bytes", 1.5), ("max_buffer_bytes", 999),
                               ("max_buffer_bytes", True)):
            with pytest.raises(ConfigError):
                setattr(conn, attribute, bad)
        assert (conn.warn_buffer_bytes, conn.max_buffer_bytes) == (1000, 4000)
        assert (t.high, t.low) == (1000, 250)

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_lowering_warn_buffer_bytes_after_open_pauses_at_the_new_mark(loop):
    async def main():
        loop = asyncio.get_running_loop()
        opened = loop.create_future()
        # Opened with the defaults (512 KiB / 1 MiB), lowered once the transport is there.
        server, port, conns = await serve(opened.set_result)
        sock = await _slow_reader(port)
        try:
            conn = await opened
            _shrink_send_buffer(conn)
            conn.warn_buffer_bytes = 16 * 1024
            conn.max_buffer_bytes = 64 * 1024
            events: list[str] = []
            conn.on("pause", lambda: events.append("pause"))
            chunk = b"w" * 4096
            while conn.send(chunk):
                assert conn.buffered_amount <= 16 * 1024 + len(chunk), "no pause at the new mark"
            assert events == ["pause"]
            assert 16 * 1024 < conn.buffered_amount <= 16 * 1024 + len(chunk)
            with pytest.raises(BufferFull, match="max_buffer_bytes=65536"):
                for _ in range(1000):
                    conn.send(chunk)
            assert 64 * 1024 < conn.buffered_amount <= 64 * 1024 + len(chunk)
        finally:
            sock.close()
            await shutdown(server, conns)

    run(main(), loop=loop)


def test_drain_waits_for_the_low_mark_and_raises_if_the_connection_dies():
    t = FakeTransport()

    async def main():
        conn = Connection(warn_buffer_bytes=100, max_buffer_bytes=None)
        conn.connection_made(t)
        assert (t.high, t.low) == (100, 25)
        await conn.drain()  # not paused: returns at once
        conn.pause_writing()
        waiter = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        assert not waiter.done()
        conn.resume_writing()
        await waiter
        conn.pause_writing()
        waiter = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        conn.connection_lost(None)
        with pytest.raises(ConnectionClosed):
            await waiter

    run(main())


def test_invalid_buffer_marks_are_refused():
    with pytest.raises(ConfigError):
        Connection(warn_buffer_bytes=0)
    with pytest.raises(ConfigError):
        Connection(warn_buffer_bytes=100, max_buffer_bytes=50)
    with pytest.raises(ConfigError):
        Connection(idle_timeout=0)


def test_options_off_the_usual_path_are_still_checked():
    class Size(int):
        pass

    for bad in ({"warn_buffer_bytes": 4.0}, {"max_buffer_bytes": "big"},
                {"idle_timeout": -1.0}, {"warn_buffer_bytes": -5, "max_buffer_bytes": None}):
        with pytest.raises(ConfigError):
            Connection(**bad)
    conn = Connection(warn_buffer_bytes=Size(10), max_buffer_bytes=Size(20), idle_timeout=0.5)
    assert (conn.warn_buffer_bytes, conn.max_buffer_bytes, conn.idle_timeout) == (10, 20, 0.5)
    assert Connection(max_buffer_bytes=None).max_buffer_bytes is None


def test_remote_address_is_empty_until_connected_and_the_peer_after():
    async def main():
        conn = Connection()
        assert conn.remote_address == ("", 0)
        conn.connection_made(FakeTransport(("2001:db8::7", 4242, 0, 0)))
        assert conn.remote_address == ("2001:db8::7", 4242)
        assert "2001:db8::7:4242" in repr(conn)

    run(main())


# ------------------------------------------------------------------ lifecycle


@pytest.mark.parametrize("loop", LOOPS)
def test_state_goes_open_closing_closed_and_close_fires_once(loop):
    async def main():
        opened = asyncio.get_running_loop().create_future()
        server, port, conns = await serve(opened.set_result)
        client = await open_connection(LOCAL, port)
        conn = await opened
        closes: list[int] = []
        conn.on("close", lambda: closes.append(conn.id))
        assert conn.state == "open"
        conn.close()
        assert conn.state == "closing"
        conn.close()
        await conn.wait_closed()
        assert conn.state == "closed"
        assert await client.read() == b""
        assert client.state == "open"  # the peer's EOF only ends reading
        client.close()
        await client.wait_closed()
        assert client.state == "closed"
        assert closes == [conn.id]
        with pytest.raises(ConnectionClosed):
            conn.write(b"late")
        await shutdown(server, conns)

    run(main(), loop=loop)


def test_ids_are_unique_and_remote_address_is_the_peer():
    async def main():
        opened: list[Connection] = []
        server, port, conns = await serve(opened.append)
        clients = [await open_connection(LOCAL, port) for _ in range(3)]
        while len(opened) < 3:
            await asyncio.sleep(0.001)
        ids = {c.id for c in opened + clients}
        assert len(ids) == 6
        assert all(isinstance(i, int) for i in ids)
        local_ports = sorted(c.get_extra_info("sockname")[1] for c in clients)
        assert sorted(c.remote_address[1] for c in opened) == local_ports
        assert all(c.remote_address[0] == LOCAL for c in opened)
        assert all(c.remote_address == (LOCAL, port) for c in clients)
        for c in clients:
            c.close()
            await c.wait_closed()
        await shutdown(server, conns)

    run(main())


def test_idle_timeout_closes_a_silent_connection():
    async def main():
        opened = asyncio.get_running_loop().create_future()
        server, port, conns = await serve(opened.set_result, idle_timeout=0.1)
        client = await open_connection(LOCAL, port)
        conn = await opened
        assert await client.read() == b""  # the server closed it
        assert conn.state == "closed"
        client.close()
        await shutdown(server, conns)

    run(main())


def test_open_connection_refused_raises_oserror():
    async def main():
        sock = socket.socket()
        sock.bind((LOCAL, 0))
        port = sock.getsockname()[1]
        sock.close()  # bound then closed: nothing listens there
        with pytest.raises(ConnectionRefusedError):
            await open_connection(LOCAL, port, timeout=2.0)

    run(main())


# ------------------------------------------------------------------ application pause


def test_pause_reading_holds_the_transport_and_combines_with_the_read_buffer_mark():
    async def main():
        conn = Connection()
        transport = FakeTransport()
        conn.connection_made(transport)
        conn.pause_reading()
        assert not transport.reading
        conn.pause_reading()  # idempotent
        conn.resume_reading()
        assert transport.reading
        # Reading style: the buffer mark pauses too; the application's resume must not
        # undo it.
        conn.data_received(b"x" * (READ_HIGH_WATER_BYTES + 1))
        assert not transport.reading
        conn.pause_reading()
        conn.resume_reading()
        assert not transport.reading  # still above the mark
        conn.pause_reading()
        assert await conn.read(READ_HIGH_WATER_BYTES + 1) == b"x" * (READ_HIGH_WATER_BYTES + 1)
        assert not transport.reading  # drained, but the application still holds reading
        conn.resume_reading()
        assert transport.reading

    run(main())


def test_messages_arriving_while_held_are_delivered_in_order_on_resume_then_eof():
    async def main():
        conn = Connection()
        transport = FakeTransport()
        conn.connection_made(transport)
        got: list[bytes] = []
        closes: list[object] = []
        conn.on("message", got.append)
        conn.on("close", closes.append)
        conn.pause_reading()
        # What uvloop does: delivers bytes although reading was paused in connection_made.
        conn.data_received(b"one")
        conn.data_received(b"two")
        assert conn.eof_received() is True  # kept open: two messages still held
        assert got == [] and not transport.reading and not transport.closed
        conn.resume_reading()
        assert got == [b"one", b"two"]
        assert transport.closed  # then the peer's EOF took effect

    run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_paused_connection_delivers_no_messages_until_resumed(loop):
    async def main():
        got: list[bytes] = []
        arrived = asyncio.Event()

        def on_conn(conn):
            conn.pause_reading()
            conn.on("message", lambda data: (got.append(data), arrived.set()))

        server, port, conns = await serve(on_conn)
        client = await open_connection(LOCAL, port)
        client.write(b"held")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(arrived.wait(), 0.2)  # nothing while paused
        assert got == []
        conns[0].resume_reading()
        await asyncio.wait_for(arrived.wait(), 5)
        assert b"".join(got) == b"held"
        client.close()
        await shutdown(server, conns)

    run(main(), loop=loop)
