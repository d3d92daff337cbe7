"""The request object handlers receive.

The protocol fills it from parser callbacks; the body arrives afterwards, piece by piece,
and is decoded only when the handler asks for it (`await get_body()` or `.body`).
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, AsyncIterator, Mapping
from urllib.parse import parse_qsl, unquote

from packetron.errors import BadRequest, ConnectionClosed
from packetron.http import bodies
from packetron.http.cookies import parse_cookie_header
from packetron.http.headers import Headers
from packetron.http.route import BodyMode, mode_for_content_type

if TYPE_CHECKING:
    from packetron.http.connection import Connection
    from packetron.http.response import Response
    from packetron.http.route import Route

__all__ = ["Request", "STREAM_HIGH_WATER"]

# Unconsumed body bytes of a streaming route above which the socket is paused
# (uvicorn's flow-control mark): memory stays flat whatever the upload size. uvloop reads
# up to 250 000 bytes at a time, so reading pauses after each read until the handler has
# taken it. Marks of 256 KiB and 1 MiB were measured slower (256 MiB uploads): more body
# pieces alive at once made malloc return memory and fault it back in (97 000 and
# 140 000 page faults per GiB against 2 900; 989 and 956 against 1 245 MB/s).
STREAM_HIGH_WATER = 64 * 1024

_UNSET: Any = object()

# Request.stage: where the protocol is in answering it.
STAGE_QUEUED = 0        # parsed, waiting for earlier requests on the connection
STAGE_AWAITING_BODY = 1  # plugins done; the sync handler runs once the body is complete
STAGE_HANDLED = 2       # the handler has been called (or a task runs it)


class Request:
    """One HTTP request.

    Attributes:
        method: "GET", "POST", ...
        path: the percent-decoded path, without the query string.
        url: the raw request target as sent.
        http_version: "1.1" or "1.0".
        route: the Route serving it (None for requests answered with 404/405).
    """

    # Fields every request sets live in slots. The rest are class-level defaults that an
    # instance overrides only when it must (its __dict__ is created on the first such
    # write), so a plain GET pays for 12 stores instead of 30: measured 0.45 us against
    # 0.99 us per request on the benchmark machine.
    __slots__ = ("method", "_target", "http_version", "route", "response", "keep_alive",
                 "_raw_headers", "_protocol", "body_complete", "body_cap", "stage", "__dict__",
                 "__weakref__")

    _path: str | None = None
    _query_string = ""

    _headers: Headers | None = None
    expect_continue = False
    content_length: int | None = None
    is_head = False
    _chunks: "deque[bytes] | None" = None
    _unconsumed = 0
    body_size = 0
    discard_body = False
    _waiter: "asyncio.Future[None] | None" = None
    _lost = False
    _parsed: Any = _UNSET
    _files: Any = _UNSET
    _query: dict[str, Any] | None = None
    _cookies: dict[str, str] | None = None
    streaming = False
    # The error the router or a limit decided (404, 405, 413, 429, 501 ...), answered
    # through the exchange's error boundary when the request's turn comes.
    error: BaseException | None = None
    # Converted values of a pattern route's parameters; an empty read-only mapping for
    # exact routes (a per-request dict would cost every GET an allocation).
    path_params: Mapping[str, Any] = MappingProxyType({})
    auto_mode: Any = None  # AUTO_BODY: the BodyMode the protocol chose from Content-Type
    started_at = 0.0  # loop time the head was complete (taken only for the access log)
    _trailer_fields: list[tuple[bytes, bytes]] | None = None  # set for chunked bodies
    _trailers: Headers | None = None
    # A WebSocket route's upgrade: the bytes that followed the head (the protocol keeps
    # them, reading nothing more, until the session takes the connection); None otherwise.
    upgrade_tail: bytes | None = None

    def __init__(self, protocol: "Connection", method: str, target: bytes,
                 http_version: str, raw_headers: list[tuple[bytes, bytes]],
                 keep_alive: bool, route: "Route | None", body_cap: int | None,
                 complete: bool = False) -> None:
        self.method = method
        self._target = target  # path and query are decoded from it on first use
        self.http_version = http_version
        self._raw_headers = raw_headers
        self.keep_alive = keep_alive
        self.route = route
        self.body_cap = body_cap   # body bytes allowed before 413 (None: no cap)
        self.response: Response = None  # type: ignore[assignment]  # set by the protocol
        self._protocol = protocol
        # complete: no body follows the head, and the handler is called right away.
        self.body_complete = complete
        self.stage = STAGE_HANDLED if complete else STAGE_QUEUED

    # ------------------------------------------------------------ headers & URL

    @property
    def path(self) -> str:
        """The percent-decoded path, without the query string."""
        path = self._path
        if path is None:
            path, query = decode_target(self._target)
            self._path = path
            if query:
                self._query_string = query
        return path

    @property
    def url(self) -> str:
        """The request target exactly as the client sent it."""
        return self._target.decode("latin-1")

    @property
    def query_string(self) -> str:
        """The raw query string (without "?"), "" when there is none."""
        if self._path is None:
            self.path  # noqa: B018  (decodes the target, query string included)
        return self._query_string

    @property
    def headers(self) -> Headers:
        """Case-insensitive headers (built on first use)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(self._raw_headers)
        return headers

    @property
    def trailers(self) -> Headers:
        """Trailer fields sent after a chunked body (empty until the body has ended, and
        for any other body). They are kept apart from `headers`: a trailer never changes
        the framing, the route, the Host or the Content-Type."""
        trailers = self._trailers
        if trailers is None:
            fields = self._trailer_fields
            if not fields or not self.body_complete:
                return Headers([])
            trailers = self._trailers = Headers(list(fields))
        return trailers

    def _has_any_header(self, lowercase_names: "frozenset[bytes]") -> bool:
        """True when the request carries any of these headers (names as lowercase bytes).

        Looks at the raw pairs, so asking costs no Headers mapping.
        """
        for name, _ in self._raw_headers:
            if name.lower() in lowercase_names:
                return True
        return False

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    def get_query_params(self) -> dict[str, Any]:
        """Query parameters; a repeated name gives a list of its values."""
        if self._query is None:
            params: dict[str, Any] = {}
            query = self.query_string
            if query:
                for name, value in parse_qsl(query, keep_blank_values=True):
                    bodies.add_repeated(params, name, value)
            self._query = params
        return self._query

    def get_cookies(self) -> dict[str, str]:
        if self._cookies is None:
            header = self.headers.get("cookie")
            self._cookies = parse_cookie_header(header) if header else {}
        return self._cookies

    def get_cookie(self, name: str) -> str | None:
        return self.get_cookies().get(name)

    def get_ip(self) -> str:
        """The client's address.

        X-Forwarded-For is honoured only when the direct peer is a trusted proxy; the list
        is then read from the right, skipping trusted proxies, so a client cannot choose
        the address by sending the header itself.
        """
        peer = self._protocol.peer_host
        trusted = self._protocol.state.trusted_proxies
        if not trusted or not _is_trusted(peer, trusted):
            return peer
        forwarded = self.headers.get("x-forwarded-for")
        if not forwarded:
            return peer
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _is_trusted(hop, trusted):
                return hop
        return hops[0] if hops else peer

    def has_body(self) -> bool:
        """True when the request announced a body (Content-Length > 0 or chunked)."""
        if self.content_length is not None:
            return self.content_length > 0
        return "transfer-encoding" in self.headers

    # ------------------------------------------------------------ body plumbing

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append(chunk)
        self._unconsumed += len(chunk)
        if self._unconsumed >= STREAM_HIGH_WATER:
            self._protocol.pause_body()
        self._wake()

    def _complete(self) -> None:
        self.body_complete = True
        self._wake()

    def _connection_lost(self) -> None:
        self._lost = True
        self._wake()

    async def _wait(self) -> None:
        if self._lost:
            raise ConnectionClosed("the client closed the connection before the body ended")
        self._protocol.resume_body()
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = self._protocol.loop.create_future()
        await waiter

    async def stream(self) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk, as it arrives; the socket pauses if you fall behind.

        Raises:
            ConnectionClosed: the client vanished before the body ended.
        """
        while True:
            chunks = self._chunks
            if chunks:
                chunk = chunks.popleft()
                self._unconsumed -= len(chunk)
                if self._unconsumed < STREAM_HIGH_WATER:
                    self._protocol.resume_body()
                yield chunk
            elif self.body_complete:
                return
            else:
                await self._wait()

    def _joined(self) -> bytes:
        chunks = self._chunks
        if not chunks:
            return b""
        if len(chunks) == 1:
            return chunks[0]
        data = b"".join(chunks)
        chunks.clear()
        if data:
            chunks.append(data)
        return data

    # ------------------------------------------------------------ decoded body

    def _decode_buffered(self) -> Any:
        route = self.route
        mode = route.body_mode if route is not None else BodyMode.DISCARD
        if mode is BodyMode.DISCARD:
            return None
        if mode is BodyMode.AUTO:
            auto_mode = self.auto_mode
            mode = auto_mode if auto_mode is not None else mode_for_content_type(self.content_type)
        raw = self._joined()
        if mode is BodyMode.JSON:
            return bodies.decode_json(raw)
        if mode is BodyMode.TEXT:
            return bodies.decode_text(raw, bodies.charset_of(self.content_type))
        if mode is BodyMode.FORM:
            return bodies.decode_form(raw, bodies.charset_of(self.content_type))
        if mode is BodyMode.XML:
            return bodies.decode_xml(raw)
        return raw

    async def _parse_streaming(self) -> None:
        from packetron.http.multipart import parse_multipart  # uploads cost nothing unless used

        route = self.route
        assert route is not None
        if route.body_mode is BodyMode.STREAM:
            self._parsed = b"".join([chunk async for chunk in self.stream()])
            self._files = {}
            return
        mode = {BodyMode.MULTIPART: "multipart", BodyMode.FORM: "form",
                BodyMode.AUTO: "multipart", BodyMode.LEGACY_UPLOAD: "legacy"}[route.body_mode]
        fields, files = await parse_multipart(self, route.multipart_options, mode=mode)
        if route.body_mode is BodyMode.LEGACY_UPLOAD:
            self._parsed = ""
        else:
            self._parsed = fields
        self._files = files

    async def get_body(self) -> Any:
        """The body, decoded as the route's HandlerFlags say (see the README table).

        Raises:
            BadRequest / PayloadTooLarge / UnsupportedMediaType: the body cannot be decoded.
            ConnectionClosed: the client vanished before the body ended.
        """
        if self._parsed is _UNSET:
            if self.discard_body:
                return None
            if self.streaming:
                await self._parse_streaming()
            else:
                while not self.body_complete:
                    await self._wait()
                self._parsed = self._decode_buffered()
        return self._parsed

    async def get_files(self) -> dict[str, Any]:
        """Uploaded files of a MULTIPART_FORM_DATA / FILE_UPLOAD route ({} otherwise)."""
        if self._files is _UNSET:
            if self.streaming:
                if self._parsed is _UNSET:
                    await self._parse_streaming()
            else:
                await self.get_body()
                self._files = {}
        return self._files

    @property
    def body(self) -> Any:
        """The decoded body for synchronous handlers (the body has fully arrived by then).

        Raises:
            BadRequest: the body cannot be decoded.
            RuntimeError: used before the body has arrived (in an async handler, await
                get_body() instead).
        """
        if self._parsed is _UNSET:
            if self.discard_body:
                return None
            if self.streaming or not self.body_complete:
                raise RuntimeError("the body has not been read yet; use await request.get_body()")
            self._parsed = self._decode_buffered()
        return self._parsed

    @property
    def files(self) -> dict[str, Any]:
        """Uploaded files, for synchronous handlers of upload routes."""
        if self._files is _UNSET:
            if self.streaming:
                raise RuntimeError("files have not been read yet; use await request.get_files()")
            self._files = {}
        return self._files

    async def _prepare_for_sync_handler(self) -> None:
        """Read and decode the body so a synchronous handler can use .body / .files."""
        if self.streaming:
            route = self.route
            if route is not None and route.body_mode is BodyMode.STREAM:
                return  # the body is the handler's to stream; a sync handler leaves it
            await self.get_files()
        else:
            while not self.body_complete:
                await self._wait()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


def _is_trusted(host: str, trusted: tuple[str, ...]) -> bool:
    if host in trusted:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in trusted:
        if "/" in entry:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    if address.version == 6 and address.ipv4_mapped is not None:  # type: ignore[union-attr]
        return str(address.ipv4_mapped) in trusted  # type: ignore[union-attr]
    return False


def decode_target(target: bytes) -> tuple[str, str]:
    """(percent-decoded path, raw query string) of a request target.

    Raises:
        BadRequest: the target is not origin-, absolute- or asterisk-form.
    """
    if 35 in target:  # "#": a fragment is never part of a request (RFC 9112 §3.2)
        raise BadRequest("Bad Request: a request target cannot contain '#'")
    if target[:1] == b"/":
        path_bytes, _, query = target.partition(b"?")
    elif target == b"*":
        return "*", ""
    else:
        import httptools  # absolute-form, only seen from proxies: parse it properly

        try:
            parsed = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError as exc:
            raise BadRequest("invalid request target") from exc
        path_bytes = parsed.path or b"/"
        query = parsed.query or b""
    try:
        path = path_bytes.decode("ascii") if path_bytes.isascii() else path_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("request path is not valid UTF-8") from exc
    if "%" in path:
        try:
            path = unquote(path, errors="strict")
        except UnicodeDecodeError as exc:
            raise BadRequest("percent-encoded path is not valid UTF-8") from exc
    return path, query.decode("latin-1")
