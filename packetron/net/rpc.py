"""Request-response RPC over length-prefixed frames: FramingSocket and serve_rpc.

Every frame, in both directions, is laid out as (see framing.RpcFrameFormat)::

    length    frame_length_size bytes, unsigned big-endian by default; counts what
              follows it: the rpc id and the payload
    rpc id    rpc_id_size bytes, signed big-endian by default
    payload   length - rpc_id_size bytes

With the defaults (4 + 4 bytes, big-endian) this is the layout of Node's
framing-socket. The client picks the rpc id of each request; the server answers
with a frame carrying the same id, in any order. There is no error frame: a server
whose handler fails closes the connection, which fails the client's pending calls.
"""
from __future__ import annotations

import asyncio
import inspect
import ssl as ssl_module
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from packetron.errors import (
    BufferFull,
    ConfigError,
    ConnectionClosed,
    FramingError,
    RpcError,
    RpcTimeout,
)
from packetron.log import net_logger
from packetron.net.client import TcpClient
from packetron.net.connection import Connection
from packetron.net.events import EventEmitter
from packetron.net.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    LengthReader,
    LengthWriter,
    RpcFrameFormat,
    RpcFramer,
)

__all__ = [
    "FramingSocket",
    "serve_rpc",
    "RPC_EVENTS",
    "DEFAULT_RPC_TIMEOUT",
    "DEFAULT_WARN_BUFFER_BYTES",
    "DEFAULT_MAX_BUFFER_BYTES",
]

# Frames queued in one loop iteration leave in one write, at most this many (the
# reasoning of packetstream.FLUSH_AFTER_FRAMES: the peer starts on the first answers).
FLUSH_AFTER_FRAMES = 16
# framing-socket's defaults: 5 s, 512 KiB, 1 MiB.
DEFAULT_RPC_TIMEOUT = 5.0
DEFAULT_WARN_BUFFER_BYTES = 512 * 1024
DEFAULT_MAX_BUFFER_BYTES = 1024 * 1024
# Async answers a server keeps pending before it stops reading the client (serve_rpc,
# PacketStream).
DEFAULT_MAX_IN_FLIGHT = 1024


class InFlightLimit:
    """Counts a peer's unfinished async work: at `limit` the connection is not read any
    more, and reading resumes once half of it is done."""

    __slots__ = ("limit", "count")

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"max_in_flight must be a positive integer, got {limit!r}")
        self.limit = limit
        self.count = 0

    def started(self, conn: Connection | None) -> None:
        self.count += 1
        if self.count >= self.limit and conn is not None:
            conn.pause_reading()

    def finished(self, conn: Connection | None) -> None:
        self.count -= 1
        if self.count == self.limit // 2 and conn is not None:
            conn.resume_reading()  # a no-op unless reading was paused
# Ids of timed-out requests remembered so their late answers are dropped quietly
# instead of being taken for a confused server.
_EXPIRED_MEMORY = 4096

RPC_EVENTS = frozenset({"disconnected", "timeout", "pause", "resume"})

Payload = bytes | bytearray | memoryview | str


