"""`client.websocket_connect(path)`: a WebSocket to the application, in memory.

The upgrade request goes through the client's engine like any request (cookies, default
headers, the real HttpProtocol, plugins); once the server answers 101, the connection is
detached from HTTP (see packetron.testing.transport) and a wsproto client speaks
WebSocket frames to the server's own session over the same in-memory transport.

    with TestClient(server) as client:
        with client.websocket_connect("/chat/lobby") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"

`AsyncTestClient` offers the same with awaitables (`async with client.websocket_connect(
...) as ws`, `await ws.receive_text()`).
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Iterable

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (BytesMessage, CloseConnection, Message, Ping, TextMessage)

from packetron.errors import WebSocketClosed
from packetron.testing.errors import ResponseTimeout, TestClientError
from packetron.testing.response import ResponseHeaders, TestResponse

if TYPE_CHECKING:
    from packetron.testing.core import ClientCore
    from packetron.testing.transport import MemoryConnection

__all__ = ["WebSocketTestSession", "AsyncWebSocketTestSession", "WebSocketRejected"]


class WebSocketRejected(TestClientError):
    """The application answered the upgrade with an HTTP response instead of 101
    (a plugin or the handler refused it); `response` is that answer."""

    def __init__(self, response: TestResponse) -> None:
        super().__init__(f"the WebSocket upgrade was refused with {response.status_code}")
        self.response = response


class _Link:
    """The client end of one upgraded in-memory connection (async, on the client's loop)."""

    def __init__(self, connection: "MemoryConnection", headers: ResponseHeaders,
                 tail: bytes, timeout: float) -> None:
        self.connection = connection
        self.transport = connection.transport
        self.loop = connection.loop
        self.timeout = timeout
        self.headers = headers
        self.subprotocol = headers.get("sec-websocket-protocol")
        self.ws = Connection(ConnectionType.CLIENT)
        self.messages: deque[str | bytes] = deque()
        self.fragments: list[Any] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.waiter: asyncio.Future[None] | None = None
        # The server's writes (and its end of file) come here from now on.
        self.transport.sink = self._received
        self.transport._on_eof = self._server_eof
        if tail:
            self._received(tail)

    # ------------------------------------------------------------ from the server

    def _received(self, data: bytes) -> None:
        if self.ws.state is ConnectionState.CLOSED:
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Message):
                self.fragments.append(event.data)
                if event.message_finished:
                    first = self.fragments[0]
                    self.messages.append("".join(self.fragments) if isinstance(first, str)
                                         else b"".join(self.fragments))
                    self.fragments = []
            elif isinstance(event, Ping):
                self._send_later(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code, self.close_reason = int(event.code), event.reason or ""
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send_later(self.ws.send(event.response()))
        self._wake()

    def _server_eof(self) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, "the connection was lost"
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ to the server

    def _send_later(self, data: bytes) -> None:
        # Never re-enter the server's session from inside its own write.
        self.loop.call_soon(self._deliver, data)

    def _deliver(self, data: bytes) -> None:
        if data and not self.transport.is_closing():
            protocol = self.transport.get_protocol()
            assert isinstance(protocol, asyncio.Protocol)  # the server's WebSocket session
            protocol.data_received(data)

    async def send(self, message: str | bytes) -> None:
        if self.close_code is not None or self.ws.state is not ConnectionState.OPEN:
            raise WebSocketClosed(self.close_code or 1006, self.close_reason)
        event = TextMessage(data=message) if isinstance(message, str) \
            else BytesMessage(data=bytes(message))
        data = self.ws.send(event)
        deadline = self.loop.time() + self.timeout
        while self.transport.reading_paused and not self.transport.is_closing():
            # The application is not taking messages: wait as a socket write would.
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise ResponseTimeout("the application stopped reading WebSocket messages")
            try:
                await asyncio.wait_for(self.transport.wait_resumed(), remaining)
            except asyncio.TimeoutError:
                raise ResponseTimeout("the application stopped reading WebSocket "
                                      "messages") from None
        self._deliver(data)
        await asyncio.sleep(0)  # let the handler run, as a socket round trip would

    async def receive(self) -> str | bytes:
        deadline = self.loop.time() + self.timeout
        while not self.messages:
            if self.close_code is not None:
                raise WebSocketClosed(self.close_code, self.close_reason)
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise ResponseTimeout("no WebSocket message within the timeout")
            waiter = self.waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                if not self.messages and self.close_code is None:
                    raise ResponseTimeout("no WebSocket message within the timeout") from None
        return self.messages.popleft()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame, wait (bounded) for the server's, then hang up."""
        if self.ws.state is ConnectionState.OPEN:
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
            self._deliver(self.ws.send(CloseConnection(code=code, reason=reason)))
            deadline = self.loop.time() + self.timeout
            while self.ws.state is not ConnectionState.CLOSED \
                    and not self.transport.is_closing() and self.loop.time() < deadline:
                waiter = self.waiter = self.loop.create_future()
                try:
                    await asyncio.wait_for(waiter, deadline - self.loop.time())
                except asyncio.TimeoutError:
                    break
        self.connection.close()
        await asyncio.sleep(0)  # connection_lost reaches the server's session


async def open_link(core: "ClientCore", path: str, subprotocols: Iterable[str],
                    headers: Any) -> _Link:
    """Send the upgrade request through `core`; the link once the server answered 101.

    Raises:
        WebSocketRejected: any other answer.
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    offered = list(subprotocols)
    if offered:
        upgrade.append(("Sec-WebSocket-Protocol", ", ".join(offered)))
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    call = core.prepare("GET", path, {"headers": upgrade + extra})
    pending = core.begin(call)
    connection, exchange = pending.connection, pending.exchange
    try:
        await connection.feed(pending.payload, pending.deadline, pending.what)
        pending.payload = b""
        await connection.wait(exchange, lambda: exchange.complete, pending.deadline,
                              pending.what)
    except BaseException:
        core._discard(connection)
        raise
    if not exchange.switched:
        raise WebSocketRejected(core._response(pending, stream=False, run=None))
    response_headers = ResponseHeaders(exchange.headers)
    # Still among the client's open connections: closing the client hangs it up too.
    tail = connection.detach()
    return _Link(connection, response_headers, tail, call.timeout)


class _SessionAPI:
    """What both sessions offer, written once over a `_call` that runs a coroutine."""

    _link: _Link

    def _call(self, awaitable: Awaitable[Any]) -> Any:
        raise NotImplementedError

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server accepted (None: none)."""
        return self._link.subprotocol

    @property
    def headers(self) -> ResponseHeaders:
        """The headers of the server's 101 answer."""
        return self._link.headers

    @property
    def close_code(self) -> int | None:
        return self._link.close_code

    @property
    def close_reason(self) -> str:
        return self._link.close_reason


class WebSocketTestSession(_SessionAPI):
    """A WebSocket of the synchronous TestClient; every call runs the client's loop."""

    __test__ = False

    def __init__(self, link: _Link, run: Callable[[Awaitable[Any]], Any]) -> None:
        self._link = link
        self._run = run

    def _call(self, awaitable: Awaitable[Any]) -> Any:
        return self._run(awaitable)

    def send_text(self, text: str) -> None:
        self._run(self._link.send(str(text)))

    def send_bytes(self, data: bytes) -> None:
        self._run(self._link.send(bytes(data)))

    def send_json(self, value: Any) -> None:
        self._run(self._link.send(json.dumps(value)))

    def receive(self) -> str | bytes:
        """The next message, str or bytes.

        Raises:
            WebSocketClosed: the server closed the connection.
            ResponseTimeout: nothing arrived within the client's timeout.
        """
        result: str | bytes = self._run(self._link.receive())
        return result

    def receive_text(self) -> str:
        message = self.receive()
        if not isinstance(message, str):
            raise TypeError("expected a text message, got a binary one")
        return message

    def receive_bytes(self) -> bytes:
        message = self.receive()
        if not isinstance(message, bytes):
            raise TypeError("expected a binary message, got a text one")
        return message

    def receive_json(self) -> Any:
        return json.loads(self.receive())

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._run(self._link.close(code, reason))

    def __enter__(self) -> "WebSocketTestSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncWebSocketTestSession(_SessionAPI):
    """A WebSocket of the AsyncTestClient."""

    __test__ = False

    def __init__(self, link: _Link) -> None:
        self._link = link

    async def send_text(self, text: str) -> None:
        await self._link.send(str(text))

    async def send_bytes(self, data: bytes) -> None:
        await self._link.send(bytes(data))

    async def send_json(self, value: Any) -> None:
        await self._link.send(json.dumps(value))

    async def receive(self) -> str | bytes:
        return await self._link.receive()

    async def receive_text(self) -> str:
        message = await self.receive()
        if not isinstance(message, str):
            raise TypeError("expected a text message, got a binary one")
        return message

    async def receive_bytes(self) -> bytes:
        message = await self.receive()
        if not isinstance(message, bytes):
            raise TypeError("expected a binary message, got a text one")
        return message

    async def receive_json(self) -> Any:
        return json.loads(await self.receive())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._link.close(code, reason)

    async def __aenter__(self) -> "AsyncWebSocketTestSession":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncConnecting:
    """What AsyncTestClient.websocket_connect returns: await it, or `async with` it."""

    def __init__(self, opening: Awaitable[_Link]) -> None:
        self._opening = opening
        self._session: AsyncWebSocketTestSession | None = None

    def __await__(self) -> Generator[Any, None, AsyncWebSocketTestSession]:
        link = yield from self._opening.__await__()
        return AsyncWebSocketTestSession(link)

    async def __aenter__(self) -> AsyncWebSocketTestSession:
        self._session = await self
        return self._session

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
