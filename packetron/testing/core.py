"""The engine both test clients share: connections, cookies, lifespan, redirects.

Every step that may wait is a coroutine; the steps that never wait (framing a request,
feeding it, reading an answer already complete) are plain methods, so the sync client can
answer a synchronous handler without a turn of its event loop.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypedDict
from urllib.parse import urljoin, urlsplit

import h11

from packetron.flags import RequestMethod
from packetron.http.app import Application
from packetron.http.runtime import TICK_SECONDS
from packetron.testing.cookies import CookieJar
from packetron.testing.encoding import (FileInput, HeaderInput, Params, PreparedRequest,
                                        build_target, prepare_request)
from packetron.testing.errors import TestClientError, TooManyRedirects
from packetron.testing.response import ResponseHeaders, TestResponse
from packetron.testing.transport import Exchange, MemoryConnection

__all__ = ["ClientCore", "Call", "RequestOptions", "DEFAULT_TIMEOUT", "DEFAULT_BASE_URL"]

DEFAULT_TIMEOUT = 30.0
DEFAULT_BASE_URL = "http://testserver"
USER_AGENT = "packetron-testclient"
# Each connection gets its own client port, as a socket would, so logs tell them apart.
_FIRST_PEER_PORT = 50000


class RequestOptions(TypedDict, total=False):
    """Keyword arguments every request method takes."""

    params: Params
    json: Any
    data: Any
    files: FileInput
    headers: HeaderInput
    cookies: Mapping[str, str] | None
    timeout: float | None
    follow_redirects: bool | None


def _header_pairs(headers: HeaderInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    source = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(name), str(value)) for name, value in source]


def _merge_headers(base: list[tuple[str, str]],
                   override: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`base` without the names `override` sets, then `override`."""
    names = {name.lower() for name, _ in override}
    return [pair for pair in base if pair[0].lower() not in names] + override


def _method_name(method: str | RequestMethod) -> str:
    if isinstance(method, RequestMethod):
        return method.name
    return method.upper()


