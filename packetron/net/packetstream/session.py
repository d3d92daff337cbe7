"""PacketStream: Node's packet-stream (messages, requests, duplex streams) over a Connection.

The protocol state lives in the sans-I/O `machine.PacketStreamMachine` (events in,
bytes out), the wire format in `codec`. This module is its thin async driver: futures for requests,
`DuplexStream` objects for substreams, user handlers (sync or async), and one
batched write per loop iteration to the Connection.

Semantics follow packet-stream 2.0.6 (PACKET-STREAM.md §3): one counter shared by
requests and streams; positive numbers are the sender's own, negative ones answers
about the receiver's; answers to unknown requests and data for unknown streams are
dropped; GOODBYE fails whatever is still pending. Departures, all on the safe side:
`close()` also waits for answers to the peer's requests already being handled; a
peer's stream with no `stream` handler is ended at once with NO_STREAM_HANDLER
(Node would leave it open forever); request numbers wrap after 2**31 - 1 instead of
overflowing.
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from packetron.errors import (
    BufferFull,
    ConfigError,
    ConnectionClosed,
    FramingError,
    RpcTimeout,
)
from packetron.log import net_logger
from packetron.net.connection import Connection
from packetron.net.packetstream.codec import DEFAULT_MAX_BODY_SIZE
from packetron.net.packetstream.duplex import DuplexStream
from packetron.net.packetstream.errorobjects import (
    NO_REQUEST_HANDLER,
    NO_STREAM_HANDLER,
    UNEXPECTED_END,
    error_payload,
    remote_error,
)
from packetron.net.packetstream.machine import PacketStreamMachine
from packetron.net.rpc import DEFAULT_MAX_IN_FLIGHT, InFlightLimit

__all__ = ["PacketStream", "FLUSH_AFTER_FRAMES"]

# Frames queued in one loop iteration go out in one write, but never more than this
# many: with many calls in flight the peer starts on the first answers while this side
# still works on the rest (a pipeline across the two processes instead of turns).
FLUSH_AFTER_FRAMES = 16


def _closed_error(err: BaseException | None) -> ConnectionClosed:
    # What a pending call sees when the session ends under it: always ConnectionClosed,
    # with the real reason (a protocol error, say) chained.
    if isinstance(err, ConnectionClosed):
        return ConnectionClosed(str(err))
    exc = ConnectionClosed(UNEXPECTED_END if err is None else f"session ended: {err}")
    exc.__cause__ = err
    return exc


Handler = Callable[..., Any]

# Answers that are certainly not awaitable: skips inspect.isawaitable on the hot path.
_PLAIN_RESULTS = frozenset({dict, list, str, bytes, int, float, bool, type(None), tuple})


def _is_awaitable(result: Any) -> bool:
    return type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result)


class PacketStream:
    """A packet-stream peer: messages, requests and duplex streams over one connection.

    Args:
        message: ``message(value)``, called for each one-way message.
        request: ``request(value)`` returns (or, async, resolves to) the answer; a
            raised exception goes back as ``{"message", "name", "stack"}``. Without
            it, requests are answered with Node's NO_REQUEST_HANDLER error.
        stream: ``stream(s)`` gets each DuplexStream the peer opens.
        close: ``close(err)`` runs once when the session ends; err is None after a
            clean end, else ConnectionClosed or the FramingError that ended it.
        max_body_size: largest packet body accepted (Node has no limit).
        request_timeout: default seconds for request(); None waits forever (as Node).
        include_stack: send Python tracebacks in error objects (False: "Name: message").
        goodbye_timeout: after sending GOODBYE, seconds to wait for the peer's before
            closing the connection anyway.
        max_in_flight: async message and request handlers running at once at most;
            beyond that the connection is not read until half of them are done.

    Every handler may be a plain function or a coroutine function.

    Raises:
        ConfigError: a timeout or max_body_size is out of range.
    """

    __slots__ = ("_on_message", "_on_request", "_on_stream", "_on_close", "request_timeout",
                 "include_stack", "goodbye_timeout", "_machine", "_calls", "_streams",
                 "_tasks", "_conn", "_loop", "_wbuf", "_flush_scheduled", "_receiving", "_done",
                 "_finished", "_close_err", "_goodbye_timer", "_in_flight")

    def __init__(
        self,
        message: Handler | None = None,
        request: Handler | None = None,
        stream: Handler | None = None,
        close: Handler | None = None,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        request_timeout: float | None = None,
        include_stack: bool = True,
        goodbye_timeout: float = 5.0,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        # Async message and request handlers still running. Duplex streams are not
        # counted: they may wait for the peer's own data.
        self._in_flight = InFlightLimit(max_in_flight)
        if request_timeout is not None and not request_timeout > 0:
            raise ConfigError(
                f"request_timeout must be None or > 0 seconds, got {request_timeout!r}")
        if not goodbye_timeout > 0:
            raise ConfigError(f"goodbye_timeout must be > 0 seconds, got {goodbye_timeout!r}")
        self._on_message = message
        self._on_request = request
        self._on_stream = stream
        self._on_close = close
        self.request_timeout = request_timeout
        self.include_stack = include_stack
        self.goodbye_timeout = goodbye_timeout
        self._machine = PacketStreamMachine(self, max_body_size)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, DuplexStream] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False
        self._receiving = False
        self._done: asyncio.Future[None] | None = None
        self._finished = False
        self._close_err: BaseException | None = None
        self._goodbye_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """The session is over (GOODBYE exchanged, connection lost or failed)."""
        return self._finished

    @property
    def connection(self) -> Connection | None:
        """The Connection this stream is attached to, if any."""
        return self._conn

    def message(self, value: Any) -> None:
        """Send a one-way message.

        Raises:
            ConnectionClosed: the session is over.
            BufferFull: the outgoing buffer is over max_buffer_bytes.
            TypeError: value is not bytes, str or JSON-serializable.
        """
        if self._finished or self._machine.goodbye_sent:
            raise ConnectionClosed("packet stream is closed")
        self._check_buffer()
        self._send(self._machine.send_message(value))

    async def request(self, value: Any, timeout: float | None = None) -> Any:
        """Send a request and wait for its answer.

        Args:
            value: bytes, str or any JSON value.
            timeout: seconds; None uses request_timeout (None: no limit).

        Returns:
            The peer's answer.

        Raises:
            RemoteError: the peer answered with an error (its object is `.payload`).
            RpcTimeout: no answer in time (a late answer is dropped).
            ConnectionClosed: the session ended first, or close() was called.
            BufferFull: the outgoing buffer is over max_buffer_bytes.
        """
        if self._finished:
            raise ConnectionClosed("packet stream is closed")
        self._check_buffer()
        rid, data = self._machine.send_request(value)
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        calls = self._calls
        calls[rid] = fut
        if len(calls) == 1 and not self._wbuf and self._conn is not None:
            # Alone in flight: nothing to batch with, so skip the wait for the loop turn.
            self._wbuf.append(data)
            self._flush()
        else:
            self._send(data)
        if timeout is None:
            timeout = self.request_timeout
        timer = None if timeout is None else loop.call_later(timeout, self._expire, rid, timeout)
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            if self._calls.get(rid) is fut:
                # Cancelled by the caller: stop waiting, or close() would wait forever.
                del self._calls[rid]
                self._machine.forget_request(rid)
                self._maybe_goodbye()

    def stream(self) -> DuplexStream:
        """Open a duplex substream (nothing is sent until its first write or end).

        Raises:
            ConnectionClosed: the session is over or closing.
        """
        if self._finished:
            raise ConnectionClosed("packet stream is closed")
        key = self._machine.open_stream()
        s = self._streams[key] = DuplexStream(self, key)
        return s

    def close(self) -> asyncio.Future[None]:
        """Close gracefully: refuse new calls, let open ones finish, then say GOODBYE.

        Returns:
            A future that resolves once the session is over; await it or not.
        """
        loop = self._loop or asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
        if not self._finished:
            self._machine.start_close()
            self._maybe_goodbye()
        return self._done

    def abort(self, err: BaseException | None = None) -> None:
        """End the session now: pending calls fail, GOODBYE is sent, the connection closes."""
        self._teardown(err or ConnectionClosed("packet stream aborted"))

    async def drain(self) -> None:
        """Wait until the connection's outgoing buffer is below its low watermark."""
        self._flush()
        if self._conn is not None:
            await self._conn.drain()

    def start(self, conn: Connection) -> asyncio.Task[None]:
        """attach(conn) in a background task, which is returned."""
        return asyncio.get_running_loop().create_task(self.attach(conn))

    async def attach(self, conn: Connection) -> None:
        """Run the session over `conn` until either end closes it.

        Messages and requests made before attaching are sent first. The connection
        is closed on return.

        Raises:
            FramingError: the peer broke the wire format (after pending calls failed
                and GOODBYE was sent).
            RuntimeError: already attached.
        """
        if self._conn is not None:
            raise RuntimeError("PacketStream is already attached to a connection")
        self._conn = conn
        self._loop = loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
        conn.on("close", self._on_conn_close)
        if conn.state != "open":
            self._teardown(ConnectionClosed("connection closed before the session started"))
        else:
            conn.on("message", self._on_data)
            self._flush()
            if self._machine.closing:
                self._maybe_goodbye()
        try:
            await asyncio.shield(self._done)
        except asyncio.CancelledError:
            self.abort()
            raise
        if isinstance(self._close_err, FramingError):
            raise self._close_err

    # ------------------------------------------------------------ output

    def _check_buffer(self) -> None:
        conn = self._conn
        if conn is not None and conn.max_buffer_bytes is not None \
                and conn.buffered_amount > conn.max_buffer_bytes:
            raise BufferFull(
                f"{conn.buffered_amount} bytes already buffered "
                f"(max_buffer_bytes={conn.max_buffer_bytes})")

    def _send(self, data: bytes) -> None:
        if not data:
            return
        buf = self._wbuf
        buf.append(data)
        if len(buf) >= FLUSH_AFTER_FRAMES:
            self._flush()
        elif not self._flush_scheduled and not self._receiving and self._conn is not None:
            # What is sent in this loop iteration leaves in one write.
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)  # type: ignore[union-attr]

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        buf = self._wbuf
        conn = self._conn
        if not buf or conn is None or conn.state != "open":
            return
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        try:
            conn.write(data)
        except (BufferFull, ConnectionClosed) as exc:
            # Bytes of the protocol are lost: the session cannot go on consistently.
            self._teardown(exc)

    # ------------------------------------------------------------ MachineHandler

    def on_message(self, value: Any) -> None:
        fn = self._on_message
        if fn is None:
            return
        try:
            result = fn(value)
        except Exception:
            net_logger.exception("packet-stream message handler failed")
            return
        if _is_awaitable(result):
            self._in_flight.started(self._conn)
            self._spawn(self._run_message(result, counted=True))

    async def _run_message(self, aw: Any, counted: bool = False) -> None:
        try:
            await aw
        except Exception:
            net_logger.exception("packet-stream message handler failed")
        finally:
            if counted:
                self._in_flight.finished(self._conn)

    def on_request(self, req: int, value: Any) -> None:
        fn = self._on_request
        if fn is None:
            self._respond(req, NO_REQUEST_HANDLER, True)
            return
        try:
            result = fn(value)
        except Exception as exc:
            self._respond(req, error_payload(exc, include_stack=self.include_stack), True)
            return
        if _is_awaitable(result):
            self._in_flight.started(self._conn)
            self._spawn(self._run_request(req, result))
        else:
            self._respond(req, result, False)

    async def _run_request(self, req: int, aw: Any) -> None:
        try:
            result = await aw
        except Exception as exc:
            self._respond(req, error_payload(exc, include_stack=self.include_stack), True)
        else:
            self._respond(req, result, False)
        finally:
            self._in_flight.finished(self._conn)

    def _respond(self, req: int, value: Any, is_error: bool) -> None:
        try:
            data = self._machine.send_response(req, value, is_error)
        except (TypeError, ValueError, FramingError) as exc:
            # The handler's answer cannot be encoded: answer with that error instead.
            data = self._machine.send_response(
                req, error_payload(exc, include_stack=self.include_stack), True)
        self._send(data)
        if self._machine.closing:
            self._maybe_goodbye()

    def on_response(self, req: int, value: Any, is_error: bool) -> None:
        fut = self._calls.pop(req, None)
        if fut is not None and not fut.done():
            if is_error:
                fut.set_exception(remote_error(value))
            else:
                fut.set_result(value)
        if self._machine.closing:
            self._maybe_goodbye()

    def on_stream_open(self, key: int) -> None:
        s = self._streams[key] = DuplexStream(self, key)
        fn = self._on_stream
        if fn is None:
            # Refuse it and forget it at once: an unhandled stream must not keep close()
            # waiting for a peer that may never end its side.
            self._send(self._machine.send_stream_end(key, NO_STREAM_HANDLER, True))
            self._machine.streams.pop(key, None)
            del self._streams[key]
            return
        try:
            result = fn(s)
        except Exception as exc:
            net_logger.exception("packet-stream stream handler failed")
            s.end(exc)
            return
        if inspect.isawaitable(result):
            self._spawn(self._run_stream(s, result))

    async def _run_stream(self, s: DuplexStream, aw: Any) -> None:
        try:
            await aw
        except Exception as exc:
            net_logger.exception("packet-stream stream handler failed")
            s.end(exc)

    def on_stream_data(self, key: int, value: Any) -> None:
        s = self._streams.get(key)
        if s is not None:
            s._push(value)

    def on_stream_end(self, key: int, value: Any, is_error: bool) -> None:
        s = self._streams.get(key)
        if s is None:
            return
        s._finish(remote_error(value) if is_error else None)
        self._stream_maybe_done(s)

    def on_goodbye(self) -> None:
        pending = bool(self._calls or self._streams or self._machine.unanswered)
        self._teardown(ConnectionClosed(UNEXPECTED_END) if pending else None)

    # ------------------------------------------------------------ internals

    def _stream_maybe_done(self, s: DuplexStream) -> None:
        if s.id not in self._machine.streams:
            self._streams.pop(s.id, None)
            self._maybe_goodbye()

    def _expire(self, rid: int, timeout: float) -> None:
        fut = self._calls.pop(rid, None)
        self._machine.forget_request(rid)
        if fut is not None and not fut.done():
            fut.set_exception(RpcTimeout(f"no answer to request {rid} within {timeout}s"))
        self._maybe_goodbye()

    def _spawn(self, coro: Any) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_data(self, data: bytes) -> None:
        # Answers made while this chunk is processed leave together at its end.
        self._receiving = True
        try:
            self._machine.receive_data(data)
        except FramingError as exc:
            net_logger.debug("packet-stream protocol error: %s", exc)
            self._receiving = False
            self._teardown(exc)
            return
        finally:
            self._receiving = False
        self._flush()

    def _on_conn_close(self) -> None:
        if not self._finished:
            if self._machine.goodbye_sent and self._machine.idle:
                self._teardown(None)  # we said GOODBYE; the peer hung up instead of answering
            else:
                self._teardown(ConnectionClosed("connection closed without GOODBYE"))

    def _maybe_goodbye(self) -> None:
        m = self._machine
        if not m.goodbye_due or self._conn is None or self._finished:
            return
        self._send(m.send_goodbye())
        self._flush()
        # Wait (a little) for the peer's GOODBYE, then hang up regardless.
        loop = self._loop
        assert loop is not None
        self._goodbye_timer = loop.call_later(self.goodbye_timeout, self._teardown, None)

    def _teardown(self, err: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._close_err = err
        if self._goodbye_timer is not None:
            self._goodbye_timer.cancel()
        m = self._machine
        conn = self._conn
        if conn is not None and conn.state == "open":
            # Say GOODBYE unless we did (Node does, even after a protocol error).
            self._send(m.send_goodbye())
            self._flush()
            conn.close()
        if conn is not None:
            conn.off("message", self._on_data)
        m.destroy()
        calls, self._calls = self._calls, {}
        for fut in calls.values():
            if not fut.done():
                fut.set_exception(_closed_error(err))
        streams, self._streams = self._streams, {}
        for s in streams.values():
            s._write_ended = True
            s._finish(_closed_error(err))
        for task in list(self._tasks):
            task.cancel()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        fn = self._on_close
        if fn is not None:
            self._on_close = None
            try:
                result = fn(err)
            except Exception:
                net_logger.exception("packet-stream close handler failed")
            else:
                if inspect.isawaitable(result):
                    self._spawn(self._run_message(result))
