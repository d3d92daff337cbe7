"""PacketStream: the sans-I/O machine, then Python peers over loopback, then bad peers."""
from __future__ import annotations

import asyncio
import logging

import pytest
from nethelp import HeldHandler, RawServer, run, wait_until

from packetron.errors import (
    BufferFull,
    ConfigError,
    ConnectionClosed,
    FramingError,
    FrameTooLarge,
    RemoteError,
    RpcError,
    RpcTimeout,
)
from packetron.net.connection import open_connection
from packetron.net.packetstream import (
    NO_REQUEST_HANDLER,
    PacketStream,
    PacketStreamMachine,
    error_payload,
)
from packetron.net.packetstream.codec import GOODBYE_BYTES, MAX_REQ, PacketDecoder, encode_packet
from packetron.net.tcpserver import TcpServer

# ---------------------------------------------------------------- the machine, sans-I/O


class Recorder:
    """MachineHandler that records every callback."""

    def __init__(self):
        self.events = []

    def on_message(self, value):
        self.events.append(("message", value))

    def on_request(self, req, value):
        self.events.append(("request", req, value))

    def on_response(self, req, value, is_error):
        self.events.append(("response", req, value, is_error))

    def on_stream_open(self, key):
        self.events.append(("open", key))

    def on_stream_data(self, key, value):
        self.events.append(("data", key, value))

    def on_stream_end(self, key, value, is_error):
        self.events.append(("end", key, value, is_error))

    def on_goodbye(self):
        self.events.append(("goodbye",))


def machine():
    rec = Recorder()
    return PacketStreamMachine(rec), rec


def test_requests_and_streams_share_one_counter_from_1():
    m, _ = machine()
    assert m.send_request("a")[0] == 1
    assert m.open_stream() == 2
    assert m.send_request("b")[0] == 3
    assert m.pending == {1, 3}


def test_request_bytes_and_response_dispatch():
    m, rec = machine()
    rid, data = m.send_request({"foo": "bar"})
    assert data == encode_packet(1, {"foo": "bar"})
    m.receive_data(encode_packet(-rid, {"okay": True}))
    assert rec.events == [("response", 1, {"okay": True}, False)]
    assert m.idle


def test_error_response_is_flagged():
    m, rec = machine()
    m.send_request("x")
    m.receive_data(encode_packet(-1, {"message": "boom"}, end=True))
    assert rec.events == [("response", 1, {"message": "boom"}, True)]


def test_response_to_unknown_request_is_dropped():
    m, rec = machine()
    m.receive_data(encode_packet(-42, "late"))
    assert rec.events == []


def test_incoming_request_is_answered_with_negative_number():
    m, rec = machine()
    m.receive_data(encode_packet(1000, "q") + encode_packet(7, "r"))
    assert rec.events == [("request", 1000, "q"), ("request", 7, "r")]
    assert not m.idle
    assert m.send_response(1000, "a") == encode_packet(-1000, "a")
    assert m.send_response(7, {"e": 1}, True) == encode_packet(-7, {"e": 1}, end=True)
    assert m.idle


def test_duplicate_request_ids_get_two_answers():
    m, rec = machine()
    m.receive_data(encode_packet(5, "a") * 2)
    assert rec.events == [("request", 5, "a")] * 2
    m.send_response(5, 1)
    assert not m.idle
    m.send_response(5, 2)
    assert m.idle


def test_message_ignores_stream_and_end_flags():
    m, rec = machine()
    m.receive_data(encode_packet(0, "m", stream=True, end=True))
    assert rec.events == [("message", "m")]


def test_first_frame_of_a_new_stream_opens_it_even_with_end_set():
    m, rec = machine()
    m.receive_data(encode_packet(3, True, stream=True, end=True))
    assert rec.events == [("open", -3), ("end", -3, True, False)]
    assert m.streams == {-3: 1}  # read side ended, write side still open
    assert m.send_stream_end(-3) == encode_packet(-3, True, stream=True, end=True)
    assert m.streams == {}


def test_stream_data_then_error_end():
    m, rec = machine()
    m.receive_data(encode_packet(4, {"n": 1}, stream=True)
                   + encode_packet(4, {"message": "broke"}, stream=True, end=True))
    assert rec.events == [("open", -4), ("data", -4, {"n": 1}),
                          ("end", -4, {"message": "broke"}, True)]


