"""FramingSocket and serve_rpc over loopback: layout, matching by id, timeouts, bad peers."""
from __future__ import annotations

import asyncio

import pytest
from nethelp import HeldHandler, RawServer, run, wait_until

from packetron.errors import (
    BufferFull,
    ConfigError,
    ConnectFailed,
    ConnectionClosed,
    FramingError,
    FrameTooLarge,
    RpcError,
    RpcTimeout,
)
from packetron.net.rpc import FramingSocket, serve_rpc
from packetron.net.tcpserver import TcpServer


class RpcServer:
    """A TcpServer answering with serve_rpc; handler errors are collected."""

    def __init__(self, handler, **framing):
        self.errors = []
        self._error_seen = asyncio.Event()
        self.server = TcpServer(0, host="127.0.0.1")

        @self.server.on_error
        def collect(exc, conn):
            self.errors.append(exc)
            self._error_seen.set()

        @self.server.on_connection
        async def handle(conn):
            await serve_rpc(conn, handler, **framing)

    async def __aenter__(self):
        await self.server.listen()
        return self

    async def __aexit__(self, *exc):
        await self.server.close()

    @property
    def port(self):
        return self.server.port

    async def wait_errors(self, count):
        while len(self.errors) < count:
            self._error_seen.clear()
            await self._error_seen.wait()


async def read_frame(reader):
    head = await reader.readexactly(4)
    body = await reader.readexactly(int.from_bytes(head, "big"))
    return head + body


def upper(rpc_id, payload):
    return payload.upper()


# ---------------------------------------------------------------- happy paths


def test_request_answer_round_trip():
    async def main():
        async with RpcServer(upper) as srv:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", srv.port)
            assert fs.connected and fs.name == f"127.0.0.1:{srv.port}"
            assert await fs.request(1, b"hello") == b"HELLO"
            assert await fs.request(2, "str payload") == b"STR PAYLOAD"
            assert await fs.request(3, b"") == b""
            fs.close()
            assert not fs.connected

    run(main())


def test_answers_out_of_order_are_matched_by_rpc_id():
    async def slow_first(rpc_id, payload):
        await asyncio.sleep(0.002 * (20 - rpc_id % 20))
        return payload + b"!"

    async def main():
        async with RpcServer(slow_first) as srv:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", srv.port)
            ids = list(range(100))
            answers = await asyncio.gather(*(fs.request(i, str(i)) for i in ids))
            assert answers == [f"{i}!".encode() for i in ids]
            assert fs.pending == 0
            fs.close()

    run(main())


def test_frame_layout_is_length_rpc_id_payload_on_the_wire():
    seen = []

    async def script(reader, writer):
        first = await read_frame(reader)
        second = await read_frame(reader)
        seen.extend([first.hex(), second.hex()])
        # Answer the second first, with the documented layout.
        writer.write(bytes.fromhex("00000006 00000002 4242")
                     + bytes.fromhex("00000005 ffffffff 41"))
        await reader.read()

    async def main():
        async with RawServer(script) as raw:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", raw.port)
            answers = await asyncio.gather(fs.request(-1, b"a"), fs.request(2, b"bb"))
            assert answers == [b"A", b"BB"]
            fs.close()
            await raw.done.wait()
        assert seen == ["00000005ffffffff61", "00000006000000026262"]

    run(main())


def test_custom_length_and_id_fields():
    framing = dict(
        frame_length_size=2,
        frame_length_reader=lambda b: int.from_bytes(b, "little"),
        frame_length_writer=lambda n: n.to_bytes(2, "little"),
        rpc_id_size=1,
        rpc_id_reader=lambda b: b[0],
        rpc_id_writer=lambda n: bytes([n]),
    )

    async def main():
        async with RpcServer(upper, **framing) as srv:
            fs = FramingSocket(**framing)
            await fs.connect("127.0.0.1", srv.port)
            answers = await asyncio.gather(fs.request(200, b"x"), fs.request(7, b"yz"))
            assert answers == [b"X", b"YZ"]
            fs.close()

    run(main())


def test_attach_uses_an_existing_connection():
    from packetron.net.client import TcpClient

    async def main():
        async with RpcServer(upper) as srv:
            conn = await TcpClient("127.0.0.1", srv.port).connect_with_retry()
            fs = FramingSocket()
            fs.attach(conn)
            assert await fs.request(9, b"ok") == b"OK"
            with pytest.raises(RpcError, match="already connected"):
                await fs.connect("127.0.0.1", srv.port)
            fs.close()
            await conn.wait_closed()

    run(main())


# ---------------------------------------------------------------- errors on the client


