"""A WebSocket connection: the frame codec (sans-I/O) driven over the asyncio transport.

The HTTP protocol parses the upgrade request and runs the plugins; the route's handler
(packetron.http.websocket.route) then builds a `WebSocket` and calls the application's
handler with it. Until `accept()` the connection is still HTTP: a handler that refuses
(closes or returns first) is answered with 403 by the exchange. `accept()` writes the
101 answer and hands the transport to a `_Session`, the asyncio protocol from then on:
the HTTP protocol object steps aside and the session takes its place in the serving
loop's registry, where the once-a-second tick checks pings and close timeouts and a
graceful stop closes it with 1001. Incoming bytes go to a `FrameReader`
(packetron.http.websocket.frames), which reports whole messages, control frames and
protocol violations back through the session; outgoing frames are built by the same module.

Memory stays bounded whatever the peer does: a message over `max_message_size` is refused
with 1009 (announced sizes are refused before the payload arrives; compressed ones are
inflated only up to the cap), at most a few messages wait for the handler before reading
pauses, and `send()` waits while the transport's write buffer is over its high-water mark.
"""
from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Iterable

from packetron.errors import HttpError, PacketronError, WebSocketClosed
from packetron.http.websocket.extensions import Deflater, Inflater, negotiate_deflate
from packetron.http.websocket.frames import (BINARY_HEADS, OP_BINARY, OP_PING, OP_PONG,
                                             OP_TEXT, TEXT_HEADS, FrameReader, encode_close,
                                             encode_frame)
from packetron.http.websocket.handshake import UpgradeOffer, switching_head
from packetron.log import server_logger

if TYPE_CHECKING:
    from packetron.http.connection import Connection as HttpConnection
    from packetron.http.request import Request

__all__ = ["WebSocket", "CLOSE_TIMEOUT_SECONDS", "HANDLER_CANCEL_GRACE_SECONDS"]

# After sending a close frame, the peer has this long to answer with its own before the
# connection is cut (RFC 6455 §7.1.1 leaves the wait to the endpoint).
CLOSE_TIMEOUT_SECONDS = 5.0
# Once the connection is gone, a handler that does not end by itself (it waits on
# something other than the socket, a channel subscription say) is cancelled after this.
HANDLER_CANCEL_GRACE_SECONDS = 1.0
# Received messages the handler has not taken yet; past this reading pauses (the peer
# is slowed down by TCP), so a handler that never calls receive() holds little memory.
_MAX_QUEUED_MESSAGES = 16

_CONNECTING, _OPEN, _CLOSED = 0, 1, 2
# Close codes an endpoint may send (RFC 6455 §7.4): 1000-1003, 1007-1014, 3000-4999.
_SENDABLE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) \
    | frozenset(range(3000, 5000))
_REASONS = {1002: "protocol error", 1007: "invalid message data", 1009: "message too big",
            1011: "internal error"}

Handler = Callable[["WebSocket", "Request"], Awaitable[Any]]