def test_data_for_unknown_own_stream_is_dropped():
    m, rec = machine()
    m.receive_data(encode_packet(-9, "x", stream=True))
    assert rec.events == [] and m.streams == {}


def test_our_stream_ends_in_both_directions():
    m, rec = machine()
    key = m.open_stream()
    assert m.send_stream_data(key, "one") == encode_packet(1, "one", stream=True)
    m.send_stream_end(key)
    with pytest.raises(RpcError, match="write after end"):
        m.send_stream_data(key, "two")
    assert m.send_stream_end(key) == b""  # second end: nothing
    m.receive_data(encode_packet(-1, "echo", stream=True)
                   + encode_packet(-1, True, stream=True, end=True))
    assert rec.events == [("data", 1, "echo"), ("end", 1, True, False)]
    assert m.idle


def test_goodbye_is_due_only_once_idle():
    m, _ = machine()
    m.send_request("x")
    m.start_close()
    assert not m.goodbye_due
    with pytest.raises(ConnectionClosed):
        m.send_request("y")
    with pytest.raises(ConnectionClosed):
        m.open_stream()
    m.receive_data(encode_packet(-1, "ok"))
    assert m.goodbye_due
    assert m.send_goodbye() == GOODBYE_BYTES
    assert m.send_goodbye() == b""


def test_goodbye_received_stops_dispatch():
    m, rec = machine()
    m.receive_data(encode_packet(0, "a") + GOODBYE_BYTES + encode_packet(0, "b"))
    assert rec.events == [("message", "a"), ("goodbye",)]
    assert m.goodbye_received


def test_frames_after_our_goodbye_are_ignored():
    m, rec = machine()
    m.send_goodbye()
    m.receive_data(encode_packet(1, "late request") + GOODBYE_BYTES)
    assert rec.events == [("goodbye",)]


def test_request_numbers_wrap_and_skip_live_ones():
    m, _ = machine()
    m._next_id = MAX_REQ
    m.pending.add(1)
    assert m.send_request("a")[0] == MAX_REQ
    assert m.send_request("b")[0] == 2


def test_machine_refuses_malformed_input():
    m, _ = machine()
    with pytest.raises(FramingError):
        m.receive_data(bytes.fromhex("03 00000001 00000000 00"))


def test_error_payload_shape():
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        payload = error_payload(exc)
    assert list(payload) == ["message", "name", "stack"]
    assert payload["message"] == "bad value" and payload["name"] == "ValueError"
    assert payload["stack"].startswith("Traceback") and "bad value" in payload["stack"]
    assert error_payload(KeyError("k"), include_stack=False)["stack"] == "KeyError: 'k'"
    remote = RemoteError("x", {"message": "x", "name": "Error", "stack": "Error: x"})
    assert error_payload(remote) == {"message": "x", "name": "Error", "stack": "Error: x"}


# ---------------------------------------------------------------- Python <-> Python


async def echo_request(value):
    if value == "fail":
        raise ValueError("fail requested")
    if value == "set":
        return {1, 2}  # cannot be encoded
    if isinstance(value, bytes):
        return value  # echoed with its type, like the Node test server
    return {"okay": True, "echo": value}


async def echo_stream(s):
    try:
        async for chunk in s:
            s.write(chunk)
    except RemoteError as exc:
        s.end(exc)
        return
    s.end()


class Served:
    """A TcpServer running one PacketStream per connection."""

    def __init__(self, **handlers):
        self.handlers = handlers
        self.messages = []
        self.closes = []
        self.attach_errors = []
        self.server = TcpServer(0, host="127.0.0.1")
        self.server.on_connection(self._handle)
        handlers.setdefault("message", self.messages.append)
        handlers.setdefault("close", self.closes.append)

    async def _handle(self, conn):
        ps = PacketStream(**self.handlers)
        try:
            await ps.attach(conn)
        except FramingError as exc:
            self.attach_errors.append(exc)

    async def __aenter__(self):
        await self.server.listen()
        return self

    async def __aexit__(self, *exc):
        await self.server.close()

    async def client(self, **handlers):
        conn = await open_connection("127.0.0.1", self.server.port)
        ps = PacketStream(**handlers)
        return ps, ps.start(conn)