class ClientCore:
    """Connections, cookies and lifespan of one client (sync or async)."""

    def __init__(self, app: Application, base_url: str, headers: HeaderInput,
                 cookies: Mapping[str, str] | None, timeout: float,
                 follow_redirects: bool, max_redirects: int) -> None:
        if not isinstance(app, Application):
            raise TypeError(f"TestClient needs a Packetron application, not {type(app).__name__}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.headers = _merge_headers([("User-Agent", USER_AGENT)], _header_pairs(headers))
        self.cookies = CookieJar()
        for name, value in (cookies or {}).items():
            self.cookies[name] = value
        self.timeout = timeout
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state: Any = None
        self.connections_opened = 0
        self._idle: list[MemoryConnection] = []
        self._open: set[MemoryConnection] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self.started = False  # startup hooks have run; shutdown hooks are owed

    # ------------------------------------------------------------ lifecycle

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to `loop` with a fresh serving state, as a serving loop would start."""
        self.loop = loop
        self.state = self.app.serving_state()
        self.state.now = loop.time()
        self._tick()

    def _tick(self) -> None:
        # The Date header and the connection timeouts, once a second, as in runtime.py.
        loop = self.loop
        assert loop is not None
        now = loop.time()
        self.state.tick(now)
        self._next_tick = now + TICK_SECONDS
        self._tick_handle = loop.call_later(TICK_SECONDS, self._tick)

    def tick_if_due(self) -> None:
        """Run a tick that is due now; for the sync client, whose loop does not run while
        a synchronous handler answers."""
        assert self.loop is not None
        if self._tick_handle is not None and self.loop.time() >= self._next_tick:
            self._tick_handle.cancel()
            self._tick()

    async def startup(self) -> None:
        lifespan = self.app.lifespan
        if lifespan.startup:
            await lifespan.run_startup(self.app)
        self.started = True

    async def shutdown(self) -> None:
        """Hang up every connection, then run the shutdown hooks (if startup ran)."""
        for connection in list(self._open):
            self._discard(connection)
        await asyncio.sleep(0)  # let connection_lost run (close() schedules it)
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if self.started:
            self.started = False
            if self.app.lifespan.shutdown:
                await self.app.lifespan.run_shutdown(self.app)

    # ------------------------------------------------------------ connections

    def _connection(self) -> MemoryConnection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            self._discard(connection)
        assert self.loop is not None
        peer = ("127.0.0.1", _FIRST_PEER_PORT + self.connections_opened % 10000)
        connection = MemoryConnection(self.state, self.loop, peer)
        self.connections_opened += 1
        self._open.add(connection)
        return connection

    def _release(self, connection: MemoryConnection) -> None:
        if connection.reusable:
            self._idle.append(connection)
        else:
            self._discard(connection)

    def _discard(self, connection: MemoryConnection) -> None:
        connection.close()
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    # ------------------------------------------------------------ requests

    def absolute(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            return url
        return self.base_url + (url if url.startswith("/") else "/" + url)

    def prepare(self, method: str | RequestMethod, url: str,
                options: RequestOptions) -> "Call":
        """Everything about one call that needs no I/O: the encoded request, its settings."""
        absolute = self.absolute(url)
        headers = _merge_headers(self.headers, _header_pairs(options.get("headers")))
        prepared = prepare_request(_method_name(method), absolute, urlsplit(absolute).netloc,
                                   params=options.get("params"), json=options.get("json"),
                                   data=options.get("data"), files=options.get("files"),
                                   headers=headers)
        timeout = options.get("timeout")
        follow = options.get("follow_redirects")
        return Call(prepared, dict(options.get("cookies") or {}),
                     self.timeout if timeout is None else timeout,
                     self.follow_redirects if follow is None else follow)

    async def request(self, call: "Call", *, stream: bool = False,
                      run: Any = None) -> TestResponse:
        """Send `call`, following redirects if it asks to."""
        while True:
            pending = self.begin(call)
            response = await self.complete(pending, stream, run)
            if self.next_hop(call, response):
                if stream:
                    await response.aread()
                continue
            return response

    def next_hop(self, call: "Call", response: TestResponse) -> bool:
        """After an answer: True when `call` now holds the redirect to follow.

        Raises:
            TooManyRedirects: past max_redirects.
        """
        if not call.follow or not response.is_redirect:
            response.history = call.history
            return False
        if len(call.history) >= self.max_redirects:
            raise TooManyRedirects(f"more than {self.max_redirects} redirects from "
                                   f"{call.history[0].method if call.history else response.method}"
                                   f" {call.history[0].url if call.history else response.url}")
        call.history.append(response)
        call.prepared = _redirected(call.prepared, response)
        return True

    def begin(self, call: "Call") -> "Pending":
        """Frame the request (cookies included) and pick a connection; nothing is sent yet.

        Raises:
            TestClientError: h11 refuses the request (an invalid header, say).
        """
        loop = self.loop
        assert loop is not None
        prepared = call.prepared
        path = prepared.target.split("?", 1)[0]
        headers = prepared.headers
        if prepared.header("cookie") is None:
            cookie = self.cookies.header_for(path, call.cookies)
            if cookie is not None:
                headers = headers + [("Cookie", cookie)]
        method = prepared.method
        what = f"{method} {prepared.target}"
        try:
            request = h11.Request(method=method, target=prepared.target, headers=headers)
        except h11.LocalProtocolError as exc:
            raise TestClientError(f"cannot send {what}: {exc}") from None
        connection = self._connection()
        try:
            payload = connection.begin(method, request, prepared.body)
        except h11.LocalProtocolError as exc:
            self._discard(connection)
            raise TestClientError(f"cannot send {what}: {exc}") from None
        exchange = connection.exchange
        assert exchange is not None
        return Pending(call, connection, exchange, payload, path, what,
                        loop.time() + call.timeout)

    def try_now(self, pending: "Pending") -> TestResponse | None:
        """Feed the request and return the answer if it is complete at once (a synchronous
        handler answers inside data_received); None when the loop has to run for it."""
        connection = pending.connection
        if not connection.can_feed_at_once(pending.payload):
            return None
        try:
            connection.feed_at_once(pending.payload)
        except BaseException:
            self._discard(connection)
            raise
        pending.payload = b""
        exchange = pending.exchange
        if not exchange.complete or exchange.error is not None:
            return None
        return self._response(pending, stream=False, run=None)

    async def complete(self, pending: "Pending", stream: bool, run: Any) -> TestResponse:
        """Feed what is left of the request and wait for the answer (its head, if
        `stream`)."""
        connection, exchange = pending.connection, pending.exchange
        deadline, what = pending.deadline, pending.what
        try:
            if pending.payload:
                await connection.feed(pending.payload, deadline, what)
                pending.payload = b""
            if stream:
                await connection.wait(exchange, lambda: exchange.head_done, deadline, what)
            else:
                await connection.wait(exchange, lambda: exchange.complete, deadline, what)
        except BaseException:
            self._discard(connection)  # its state is unknown: never reuse it
            raise
        return self._response(pending, stream, run)

    def _response(self, pending: "Pending", stream: bool, run: Any) -> TestResponse:
        connection, exchange = pending.connection, pending.exchange
        response_headers = ResponseHeaders(exchange.headers)
        set_cookies = response_headers.get_list("set-cookie")
        if set_cookies:
            self.cookies.update_from_response(set_cookies, pending.path)
        prepared = pending.call.prepared
        common: dict[str, Any] = dict(
            status_code=exchange.status, reason=exchange.reason,
            http_version=exchange.http_version, headers=response_headers,
            method=prepared.method, url=prepared.url)
        if exchange.complete and not stream:
            connection.finish(exchange)
            self._release(connection)
            return TestResponse(content=b"".join(exchange.chunks), **common)
        return TestResponse(
            content=None, run=run,
            next_chunk=self._chunk_reader(connection, exchange, pending.call.timeout,
                                          pending.what),
            release=lambda: self._end_stream(connection, exchange), **common)

    def _chunk_reader(self, connection: MemoryConnection, exchange: Exchange,
                      timeout: float, what: str) -> Any:
        loop = self.loop
        assert loop is not None

        async def next_chunk() -> bytes | None:
            """The next piece of the body, or None at its end."""
            def ready() -> bool:
                return bool(exchange.chunks) or exchange.complete
            try:
                await connection.wait(exchange, ready, loop.time() + timeout, what)
            except BaseException:
                self._discard(connection)
                raise
            if exchange.chunks:
                return exchange.chunks.pop(0)
            return None

        return next_chunk

    def _end_stream(self, connection: MemoryConnection, exchange: Exchange) -> None:
        if exchange.complete and not exchange.chunks:
            connection.finish(exchange)
            self._release(connection)
        else:
            self._discard(connection)  # hang up on a body nobody will read


class Call:
    """One call of the client: its request (the latest redirect's) and settings."""

    __slots__ = ("prepared", "cookies", "timeout", "follow", "history")

    def __init__(self, prepared: PreparedRequest, cookies: dict[str, str], timeout: float,
                 follow: bool) -> None:
        self.prepared = prepared
        self.cookies = cookies  # per-call cookies: sent, never kept in the jar
        self.timeout = timeout
        self.follow = follow
        self.history: list[TestResponse] = []


class Pending:
    """One request framed for one connection, sent or about to be."""

    __slots__ = ("call", "connection", "exchange", "payload", "path", "what", "deadline")

    def __init__(self, call: Call, connection: MemoryConnection, exchange: Exchange,
                 payload: bytes, path: str, what: str, deadline: float) -> None:
        self.call = call
        self.connection = connection
        self.exchange = exchange
        self.payload = payload  # what is still to be fed
        self.path = path
        self.what = what
        self.deadline = deadline


def _redirected(prepared: PreparedRequest, response: TestResponse) -> PreparedRequest:
    """The request a redirect asks for: 303 (and 301/302 after POST) become a GET without
    a body, as browsers do; 307 and 308 repeat the method and body."""
    url = urljoin(prepared.url, response.headers["location"])
    parts = urlsplit(url)
    method, body = prepared.method, prepared.body
    drop = {"host"}
    if response.status_code == 303 and method != "HEAD" or \
            response.status_code in (301, 302) and method == "POST":
        method, body = "GET", []
        drop |= {"content-type", "content-length", "transfer-encoding"}
    headers = [("Host", parts.netloc)] + [(name, value) for name, value in prepared.headers
                                          if name.lower() not in drop]
    target = build_target((parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                          None)
    return PreparedRequest(method, f"{parts.scheme}://{parts.netloc}{target}", target,
                           headers, body)


