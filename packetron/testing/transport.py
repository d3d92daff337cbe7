"""One in-memory connection: the real HttpProtocol on one side, an h11 client on the other.

No socket and no thread: the client hands request bytes straight to the protocol's
data_received(), and the protocol's transport.write() hands the answer straight to h11,
which parses it independently of httptools (so a malformed answer is caught, not
tolerated). A synchronous handler is therefore answered before data_received() returns;
an asynchronous one completes on the event loop while the client awaits a future that the
transport's writes resolve.

WebSocket seam: when the server answers 101 Switching Protocols, h11 pauses and the
exchange is marked `switched`; `MemoryConnection.detach()` then hands over the bytes that
followed the 101 and lets a new consumer (a wsproto client session) take the server's
writes via `MemoryTransport.sink`; packetron.testing.websocket does so for
`websocket_connect()`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

import h11

from packetron.http.protocol import HttpProtocol
from packetron.http.state import ServerState
from packetron.testing.errors import (ConnectionClosed, IncompleteResponse, InvalidResponse,
                                      ResponseTimeout)

__all__ = ["MemoryTransport", "MemoryConnection", "Exchange", "FEED_CHUNK_BYTES"]

# Request bytes are handed to the protocol in pieces of this size, as a socket read would
# deliver them, so pause_reading() (a streaming upload, a full pipeline) takes effect
# between pieces instead of after a whole 100 MB body sits in memory.
FEED_CHUNK_BYTES = 64 * 1024
# The biggest response head h11 accepts (its default, 16 KiB, is less than a page of
# cookies; a server sending more than this is broken anyway).
MAX_RESPONSE_HEAD_BYTES = 1024 * 1024


class MemoryTransport(asyncio.Transport):
    """The server side's transport: writes go to `sink`, nothing touches a socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: tuple[str, int],
                 sink: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        super().__init__()
        self._loop = loop
        self._peer = peer
        # Swappable: after a protocol switch, a WebSocket session takes the writes over.
        self.sink = sink
        self._on_eof = on_eof
        self._protocol: asyncio.BaseProtocol | None = None
        self._closing = False
        self._eof_written = False
        self.reading_paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._high = 64 * 1024
        self._low = 16 * 1024

    # ------------------------------------------------------------ asyncio.Transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "sockname":
            return ("127.0.0.1", 80)
        return default  # "socket", "sslcontext", ...: none here, so no sendfile, no TLS

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof_written or not data:
            return  # as a real transport after close: the bytes go nowhere
        self.sink(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        # The server half-closes (an error answer, then lingering): the client reads EOF.
        if self._eof_written or self._closing:
            return
        self._eof_written = True
        self._on_eof()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._wake_reader()
        if not self._eof_written:
            self._eof_written = True
            self._on_eof()
        protocol = self._protocol
        if protocol is not None:
            # asyncio calls connection_lost on a later iteration, never inside close().
            self._loop.call_soon(protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False
        self._wake_reader()

    def is_reading(self) -> bool:
        return not self.reading_paused and not self._closing

    def get_write_buffer_size(self) -> int:
        return 0  # every write is consumed at once

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        self._high, self._low = high, low

    # ------------------------------------------------------------ for the feeder

    def _wake_reader(self) -> None:
        waiter = self._resumed
        if waiter is not None:
            self._resumed = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait_resumed(self) -> None:
        """Wait until the protocol resumes reading (or the transport closes)."""
        if not self.reading_paused or self._closing:
            return  # resumed before this coroutine got to run (wait_for starts a task)
        waiter = self._resumed
        if waiter is None or waiter.done():  # a timed-out wait cancelled the last one
            waiter = self._resumed = self._loop.create_future()
        await waiter


class Exchange:
    """What one request on a connection has received so far."""

    __slots__ = ("method", "status", "reason", "http_version", "headers", "chunks",
                 "head_done", "complete", "switched", "error", "waiter")

    def __init__(self, method: str) -> None:
        self.method = method
        self.status = 0
        self.reason = ""
        self.http_version = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.head_done = False
        self.complete = False
        self.switched = False   # 101: the connection now speaks another protocol
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class MemoryConnection:
    """One client connection to the application, kept alive across requests."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop,
                 peer: tuple[str, int]) -> None:
        self.loop = loop
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD_BYTES)
        self.exchange: Exchange | None = None
        self.server_eof = False  # the server closed or half-closed its side
        self.broken = False      # something arrived that was no answer to a request
        self.transport = MemoryTransport(loop, peer, self._received, self._server_eof)
        self.protocol = HttpProtocol(state, loop)
        self.transport.set_protocol(self.protocol)
        self.protocol.connection_made(self.transport)

    @property
    def reusable(self) -> bool:
        """Idle and still open on both sides: the next request may use it."""
        return (self.exchange is None and not self.server_eof and not self.broken
                and self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE)

    def close(self) -> None:
        """The client hangs up; the server's protocol sees connection_lost shortly."""
        self.transport.close()

    # ------------------------------------------------------------ sending

    def begin(self, method: str, request: h11.Request, body: list[bytes]) -> bytes:
        """Start an exchange and return the request's bytes, framed by h11.

        Raises:
            h11.LocalProtocolError: the request itself is invalid (a bad header, say).
        """
        conn = self.h11
        parts = [conn.send(request)]
        for piece in body:
            if piece:
                parts.append(conn.send(h11.Data(data=piece)))
        parts.append(conn.send(h11.EndOfMessage()))
        self.exchange = Exchange(method)
        return b"".join(part for part in parts if part)

    def can_feed_at_once(self, payload: bytes) -> bool:
        """Whether `payload` goes to the protocol in one read, with no wait (the common
        case: a request that fits in one read, to a protocol reading)."""
        return len(payload) <= FEED_CHUNK_BYTES and not self.transport.reading_paused \
            and not self.server_eof

    def feed_at_once(self, payload: bytes) -> None:
        self.protocol.data_received(payload)

    async def feed(self, payload: bytes, deadline: float, what: str) -> None:
        """Hand `payload` to the protocol as reads would, honouring pause_reading().

        Stops early when the server closes the connection (it answered without reading
        the rest, e.g. 413).

        Raises:
            ResponseTimeout: reading stayed paused past `deadline` (loop time).
        """
        if self.can_feed_at_once(payload):
            self.feed_at_once(payload)
            return
        transport = self.transport
        protocol = self.protocol
        view = memoryview(payload)
        for offset in range(0, len(payload), FEED_CHUNK_BYTES):
            while transport.reading_paused and not self.server_eof:
                remaining = deadline - self.loop.time()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    await asyncio.wait_for(transport.wait_resumed(), remaining)
                except asyncio.TimeoutError:
                    raise ResponseTimeout(f"the application stopped reading the body of "
                                          f"{what} (sent {offset} of {len(payload)} bytes) "
                                          f"and did not answer within the timeout") from None
            if self.server_eof:
                return
            protocol.data_received(bytes(view[offset:offset + FEED_CHUNK_BYTES]))

    # ------------------------------------------------------------ receiving

    def _received(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.h11.receive_data(data)
        except RuntimeError:  # data after the connection ended: nothing can parse it
            self.broken = True
            return
        self._pump()

    def _server_eof(self) -> None:
        if self.server_eof:
            return
        self.server_eof = True
        if not self.broken and self.h11.their_state is not h11.SWITCHED_PROTOCOL:
            try:
                self.h11.receive_data(b"")
            except RuntimeError:
                pass
            self._pump()
        exchange = self.exchange
        if exchange is not None and not exchange.complete and exchange.error is None:
            exchange.error = self._closed_error(exchange)
            exchange.wake()

    def _closed_error(self, exchange: Exchange) -> ConnectionClosed:
        if not exchange.head_done:
            return ConnectionClosed(
                f"the server closed the connection without answering {exchange.method}")
        return IncompleteResponse(
            f"the server closed the connection in the middle of the response body "
            f"({sum(map(len, exchange.chunks))} bytes received)")

    def _pump(self) -> None:
        exchange = self.exchange
        conn = self.h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self.broken = True
                if exchange is not None and exchange.error is None:
                    if self.server_eof:  # data errors surface when the data arrives
                        exchange.error = self._closed_error(exchange)
                    else:
                        exchange.error = InvalidResponse(
                            f"the server's answer is not valid HTTP/1.1: {exc}")
                break
            if event is h11.NEED_DATA:
                break
            if event is h11.PAUSED:
                if conn.their_state is h11.SWITCHED_PROTOCOL and exchange is not None:
                    exchange.switched = True
                    exchange.complete = True
                break
            if exchange is None:
                # An answer nobody asked for (or an idle close): this connection is done.
                self.broken = not isinstance(event, h11.ConnectionClosed)
                break
            if isinstance(event, h11.Data):
                exchange.chunks.append(bytes(event.data))
            elif isinstance(event, h11.Response):
                exchange.status = event.status_code
                exchange.reason = event.reason.decode("latin-1")
                exchange.http_version = event.http_version.decode("ascii")
                exchange.headers = list(event.headers.raw_items())
                exchange.head_done = True
            elif isinstance(event, h11.EndOfMessage):
                exchange.complete = True
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    if conn.trailing_data[0]:
                        # Bytes after the answer, with no request asking for them: taken
                        # for the next answer, they would be wrong; the connection is done.
                        self.broken = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                self.server_eof = True
                break
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                # The head of a protocol switch: the WebSocket client reads its headers.
                exchange.status = 101
                exchange.reason = event.reason.decode("latin-1")
                exchange.http_version = event.http_version.decode("ascii")
                exchange.headers = list(event.headers.raw_items())
                exchange.head_done = True
            # h11.InformationalResponse (100 Continue): nothing to keep.
        if self.exchange is not None:
            self.exchange.wake()

    # ------------------------------------------------------------ waiting

    async def wait(self, exchange: Exchange, ready: Callable[[], bool], deadline: float,
                   what: str) -> None:
        """Wait until `ready()` or the exchange failed; never longer than `deadline`.

        Raises:
            ResponseTimeout: the deadline (loop time) passed first.
            ConnectionClosed / InvalidResponse: the exchange failed.
        """
        while not ready():
            if exchange.error is not None:
                raise exchange.error
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise ResponseTimeout(f"no complete answer to {what} within the timeout")
            waiter = exchange.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                if not ready() and exchange.error is None:
                    raise ResponseTimeout(
                        f"no complete answer to {what} within the timeout") from None

    def finish(self, exchange: Exchange) -> None:
        """The client is done with `exchange`; the connection is free for the next one."""
        if self.exchange is exchange:
            self.exchange = None

    def detach(self) -> bytes:
        """After a 101 answer: stop parsing HTTP here and return the bytes that followed it.

        The caller then sets `transport.sink` to receive the server's further writes and
        calls `protocol.data_received()` with its own frames.
        """
        data, _closed = self.h11.trailing_data
        self.exchange = None
        self.broken = True  # never reused for HTTP
        return bytes(data)