def test_message_request_error_stream_and_goodbye_between_python_peers():
    async def main():
        async with Served(request=echo_request, stream=echo_stream) as srv:
            ps, task = await srv.client()
            ps.message("HELLO")
            ps.message({"n": 1})
            assert await ps.request({"foo": "bar"}) == {"okay": True, "echo": {"foo": "bar"}}
            assert await ps.request(b"\x00\xff") == b"\x00\xff"
            with pytest.raises(RemoteError) as info:
                await ps.request("fail")
            assert info.value.name == "ValueError"
            assert str(info.value) == "fail requested"
            assert list(info.value.payload) == ["message", "name", "stack"]
            s = ps.stream()
            for chunk in ("one", {"n": 2}, b"three", ""):
                s.write(chunk)
            s.end()
            assert [c async for c in s] == ["one", {"n": 2}, b"three", ""]
            assert s.error is None and s.read_ended and s.write_ended
            await ps.close()
            await task
            assert ps.closed
            assert srv.messages == ["HELLO", {"n": 1}]
        assert srv.closes == [None]

    run(main())


def test_max_in_flight_stops_reading_requests_until_half_are_answered():
    async def main():
        held = HeldHandler()
        async with Served(request=held, max_in_flight=3) as srv:
            ps, task = await srv.client()
            first = [asyncio.ensure_future(ps.request(i)) for i in range(3)]
            await asyncio.wait_for(held.until(3), 5)
            later = asyncio.ensure_future(ps.request(3))
            with pytest.raises(asyncio.TimeoutError):  # three pending: not read
                await asyncio.wait_for(held.until(4), 0.3)
            held.release.set()
            assert await asyncio.gather(*first, later) == [0, 1, 2, 3]
            assert held.started == [0, 1, 2, 3]
            await ps.close()
            await task

    run(main())


def test_max_in_flight_must_be_a_positive_int():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError):
            PacketStream(max_in_flight=bad)


def test_many_requests_in_flight_answer_out_of_order():
    async def request(value):
        await asyncio.sleep(0.001 * (10 - value % 10))
        return value * 2

    async def main():
        async with Served(request=request) as srv:
            ps, task = await srv.client()
            values = list(range(200))
            assert await asyncio.gather(*(ps.request(v) for v in values)) == [v * 2 for v in values]
            await ps.close()
            await task

    run(main())


def test_sync_handlers_work_too():
    async def main():
        async with Served(request=lambda v: v + 1) as srv:
            ps, task = await srv.client()
            assert await ps.request(41) == 42
            await ps.close()
            await task

    run(main())


def test_stream_error_end_reaches_reader_as_remote_error():
    async def main():
        async with Served(stream=echo_stream) as srv:
            ps, task = await srv.client()
            s = ps.stream()
            s.write({"n": 1})
            s.end(RuntimeError("stream broke"))
            got = []
            with pytest.raises(RemoteError) as info:
                async for chunk in s:
                    got.append(chunk)
            assert got == [{"n": 1}]
            assert info.value.payload["message"] == "stream broke"
            assert info.value.name == "RuntimeError"
            assert s.error is info.value
            await ps.close()
            await task

    run(main())


def test_no_request_handler_answers_like_node():
    async def main():
        async with Served() as srv:
            ps, task = await srv.client()
            with pytest.raises(RemoteError) as info:
                await ps.request("anything")
            assert info.value.payload == NO_REQUEST_HANDLER
            await ps.close()
            await task

    run(main())


def test_no_stream_handler_ends_the_stream_with_an_error():
    async def main():
        async with Served() as srv:
            ps, task = await srv.client()
            s = ps.stream()
            s.write("hi")
            with pytest.raises(RemoteError) as info:
                await s.read()
            assert info.value.name == "NO_STREAM_HANDLER"
            s.end()
            await ps.close()
            await task

    run(main())


def test_unencodable_answer_becomes_an_error_response():
    async def main():
        async with Served(request=echo_request) as srv:
            ps, task = await srv.client()
            with pytest.raises(RemoteError) as info:
                await ps.request("set")
            assert info.value.name == "TypeError"
            assert await ps.request("still works") == {"okay": True, "echo": "still works"}
            await ps.close()
            await task

    run(main())


class Gate:
    """A request handler that holds "slow" requests until released."""

    def __init__(self):
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, value):
        if value == "slow":
            self.arrived.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            return "slow answer"
        return {"okay": True, "echo": value}


