"""The HTTP/1.1 connection: an asyncio.Protocol fed by httptools.

Parser callbacks only record state and enforce limits; requests are answered strictly in
arrival order (pipelining). A route whose plugins and handler are all synchronous is
answered inside the callbacks, with no task; anything asynchronous gets one task per
request. httptools enforces no limits of its own, so every cap is checked here.
"""
from __future__ import annotations

import asyncio
import inspect
from collections import deque
from typing import Any, BinaryIO, Coroutine

import httptools

from packetron.errors import (BadRequest, ConnectionClosed, HeadersTooLarge, HttpError,
                              PayloadTooLarge, ResponseAlreadySent, UriTooLong)
from packetron.http import wire
from packetron.http.request import Request, decode_target
from packetron.http.response import CT_TEXT, Response
from packetron.http.route import BodyMode
from packetron.http.router import METHOD_INDEX, allowed_methods, resolve
from packetron.http.state import ServerState
from packetron.log import access_logger, server_logger
from packetron.status import reason_phrase

__all__ = ["HttpProtocol", "LINGER_SECONDS"]

# After an error response the socket keeps being drained (not read) this long before it
# closes, so a client still sending its body sees our status instead of a reset.
LINGER_SECONDS = 2.0
# A header value grows inside httptools until its line ends; this slack over the header
# cap bounds what one slow giant header can make it buffer.
HEAD_SLACK_BYTES = 8 * 1024

_PAUSE_PIPELINE = 1
_PAUSE_BODY = 2
_PAUSE_LINGER_OFF = 0