class WebSocket:
    """One WebSocket connection, as a handler sees it.

    Attributes:
        request: the upgrade request (headers, cookies, `get_ip()`, ...).
        path_params: the route's converted path parameters.
        subprotocols: the subprotocols the client offered, in its order.
        subprotocol: the one accepted (None: none).
        close_code, close_reason: how the connection ended (None until it has):
            the peer's code when it closed first, ours when we did, 1006 when it was lost.
    """

    __slots__ = ("request", "path_params", "subprotocols", "subprotocol", "close_code",
                 "close_reason", "_offer", "_http", "_options", "_loop", "_state",
                 "_reader", "_deflater", "_transport", "_session", "_incoming",
                 "_receiver", "_input_closed", "_output_closed",
                 "_close_received", "_write_paused", "_drain", "_reading_paused",
                 "_broken", "_close_deadline", "_last_received", "_ping_sent_at",
                 "_ping_payload", "_task", "_handler_done", "_lost", "_refused")

    def __init__(self, request: "Request", offer: UpgradeOffer) -> None:
        http: HttpConnection = request._protocol
        self.request = request
        self.path_params = request.path_params
        self.subprotocols = offer.subprotocols
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._offer = offer
        self._http = http
        self._options = http.state.options
        self._loop = http.loop
        self._state = _CONNECTING
        self._reader: FrameReader | None = None     # set at accept()
        self._deflater: Deflater | None = None      # permessage-deflate was agreed
        self._transport: asyncio.Transport | None = None
        self._session: _Session | None = None
        self._incoming: deque[str | bytes] = deque()
        self._receiver: asyncio.Future[str | bytes | None] | None = None
        self._input_closed = False   # no more messages will be delivered
        self._output_closed = False  # a close frame was sent (or the peer is gone)
        self._close_received = False  # the peer's close frame came
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._broken = False         # the peer broke the protocol: input is discarded
        self._close_deadline = 0.0
        self._last_received = 0.0
        self._ping_sent_at = 0.0
        self._ping_payload = b""
        self._task: asyncio.Task[Any] | None = None
        self._handler_done = False
        self._lost = False
        self._refused = False

    # ------------------------------------------------------------ the handshake

    async def accept(self, subprotocol: str | None = None,
                     headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer the upgrade with 101 and open the connection.

        Called for you at the first receive() or send(). Headers the plugins set on the
        request's response (and their after-hooks) go into the 101 answer too.

        Args:
            subprotocol: one of `subprotocols` to agree on, or None.
            headers: extra (name, value) headers for the 101 answer.

        Raises:
            ValueError: `subprotocol` was not offered, or a header is invalid.
            WebSocketClosed: the client left before the upgrade.
            PacketronError: already accepted or closed.
        """
        if self._state is not _CONNECTING:
            raise PacketronError("the WebSocket was already accepted or closed")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client "
                             f"(offered: {', '.join(self.subprotocols) or 'none'})")
        http = self._http
        request = self.request
        response = request.response
        extra = list(headers)
        waiting = response._run_afters(101)  # plugins' after-hooks see the 101 too
        if waiting is not None:
            await waiting
        if self._state is not _CONNECTING:
            raise PacketronError("the WebSocket was already accepted or closed")
        transport = http.transport
        if transport.is_closing():
            self._refuse(1006, "the client left before the upgrade")
            raise self._closed_error()
        negotiated = negotiate_deflate(self._offer.extensions)
        head = switching_head(self._offer.key, subprotocol=subprotocol,
                              extensions=negotiated[1] if negotiated else None,
                              headers=[*(response._headers or ()), *extra],
                              date_header=http.state.date_header)
        response.status = 101
        response.sent = response.finished = True
        tail, write_paused = http.detach_for_upgrade(request)
        self.subprotocol = subprotocol
        self._state = _OPEN
        self._transport = transport
        self._write_paused = write_paused
        self._last_received = http.state.now
        session = self._session = _Session(self)
        inflater = None
        if negotiated is not None:
            inflater = Inflater(negotiated[0])
            self._deflater = Deflater(negotiated[0])
        self._reader = FrameReader(session, self._options.max_message_size, inflater)
        transport.set_protocol(session)
        http.state.connections.add(session)
        transport.write(head)
        if tail:
            session.data_received(tail)
        if not self._reading_paused and not transport.is_closing():
            transport.resume_reading()  # the HTTP protocol paused it at the upgrade

    # ------------------------------------------------------------ receiving

    def receive(self) -> Coroutine[Any, Any, str | bytes]:
        """The next message: str for a text message, bytes for a binary one (a coroutine:
        `await ws.receive()`).

        Raises:
            WebSocketClosed: the connection is closed (`.code`, `.reason` say how).
        """
        return self._receive(False)

    async def _receive(self, iterating: bool) -> str | bytes:
        """receive(), or the step of `async for` (StopAsyncIteration once closed)."""
        if self._state is _CONNECTING:
            await self.accept()
        while True:
            incoming = self._incoming
            if incoming:
                message = incoming.popleft()
                if self._reading_paused:
                    self._maybe_resume_reading()
                return message
            if self._input_closed:
                if iterating:
                    raise StopAsyncIteration
                raise self._closed_error()
            if self._receiver is not None:
                raise PacketronError("another task is already waiting in receive()")
            receiver = self._receiver = self._loop.create_future()
            try:
                message = await receiver  # _on_message hands it over; None: look again
            except BaseException:
                # Cancelled (a timeout, say) just after a message was handed over: it
                # stays first in line for the next receive, never lost.
                if receiver.done() and not receiver.cancelled() \
                        and receiver.result() is not None:
                    self._incoming.appendleft(receiver.result())
                raise
            finally:
                self._receiver = None
            if message is not None:
                return message

    def _maybe_resume_reading(self) -> None:
        incoming = self._incoming
        if len(incoming) <= _MAX_QUEUED_MESSAGES // 2 \
                and sum(map(len, incoming)) <= self._options.max_message_size // 2:
            self._reading_paused = False
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    async def receive_text(self) -> str:
        """receive(), insisting on a text message.

        Raises:
            TypeError: a binary message came instead.
        """
        message = await self.receive()
        if not isinstance(message, str):
            raise TypeError("expected a text message, got a binary one")
        return message

    async def receive_bytes(self) -> bytes:
        """receive(), insisting on a binary message.

        Raises:
            TypeError: a text message came instead.
        """
        message = await self.receive()
        if not isinstance(message, bytes):
            raise TypeError("expected a binary message, got a text one")
        return message

    def __aiter__(self) -> "WebSocket":
        return self

    def __anext__(self) -> Coroutine[Any, Any, str | bytes]:
        """The next message; `async for` simply ends when the connection closes. (The
        coroutine itself, not one that awaits receive(): one frame fewer per message.)"""
        return self._receive(True)

    # ------------------------------------------------------------ sending

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send one message: text for str, binary for bytes.

        Waits while the client is not reading fast enough (the transport's write buffer
        is over its high-water mark), so a slow client slows the sender down instead of
        filling the server's memory.

        Raises:
            WebSocketClosed: the connection is closed.
            TypeError: `message` is neither str nor bytes-like.
        """
        if self._state is _CONNECTING:
            await self.accept()
        if isinstance(message, str):
            payload = message.encode("utf-8")
            heads = TEXT_HEADS
        elif isinstance(message, (bytes, bytearray, memoryview)):
            payload = bytes(message)
            heads = BINARY_HEADS
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")
        if self._output_closed:
            raise self._closed_error()
        deflater = self._deflater
        size = len(payload)
        if deflater is None and size < 126:
            frame = heads[size] + payload  # text_frame() / binary_frame() written out
        else:
            opcode = OP_TEXT if heads is TEXT_HEADS else OP_BINARY
            frame = encode_frame(opcode, payload) if deflater is None else \
                encode_frame(opcode, deflater.compress(payload), rsv1=True)
        transport = self._transport
        assert transport is not None
        transport.write(frame)
        if self._write_paused:
            await self._wait_for_drain()

    async def _wait_for_drain(self) -> None:
        waiter = self._drain
        if waiter is None:
            waiter = self._drain = self._loop.create_future()
        await waiter

    @property
    def buffered_amount(self) -> int:
        """Bytes written but not yet sent to the client (the transport's write buffer)."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    # ------------------------------------------------------------ closing

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake with `code` and `reason` (returns at once; the
        connection closes when the client answers, or after CLOSE_TIMEOUT_SECONDS).

        Before accept(), this refuses the upgrade: the client gets HTTP 403.

        Raises:
            ValueError: `code` is not one an endpoint may send, or `reason` is over
                123 bytes of UTF-8.
        """
        if code not in _SENDABLE_CODES:
            raise ValueError(f"close code {code} cannot be sent (RFC 6455 §7.4)")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if self._reader is None:
            self._refuse(code, reason)
            return
        self._send_close(code, reason)

    def _refuse(self, code: int, reason: str) -> None:
        # Not upgraded: the exchange answers 403 once the handler returns.
        self._refused = True
        self._state = _CLOSED
        self._input_closed = self._output_closed = True
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def _send_close(self, code: int, reason: str) -> None:
        """Send our close frame (once); the connection ends when the peer answers."""
        if self._output_closed:
            return
        self._output_closed = True
        self._close_input()
        transport = self._transport
        assert transport is not None
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if not transport.is_closing():
            transport.write(encode_close(code, reason))
        if self._close_received:
            transport.close()  # the handshake is complete: the server closes TCP first
        else:
            self._close_deadline = self._loop.time() + CLOSE_TIMEOUT_SECONDS
        self._wake_drain(self._closed_error())

    def _fail(self, code: int, reason: str) -> None:
        """A protocol violation or a dead peer: send close (if possible), stop reading
        frames, and let the peer see end of file so it closes too."""
        self._broken = True
        self.close_code, self.close_reason = code, reason
        self._send_close(code, reason)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()  # read (and discard) until the peer closes
            if transport.can_write_eof():
                transport.write_eof()

    def _closed_error(self) -> WebSocketClosed:
        return WebSocketClosed(self.close_code if self.close_code is not None else 1006,
                               self.close_reason)

    def _close_input(self) -> None:
        self._input_closed = True
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            receiver.set_result(None)  # receive() looks again and raises

    def _wake_drain(self, error: BaseException | None) -> None:
        waiter, self._drain = self._drain, None
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
                waiter.exception()  # retrieved: the sender may have gone already

    # ------------------------------------------------------------ transport events

    def _on_message(self, message: str | bytes) -> None:
        if self._input_closed:
            return  # we are closing: data frames are discarded (RFC 6455 §1.4)
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            receiver.set_result(message)  # straight to the waiting handler
            return
        incoming = self._incoming
        incoming.append(message)
        # A lone message is within max_message_size (the reader saw to it): only a
        # queue the handler is behind on can be too long or too big.
        if len(incoming) > 1 and not self._reading_paused \
                and (len(incoming) >= _MAX_QUEUED_MESSAGES
                     or sum(map(len, incoming)) > self._options.max_message_size):
            self._reading_paused = True
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()

    def _on_ping(self, payload: bytes) -> None:
        if not self._output_closed:
            self._write(encode_frame(OP_PONG, payload))

    def _on_close_frame(self, code: int, reason: str) -> None:
        self._close_received = True
        if not self._output_closed:
            # The peer closes first: answer with its code (none, for 1005), then close TCP.
            self.close_code, self.close_reason = code, reason
            self._close_input()
            self._output_closed = True
            self._write(encode_close(code, reason))
            self._wake_drain(self._closed_error())
        if self._transport is not None:
            # Or it answered our close: the handshake is complete either way.
            self._transport.close()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _on_lost(self) -> None:
        self._lost = True
        self._state = _CLOSED
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, "the connection was lost"
        self._output_closed = True
        self._close_input()
        self._wake_drain(self._closed_error())
        task = self._task
        if not self._handler_done and task is not None:
            # A handler waiting on something other than this socket would never end.
            self._loop.call_later(HANDLER_CANCEL_GRACE_SECONDS, _cancel_if_running, task)
        self._maybe_unregister()

    def _maybe_unregister(self) -> None:
        if self._lost and self._handler_done and self._session is not None:
            self._http.state.connections.discard(self._session)  # type: ignore[arg-type]

    # ------------------------------------------------------------ timeouts

    def _check_timeouts(self, now: float) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._output_closed:
            if self._close_deadline and self._loop.time() > self._close_deadline:
                transport.abort()  # the peer never answered our close
            return
        options = self._options
        interval = options.ping_interval
        if interval is None:
            return
        if self._ping_sent_at:
            timeout = options.ping_timeout
            if timeout is not None and now - self._ping_sent_at > timeout \
                    and self._last_received < self._ping_sent_at:
                self._fail(1011, "keepalive ping timeout")
                transport.abort()
        elif now - self._last_received >= interval:
            self._ping_payload = os.urandom(4)
            self._ping_sent_at = now
            self._write(encode_frame(OP_PING, self._ping_payload))

    def _shutdown(self) -> None:
        """Graceful stop of the server: close with 1001 (going away)."""
        if self._state is _OPEN and not self._output_closed:
            self._send_close(1001, "server shutting down")

    # ------------------------------------------------------------ the handler

    async def _run(self, handler: Handler) -> None:
        """Run the application's handler; what it leaves open is closed after it.

        Raises:
            HttpError: the handler refused the upgrade (403), or raised before accept()
                (its exception goes to the exchange's error boundary as is).
        """
        self._task = asyncio.current_task()
        failed: BaseException | None = None
        try:
            await handler(self, self.request)
        except WebSocketClosed:
            pass  # the peer left: the normal end of many handlers
        except Exception as exc:
            if self._state is _CONNECTING and not self._refused:
                raise  # not upgraded yet: answered as HTTP (500, or the HttpError's status)
            failed = exc
        finally:
            self._handler_done = True
            self._maybe_unregister()
        if self._reader is None:
            if self._http.transport.is_closing():
                response = self.request.response
                response.sent = response.finished = True
                return  # the client left; nobody is there to answer
            # Closed, or returned, before accept(): refuse the upgrade.
            raise HttpError("Forbidden: the WebSocket handler did not accept the connection",
                            status_code=403)
        if failed is not None:
            server_logger.error("%s: WebSocket handler raised", self.request.path,
                                exc_info=failed)
            if not self._output_closed:
                self._send_close(1011, _REASONS[1011])
        elif not self._output_closed:
            self._send_close(1000, "")


def _cancel_if_running(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()


class _Session(asyncio.Protocol):
    """The asyncio protocol of an upgraded connection, and the listener of its frame
    reader; it forwards both to its WebSocket and is what the serving loop's registry
    holds (tick, graceful stop, abort)."""

    __slots__ = ("ws", "transport")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.transport = ws._transport

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if ws._broken:
            return  # after a protocol error only the peer's end of file matters
        reader = ws._reader
        assert reader is not None
        if reader.stopped:
            return  # the peer's close came: nothing after it counts (RFC 6455 §5.5.1)
        ws._last_received = ws._http.state.now
        reader.feed(data)

    def eof_received(self) -> bool:
        return False  # the peer is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws._on_lost()

    def pause_writing(self) -> None:
        self.ws._write_paused = True

    def resume_writing(self) -> None:
        ws = self.ws
        ws._write_paused = False
        ws._wake_drain(None)

    # The frame reader's listener (packetron.http.websocket.frames.FrameListener).

    @property
    def on_message(self) -> Callable[[str | bytes], None]:
        # Read once, when the FrameReader is made: it then calls the WebSocket's own
        # method, one call fewer per message.
        return self.ws._on_message

    def on_ping(self, payload: bytes) -> None:
        self.ws._on_ping(payload)

    def on_pong(self, payload: bytes) -> None:
        self.ws._ping_sent_at = 0.0

    def on_close(self, code: int, reason: str) -> None:
        self.ws._on_close_frame(code, reason)

    def on_violation(self, code: int, reason: str) -> None:
        # The close frame carries the short, fixed reason for the code, not the detail.
        self.ws._fail(code, _REASONS.get(code, "protocol error"))

    def check_timeouts(self, now: float) -> None:
        self.ws._check_timeouts(now)

    def shutdown(self) -> None:
        self.ws._shutdown()