class FramingSocket:
    """A client that sends framed requests and matches answers by rpc id.

    Args:
        timeout: seconds each request may wait for its answer (RpcTimeout after),
            also the connect timeout. None: no limit.
        warn_buffer_bytes: outgoing buffer size at which "pause" fires ("resume"
            follows when it has drained to a quarter of it).
        max_buffer_bytes: outgoing buffer size above which request() raises BufferFull.
        frame_length_size, frame_length_reader, frame_length_writer, rpc_id_size,
        rpc_id_reader, rpc_id_writer: the frame layout (see RpcFrameFormat). A
            reader takes the field's bytes and returns an int; a writer takes an int
            and returns exactly the field's size in bytes.
        max_frame_size: largest payload sent or accepted.
        ssl: an SSLContext (or True) to speak TLS.

    Events (`on(event, fn)`): "disconnected" fn(err) after an unplanned disconnection
    (never after close(); err is the cause or None); "timeout" fn(rpc_id) when a
    request times out; "pause" fn() and "resume" fn() at the watermarks.

    Raises:
        ConfigError: an option is out of range.
    """

    def __init__(
        self,
        timeout: float | None = DEFAULT_RPC_TIMEOUT,
        warn_buffer_bytes: int = DEFAULT_WARN_BUFFER_BYTES,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        frame_length_size: int = 4,
        frame_length_reader: LengthReader | None = None,
        frame_length_writer: LengthWriter | None = None,
        rpc_id_size: int = 4,
        rpc_id_reader: LengthReader | None = None,
        rpc_id_writer: LengthWriter | None = None,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        ssl: ssl_module.SSLContext | bool | None = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be None or > 0 seconds, got {timeout!r}")
        if not isinstance(warn_buffer_bytes, int) or warn_buffer_bytes <= 0:
            raise ConfigError(
                f"warn_buffer_bytes must be a positive int, got {warn_buffer_bytes!r}")
        if not isinstance(max_buffer_bytes, int) or max_buffer_bytes < warn_buffer_bytes:
            raise ConfigError("max_buffer_bytes must be an int >= warn_buffer_bytes")
        self.timeout = timeout
        self.warn_buffer_bytes = warn_buffer_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.ssl = ssl
        self.format = RpcFrameFormat(
            frame_length_size, frame_length_reader, frame_length_writer,
            rpc_id_size, rpc_id_reader, rpc_id_writer, max_frame_size)
        RpcFramer(self.format).encode(0, b"")  # a broken custom writer fails here, not later
        self.name = "disconnected"
        self._conn: Connection | None = None
        self._framer: RpcFramer | None = None
        self._pending: dict[int, tuple[asyncio.Future[bytes], asyncio.TimerHandle | None]] = {}
        self._expired: deque[int] = deque(maxlen=_EXPIRED_MEMORY)
        self._events = EventEmitter(RPC_EVENTS, "FramingSocket")
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False
        self._closing = False
        self._last_error: BaseException | None = None

    # ------------------------------------------------------------ events

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add a listener (see the class docstring); returns fn.

        Raises:
            ConfigError: unknown event.
        """
        return self._events.on(event, fn)

    def off(self, event: str, fn: Callable[..., Any]) -> None:
        """Remove a listener; unknown ones are ignored."""
        self._events.off(event, fn)

    def _emit(self, event: str, *args: Any) -> None:
        self._events.emit(event, *args)

    # ------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """A connection is open."""
        return self._conn is not None

    @property
    def pending(self) -> int:
        """Requests waiting for their answer."""
        return len(self._pending)

    @property
    def connection(self) -> Connection | None:
        """The underlying Connection, while connected."""
        return self._conn

    async def connect(self, host: str, port: int) -> None:
        """Open the connection.

        Raises:
            RpcError: already connected.
            ConnectFailed: the connection could not be made (cause chained).
        """
        if self._conn is not None:
            raise RpcError(f"already connected to {self.name}")
        conn = await TcpClient(host, port, timeout=self.timeout, ssl=self.ssl,
                               warn_buffer_bytes=self.warn_buffer_bytes,
                               max_buffer_bytes=self.max_buffer_bytes).connect()
        self.attach(conn)

    def attach(self, conn: Connection) -> None:
        """Use an already open Connection (from TcpClient.connect_with_retry, say).

        Raises:
            RpcError: already connected.
        """
        if self._conn is not None:
            raise RpcError(f"already connected to {self.name}")
        host, port = conn.remote_address
        self.name = f"{host}:{port}"
        self._conn = conn
        self._framer = RpcFramer(self.format)
        self._closing = False
        self._last_error = None
        conn.on("pause", self._on_pause)
        conn.on("resume", self._on_resume)
        conn.on("error", self._on_error)
        conn.on("close", self._on_close)
        conn.on("message", self._on_data)

    def close(self) -> None:
        """Close the connection; pending requests fail with ConnectionClosed.

        No "disconnected" event follows (it is reserved for unplanned ones).
        """
        conn = self._conn
        if conn is None:
            return
        self._closing = True
        self._flush()
        self._detach()
        conn.close()
        self.fail_all(ConnectionClosed("FramingSocket closed"))

    def fail_all(self, err: BaseException | None = None) -> int:
        """Fail every pending request now.

        Args:
            err: the exception each caller gets (default RpcError).

        Returns:
            How many requests were failed.
        """
        pending, self._pending = self._pending, {}
        for fut, timer in pending.values():
            if timer is not None:
                timer.cancel()
            if not fut.done():
                fut.set_exception(_copy_error(err) if err is not None
                                  else RpcError("pending request failed by fail_all()"))
        return len(pending)

    def _detach(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        for event, fn in (("pause", self._on_pause), ("resume", self._on_resume),
                          ("error", self._on_error), ("close", self._on_close),
                          ("message", self._on_data)):
            conn.off(event, fn)
        self.name = "disconnected"

    def _on_error(self, exc: BaseException) -> None:
        self._last_error = exc  # the transport's reason, reported before "close"

    def _on_pause(self) -> None:
        self._emit("pause")

    def _on_resume(self) -> None:
        self._emit("resume")

    def _on_close(self) -> None:
        conn = self._conn
        if conn is None or self._closing:
            return
        self._disconnect(ConnectionClosed(f"connection to {self.name} closed"),
                         self._last_error)

    def _disconnect(self, failure: BaseException, cause: BaseException | None) -> None:
        conn = self._conn
        self._detach()
        if conn is not None:
            conn.close()
        if cause is not None:
            failure.__cause__ = cause
        self.fail_all(failure)
        self._emit("disconnected", cause)

    # ------------------------------------------------------------ requests

    async def request(self, rpc_id: int, data: Payload, timeout: float | None = None) -> bytes:
        """Send one request and wait for the frame answering it.

        Args:
            rpc_id: the id the answer will carry; unique among pending requests.
            data: the payload (str is encoded as UTF-8).
            timeout: seconds; None uses the socket's timeout.

        Returns:
            The answer's payload (without length and rpc id).

        Raises:
            RpcError: not connected, or rpc_id already pending.
            BufferFull: over max_buffer_bytes are waiting to be sent.
            FrameTooLarge: data is over max_frame_size.
            RpcTimeout: no answer in time (a late answer is dropped).
            ConnectionClosed: the connection ended first.
        """
        conn = self._conn
        if conn is None:
            raise RpcError("FramingSocket is not connected")
        if rpc_id in self._pending:
            raise RpcError(f"rpc id {rpc_id} is already pending on {self.name}")
        if conn.buffered_amount > self.max_buffer_bytes:
            raise BufferFull(f"max_buffer_bytes ({self.max_buffer_bytes}) reached; "
                             f"refusing rpc id {rpc_id}")
        frame = self._framer.encode(rpc_id, data)  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        if timeout is None:
            timeout = self.timeout
        timer = None if timeout is None else loop.call_later(timeout, self._expire, rpc_id, timeout)
        self._pending[rpc_id] = (fut, timer)
        buf = self._wbuf
        buf.append(frame)
        if len(buf) >= FLUSH_AFTER_FRAMES or len(self._pending) == 1:
            # (Alone in flight: nothing to batch with, so skip the wait for the loop turn.)
            self._flush()
        elif not self._flush_scheduled:
            # Requests made in one loop iteration leave in one write (see FLUSH_AFTER_FRAMES).
            self._flush_scheduled = True
            loop.call_soon(self._scheduled_flush)
        try:
            return await fut
        finally:
            entry = self._pending.get(rpc_id)
            if entry is not None and entry[0] is fut:  # cancelled by the caller
                del self._pending[rpc_id]
                if timer is not None:
                    timer.cancel()

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        buf = self._wbuf
        if not buf:
            return
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        conn = self._conn
        if conn is None:
            return
        try:
            conn.write(data)
        except (BufferFull, ConnectionClosed) as exc:
            # These frames are lost: the callers waiting for them must not hang.
            self._disconnect(ConnectionClosed(f"write to {self.name} failed: {exc}"), exc)

    def _expire(self, rpc_id: int, timeout: float) -> None:
        entry = self._pending.pop(rpc_id, None)
        if entry is None:
            return
        self._expired.append(rpc_id)
        fut = entry[0]
        if not fut.done():
            fut.set_exception(RpcTimeout(f"no answer to rpc id {rpc_id} within {timeout}s"))
        self._emit("timeout", rpc_id)

    def _on_data(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)  # type: ignore[union-attr]
        except FramingError as exc:
            net_logger.warning("FramingSocket %s: bad frame from server: %s", self.name, exc)
            self._disconnect(ConnectionClosed(f"bad frame from {self.name}: {exc}"), exc)
            return
        pending = self._pending
        for rpc_id, payload in frames:
            entry = pending.pop(rpc_id, None)
            if entry is None:
                if rpc_id in self._expired:
                    continue  # the answer to a request that already timed out
                # An answer nobody asked for: the stream can no longer be trusted.
                err = RpcError(f"answer for unknown rpc id {rpc_id} from {self.name}")
                net_logger.warning("FramingSocket: %s", err)
                self._disconnect(err, None)
                return
            fut, timer = entry
            if timer is not None:
                timer.cancel()
            if not fut.done():
                fut.set_result(payload)

    def __repr__(self) -> str:
        return f"<FramingSocket {self.name} pending={len(self._pending)}>"


def _copy_error(err: BaseException) -> BaseException:
    # One exception object raised in many tasks would pile up their tracebacks.
    try:
        new = type(err)(*err.args)
    except Exception:
        return err
    new.__cause__ = err.__cause__
    return new


# Answers that are certainly not awaitable: skips inspect.isawaitable per frame.
_PLAIN_ANSWERS = frozenset({bytes, str, bytearray, memoryview, type(None)})

RpcHandler = Callable[[int, bytes], "bytes | str | None | Awaitable[bytes | str | None]"]


async def serve_rpc(
    conn: Connection,
    handler: RpcHandler,
    *,
    frame_length_size: int = 4,
    frame_length_reader: LengthReader | None = None,
    frame_length_writer: LengthWriter | None = None,
    rpc_id_size: int = 4,
    rpc_id_reader: LengthReader | None = None,
    rpc_id_writer: LengthWriter | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> None:
    """Answer FramingSocket requests on `conn` until it closes (the server side).

    ``handler(rpc_id, payload)`` (sync or async) returns the answer's payload (bytes
    or str), or None to send no answer. Async handlers run concurrently, so answers
    may leave out of order; each carries its request's rpc id. Use it as the body of
    a broker handler: ``async def handle(conn, ctx): await serve_rpc(conn, fn)``.
    At most `max_in_flight` async answers are pending at once: beyond that the
    connection is not read until half of them are done, so a fast client cannot pile up
    unbounded work.

    Raises:
        FramingError: the client sent a malformed or oversized frame (the
            connection is closed first).
        Exception: the first exception a handler raised, after closing the
            connection (the protocol has no error frame; the client's pending
            calls fail with ConnectionClosed).
    """
    in_flight = InFlightLimit(max_in_flight)
    fmt = RpcFrameFormat(frame_length_size, frame_length_reader, frame_length_writer,
                         rpc_id_size, rpc_id_reader, rpc_id_writer, max_frame_size)
    framer = RpcFramer(fmt)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()
    failure: list[BaseException] = []
    out: list[bytes] = []

    def fail(exc: BaseException) -> None:
        # Answers already made still go out; then the connection closes. The exception
        # is raised to serve_rpc's caller (TcpServer reports it), not logged here.
        if not failure:
            failure.append(exc)
        flush()
        conn.close()

    def reply(rpc_id: int, result: Any) -> None:
        if result is not None:
            out.append(framer.encode(rpc_id, result))
            if len(out) >= FLUSH_AFTER_FRAMES:
                flush()

    def flush() -> None:
        if out and conn.state == "open":
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            try:
                conn.write(data)
            except (BufferFull, ConnectionClosed) as exc:
                fail(exc)
        else:
            out.clear()

    async def run(rpc_id: int, aw: Awaitable[Any]) -> None:
        try:
            reply(rpc_id, await aw)
        except Exception as exc:
            fail(exc)
            return
        flush()

    def finished(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        in_flight.finished(conn)

    def on_data(data: bytes) -> None:
        try:
            frames = framer.feed(data)
        except FramingError as exc:
            conn.abort()
            fail(exc)
            return
        for rpc_id, payload in frames:
            try:
                result = handler(rpc_id, payload)
                if type(result) not in _PLAIN_ANSWERS and inspect.isawaitable(result):
                    task = loop.create_task(run(rpc_id, result))
                    tasks.add(task)
                    task.add_done_callback(finished)
                    in_flight.started(conn)
                else:
                    reply(rpc_id, result)
            except Exception as exc:
                fail(exc)
                return
        flush()

    conn.on("message", on_data)
    try:
        await conn.wait_closed()
    finally:
        conn.off("message", on_data)
        for task in tasks:
            task.cancel()
        conn.close()
    if failure:
        raise failure[0]