def test_request_timeout_and_late_answer_dropped():
    async def main():
        gate = Gate()
        async with Served(request=gate) as srv:
            ps, task = await srv.client()
            with pytest.raises(RpcTimeout):
                await ps.request("slow", timeout=0.05)
            gate.release.set()
            # The late answer leaves the server before this one's, and is dropped.
            assert await ps.request("after") == {"okay": True, "echo": "after"}
            assert await ps.request("again") == {"okay": True, "echo": "again"}
            await ps.close()
            await task

    run(main())


def test_close_waits_for_requests_in_flight_and_refuses_new_ones():
    async def main():
        gate = Gate()
        async with Served(request=gate) as srv:
            ps, task = await srv.client()
            slow = asyncio.ensure_future(ps.request("slow"))
            await gate.arrived.wait()
            closing = ps.close()
            with pytest.raises(ConnectionClosed, match="closing"):
                await ps.request("late")
            with pytest.raises(ConnectionClosed):
                ps.stream()
            assert not closing.done()
            gate.release.set()
            assert await slow == "slow answer"
            await closing
            await task
        assert srv.closes == [None]

    run(main())


def test_cancelled_request_does_not_block_close():
    async def main():
        gate = Gate()
        async with Served(request=gate) as srv:
            client_closes = []
            ps, task = await srv.client(close=client_closes.append)
            slow = asyncio.ensure_future(ps.request("slow"))
            await gate.arrived.wait()
            slow.cancel()
            await asyncio.wait_for(ps.close(), 5)
            assert await task is None
            # This side stopped waiting, so its GOODBYE is a clean end...
            assert slow.cancelled()
            assert ps.closed and client_closes == [None]
            assert ps.connection is not None and ps.connection.state == "closed"
            # ...while the server still owed that answer: its handler is cancelled and
            # its session ends with the error Node gives for it.
            await wait_until(lambda: srv.closes and gate.cancelled)
            assert [type(e) for e in srv.closes] == [ConnectionClosed]
            assert str(srv.closes[0]) == "unexpected end of parent stream"
            assert gate.cancelled and not gate.release.is_set()
        assert srv.attach_errors == []

    run(main())


def test_server_side_abort_fails_client_pending_calls():
    async def main():
        gate = Gate()
        server_ps = []

        async def handle(conn):
            ps = PacketStream(request=gate)
            server_ps.append(ps)
            await ps.attach(conn)

        server = TcpServer(0, host="127.0.0.1")
        server.on_connection(handle)
        await server.listen()
        try:
            closes = []
            conn = await open_connection("127.0.0.1", server.port)
            ps = PacketStream(close=closes.append)
            task = ps.start(conn)
            pending = asyncio.ensure_future(ps.request("slow"))
            await gate.arrived.wait()
            server_ps[0].abort()
            with pytest.raises(ConnectionClosed, match="unexpected end of parent stream"):
                await pending
            await task
            assert isinstance(closes[0], ConnectionClosed)
        finally:
            await server.close()

    run(main())


# ---------------------------------------------------------------- bad peers (raw sockets)


async def read_request(reader):
    head = await reader.readexactly(9)
    body = await reader.readexactly(int.from_bytes(head[1:5], "big"))
    return PacketDecoder().feed(head + body)[0]


async def client_against(peer, **handlers):
    conn = await open_connection("127.0.0.1", peer.port)
    ps = PacketStream(**handlers)
    return ps, conn


def test_malformed_header_type_3_fails_pending_and_says_goodbye():
    async def script(reader, writer):
        await read_request(reader)
        writer.write(bytes.fromhex("0b 00000002 ffffffff 0000"))  # stream+type 3

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            closes = []
            ps, conn = await client_against(peer, close=closes.append)
            task = ps.start(conn)
            pending = asyncio.ensure_future(ps.request("q"))
            with pytest.raises(FramingError, match="unknown message type 3"):
                await task
            with pytest.raises(ConnectionClosed) as info:
                await pending
            assert isinstance(info.value.__cause__, FramingError)
            await peer.done.wait()
            assert bytes(peer.received) == GOODBYE_BYTES  # like Node: GOODBYE, then FIN
            assert isinstance(closes[0], FramingError)
            assert conn.state == "closed"

    run(main())


def test_frame_over_the_limit_is_refused_at_its_header():
    async def script(reader, writer):
        writer.write(bytes.fromhex("00 00100000 00000000"))  # announces 1 MiB, sends none

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            conn = await open_connection("127.0.0.1", peer.port)
            ps = PacketStream(max_body_size=1024)
            with pytest.raises(FrameTooLarge):
                await ps.attach(conn)

    run(main())