def test_request_timeout_fires_event_and_drops_the_late_answer():
    release = None

    async def slow(rpc_id, payload):
        if payload == b"slow":
            await release.wait()  # answers only after the client gave up on it
        return payload

    async def main():
        nonlocal release
        release = asyncio.Event()
        async with RpcServer(slow) as srv:
            fs = FramingSocket(timeout=5)
            timeouts = []
            disconnects = []
            fs.on("timeout", timeouts.append)
            fs.on("disconnected", disconnects.append)
            await fs.connect("127.0.0.1", srv.port)
            with pytest.raises(RpcTimeout, match="rpc id 1"):
                await fs.request(1, b"slow", timeout=0.05)
            assert timeouts == [1]
            release.set()
            # The late answer to 1 leaves the server before the answer to 2.
            assert await fs.request(2, b"fine") == b"fine"
            assert fs.connected and disconnects == []
            fs.close()

    run(main())


def test_duplicate_pending_rpc_id_is_refused():
    async def main():
        async with RpcServer(lambda i, p: asyncio.sleep(0.2, p)) as srv:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", srv.port)
            first = asyncio.ensure_future(fs.request(5, b"a"))
            await asyncio.sleep(0)
            with pytest.raises(RpcError, match="already pending"):
                await fs.request(5, b"b")
            assert await first == b"a"
            fs.close()

    run(main())


def test_request_without_connection_is_refused():
    async def main():
        with pytest.raises(RpcError, match="not connected"):
            await FramingSocket().request(1, b"x")

    run(main())


def test_connect_failure_is_connect_failed():
    async def main():
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with pytest.raises(ConnectFailed):
            await FramingSocket().connect("127.0.0.1", port)

    run(main())


def test_fail_all_and_close_fail_pending_requests():
    async def never(rpc_id, payload):
        await asyncio.sleep(10)

    async def main():
        async with RpcServer(never) as srv:
            fs = FramingSocket()
            disconnects = []
            fs.on("disconnected", disconnects.append)
            await fs.connect("127.0.0.1", srv.port)
            a = asyncio.ensure_future(fs.request(1, b"a"))
            b = asyncio.ensure_future(fs.request(2, b"b"))
            await asyncio.sleep(0)
            assert fs.fail_all(RpcError("giving up")) == 2
            for task in (a, b):
                with pytest.raises(RpcError, match="giving up"):
                    await task
            c = asyncio.ensure_future(fs.request(3, b"c"))
            await asyncio.sleep(0)
            fs.close()
            with pytest.raises(ConnectionClosed):
                await c
            assert disconnects == []  # close() is planned: no event

    run(main())


def test_unknown_rpc_id_from_server_closes_and_fails_pending():
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(bytes.fromhex("00000005 0000002a 00"))  # id 42 was never sent
        await reader.read()

    async def main():
        async with RawServer(script) as raw:
            fs = FramingSocket()
            disconnects = []
            fs.on("disconnected", disconnects.append)
            await fs.connect("127.0.0.1", raw.port)
            with pytest.raises(RpcError, match="unknown rpc id 42"):
                await fs.request(1, b"q")
            assert not fs.connected
            assert disconnects == [None]
            await raw.done.wait()

    run(main())


def test_server_vanishing_mid_request_fails_it_and_emits_disconnected():
    async def script(reader, writer):
        await read_frame(reader)
        writer.transport.abort()

    async def main():
        async with RawServer(script) as raw:
            fs = FramingSocket()
            disconnects = []
            fs.on("disconnected", disconnects.append)
            await fs.connect("127.0.0.1", raw.port)
            with pytest.raises(ConnectionClosed, match="closed"):
                await fs.request(1, b"q")
            assert len(disconnects) == 1
            assert not fs.connected

    run(main())


def test_oversized_answer_header_is_refused():
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(bytes.fromhex("7fffffff 00000001"))
        await reader.read()

    async def main():
        async with RawServer(script) as raw:
            fs = FramingSocket(max_frame_size=1024)
            await fs.connect("127.0.0.1", raw.port)
            with pytest.raises(ConnectionClosed, match="bad frame") as info:
                await fs.request(1, b"q")
            assert isinstance(info.value.__cause__, FrameTooLarge)

    run(main())


def test_truncated_answer_then_eof_fails_request():
    async def script(reader, writer):
        await read_frame(reader)
        writer.write(bytes.fromhex("000000"))

    async def main():
        async with RawServer(script) as raw:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", raw.port)
            with pytest.raises(ConnectionClosed):
                await fs.request(1, b"q")

    run(main())


def test_payload_over_max_frame_size_is_refused_before_sending():
    async def main():
        async with RpcServer(upper) as srv:
            fs = FramingSocket(max_frame_size=4)
            await fs.connect("127.0.0.1", srv.port)
            with pytest.raises(FrameTooLarge):
                await fs.request(1, b"12345")
            assert await fs.request(2, b"1234") == b"1234"
            fs.close()

    run(main())


