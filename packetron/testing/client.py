"""TestClient and AsyncTestClient: requests to an application, answered in memory.

Both share one engine (packetron.testing.core), whose waiting steps are coroutines: the
async client awaits them on the running loop; the sync client owns an event loop and runs
them to completion in the calling thread. Either way there is no socket and no thread per
request.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Iterable, Iterator, TypeVar, Unpack

from packetron.flags import RequestMethod
from packetron.http.app import Application
from packetron.http.runtime import new_event_loop
from packetron.testing.cookies import CookieJar
from packetron.testing.core import (DEFAULT_BASE_URL, DEFAULT_TIMEOUT, Call, ClientCore,
                                    RequestOptions)
from packetron.testing.encoding import HeaderInput
from packetron.testing.errors import TestClientError
from packetron.testing.response import TestResponse
from packetron.testing.websocket import (AsyncConnecting, WebSocketTestSession,
                                         open_link)

__all__ = ["TestClient", "AsyncTestClient", "RequestOptions", "DEFAULT_TIMEOUT"]

T = TypeVar("T")


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
        self._core = ClientCore(app, base_url, headers, cookies, timeout, follow_redirects,
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

    def _send(self, call: Call, stream: bool) -> TestResponse:
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

    def websocket_connect(self, path: str, *, subprotocols: Iterable[str] = (),
                          headers: HeaderInput = None) -> WebSocketTestSession:
        """Open a WebSocket to `path` in memory (`with client.websocket_connect(p) as ws`):
        `send_text/send_bytes/send_json`, `receive_text/receive_bytes/receive_json`,
        `close(code, reason)`; see packetron.testing.websocket.

        Raises:
            WebSocketRejected: the application answered with HTTP instead of 101.
        """
        link = self._run(open_link(self._core, path, subprotocols, headers))
        return WebSocketTestSession(link, self._run)


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
        self._core = ClientCore(app, base_url, headers, cookies, timeout, follow_redirects,
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

    def websocket_connect(self, path: str, *, subprotocols: Iterable[str] = (),
                          headers: HeaderInput = None) -> AsyncConnecting:
        """Open a WebSocket to `path` in memory: `async with client.websocket_connect(p)
        as ws` (or `ws = await client.websocket_connect(p)`); see TestClient's.

        Raises:
            WebSocketRejected: the application answered with HTTP instead of 101.
        """
        return AsyncConnecting(self._open_websocket(path, subprotocols, headers))

    async def _open_websocket(self, path: str, subprotocols: Iterable[str],
                              headers: HeaderInput) -> Any:
        self._ensure_loop()
        return await open_link(self._core, path, subprotocols, headers)
