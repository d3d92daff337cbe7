"""The HTTP/1.1 connection: an asyncio.Protocol fed by httptools.

Parser callbacks only record state and enforce limits; requests are answered strictly in
arrival order (pipelining). A route whose plugins and handler are all synchronous is
answered inside the callbacks, with no task; anything asynchronous gets one task per
request. httptools enforces no limits of its own, so every cap is checked here.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, BinaryIO, Coroutine

import httptools

from packetron.errors import (BadRequest, ConnectionClosed, HeadersTooLarge, HttpError,
                              MethodNotAllowed, MethodNotImplemented, NotFound,
                              PayloadTooLarge, RequestTimeout, TooManyRequests,
                              TransferCodingNotImplemented, UriTooLong)
from packetron.http import exchange, wire
from packetron.http.accesslog import format_access_line
from packetron.http.filesend import send_file_range
from packetron.http.requestline import method_token_at_failure
from packetron.http.request import (STAGE_AWAITING_BODY, STAGE_HANDLED, Request,
                                    decode_target)
from packetron.http.response import Response
from packetron.http.route import PER_REQUEST_MODES, BodyMode, mode_for_content_type_bytes
from packetron.flags import RequestMethod
from packetron.http.router import METHOD_INDEX, allowed_methods, resolve
from packetron.http.state import ServerState
from packetron.http.websocket.handshake import upgrade_refusal
from packetron.log import access_logger, server_logger
from packetron.status import reason_phrase

__all__ = ["HttpProtocol", "LINGER_SECONDS"]

# After an error response the socket keeps being drained (not read) this long before it
# closes, so a client still sending its body sees our status instead of a reset.
LINGER_SECONDS = 2.0
# A header value grows inside httptools until its line ends; this slack over the header
# cap bounds what one slow giant header can make it buffer.
HEAD_SLACK_BYTES = 8 * 1024

# asyncio's (and uvloop's) default high-water mark of a transport's write buffer, for
# transports that do not tell theirs.
DEFAULT_WRITE_HIGH_WATER = 64 * 1024

# Why reading is paused (bits of HttpProtocol._paused); reading resumes once none is left.
_PAUSE_PIPELINE = 1  # too many requests waiting for their turn
_PAUSE_BODY = 2      # a streaming handler has not taken the body read so far
_PAUSE_WRITE = 4     # the client is not reading its answers (write buffer over its mark)
_PAUSE_UPGRADE = 8   # a WebSocket upgrade waits for its handler to take the connection

# Lengths of the header names _watch_header looks at (Host is handled inline).
_WATCHED_LENGTHS = frozenset({len(b"content-length"), len(b"content-type"),
                              len(b"transfer-encoding"),
                              len(b"connection"), len(b"expect")})
# Their first letters: Origin, Accept and User-Agent share a length with one of them, and
# browsers send all three, which then cost no call.
_WATCHED_FIRST_BYTES = frozenset(b"cCtTeE")
METHOD_NAMES = {name: name.decode("ascii") for name in METHOD_INDEX}
# Host is uri-host [":" port] (RFC 9112 §3.2, RFC 3986 §3.2.2): 1 marks every other byte, so
# `1 in value.translate(table)` finds a space, "/", "@", "?", "\\" or a non-ASCII byte in one
# pass (about 50 ns; the RFC asks for a 400 on an invalid Host).
_HOST_BYTES = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
               b"-._~%!$&'()*+,;=:[]")
_HOST_INVALID_TABLE = bytes(0 if byte in _HOST_BYTES else 1 for byte in range(256))
_HEAD = int(RequestMethod.HEAD)

_HttpParserCallbackError = httptools.HttpParserCallbackError
_HttpParserError = httptools.HttpParserError
_HttpParserInvalidMethodError = httptools.HttpParserInvalidMethodError
_HttpParserUpgrade = httptools.HttpParserUpgrade

# What llhttp decides about methods, and how it is mapped here:
# - llhttp knows a fixed list of methods (HTTP, WebDAV, a few others, and RTSP's). Any other
#   method, however well-formed, stops it at once with HPE_INVALID_METHOD, before any
#   callback. That error becomes 501 when the bytes starting the request are a valid method
#   token (RFC 9110 tchar) followed by a space, and 400 otherwise (a lowercase or unknown
#   word is still a method; binary, TLS or a bare line is not a request).
# - A method it knows but RequestMethod does not (PROPFIND, QUERY, M-SEARCH, ...) reaches
#   on_headers_complete and gets 501 from routing. CONNECT is one of them: no proxying here.
# - An RTSP-only method on an HTTP/ line (DESCRIBE / HTTP/1.1) is rejected by llhttp with a
#   plain parser error ("Invalid method for HTTP/x.x request"): also 501.
# - llhttp also accepts the RTSP/ and ICE/ protocol names on the request line and reports
#   only their version; _check_protocol finds them and answers 400.
_RTSP_ONLY_METHOD_REASON = "Invalid method for HTTP/x.x request"
# The request line of the common request, checked at a known offset (see on_headers_complete).
_SP_HTTP = b" HTTP/"
# Bytes of a request line kept when its head spans reads (method, target and protocol fit).
_LINE_SLACK = 64


class _TrailerList(list):  # type: ignore[type-arg]
    """Trailer fields of a chunked body: the parser appends to it as to the head's list,
    but they are bounded like a head, since nothing else limits them."""

    __slots__ = ("max_count", "max_size", "size")

    def __init__(self, max_count: int, max_size: int) -> None:
        super().__init__()
        self.max_count = max_count
        self.max_size = max_size
        self.size = 0

    def append(self, field: tuple[bytes, bytes]) -> None:
        self.size += len(field[0]) + len(field[1]) + 4
        if len(self) >= self.max_count or self.size > self.max_size:
            raise HeadersTooLarge("Request Header Fields Too Large: trailer section")
        super().append(field)


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "state", "loop", "parser", "transport", "peer_host",
        # limits and per-server settings, copied once per connection
        "_max_url", "_max_header_size", "_max_header_count", "_head_cap", "_access_log",
        "_max_pipelined", "_lookup", "_targets", "_globals", "_patterns", "_pattern_found",
        # the request head being parsed
        "_url", "_raw_headers", "_data", "_host_count", "_special", "_content_length",
        "_content_type", "_connection_header", "_keep_alive_header", "_chunked", "_expect",
        "_head_started", "_head_bytes", "_line_chunk", "_line_more", "_scan_data", "_scan_pos",
        "_plain_data",
        # the loop's clock, and its reading for the read being parsed
        "_clock", "_read_at",
        # requests: being parsed, being answered, waiting their turn
        "_current", "_active", "_queue",
        # connection state
        "_closing", "reuse", "_deferred_error", "_idle_since", "_last_data", "_paused",
        "_write_paused", "_drain_waiter", "_tasks", "_starting", "_input_ended", "_batch",
        "_batched", "_batch_room", "_write_high",
    )

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        # Timestamps are the loop's time when the event happens (not the once-a-second
        # tick's), so a timeout never fires before its configured value.
        self._clock = loop.time
        self._read_at = 0.0  # the loop's time of the read being parsed
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer_host = ""
        options = state.options
        self._max_url = options.max_url_size_in_bytes
        self._max_header_size = options.max_header_size_in_bytes
        self._max_header_count = options.max_header_count
        self._head_cap = options.max_url_size_in_bytes + options.max_header_size_in_bytes \
            + HEAD_SLACK_BYTES
        self._access_log = options.access_log
        self._max_pipelined = options.max_pipelined_requests
        self._lookup = state.router.lookup_raw
        self._targets = state.router.targets
        self._globals = state.global_plugins
        self._patterns = state.router.patterns  # updated in place as routes change
        # (target, match) of the fast lane's pattern lookup for the head being answered,
        # so the general path does not match the same target again.
        self._pattern_found: tuple[bytes, Any] | None = None
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._data = b""  # the chunk being parsed
        # Where a head that spans reads began (the chunk, then what followed, bounded), and
        # how far _check_protocol has searched a chunk holding several requests.
        self._line_chunk = b""
        self._line_more = b""
        self._scan_data = b""
        self._scan_pos = 0
        self._plain_data = b""  # a chunk in which no line can name RTSP/ or ICE/
        self._host_count = 0
        self._special = False  # one of the four fields below was set by the last head
        self._content_length: int | None = None
        self._content_type: bytes | None = None
        self._connection_header = False  # a Connection header other than keep-alive
        self._keep_alive_header = False  # "Connection: keep-alive", which most clients send
        self._chunked = False
        self._expect = False
        self._head_started = 0.0  # loop time the current head began; 0.0: not in a head
        self._head_bytes = 0      # bytes fed while in the head; -1: it began in this chunk
        self._current: Request | None = None
        self._active: Request | None = None
        self._queue: deque[Request] = deque()
        self._closing = False     # input is discarded (after an error or an upgrade)
        self.reuse = True        # the connection may serve another request
        self._deferred_error: bytes | None = None
        self._idle_since = self._last_data = loop.time()
        self._paused = 0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._starting = False  # _start_queued is running (further up the stack)
        self._input_ended = False  # the client half-closed with requests still queued
        # Answers written while one read is parsed, sent together when it is done: 16
        # pipelined requests in one read cost one send() instead of 16. None outside.
        self._batch: list[bytes] | None = None
        self._batched = 0     # bytes in the batch
        self._batch_room = 0  # flushed once it holds more: the transport then pauses us
        self._write_high = DEFAULT_WRITE_HIGH_WATER

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        try:
            self._write_high = transport.get_write_buffer_limits()[1]  # type: ignore[attr-defined]
        except (AttributeError, NotImplementedError):
            pass  # a transport that does not tell: asyncio's default mark
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if isinstance(peer, tuple) else (peer or "")
        self._idle_since = self._clock()
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._closing = True
        self.reuse = False
        for request in (self._current, self._active, *self._queue):
            if request is not None:
                request._connection_lost()
        self._queue.clear()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionClosed("the client closed the connection"))
            waiter.exception()  # mark retrieved: nobody may be waiting any more

    def eof_received(self) -> bool:
        current = self._current
        if current is not None and not current.body_complete:
            # The client ended its side mid-body: that body will never complete, so a
            # handler (or an upload) waiting for it must stop now, not at body_timeout.
            current._connection_lost()
            return False
        # A half-closed client gets its pending answers; the transport closes after them.
        if self._active is None and not self._queue:
            return False
        self._closing = True  # nothing more can arrive
        if self._queue:
            self._input_ended = True  # the last queued answer is the last one (see below)
        else:
            self.reuse = False  # the answer in progress is the last one
        return True

    def pause_writing(self) -> None:
        # A client that sends requests without reading the answers would otherwise make
        # the write buffer grow without bound: read nothing more, and answer nothing more
        # (requests already read wait in the queue), until it has caught up.
        self._write_paused = True
        self._pause(_PAUSE_WRITE)

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self._resume(_PAUSE_WRITE)
        if self._active is None and self._queue:
            self._start_queued()

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
        # One clock reading per read, shared by every head and body piece parsed from it
        # (16 pipelined requests cost one call, not 32).
        self._read_at = self._clock()
        self._data = data
        batch: list[bytes] = []
        self._batch = batch
        self._batched = 0
        # As much as the transport takes before it would pause writing: a client that
        # sends many requests without reading is stopped at the same mark as unbatched.
        self._batch_room = self._write_high - self.transport.get_write_buffer_size()
        try:
            self.parser.feed_data(data)
        except (_HttpParserError, _HttpParserUpgrade) as exc:
            self._parse_failed(exc, data)
        else:
            if self._head_started:
                self._head_continues(data)
        finally:
            # The answers of this read leave together (in one write, in order).
            self._batch = None
            if batch:
                transport = self.transport
                if not transport.is_closing():
                    transport.write(b"".join(batch))  # one piece: join returns it, no copy

    def _parse_failed(self, exc: BaseException, data: bytes) -> None:
        if isinstance(exc, _HttpParserCallbackError):
            self._callback_failed(exc.__context__)
        elif isinstance(exc, _HttpParserInvalidMethodError):
            # The parser stopped at the method: get_method() may still name the request
            # before, so the answer is built without it.
            if method_token_at_failure(data):
                self._reject(501, "Not Implemented: unknown method", head=False)
            else:
                self._reject(400, "Bad Request: Invalid method", head=False)
        elif isinstance(exc, _HttpParserUpgrade):
            if self._hold_for_upgrade(data[exc.args[0]:]):
                return
            # Only WebSocket routes are upgraded: answer the request as plain HTTP, then close.
            self._closing = True
            self.reuse = False
            if self._active is None and not self._queue:
                self._flush()
                self.transport.close()
        elif str(exc) == _RTSP_ONLY_METHOD_REASON:
            self._reject(501, "Not Implemented: unknown method")
        else:
            self._reject(400, f"Bad Request: {exc}")

    def _head_continues(self, data: bytes) -> None:
        """A head is still incomplete after this chunk: bound what httptools buffers (it
        keeps a header line whole until it ends, however long it grows)."""
        if self._head_bytes < 0:
            # It began inside this chunk, after whatever requests came before it there:
            # count what it holds already (its fields, and the line still growing in
            # httptools), so a first read that is mostly one giant head gets its 431
            # now, not a 408 once the client stops sending.
            headers = self._raw_headers
            growing = len(data) - data.rfind(b"\n") - 1
            self._head_bytes = growing + (len(self._url) if headers else 0) + sum(
                len(name) + len(value) + 4 for name, value in headers)
            self._line_chunk = data  # its request line is there (or starts there)
            self._line_more = b""
            if self._head_bytes > self._head_cap or len(headers) > self._max_header_count:
                self._reject(431, "Request Header Fields Too Large")
        else:
            self._head_bytes += len(data)
            if len(self._line_more) < self._max_url + _LINE_SLACK:
                self._line_more += data[:self._max_url + _LINE_SLACK]
            if self._head_bytes > self._head_cap:
                self._reject(431, "Request Header Fields Too Large")

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        # The head's first byte (its method's): header_timeout counts from here, so a
        # method trickled in byte by byte is timed as a head, not as an idle connection.
        # loop.time() is never 0, so a set _head_started always reads as true.
        self._head_started = self._read_at
        self._head_bytes = -1
        self._url = b""
        self._raw_headers = []
        self._host_count = 0
        self._keep_alive_header = False
        if self._special:
            self._special = False
            self._content_length = None
            self._content_type = None
            self._connection_header = False
            self._chunked = False
            self._expect = False

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url  # the target arrived in several pieces
        if len(url) > self._max_url:
            raise UriTooLong("URI Too Long")
        self._url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sizes are checked once per head in on_headers_complete (and growth is bounded
        # in data_received), so a header costs only this append and the name test below.
        self._raw_headers.append((name, value))
        # Few headers matter before routing; compare lengths first to skip lower().
        length = len(name)
        if length == 4:
            if name == b"Host" or name.lower() == b"host":  # most clients send "Host"
                self._host_count += 1
                if 1 in value.translate(_HOST_INVALID_TABLE):
                    self._invalid_host(value)
        elif length in _WATCHED_LENGTHS and name[0] in _WATCHED_FIRST_BYTES:
            self._watch_header(name.lower(), value)

    def _invalid_host(self, value: bytes) -> None:
        if not self._head_started:
            return  # a trailer field: it never decides the Host (request.trailers)
        if 1 in value.strip(b" \t").translate(_HOST_INVALID_TABLE):
            raise BadRequest("Bad Request: invalid Host header")
        # Only surrounding whitespace (OWS, RFC 9112 §5.1): the Host is valid.

    def _watch_header(self, name: bytes, value: bytes) -> None:
        if not self._head_started:
            return  # a trailer field: it never changes framing, routing or the Host
        if name == b"content-length":
            self._content_length = int(value)
        elif name == b"content-type":
            if self._content_type is not None:
                # A singleton field (RFC 9110 §8.3); joining two would mean a third type.
                raise BadRequest("Bad Request: more than one Content-Type header")
            self._content_type = value
        elif name == b"connection":
            if value.lower() == b"keep-alive":
                # Browsers and most client libraries send it on every request: it decides
                # nothing for HTTP/1.1, so it does not take the request off the fast lane.
                self._keep_alive_header = True
                return
            self._connection_header = True
        elif name == b"transfer-encoding":
            if value.strip(b" \t").lower() != b"chunked":
                # gzip, deflate, identity, or a list: only a lone "chunked" is decoded here,
                # and passing a body on undecoded would hand the handler the wrong bytes.
                raise TransferCodingNotImplemented(
                    "Not Implemented: only the chunked transfer coding is supported")
            self._chunked = True
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise HttpError("Expectation Failed", status_code=417)
            self._expect = True
        else:
            return
        self._special = True

    def on_headers_complete(self) -> None:
        self._head_started = 0.0
        if self._closing:
            return
        # Counted once here rather than per header; data_received already bounds memory.
        headers = self._raw_headers
        if len(headers) > self._max_header_count:
            raise HeadersTooLarge("Request Header Fields Too Large")
        if self._head_bytes >= 0 or len(self._data) > self._max_header_size:
            # A head read in one piece no longer than the cap cannot exceed it: only a
            # head that spanned reads, or came in a bigger one, needs adding up.
            if sum(len(name) + len(value) + 4 for name, value in headers) > self._max_header_size:
                raise HeadersTooLarge("Request Header Fields Too Large")
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        method = parser.get_method()
        if keep_alive and not self._special and self._host_count == 1 and self._active is None \
                and not self._write_paused \
                and (not self._keep_alive_header or parser.get_http_version() == "1.1"):
            # The common request, answered here with nothing left to decide: HTTP/1.1 (only
            # 1.1 stays alive with no Connection header or "Connection: keep-alive"), no
            # body (no Content-Length, no Transfer-Encoding), nothing before it still being
            # answered, a synchronous route without plugins or rate limit, found by its
            # target, and no global plugins or only synchronous ones.
            target = self._url
            methods = self._targets.get(target)
            if methods is None:
                query_at = target.find(63)  # "?": a query string does not change the route
                if query_at > 0 and 35 not in target:  # "#": _dispatch_head answers 400
                    methods = self._targets.get(target[:query_at])
            params = None
            if methods is not None:
                route = methods.get(method)
            elif self._patterns.count:  # an attribute: truth would call __bool__
                route, params = self._fast_pattern(target, query_at, method)
            else:
                route = None
            globals_ = self._globals
            if route is not None and route.bodiless_inline \
                    and (not globals_.plugins or not globals_.has_async):
                # llhttp also takes RTSP/ and ICE/ lines. The first request of a
                # chunk starts it, so its protocol is at a known offset; any other
                # request (pipelined, or a head over several reads) is looked for.
                # (_check_protocol's first lines, written out: a call per GET.)
                data = self._data
                if self._plain_data is not data:  # else: this read names neither, known
                    at = len(method) + len(target) + 1
                    if self._scan_data is data or not data.startswith(_SP_HTTP, at):
                        self._check_protocol(method, target)
                    else:
                        self._scan_data = data
                        self._scan_pos = at
                request = Request(self, route.method_name, target, "1.1", headers,
                                  True, route, route.buffered_cap, True)
                if params is not None:
                    request.path_params = params
                response = request.response = Response(self, request)
                self._active = request
                if self._access_log:
                    request.started_at = self.loop.time()
                if globals_.plugins:
                    # Synchronous global plugins: their handlers, after-hooks and the
                    # route's handler run here too, as the exchange orders them.
                    exchange.start(self, request)
                    return
                # exchange.call_handler written out: the call costs ~2% of a GET.
                try:
                    result = route.handler(request, response)
                except Exception as exc:
                    exchange.handler_failed(self, request, exc)
                    return
                if not response.sent and not response.pending:
                    exchange.after_sync_handler(self, request, result)
                return
        self._dispatch_head(parser, keep_alive, method)

    def _dispatch_head(self, parser: httptools.HttpRequestParser, keep_alive: bool,
                       method: bytes) -> None:
        """Every head but the common one: versions, bodies, errors, pipelining."""
        self._last_data = self._read_at  # a body's timeout counts from the end of its head
        target = self._url
        self._check_protocol(method, target)
        if method == b"CONNECT":
            # llhttp treats CONNECT as an upgrade; no proxying (or tunnelling) is served.
            raise MethodNotImplemented("Not Implemented: CONNECT is not supported")
        if keep_alive and self._host_count == 1 and not self._connection_header \
                and not self._keep_alive_header:
            # Only HTTP/1.1 keeps a connection alive without a Connection header, so the
            # version is known without get_http_version(), which formats a new str.
            version = "1.1"
        else:
            version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                # httptools lets "HTTP/2.0" and the bare HTTP/0.9 request line through.
                raise HttpError("HTTP Version Not Supported", status_code=505)
            if self._host_count != 1 and version == "1.1":
                raise BadRequest("Bad Request: an HTTP/1.1 request needs exactly one Host header")
            if self._connection_header and keep_alive:
                # An upgrade is answered as plain HTTP, then the connection is closed: the
                # bytes after it belong to a protocol not served here.
                keep_alive = not parser.should_upgrade()
        query_at = target.find(63)  # "?"; int searches skip building a needle object
        if query_at < 0:
            raw_path = target
        else:
            raw_path = target[:query_at]
            if 35 in target:
                raise BadRequest("Bad Request: a request target cannot contain '#'")
        if raw_path[:1] == b"/" and 37 not in raw_path:  # no "%": no decoding needed
            slots = self._lookup(raw_path.strip(b"/"))
        else:  # percent-escapes, absolute-form or asterisk-form: decode first
            slots = self.state.router.lookup(decode_target(target)[0].strip("/"))
        params = None
        if slots is None and self._patterns.count:
            # Only when no exact route matched: exact routes pay nothing for patterns.
            cached = self._pattern_found
            found = cached[1] if cached is not None and cached[0] is target \
                else self._patterns.match_raw(raw_path)
            if found is not None:
                slots, params = found
        index = METHOD_INDEX.get(method)
        if slots is None and 35 in raw_path:  # a fragment is never sent (RFC 9112 §3.2)
            raise BadRequest("Bad Request: a request target cannot contain '#'")
        route = slots[index] if slots is not None and index is not None else None
        length = self._content_length
        method_name = METHOD_NAMES.get(method) or method.decode("ascii")
        plain = route is not None and route.plain and not self._expect
        content_type = self._content_type
        if (plain and route.auto_body  # type: ignore[union-attr]
                and content_type is not None and content_type[:10].lower() == b"multipart/"):
            plain = False  # AUTO_BODY with a multipart body: it streams (see _route)
        if plain and route is not None:
            # A known route with nothing to decide per request but its body cap.
            cap = route.buffered_cap
            request = Request(self, method_name, target, version, self._raw_headers,
                              keep_alive, route, cap)
            if route.auto_body:
                # The parser, chosen once from the Content-Type already at hand.
                request.auto_mode = mode_for_content_type_bytes(content_type)
            if cap is not None and length is not None and length > cap:
                _refuse_body(request, PayloadTooLarge(
                    f"Payload Too Large: Content-Length {length} exceeds {cap} bytes"))
                plain = False
        else:
            request = Request(self, method_name, target, version, self._raw_headers,
                              keep_alive, None, None)
            self._route(request, slots, index, length)
        if params is not None:
            request.path_params = params
        if self._access_log:
            request.started_at = self.loop.time()
        if length is not None:
            request.content_length = length
        if index == _HEAD:
            request.is_head = True
        if self._chunked:
            # Fields after the last chunk go to request.trailers, never into the head.
            request._trailer_fields = self._raw_headers = _TrailerList(
                self._max_header_count, self._max_header_size)
        request.response = Response(self, request)
        self._current = request
        if self._active is None and not self._write_paused:
            if plain and route.plain_sync and not self._globals.plugins:  # type: ignore[union-attr]
                # What _start would decide for a plain synchronous route, without the call.
                self._active = request
                if (length is None or length == 0) and not self._chunked:
                    # No body follows: the request is complete, answer it right here
                    # (on_message_complete then finds no current request).
                    self._current = None
                    request.body_complete = True
                    request.stage = STAGE_HANDLED
                    exchange.call_handler(self, request)
                else:
                    request.stage = STAGE_AWAITING_BODY
            else:
                self._start(request)
        else:
            self._queue.append(request)
            if len(self._queue) >= self._max_pipelined or length or self._chunked:
                # Too many waiting, or a body that would wait in memory until its turn (32
                # queued bodies of 16 MiB each would be half a gigabyte): read no further.
                self._pause(_PAUSE_PIPELINE)

    def _fast_pattern(self, target: bytes, query_at: int, method: bytes) -> tuple[Any, Any]:
        """(route, path params) of a pattern route for the fast lane; (None, None) when
        there is none for this method (the general path then decides 404 or 405).
        `query_at`: where the query string begins in `target` ("?"), -1 without one."""
        if 35 in target:  # "#": the general path answers 400
            return None, None
        found = self._patterns.match_raw(target if query_at < 0 else target[:query_at])
        self._pattern_found = (target, found)  # the same head's general path reuses it
        index = METHOD_INDEX.get(method)
        if found is None or index is None:
            return None, None
        return found[0][index], found[1]

    def _check_protocol(self, method: bytes, target: bytes) -> None:
        """Refuse a request line naming RTSP/ or ICE/ instead of HTTP/ (llhttp accepts
        all three and reports only the version).

        The first request of a chunk that begins with its line is checked at a fixed
        offset. Any other is searched for in this chunk after the lines already found in
        it, or, for a head that spanned reads, where it began. A false match needs bytes
        the same client sent, and at worst lets its own request through as HTTP.

        Raises:
            BadRequest: the protocol is not HTTP.
        """
        data = self._data
        if self._plain_data is data:
            return  # no line of this chunk names another protocol
        if self._scan_data is not data:
            at = len(method) + len(target) + 1
            if data.startswith(_SP_HTTP, at):
                self._scan_data = data
                self._scan_pos = at
                return
        if self._head_bytes < 0:  # the whole head is in this chunk
            if data.find(b" RTSP/") < 0 and data.find(b" ICE/") < 0:
                # No line of this chunk names another protocol: two scans of the chunk
                # instead of one search per pipelined request. (find, not "in": a bytes
                # needle given to "in" is first tried as an int, and the TypeError that
                # raises and clears costs more than the scan of a whole 16-request read.)
                self._plain_data = data
                return
            needle = b" " + target + b" "
            start = self._scan_pos if self._scan_data is data else 0
            at = data.find(needle, start)
            if at < 0:
                return
            self._scan_data = data
            self._scan_pos = at + len(needle)
            hay = data
        else:
            needle = b" " + target + b" "
            hay = self._line_chunk
            at = hay.rfind(needle)
            if at < 0 or len(hay) < at + len(needle) + 5:
                # The line was cut between reads: join its pieces.
                keep = self._max_url + _LINE_SLACK
                tail = hay[-keep:]
                hay = tail + self._line_more + data[:keep]
                at = hay.rfind(needle, 0, len(tail) + len(needle) - 1)
                if at < 0:
                    return
        at += len(needle)
        if hay.startswith(b"RTSP/", at) or hay.startswith(b"ICE/", at):
            raise BadRequest("Bad Request: not an HTTP request line")

    def on_body(self, body: bytes) -> None:
        request = self._current
        if request is None:
            return
        self._last_data = self._read_at
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
            chunks = request._chunks
            if chunks is None:
                request._chunks = deque((body,))
            else:
                chunks.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        if request is None:
            return
        self._current = None
        request.body_complete = True
        if request._waiter is not None:
            request._wake()
        if request.stage == STAGE_AWAITING_BODY:
            request.stage = STAGE_HANDLED
            exchange.call_handler(self, request)

    # ------------------------------------------------------------ routing

    def _route(self, request: Request, slots: list[Any] | None, index: int | None,
               length: int | None) -> None:
        """Every routing case but the plain one: errors, limits, streaming, expectations."""
        if index is None:
            # A method no route can serve, on any path: 501 (RFC 9110 §9.1), with the
            # methods of the path when it has routes.
            request.error = MethodNotImplemented(
                "Not Implemented",
                headers=[("Allow", allowed_methods(slots))] if slots is not None else None)
        elif slots is None:
            request.error = NotFound("Not Found")
        else:
            route = None if index is None else resolve(slots, index)
            if route is None:
                request.error = MethodNotAllowed(reason_phrase(405),
                                                 headers=[("Allow", allowed_methods(slots))])
            else:
                limiter = route.rate_limiter
                refusal = None if route.websocket is None else upgrade_refusal(
                    request.method, request.http_version, self._raw_headers,
                    bool(length) or self._chunked)
                if refusal is not None:
                    # A WebSocket route asked for without a valid upgrade (400 / 426),
                    # answered before any plugin runs.
                    request.route = route
                    request.error = refusal
                elif limiter is not None and not limiter.allow(self.loop.time()):
                    request.route = route  # its after-hooks see the 429 too
                    request.error = TooManyRequests("Too Many Requests",
                                                    headers=[("Retry-After", "1")])
                else:
                    mode = route.body_mode
                    streaming = route.streams
                    cap = route.buffered_cap
                    if (mode in PER_REQUEST_MODES and self._content_type is not None
                            and self._content_type[:10].lower() == b"multipart/"):
                        streaming = True
                        cap = route.max_request_size_in_bytes
                    request.route = route
                    if cap is not None and length is not None and length > cap:
                        # Refused before one body byte is read, and instead of 100 Continue.
                        _refuse_body(request, PayloadTooLarge(
                            f"Payload Too Large: Content-Length {length} exceeds {cap} bytes"))
                        return
                    request.body_cap = cap
                    if streaming:
                        request.streaming = True
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
        exchange.start(self, request)

    def spawn(self, request: Request, coro: Coroutine[Any, Any, Any]) -> "asyncio.Task[Any]":
        """Run a coroutine for `request`, keeping a strong reference until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ called by Response

    def connection_header(self, request: Request) -> bytes:
        if not request.keep_alive or not self.reuse:
            return wire.CLOSE_HEADER
        if request.http_version == "1.0":
            return wire.KEEP_ALIVE_HEADER
        return b""

    def write(self, data: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(data)
            self._batched += len(data)
            if self._batched > self._batch_room:
                self._flush()
            return
        transport = self.transport
        if not transport.is_closing():
            transport.write(data)

    def write_whole(self, request: Request, data: bytes) -> None:
        """Write the whole answer to `request` (head and body in `data`) and finish it.

        The common path of every plain answer, kept short: during a read the answer joins
        the batch of that read; the usual case of response_finished is done here without
        the call.
        """
        batch = self._batch
        if batch is not None:
            batch.append(data)  # sent with the other answers of this read
            self._batched += len(data)
            if self._batched > self._batch_room:
                self._flush()
        else:
            transport = self.transport
            if not transport.is_closing():
                transport.write(data)
        if request is self._active and request.body_complete and not self._queue \
                and not self._access_log:
            self._active = None
            # Answered during a read: the time of that read (no clock call per answer).
            self._idle_since = self._read_at if batch is not None else self._clock()
        else:
            self.response_finished(request)

    def close_now(self) -> None:
        """Close the connection after what is already written (half an answer is out)."""
        self._flush()
        self.transport.close()

    def _flush(self) -> None:
        """Send the answers batched during this read (before closing, or at its end)."""
        batch = self._batch
        if batch:
            data = b"".join(batch)  # one piece: join returns it, no copy
            batch.clear()
            self._batched = 0
            transport = self.transport
            if not transport.is_closing():
                transport.write(data)
                self._batch_room = self._write_high - transport.get_write_buffer_size()

    async def sendfile(self, file: BinaryIO | int, offset: int, count: int,
                       head: bytes = b"") -> None:
        """Write `head`, then `count` bytes of a file from `offset` (see filesend)."""
        await send_file_range(self.transport, self.write, self.drain, file, offset, count, head)

    def response_finished(self, request: Request) -> None:
        """The whole response to `request` is written: close, or answer the next one."""
        if request is not self._active:
            return
        self._active = None
        if self._access_log:
            self._log_access(request)
        if not request.body_complete:
            # Answered early (DONT_USE_BODY, a plugin, an error): drop the rest of the body.
            request.discard_body = True
            request._chunks = None
            self._resume(_PAUSE_BODY)
        if not request.keep_alive or not self.reuse:
            deferred = self._deferred_error
            if deferred is not None:
                self._deferred_error = None
                self.write(deferred)
            if request.body_complete:
                self._flush()
                self.transport.close()
            else:
                self._linger_close()
            return
        self._start_queued()

    def _log_access(self, request: Request) -> None:
        response = request.response
        started = request.started_at
        access_logger.info("%s", format_access_line(
            self.state.options.access_log_format, self.peer_host, request.method,
            request.url, request.http_version, response.status, response.bytes_sent,
            self.loop.time() - started if started else 0.0,
            request.headers.get("user-agent"), getattr(request, "id", None)))

    def _start_queued(self) -> None:
        """Answer waiting requests in order until one is still in progress; with none
        left, the connection is idle from now.

        A loop, not recursion: a synchronous answer finishes inside _start and calls
        response_finished again, which only returns here, so thousands of pipelined
        requests cost no stack depth.
        """
        if self._starting:
            return  # the loop further up the stack takes the next one
        self._starting = True
        queue = self._queue
        try:
            while queue and self._active is None and not self._write_paused and self.reuse:
                if self._paused & _PAUSE_PIPELINE and len(queue) <= self._max_pipelined // 2:
                    self._resume(_PAUSE_PIPELINE)
                if self._input_ended and len(queue) == 1:
                    self.reuse = False  # half-closed client: close after this answer
                self._start(queue.popleft())
        finally:
            self._starting = False
        if self._active is None and not queue:
            self._idle_since = self._clock()

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
        # The parser had read the method before any callback: get_method() names it.
        if isinstance(original, HttpError):
            self._reject(original.status_code, str(original) or reason_phrase(original.status_code),
                         exc=original)
        else:
            server_logger.error("error while parsing a request", exc_info=original)
            self._reject(500, "Internal Server Error")

    def _reject(self, status: int, message: str, *, head: bool | None = None,
                exc: BaseException | None = None) -> None:
        """Answer a broken request with `status`, then close; earlier answers go first.

        `head`: whether the broken request is a HEAD (its answer then has no content);
        None asks the request being read, else the parser.
        """
        if self._closing:
            return
        self._closing = True
        self.reuse = False
        self._queue.clear()
        current = self._current
        if current is not None:
            current._connection_lost()  # a handler waiting for this body gets ConnectionClosed
            active = self._active
            if (active is None or active is current) and not current.response.sent \
                    and exc is not None:
                # The request exists: its answer goes through the error boundary
                # (on_error renderers, error_format, after-plugins), then the connection
                # closes after it.
                current.keep_alive = False
                if active is None:
                    self._active = current
                    exchange.attach_afters(self, current)
                exchange.answer_error(self, current, exc)
                return
        if head is None:
            head = current.is_head if current is not None \
                else self.parser.get_method() == b"HEAD"
        payload = wire.simple_response(status, self.state.date_header,
                                       message.encode("utf-8"), close=True, head=head)
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
        self.reuse = False
        transport = self.transport
        if transport.is_closing():
            return
        if self._paused:
            self._paused = 0
            transport.resume_reading()
        self._flush()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def check_timeouts(self, now: float) -> None:
        """Close connections that are too slow or idle too long (called once a second)."""
        if self._closing or self.transport is None:
            return
        options = self.state.options
        if self._head_started:
            if now - self._head_started > options.header_timeout:
                self._reject(408, "Request Timeout: the request head took too long")
        elif self._current is not None:
            if not self._paused and now - self._last_data > options.body_timeout:
                self._reject(408, "Request Timeout: the body stopped arriving",
                             exc=RequestTimeout("Request Timeout: the body stopped arriving"))
        elif self._active is None and not self._queue:
            if now - self._idle_since > options.keep_alive_timeout:
                self.transport.close()

    def _hold_for_upgrade(self, tail: bytes) -> bool:
        """The request just parsed asks to switch protocols: if it is a WebSocket route's
        (checked and not refused), keep `tail`, the bytes after its head, for the session
        and read nothing more until the handler accepts or refuses."""
        request = self._queue[-1] if self._queue else self._active
        if request is None or request.route is None or request.route.websocket is None \
                or request.error is not None or request.response.finished:
            return False
        request.upgrade_tail = tail
        self._closing = True  # whatever happens next, this connection serves no more HTTP
        self.reuse = False
        self._pause(_PAUSE_UPGRADE)
        return True

    def detach_for_upgrade(self, request: Request) -> tuple[bytes, bool]:
        """Hand the connection to a WebSocket session (its 101 is about to be written):
        this protocol leaves the serving loop's registry and gets no more events.

        Returns:
            The bytes that followed the request's head, and whether the transport's
            write buffer is over its high-water mark.
        """
        self.state.connections.discard(self)
        self._closing = True
        self.reuse = False
        self._paused = 0  # the session owns reading from now on
        if self._access_log:
            self._log_access(request)
        tail, request.upgrade_tail = request.upgrade_tail or b"", None
        return tail, self._write_paused

    def shutdown(self) -> None:
        """Graceful stop: close now if idle, otherwise after the answer in progress."""
        self.reuse = False
        if self._active is None and self._current is None and not self._head_started \
                and not self._queue:
            self.transport.close()


def _refuse_body(request: Request, exc: HttpError) -> None:
    """Answer `exc` without reading the body (a Content-Length over the cap: 413 instead
    of 100 Continue), then close, since the unread body would be taken for a request."""
    request.error = exc
    request.discard_body = True
    request.keep_alive = False
