"""TestClient and AsyncTestClient: requests to an application, answered in memory.

Both share one core (`_ClientCore`), which is asynchronous: the async client awaits it on
the running loop; the sync client owns an event loop and runs each call to completion in
the calling thread. Either way there is no socket and no thread per request.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Iterator, TypedDict, TypeVar, Unpack
from urllib.parse import urljoin, urlsplit

import h11

from packetron.flags import RequestMethod
from packetron.http.app import Application
from packetron.http.runtime import TICK_SECONDS, new_event_loop
from packetron.testing.cookies import CookieJar
from packetron.testing.encoding import (FileInput, HeaderInput, Params, PreparedRequest,
                                        build_target, prepare_request)
from packetron.testing.errors import TestClientError, TooManyRedirects
from packetron.testing.response import ResponseHeaders, TestResponse
from packetron.testing.transport import Exchange, MemoryConnection

__all__ = ["TestClient", "AsyncTestClient", "RequestOptions", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 30.0
DEFAULT_BASE_URL = "http://testserver"
USER_AGENT = "packetron-testclient"
# Each connection gets its own client port, as a socket would, so logs tell them apart.
_FIRST_PEER_PORT = 50000

T = TypeVar("T")


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


class _ClientCore:
    """Connections, cookies and lifespan of one client; every network step is awaited."""

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
                options: RequestOptions) -> "_Call":
        """Everything about one call that needs no I/O: the encoded request, its settings."""
        absolute = self.absolute(url)
        headers = _merge_headers(self.headers, _header_pairs(options.get("headers")))
        prepared = prepare_request(_method_name(method), absolute, urlsplit(absolute).netloc,
                                   params=options.get("params"), json=options.get("json"),
                                   data=options.get("data"), files=options.get("files"),
                                   headers=headers)
        timeout = options.get("timeout")
        follow = options.get("follow_redirects")
        return _Call(prepared, dict(options.get("cookies") or {}),
                     self.timeout if timeout is None else timeout,
                     self.follow_redirects if follow is None else follow)

    async def request(self, call: "_Call", *, stream: bool = False,
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

    def next_hop(self, call: "_Call", response: TestResponse) -> bool:
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

    def begin(self, call: "_Call") -> "_Pending":
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
        return _Pending(call, connection, exchange, payload, path, what,
                        loop.time() + call.timeout)

    def try_now(self, pending: "_Pending") -> TestResponse | None:
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

    async def complete(self, pending: "_Pending", stream: bool, run: Any) -> TestResponse:
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

    def _response(self, pending: "_Pending", stream: bool, run: Any) -> TestResponse:
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


class _Call:
    """One call of the client: its request (the latest redirect's) and settings."""

    __slots__ = ("prepared", "cookies", "timeout", "follow", "history")

    def __init__(self, prepared: PreparedRequest, cookies: dict[str, str], timeout: float,
                 follow: bool) -> None:
        self.prepared = prepared
        self.cookies = cookies  # per-call cookies: sent, never kept in the jar
        self.timeout = timeout
        self.follow = follow
        self.history: list[TestResponse] = []


class _Pending:
    """One request framed for one connection, sent or about to be."""

    __slots__ = ("call", "connection", "exchange", "payload", "path", "what", "deadline")

    def __init__(self, call: _Call, connection: MemoryConnection, exchange: Exchange,
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


_WEBSOCKET_GAP = ("packetron does not serve WebSockets yet; websocket_connect() will drive "
                  "them in memory (a wsproto client over the same in-memory connection) "
                  "once it does")


class TestClient:
    """Synchronous client for an application, answered in memory by the real protocol.

    `with TestClient(server) as client:` runs the startup hooks, and the shutdown hooks on
    exit; used without `with`, no hooks run and `close()` frees the event loop. Cookies
    are kept between requests (`client.cookies`); redirects are not followed unless
    `follow_redirects=True`. Each request must be answered within `timeout` seconds, or
    ResponseTimeout is raised.

    Args:
        app: the Packetron (any packetron Application); it is never started.
        base_url: scheme and host the requests claim to go to (the Host header).
        headers, cookies: sent with every request.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, app: Application, base_url: str = DEFAULT_BASE_URL, *,
                 headers: HeaderInput = None, cookies: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, follow_redirects: bool = False,
                 max_redirects: int = 20) -> None:
        self._core = _ClientCore(app, base_url, headers, cookies, timeout, follow_redirects,
                                 max_redirects)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def app(self) -> Application:
        return self._core.app

    @property
    def cookies(self) -> CookieJar:
        return self._core.cookies

    @property
    def connections_opened(self) -> int:
        """How many connections this client has opened so far (keep-alive reuses them)."""
        return self._core.connections_opened

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "TestClient":
        self._ensure_loop()
        try:
            self._run(self._core.startup())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise TestClientError("this TestClient is closed")
        if self._loop is None:
            self._loop = new_event_loop()
            self._core.open(self._loop)
        return self._loop

    @staticmethod
    def _refuse_running_loop() -> None:
        if asyncio._get_running_loop() is not None:
            raise TestClientError("TestClient cannot run inside a running event loop; "
                                  "use `async with AsyncTestClient(server)` there")

    def _run(self, awaitable: Awaitable[T]) -> T:
        loop = self._ensure_loop()
        try:
            self._refuse_running_loop()
        except TestClientError:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise
        return loop.run_until_complete(awaitable)

    def close(self) -> None:
        """Hang up, run the shutdown hooks (after `with`), stop what is left, free the loop."""
        loop = self._loop
        if loop is None or self._closed:
            self._closed = True
            return
        try:
            loop.run_until_complete(self._core.shutdown())
        finally:
            self._closed = True
            try:
                # As asyncio.run does: handler tasks still running (an endless stream the
                # test stopped reading) are cancelled, not left pending.
                tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    # ------------------------------------------------------------ requests

    def request(self, method: str | RequestMethod, url: str,
                **options: Unpack[RequestOptions]) -> TestResponse:
        """Send one request and return the whole answer."""
        return self._send(self._core.prepare(method, url, options), stream=False)

    @contextmanager
    def stream(self, method: str | RequestMethod, url: str,
               **options: Unpack[RequestOptions]) -> Iterator[TestResponse]:
        """Send one request; the answer's body is read as it comes (`iter_bytes()`,
        `iter_lines()`, `read()`). Leaving the block hangs up on an unfinished body."""
        response = self._send(self._core.prepare(method, url, options), stream=True)
        try:
            yield response
        finally:
            response.close()

    def _send(self, call: _Call, stream: bool) -> TestResponse:
        loop = self._ensure_loop()
        self._refuse_running_loop()
        core = self._core
        while True:
            # A synchronous handler answers inside data_received: that needs no turn of
            # the loop (which costs more than the whole request with uvloop), only the
            # loop set as running, as it is when a real connection is read.
            asyncio._set_running_loop(loop)
            try:
                core.tick_if_due()
                pending = core.begin(call)
                response = None if stream else core.try_now(pending)
            finally:
                asyncio._set_running_loop(None)
            if response is None:
                response = loop.run_until_complete(core.complete(pending, stream, self._run))
            if not core.next_hop(call, response):
                return response
            if stream:
                response.read()

    def get(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("POST", url, **options)

    def put(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("PUT", url, **options)

    def patch(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("PATCH", url, **options)

    def delete(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("DELETE", url, **options)

    def options(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("OPTIONS", url, **options)

    def head(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return self.request("HEAD", url, **options)

    def websocket_connect(self, path: str, **kwargs: Any) -> Any:
        """Not available yet: see the module docstring of packetron.testing.transport."""
        raise NotImplementedError(_WEBSOCKET_GAP)


class AsyncTestClient:
    """TestClient for async tests, on the running event loop:
    `async with AsyncTestClient(server) as client: r = await client.get("/")`.

    Requests may run concurrently (`asyncio.gather`): each one in flight has its own
    connection, as a browser's pool would.
    """

    def __init__(self, app: Application, base_url: str = DEFAULT_BASE_URL, *,
                 headers: HeaderInput = None, cookies: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, follow_redirects: bool = False,
                 max_redirects: int = 20) -> None:
        self._core = _ClientCore(app, base_url, headers, cookies, timeout, follow_redirects,
                                 max_redirects)
        self._closed = False

    @property
    def app(self) -> Application:
        return self._core.app

    @property
    def cookies(self) -> CookieJar:
        return self._core.cookies

    @property
    def connections_opened(self) -> int:
        return self._core.connections_opened

    async def __aenter__(self) -> "AsyncTestClient":
        self._ensure_loop()
        try:
            await self._core.startup()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    def _ensure_loop(self) -> None:
        if self._closed:
            raise TestClientError("this AsyncTestClient is closed")
        loop = asyncio.get_running_loop()
        core = self._core
        if core.loop is None:
            core.open(loop)
        elif core.loop is not loop:
            raise TestClientError("an AsyncTestClient is bound to the event loop it was "
                                  "first used on")

    async def aclose(self) -> None:
        """Hang up and run the shutdown hooks (after `async with`)."""
        if self._closed:
            return
        self._closed = True
        if self._core.loop is not None:
            await self._core.shutdown()

    async def request(self, method: str | RequestMethod, url: str,
                      **options: Unpack[RequestOptions]) -> TestResponse:
        self._ensure_loop()
        return await self._core.request(self._core.prepare(method, url, options))

    @asynccontextmanager
    async def stream(self, method: str | RequestMethod, url: str,
                     **options: Unpack[RequestOptions]) -> AsyncIterator[TestResponse]:
        """As TestClient.stream, read with `aiter_bytes()`, `aiter_lines()`, `aread()`."""
        self._ensure_loop()
        response = await self._core.request(self._core.prepare(method, url, options),
                                            stream=True)
        try:
            yield response
        finally:
            response.close()

    async def get(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("GET", url, **options)

    async def post(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("POST", url, **options)

    async def put(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("PUT", url, **options)

    async def patch(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("PATCH", url, **options)

    async def delete(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("DELETE", url, **options)

    async def options(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("OPTIONS", url, **options)

    async def head(self, url: str, **options: Unpack[RequestOptions]) -> TestResponse:
        return await self.request("HEAD", url, **options)

    async def websocket_connect(self, path: str, **kwargs: Any) -> Any:
        """Not available yet: see the module docstring of packetron.testing.transport."""
        raise NotImplementedError(_WEBSOCKET_GAP)