def test_pause_at_warn_then_buffer_full_at_max_then_resume():
    release = None

    async def script(reader, writer):
        await release.wait()  # read nothing until the test says so
        while await reader.read(1 << 20):
            pass

    async def main():
        nonlocal release
        release = asyncio.Event()
        async with RawServer(script) as raw:
            fs = FramingSocket(warn_buffer_bytes=256 * 1024, max_buffer_bytes=1024 * 1024)
            events = []
            resumed = asyncio.Event()
            fs.on("pause", lambda: events.append("pause"))
            fs.on("resume", lambda: events.append("resume"))
            fs.on("resume", resumed.set)
            await fs.connect("127.0.0.1", raw.port)
            payload = bytes(512 * 1024)
            tasks = []
            full = None
            for rpc_id in range(200):  # kernel buffers first, then the transport's
                try:
                    tasks.append(asyncio.ensure_future(fs.request(rpc_id, payload, timeout=30)))
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                    if tasks[-1].done():
                        tasks[-1].result()
                except BufferFull as exc:
                    full = exc
                    break
            assert full is not None and "max_buffer_bytes" in str(full)
            assert events == ["pause"]
            assert fs.connection.buffered_amount > 1024 * 1024
            release.set()
            await resumed.wait()
            assert events == ["pause", "resume"]
            fs.close()
            for task in tasks[:-1]:
                with pytest.raises(ConnectionClosed):
                    await task

    run(main())


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"warn_buffer_bytes": 0},
                                    {"warn_buffer_bytes": 10, "max_buffer_bytes": 5},
                                    {"rpc_id_size": 0}, {"frame_length_size": 9}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ConfigError):
        FramingSocket(**kwargs)


def test_unknown_event_is_refused():
    with pytest.raises(ConfigError):
        FramingSocket().on("exploded", print)


# ---------------------------------------------------------------- serve_rpc failures


def test_handler_exception_closes_connection_and_fails_client():
    def broken(rpc_id, payload):
        if payload == b"boom":
            raise ValueError("handler broke")
        return payload

    async def main():
        async with RpcServer(broken) as srv:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", srv.port)
            assert await fs.request(1, b"ok") == b"ok"
            with pytest.raises(ConnectionClosed):
                await fs.request(2, b"boom")
            await srv.wait_errors(1)
        assert [str(e) for e in srv.errors] == ["handler broke"]

    run(main())


def test_handler_returning_none_sends_no_answer():
    async def main():
        async with RpcServer(lambda i, p: None if p == b"quiet" else p) as srv:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", srv.port)
            with pytest.raises(RpcTimeout):
                await fs.request(1, b"quiet", timeout=0.05)
            assert await fs.request(2, b"loud") == b"loud"
            fs.close()

    run(main())


def test_serve_rpc_refuses_oversized_and_malformed_frames():
    async def main():
        async with RpcServer(upper, max_frame_size=8) as srv:
            for bad in ("000000ff 00000001", "00000002 0000"):
                reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                writer.write(bytes.fromhex(bad))
                assert await reader.read() == b""  # closed on us
                writer.close()
                await writer.wait_closed()
            await srv.wait_errors(2)
        assert isinstance(srv.errors[0], FrameTooLarge)
        assert isinstance(srv.errors[1], FramingError)

    run(main())


def test_max_in_flight_stops_reading_until_half_the_answers_are_done():
    async def main():
        held = HeldHandler()
        async with RpcServer(held, max_in_flight=4) as srv:
            fs = FramingSocket()
            await fs.connect("127.0.0.1", srv.port)
            first = [asyncio.ensure_future(fs.request(i, b"%d" % i)) for i in range(4)]
            await asyncio.wait_for(held.until(4), 5)
            later = asyncio.ensure_future(fs.request(4, b"4"))
            # Four answers pending: the server reads no further, so the fifth waits.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(held.until(5), 0.3)
            held.release.set()
            assert await asyncio.gather(*first, later) == [b"0", b"1", b"2", b"3", b"4"]
            assert held.started == [b"0", b"1", b"2", b"3", b"4"]
            fs.close()

    run(main())


def test_max_in_flight_must_be_positive():
    async def main():
        conn_server = TcpServer(0, host="127.0.0.1")
        errors: list[BaseException] = []
        conn_server.on_error(lambda exc, conn: errors.append(exc))

        @conn_server.on_connection
        async def handle(conn):
            await serve_rpc(conn, lambda rpc_id, payload: payload, max_in_flight=0)

        await conn_server.listen()
        fs = FramingSocket()
        await fs.connect("127.0.0.1", conn_server.port)
        await wait_until(lambda: errors)
        assert isinstance(errors[0], ConfigError)
        assert "max_in_flight" in str(errors[0])
        fs.close()
        await conn_server.close()

    run(main())