def test_truncated_header_then_eof_closes_with_connection_closed():
    async def script(reader, writer):
        await read_request(reader)
        writer.write(bytes.fromhex("02 000000"))
        writer.write_eof()

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            closes = []
            ps, conn = await client_against(peer, close=closes.append)
            task = ps.start(conn)
            with pytest.raises(ConnectionClosed, match="without GOODBYE"):
                await ps.request("q")
            await task
            assert isinstance(closes[0], ConnectionClosed)

    run(main())


def test_answer_to_unknown_request_id_is_ignored():
    async def script(reader, writer):
        pkt = await read_request(reader)
        writer.write(encode_packet(-999, "stray") + encode_packet(-pkt.req, "real"))

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            ps, conn = await client_against(peer)
            task = ps.start(conn)
            assert await ps.request("q") == "real"
            ps.abort()
            await task

    run(main())


def test_peer_vanishing_mid_request_fails_it_instead_of_hanging():
    async def script(reader, writer):
        await read_request(reader)
        writer.transport.abort()  # RST, no GOODBYE

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            ps, conn = await client_against(peer)
            task = ps.start(conn)
            with pytest.raises(ConnectionClosed):
                await ps.request("q")
            await task
            with pytest.raises(ConnectionClosed):
                ps.message("after")

    run(main())


def test_goodbye_with_open_stream_ends_it_with_connection_closed():
    async def script(reader, writer):
        await read_request(reader)
        writer.write(GOODBYE_BYTES)

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            ps, conn = await client_against(peer)
            task = ps.start(conn)
            s = ps.stream()
            s.write("x")
            with pytest.raises(ConnectionClosed, match="unexpected end of parent stream"):
                await s.read()
            await task
            with pytest.raises(ConnectionClosed):
                s.write("y")

    run(main())


def test_handler_exception_in_message_is_logged_not_fatal(caplog):
    def bad_message(value):
        raise KeyError(value)

    async def main():
        async with Served(message=bad_message, request=echo_request) as srv:
            ps, task = await srv.client()
            ps.message("boom")
            assert await ps.request("alive") == {"okay": True, "echo": "alive"}
            await ps.close()
            await task

    with caplog.at_level(logging.ERROR, logger="packetron.net"):
        run(main())
    assert "message handler failed" in caplog.text


def test_answer_arriving_one_byte_at_a_time_is_reassembled():
    async def script(reader, writer):
        pkt = await read_request(reader)
        for byte in encode_packet(-pkt.req, {"split": "everywhere"}):
            writer.write(bytes([byte]))
            await writer.drain()

    async def main():
        async with RawServer(script, keep_reading=True) as peer:
            ps, conn = await client_against(peer)
            task = ps.start(conn)
            assert await ps.request("q") == {"split": "everywhere"}
            ps.abort()
            await task

    run(main())


def test_buffer_full_when_the_peer_stops_reading():
    release = None

    async def script(reader, writer):
        await release.wait()

    async def main():
        nonlocal release
        release = asyncio.Event()
        async with RawServer(script, keep_reading=True) as peer:
            conn = await open_connection("127.0.0.1", peer.port, warn_buffer_bytes=64 * 1024,
                                         max_buffer_bytes=256 * 1024)
            ps = PacketStream()
            task = ps.start(conn)
            chunk = bytes(256 * 1024)
            with pytest.raises(BufferFull):
                for _ in range(400):  # kernel buffers fill first, then the transport's
                    ps.message(chunk)
                    await asyncio.sleep(0)  # let the batched write go out
            assert conn.buffered_amount > 256 * 1024
            ps.abort()
            release.set()
            await task

    run(main())


@pytest.mark.parametrize("kwargs", [{"request_timeout": 0}, {"goodbye_timeout": -1},
                                    {"max_body_size": 0}])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ConfigError):
        PacketStream(**kwargs)


def test_calls_made_before_attach_are_sent_on_attach():
    async def main():
        async with Served(request=echo_request) as srv:
            ps = PacketStream()
            ps.message("early")
            pending = asyncio.ensure_future(ps.request("queued"))
            await asyncio.sleep(0)  # the request is registered, nothing is connected yet
            conn = await open_connection("127.0.0.1", srv.server.port)
            task = ps.start(conn)
            assert await pending == {"okay": True, "echo": "queued"}
            await ps.close()
            await task
        assert srv.messages == ["early"]

    run(main())