_HttpParserCallbackError = httptools.HttpParserCallbackError
_HttpParserError = httptools.HttpParserError
_HttpParserUpgrade = httptools.HttpParserUpgrade


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "state", "loop", "parser", "transport", "peer_host", "_url_parts", "_url_size",
        "_raw_headers", "_header_size", "_host_count", "_content_length", "_expect",
        "_content_type",
        "_in_head", "_head_started", "_head_bytes", "_head_began", "_current", "_active",
        "_queue", "_closing", "_deferred_error", "_idle_since", "_last_data", "_paused",
        "_write_paused", "_drain_waiter", "_tasks", "_max_url", "_max_header_size",
        "_max_header_count", "_head_cap", "_max_buffered_body", "_access_log",
    )

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_host = ""
        options = state.options
        self._max_url = options.max_url_size_in_bytes
        self._max_header_size = options.max_header_size_in_bytes
        self._max_header_count = options.max_header_count
        self._max_buffered_body = options.max_buffered_body_size_in_bytes
        self._access_log = options.access_log
        self._head_cap = options.max_url_size_in_bytes + options.max_header_size_in_bytes \
            + HEAD_SLACK_BYTES
        self._url_parts: list[bytes] = []
        self._url_size = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_size = 0
        self._host_count = 0
        self._content_length: int | None = None
        self._content_type: bytes | None = None
        self._expect = False
        self._in_head = False
        self._head_started = 0.0
        self._head_bytes = 0
        self._head_began = False
        self._current: Request | None = None   # being parsed
        self._active: Request | None = None    # being answered
        self._queue: deque[Request] = deque()  # parsed, waiting for their turn
        self._closing = False
        self._deferred_error: bytes | None = None
        self._idle_since = state.now
        self._last_data = state.now
        self._paused = 0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if isinstance(peer, tuple) else (peer or "")
        self._idle_since = self.state.now
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._closing = True
        for request in (self._current, self._active, *self._queue):
            if request is not None:
                request._connection_lost()
        self._queue.clear()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed("the client closed the connection"))
            waiter.exception()  # mark retrieved: nobody may be waiting any more

    def eof_received(self) -> bool:
        # A half-closed client gets its pending answers; the transport closes after them.
        if self._active is None and not self._queue:
            return False
        self._closing = True
        return True

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self.transport.is_closing():
            raise ConnectionClosed("the client closed the connection")
        if self._write_paused:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self.loop.create_future()
            await waiter

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after an error, or after an upgrade: input is discarded
        self._last_data = self.state.now
        try:
            self.parser.feed_data(data)
        except _HttpParserCallbackError as exc:
            self._callback_failed(exc.__context__)
            return
        except _HttpParserError as exc:
            self._reject(400, f"Bad Request: {exc}")
            return
        except _HttpParserUpgrade:
            # No protocol upgrades are served: answer the request as plain HTTP, then close.
            self._closing = True
            if self._active is None and not self._queue:
                self.transport.close()
            return
        if self._in_head:
            if self._head_began:
                self._head_began = False
            else:
                self._head_bytes += len(data)
                if self._head_bytes > self._head_cap:
                    self._reject(431, "Request Header Fields Too Large")

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_began = True
        self._head_bytes = 0
        self._head_started = self.state.now
        self._url_parts = []
        self._url_size = 0
        self._raw_headers = []
        self._header_size = 0
        self._host_count = 0
        self._content_length = None
        self._content_type = None
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self._url_size += len(url)
        if self._url_size > self._max_url:
            raise UriTooLong("URI Too Long")
        self._url_parts.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._raw_headers
        size = self._header_size + len(name) + len(value) + 4
        self._header_size = size
        if size > self._max_header_size or len(headers) >= self._max_header_count:
            raise HeadersTooLarge("Request Header Fields Too Large")
        headers.append((name, value))
        length = len(name)
        # Only four headers matter before routing; compare lengths first to skip lower().
        if length == 4:
            if name.lower() == b"host":
                self._host_count += 1
        elif length == 14:
            if name.lower() == b"content-length":
                self._content_length = int(value)
        elif length == 12:
            if name.lower() == b"content-type":
                self._content_type = value
        elif length == 6:
            if name.lower() == b"expect":
                if value.lower() != b"100-continue":
                    raise HttpError("Expectation Failed", status_code=417)
                self._expect = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._closing:
            return
        parser = self.parser
        version = parser.get_http_version()
        if self._host_count != 1 and version == "1.1":
            raise BadRequest("Bad Request: an HTTP/1.1 request needs exactly one Host header")
        method = parser.get_method()
        parts = self._url_parts
        target = parts[0] if len(parts) == 1 else b"".join(parts)
        if target[:1] == b"/" and b"?" not in target and b"%" not in target and target.isascii():
            path = url = target.decode("ascii")  # the common case, without decode_target
            query = ""
        else:
            path, query = decode_target(target)
            url = target.decode("latin-1")
        # An upgrade (or CONNECT) is answered as plain HTTP and the connection then closed:
        # the bytes after it belong to another protocol that is not served here.
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        request = Request(self, method.decode("ascii"), path, url, query, version,
                          self._raw_headers, keep_alive)
        request.content_length = length = self._content_length
        request.response = Response(self, request)
        self._route(request, method, path, length)
        self._current = request
        if self._active is None:
            self._start(request)
        else:
            self._queue.append(request)
            if len(self._queue) >= self.state.options.max_pipelined_requests:
                self._pause(_PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        request = self._current
        if request is None:
            return
        size = request.body_size + len(body)
        request.body_size = size
        cap = request.body_cap
        if cap is not None and size > cap:
            raise PayloadTooLarge(f"Payload Too Large: the body exceeds {cap} bytes")
        if request.discard_body:
            return
        if request.streaming:
            request._feed(body)
        else:
            request._chunks.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        if request is None:
            return
        self._current = None
        request._complete()
        if request.run_on_complete:
            request.run_on_complete = False
            self._call_sync(request)

    # ------------------------------------------------------------ routing

    def _route(self, request: Request, method: bytes, path: str, length: int | None) -> None:
        """Pick the route, or record the error status the request will be answered with."""
        slots = self.state.router.lookup(path.strip("/"))
        if slots is None:
            request.error = (404, "Not Found", None)
        else:
            index = METHOD_INDEX.get(method)
            route = None if index is None else resolve(slots, index)
            if route is None:
                status = 405 if index is not None else 501
                request.error = (status, reason_phrase(status),
                                 [("Allow", allowed_methods(slots))])
            else:
                request.route = route
                limiter = route.rate_limiter
                if limiter is not None and not limiter.allow(self.loop.time()):
                    request.error = (429, "Too Many Requests", [("Retry-After", "1")])
                else:
                    cap = route.max_request_size_in_bytes
                    mode = route.body_mode
                    streaming = route.streams or (
                        mode is BodyMode.FORM and self._content_type is not None
                        and self._content_type[:10].lower() == b"multipart/")
                    if cap is None and not streaming and mode is not BodyMode.DISCARD:
                        cap = self._max_buffered_body
                    if cap is not None and length is not None and length > cap:
                        # Refused before one body byte is read, and instead of 100 Continue.
                        raise PayloadTooLarge(
                            f"Payload Too Large: Content-Length {length} exceeds {cap} bytes")
                    request.body_cap = cap
                    request.streaming = streaming
                    if mode is BodyMode.DISCARD:
                        request.discard_body = True
                    if self._expect:
                        request.expect_continue = True
                    return
        request.discard_body = True
        if self._expect:
            # The client holds its body back; without reading it the framing is lost.
            request.keep_alive = False

    # ------------------------------------------------------------ answering

    def _start(self, request: Request) -> None:
        """Begin answering `request`; called in arrival order."""
        self._active = request
        error = request.error
        if error is not None:
            status, message, headers = error
            response = request.response
            if headers:
                for name, value in headers:
                    response.set_header(name, value)
            response._send(status, CT_TEXT, message.encode("utf-8"))
            return
        route = request.route
        assert route is not None
        if request.expect_continue and not request.body_complete:
            self.transport.write(wire.CONTINUE_RESPONSE)
        local = route.plugins
        if route.local_plugins_only:
            chain = local.plugins
            has_async = local.has_async
        else:
            global_plugins = self.state.global_plugins
            chain = global_plugins.plugins + local.plugins if local.plugins else global_plugins.plugins
            has_async = global_plugins.has_async or local.has_async
        if route.needs_task or has_async or request.streaming:
            self.spawn(request, self._run_async(request, chain))
            return
        response = request.response
        for plugin in chain:
            try:
                answered = plugin.handler(request, response)
            except Exception as exc:
                self._handler_failed(request, exc)
                return
            if answered is True:
                self._after_handler(request, None)
                return
        if request.body_complete or request.discard_body:
            self._call_sync(request)
        else:
            request.run_on_complete = True

    def _call_sync(self, request: Request) -> None:
        route = request.route
        assert route is not None
        try:
            result = route.handler(request, request.response)
        except Exception as exc:
            self._handler_failed(request, exc)
            return
        response = request.response
        if response.sent or response.pending:
            return  # the common case: the handler answered
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            self.spawn(request, self._await_result(request, result))
            return
        self._after_handler(request, result)

    async def _await_result(self, request: Request, result: Any) -> None:
        try:
            self._after_handler(request, await result)
        except Exception as exc:
            self._handler_failed(request, exc)

    async def _run_async(self, request: Request, chain: tuple[Any, ...]) -> None:
        response = request.response
        route = request.route
        assert route is not None
        try:
            for plugin in chain:
                answered = plugin.handler(request, response)
                if inspect.isawaitable(answered):
                    answered = await answered
                if answered is True:
                    self._after_handler(request, None)
                    return
            if route.is_async:
                result = await route.handler(request, response)
            else:
                await request._prepare_for_sync_handler()
                result = route.handler(request, response)
                if inspect.isawaitable(result):
                    result = await result
            self._after_handler(request, result)
        except ConnectionClosed:
            pass  # the client left; nobody is there to answer
        except Exception as exc:
            self._handler_failed(request, exc)

    def _after_handler(self, request: Request, result: Any) -> None:
        response = request.response
        if response.sent or response.pending:
            return
        if result is not None:
            response.send(result)  # a handler may simply return its payload
            return
        server_logger.error("%s %s: the handler returned without sending a response",
                            request.method, request.path)
        self._send_error(request, 500, "Internal Server Error: no response was sent")

    def _handler_failed(self, request: Request, exc: BaseException) -> None:
        if isinstance(exc, HttpError):
            status = exc.status_code
            message = str(exc) or reason_phrase(status)
        elif isinstance(exc, ResponseAlreadySent):
            server_logger.error("%s %s: %s", request.method, request.path, exc)
            return
        else:
            server_logger.error("%s %s: handler raised", request.method, request.path,
                                exc_info=exc)
            status, message = 500, "Internal Server Error"
        self._send_error(request, status, message)

    def _send_error(self, request: Request, status: int, message: str) -> None:
        response = request.response
        if response.sent:
            # Half a response is out; the only honest ending is to cut the connection.
            if not response.finished:
                self.transport.close()
            return
        response.pending = False
        if not request.body_complete:
            request.keep_alive = False  # do not read the rest of a body we refused
        response._headers = None
        response._has_content_type = False
        response._send(status, CT_TEXT, message.encode("utf-8"))

    def spawn(self, request: Request, coro: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        """Run a coroutine for `request`, keeping a strong reference until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ called by Response

    def connection_header(self, request: Request) -> bytes:
        if not request.keep_alive or self._closing or self.state.stopping:
            return wire.CLOSE_HEADER
        if request.http_version == "1.0":
            return wire.KEEP_ALIVE_HEADER
        return b""

    def write(self, data: bytes) -> None:
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)

    async def sendfile(self, file: BinaryIO, offset: int, count: int) -> None:
        try:
            await self.loop.sendfile(self.transport, file, offset, count)
            return
        except (NotImplementedError, RuntimeError, AttributeError):
            pass  # uvloop and TLS transports: copy through user space instead
        file.seek(offset)
        remaining = count
        while remaining > 0:
            chunk = file.read(min(remaining, 256 * 1024))
            if not chunk:
                raise ConnectionClosed("file ended before the announced length")
            self.write(chunk)
            remaining -= len(chunk)
            await self.drain()

    def response_finished(self, request: Request) -> None:
        """The whole response to `request` is written: close, or answer the next one."""
        if request is not self._active:
            return
        self._active = None
        if self._access_log:
            access_logger.info('%s "%s %s HTTP/%s" %d', self.peer_host, request.method,
                               request.url, request.http_version, request.response.status)
        if not request.body_complete:
            # Answered early (DONT_USE_BODY, a plugin, an error): drop the rest of the body.
            request.discard_body = True
            request._chunks.clear()
            self._resume(_PAUSE_BODY)
        if not request.keep_alive or self._closing or self.state.stopping:
            deferred = self._deferred_error
            if deferred is not None:
                self._deferred_error = None
                self.write(deferred)
            self._linger_close() if not request.body_complete else self.transport.close()
            return
        queue = self._queue
        if queue:
            if self._paused & _PAUSE_PIPELINE and len(queue) <= self.state.options.max_pipelined_requests // 2:
                self._resume(_PAUSE_PIPELINE)
            self._start(queue.popleft())
        else:
            self._idle_since = self.state.now

    # ------------------------------------------------------------ flow control

    def _pause(self, reason: int) -> None:
        if not self._paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def pause_body(self) -> None:
        self._pause(_PAUSE_BODY)

    def resume_body(self) -> None:
        self._resume(_PAUSE_BODY)

    # ------------------------------------------------------------ errors and closing

    def _callback_failed(self, original: BaseException | None) -> None:
        if isinstance(original, HttpError):
            self._reject(original.status_code, str(original) or reason_phrase(original.status_code))
        else:
            server_logger.error("error while parsing a request", exc_info=original)
            self._reject(500, "Internal Server Error")

    def _reject(self, status: int, message: str) -> None:
        """Answer a broken request with `status`, then close; earlier answers go first."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        current = self._current
        if current is not None:
            current._connection_lost()  # a handler waiting for this body gets ConnectionClosed
        payload = wire.simple_response(status, self.state.date_header,
                                       message.encode("utf-8"), close=True)
        active = self._active
        if active is not None and active is not current and not active.response.finished:
            self._deferred_error = payload  # written after the answer in progress
            return
        if active is not None and active.response.sent:
            self._linger_close()  # that request already has its (only) answer
            return
        if active is not None:
            active.response.sent = active.response.finished = True
            self._active = None
        self.write(payload)
        self._linger_close()

    def _linger_close(self) -> None:
        self._closing = True
        transport = self.transport
        if transport.is_closing():
            return
        if self._paused:
            self._paused = 0
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def check_timeouts(self, now: float) -> None:
        """Close connections that are too slow or idle too long (called once a second)."""
        if self._closing or self.transport is None:
            return
        options = self.state.options
        if self._in_head:
            if now - self._head_started > options.header_timeout:
                self._reject(408, "Request Timeout: the request head took too long")
        elif self._current is not None:
            if not self._paused and now - self._last_data > options.body_timeout:
                self._reject(408, "Request Timeout: the body stopped arriving")
        elif self._active is None and not self._queue:
            if now - self._idle_since > options.keep_alive_timeout:
                self.transport.close()

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, otherwise after the answer in progress."""
        if self._active is None and self._current is None and not self._in_head:
            self.transport.close()
