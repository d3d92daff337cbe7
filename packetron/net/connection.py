"""Connection: one TCP (or TLS) byte stream, read with coroutines or with callbacks.

`Connection` is itself the `asyncio.Protocol` the transport talks to, so a received chunk
goes from the transport to the reader (or to the "message" listeners) with no extra task,
queue or copy in between. Two styles, one per connection:

- reading: `await read()`, `readexactly()`, `readline()`, `async for chunk in conn`,
  `async for frame in conn.frames(framer)`;
- callbacks: `conn.on("message", fn)` gets every chunk as it arrives.

Outgoing data goes through the transport's buffer; `warn_buffer_bytes` is its high
watermark ("pause"/"resume"/"drain" events, `send()` returning False) and
`max_buffer_bytes` the point where writing is refused with BufferFull.
"""
from __future__ import annotations

import asyncio
import itertools
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from typing import Any

from packetron.errors import ConfigError, ConnectionClosed, ConnectionModeError
from packetron.log import net_logger
from packetron.net.events import EventEmitter
from packetron.net.reading import (
    DEFAULT_MAX_LINE_BYTES,
    MODE_MESSAGE,
    MODE_NONE,
    MODE_READ,
    READ_HIGH_WATER_BYTES,
    READ_LOW_WATER_BYTES,
    Framer,
    StreamReading,
)
from packetron.net.writing import CLOSED as _CLOSED
from packetron.net.writing import CLOSING as _CLOSING
from packetron.net.writing import OPEN as _OPEN
from packetron.net.writing import (
    DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_WARN_BUFFER_BYTES,
    ConnectionState,
    StreamWriting,
    check_buffer_limits,
)

__all__ = [
    "Connection",
    "open_connection",
    "Framer",
    "ConnectionState",
    "EVENTS",
    "READ_HIGH_WATER_BYTES",
    "READ_LOW_WATER_BYTES",
    "DEFAULT_WARN_BUFFER_BYTES",
    "DEFAULT_MAX_BUFFER_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_CONNECT_TIMEOUT",
]

# open_connection() gives up after this many seconds (TcpClient's default timeout).
DEFAULT_CONNECT_TIMEOUT = 5.0

EVENTS = frozenset({"drain", "pause", "resume", "close", "error", "message"})


_ids = itertools.count(1)
_new_object = object.__new__
_get_running_loop = asyncio.get_running_loop


def _check_options(
    warn_buffer_bytes: int, max_buffer_bytes: int | None, idle_timeout: float | None
) -> None:
    """Validate Connection's options (see there).

    Raises:
        ConfigError: a buffer size is not positive, max is below warn, or the idle
            timeout is not positive.
    """
    check_buffer_limits(warn_buffer_bytes, max_buffer_bytes)
    if idle_timeout is not None and not idle_timeout > 0:
        raise ConfigError(f"idle_timeout must be None or > 0 seconds, got {idle_timeout!r}")


class Connection(StreamReading, StreamWriting, asyncio.Protocol):
    """A TCP or TLS stream.

    Servers create one per accepted socket; clients get one from `open_connection`.

    Args:
        warn_buffer_bytes: high watermark of the outgoing buffer. Above it the "pause"
            event fires and `send()` returns False; "resume" and then "drain" fire once
            the buffer is back down to a quarter of it.
        max_buffer_bytes: `write()`/`send()` raise BufferFull while more than this many
            bytes wait in the outgoing buffer. None: no limit.
            Both may be changed on an open connection (set the attribute, or call
            set_buffer_limits()); the new marks apply at once.
        idle_timeout: close the connection after this many seconds without a byte read
            or written. None: never.
        on_open: called with the connection once the transport is attached (servers use
            it to start the handler).

    Raises:
        ConfigError: a buffer size is not positive, or max is below warn.

    Events (`on(event, fn)`): "message" fn(data) for each chunk (callback style);
    "pause", "resume", "drain", "close" fn(); "error" fn(exc). "close" fires exactly once.
    A listener may be a coroutine function; it then runs as a task.
    """

    __slots__ = (
        "id",
        "_warn_buffer_bytes",
        "_max_buffer_bytes",
        "idle_timeout",
        "_transport",
        "_loop",
        "_state",
        "_peer",
        "_rbuf",
        "_eof",
        "_waiter",
        "_read_paused",
        "_held",
        "_held_chunks",
        "_held_eof",
        "_write_paused",
        "_drain_waiters",
        "_events",
        "_message_fns",
        "_mode",
        "_on_open",
        "_error_hook",
        "_close_hook",
        "_closed",
        "_idle_handle",
        "_last_activity",
        "_tasks",
        "_wrote_eof",
    )

    def __init__(
        self,
        *,
        warn_buffer_bytes: int = DEFAULT_WARN_BUFFER_BYTES,
        max_buffer_bytes: int | None = DEFAULT_MAX_BUFFER_BYTES,
        idle_timeout: float | None = None,
        on_open: Callable[[Connection], None] | None = None,
    ) -> None:
        # The usual values pass this one test; anything else gets the full check (which
        # also accepts int subclasses).
        if not (
            type(warn_buffer_bytes) is int
            and warn_buffer_bytes > 0
            and (max_buffer_bytes is None or (type(max_buffer_bytes) is int
                                             and max_buffer_bytes >= warn_buffer_bytes))
            and idle_timeout is None
        ):
            _check_options(warn_buffer_bytes, max_buffer_bytes, idle_timeout)
        self._setup(warn_buffer_bytes, max_buffer_bytes, idle_timeout, on_open)

    @classmethod
    def _unchecked(
        cls,
        warn_buffer_bytes: int,
        max_buffer_bytes: int | None,
        idle_timeout: float | None,
        on_open: Callable[[Connection], None] | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Connection:
        """A Connection from options validated earlier (servers check them once).

        Positional and without the checks: a call with keywords costs more than the rest
        of the construction, and servers make one Connection per accepted socket. A
        server also passes the loop it listens in, which connection_made would look up.
        """
        self = _new_object(cls)
        self._setup(warn_buffer_bytes, max_buffer_bytes, idle_timeout, on_open, loop)
        return self

    def _setup(
        self,
        warn_buffer_bytes: int,
        max_buffer_bytes: int | None,
        idle_timeout: float | None,
        on_open: Callable[[Connection], None] | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.id: int = next(_ids)
        self._warn_buffer_bytes = warn_buffer_bytes
        self._max_buffer_bytes = max_buffer_bytes
        self.idle_timeout = idle_timeout
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._state: ConnectionState = _OPEN
        self._peer: Any = None  # the transport's "peername", as it gave it
        self._rbuf = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        self._held = False  # pause_reading() by the application
        self._held_chunks: list[bytes] | None = None  # arrived while held (see data_received)
        self._held_eof = False
        self._write_paused = False
        # Made on first use: most connections never drain() or add a listener, and the
        # accept path is where every allocation counts.
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._events: EventEmitter | None = None
        self._message_fns: list[Callable[[bytes], Any]] | None = None
        self._mode = MODE_NONE
        self._on_open = on_open
        # Set by servers: user-code errors go to the server's on_error; the close hook
        # lets the server forget the connection without a listener per connection.
        self._error_hook: Callable[[BaseException, Connection], None] | None = None
        self._close_hook: Callable[[Connection], None] | None = None
        self._closed: asyncio.Future[None] | None = None  # made by wait_closed() only
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._tasks: set[asyncio.Task[Any]] | None = None
        self._wrote_eof = False

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> ConnectionState:
        """"open", "closing" (close() called, output still flushing) or "closed"."""
        return self._state

    @property
    def remote_address(self) -> tuple[str, int]:
        """The peer's (host, port); IPv6 hosts without brackets; ("", 0) if unknown."""
        # Built on request: the accept path only stores what the transport reported.
        peer = self._peer
        if isinstance(peer, tuple) and len(peer) >= 2:
            return (str(peer[0]), int(peer[1]))
        return ("", 0)

    @property
    def transport(self) -> asyncio.Transport | None:
        """The underlying transport (None before connection_made)."""
        return self._transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The transport's extra info ("peercert", "sslcontext", "socket", ...)."""
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def _is_tls(self) -> bool:
        # Asked only when it matters (half-close): most connections never need to know.
        return self.get_extra_info("sslcontext") is not None

    def __repr__(self) -> str:
        host, port = self.remote_address
        return f"<Connection id={self.id} {host}:{port} {self._state}>"

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance-checked: uvloop's transports do not derive from asyncio's.
        self._transport = transport  # type: ignore[assignment]
        loop = self._loop
        if loop is None:
            self._loop = loop = _get_running_loop()
        # The transport calls pause_writing()/resume_writing() at these marks (high,
        # low; positional, which uvloop's transports take faster than keywords).
        warn = self._warn_buffer_bytes
        transport.set_write_buffer_limits(warn, warn // 4)  # type: ignore[attr-defined]
        # Read now: a TLS transport forgets it once closed.
        self._peer = transport.get_extra_info("peername")
        if self.idle_timeout is not None:
            self._last_activity = loop.time()
            self._idle_handle = loop.call_at(
                self._last_activity + self.idle_timeout, self._idle_check
            )
        if self._on_open is not None:
            try:
                self._on_open(self)
            except Exception as exc:
                self._report(exc)
                self.abort()

    def data_received(self, data: bytes) -> None:
        if self._idle_handle is not None:
            self._last_activity = self._loop.time()  # type: ignore[union-attr]
        fns = self._message_fns
        if fns is not None:
            if self._held:
                # uvloop starts reading once connection_made returns, whatever
                # pause_reading() said in it: keep these for resume_reading().
                if self._held_chunks is None:
                    self._held_chunks = []
                self._held_chunks.append(data)
                self._transport.pause_reading()  # type: ignore[union-attr]
                return
            for fn in fns:
                try:
                    result = fn(data)
                except Exception as exc:
                    self._fail(exc)
                    return
                if result is not None and asyncio.iscoroutine(result):
                    self._spawn(result)
            return
        self._rbuf += data
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        elif not self._read_paused and len(self._rbuf) > READ_HIGH_WATER_BYTES:
            # Nobody is reading right now: stop taking bytes from the kernel until the
            # reader catches up (TCP flow control then slows the peer down).
            self._read_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self._held_chunks:
            self._held_eof = True  # after the held messages, in resume_reading()
            return True
        self._eof = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        # Reading style: keep the write side open (half-close) so the handler can still
        # answer; it closes when done. Callback style has nobody to finish, so close now.
        # TLS cannot half-close, and asyncio warns if we ask it to. Once both sides have
        # sent EOF there is nothing left to keep open.
        return self._mode != MODE_MESSAGE and not self._wrote_eof and not self._is_tls()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._emit("pause")

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers(None)
        self._emit("resume")
        self._emit("drain")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state is _CLOSED:
            return
        self._state = _CLOSED
        self._eof = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._drain_waiters:
            self._wake_drainers(ConnectionClosed("connection closed while draining"))
        if exc is not None:
            self._emit("error", exc)
        if self._close_hook is not None:
            self._close_hook(self)
        events = self._events
        if events is not None:
            events.emit("close")
            # "close" fires once, and no chunk comes after it: these listeners are done.
            events.clear("close")
        # Dropping the "message" listeners too breaks the usual reference cycle
        # (conn -> its list -> conn.write -> conn), so the connection is freed at once
        # rather than by the garbage collector.
        self._message_fns = None
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------ events

    def on(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add a listener; returns `fn`, so it also works as a decorator.

        Raises:
            ConfigError: unknown event name.
            ConnectionModeError: "message" on a connection that is being read.
        """
        if event == "message":
            if self._mode == MODE_READ:
                raise ConnectionModeError(
                    "this connection is being read with read()/readline()/async for; "
                    "it cannot also deliver 'message' events"
                )
            self._mode = MODE_MESSAGE
            if self._message_fns is None:
                self._message_fns = []
            self._message_fns.append(fn)
            if self._rbuf:
                # Bytes that arrived before the first listener go to it first, in order.
                pending = bytes(self._rbuf)
                self._rbuf.clear()
                self._resume_reading()
                self._deliver_pending(pending)
            if self._eof and self._state is _OPEN and self._transport is not None:
                self.close()
            return fn
        events = self._events
        if events is None:
            events = self._events = EventEmitter(EVENTS, "Connection", f"connection {self.id}")
        return events.on(event, fn)

    def off(self, event: str, fn: Callable[..., Any]) -> None:
        """Remove a listener added with on(); unknown listeners are ignored."""
        if event == "message":
            if self._message_fns is not None and fn in self._message_fns:
                self._message_fns.remove(fn)
                if not self._message_fns:
                    # Nobody listens: chunks wait in the buffer (reading pauses at the
                    # high mark) for the next "message" listener instead of being lost.
                    self._message_fns = None
            return
        if self._events is not None:
            self._events.off(event, fn)

    def _deliver_pending(self, data: bytes) -> None:
        for fn in list(self._message_fns or ()):
            try:
                result = fn(data)
            except Exception as exc:
                self._fail(exc)
                return
            if result is not None and asyncio.iscoroutine(result):
                self._spawn(result)

    def _emit(self, event: str, *args: Any) -> None:
        events = self._events
        if events is None or not events.emit(event, *args):
            if event == "error" and args and self._error_hook is None:
                net_logger.debug("connection %s: %r", self.id, args[0])

    def _spawn(self, coro: Awaitable[Any]) -> None:
        # A "message" listener's coroutine: its failure ends the connection, as a raise
        # from a plain listener does. (Other events' coroutines are the emitter's.)
        loop = self._loop or asyncio.get_running_loop()
        task: asyncio.Task[Any] = loop.create_task(coro)  # type: ignore[arg-type]
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._fail(task.exception())  # type: ignore[arg-type]

    def _report(self, exc: BaseException) -> None:
        """User code failed on this connection: tell "error" listeners and the server."""
        self._emit("error", exc)
        if self._error_hook is not None:
            self._error_hook(exc, self)
        elif not (self._events is not None and self._events.has("error")):
            net_logger.error("connection %s: unhandled error", self.id, exc_info=exc)

    def _fail(self, exc: BaseException) -> None:
        # A listener's error ends this connection only; pending output is still flushed.
        self._report(exc)
        self.close()

    # ------------------------------------------------------------ flow control

    def pause_reading(self) -> None:
        """Take no more bytes from the peer until resume_reading(): "message" events stop,
        reads wait, and TCP flow control slows the peer down. For callback-style code
        that must not accept more work than it can finish."""
        if not self._held:
            self._held = True
            if not self._read_paused and self._state != "closed" and self._transport is not None:
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Undo pause_reading(); messages that arrived meanwhile are delivered first."""
        if not self._held:
            return
        self._held = False
        chunks = self._held_chunks
        while chunks and not self._held and self._state != "closed":
            self.data_received(chunks.pop(0))  # a listener may pause again
        if self._held or self._state == "closed":
            return
        self._held_chunks = None
        if self._held_eof:
            self._held_eof = False
            if not self.eof_received():
                self.close()  # what the transport does when eof_received() says so
            return
        if not self._read_paused and self._transport is not None:
            self._transport.resume_reading()

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Close after sending what is buffered. Idempotent; "close" fires once."""
        if self._state is not _OPEN:
            return
        t = self._transport
        if t is None:
            self._state = _CLOSED
            return
        self._state = _CLOSING
        t.close()

    def abort(self) -> None:
        """Close at once, discarding buffered output."""
        t = self._transport
        if t is None:
            self._state = _CLOSED
            return
        if self._state is _CLOSED:
            return
        self._state = _CLOSING
        t.abort()

    async def wait_closed(self) -> None:
        """Return once the connection is closed (the "close" event has fired)."""
        if self._state is _CLOSED or self._transport is None:
            return
        if self._closed is None:
            self._closed = self._loop.create_future()  # type: ignore[union-attr]
        await asyncio.shield(self._closed)

    def _idle_check(self) -> None:
        self._idle_handle = None
        if self._state is not _OPEN:
            return
        loop = self._loop
        assert loop is not None and self.idle_timeout is not None
        deadline = self._last_activity + self.idle_timeout
        if loop.time() >= deadline:
            net_logger.debug("connection %s idle for %ss, closing", self.id, self.idle_timeout)
            # A peer that stopped reading would keep a flushing close() waiting forever.
            if self.buffered_amount:
                self.abort()
            else:
                self.close()
            return
        # Activity since the timer was set: re-arm for the remaining time only (one
        # timer per connection, not one per chunk).
        self._idle_handle = loop.call_at(deadline, self._idle_check)


async def open_connection(
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | bool | None = None,
    server_hostname: str | None = None,
    timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    warn_buffer_bytes: int = DEFAULT_WARN_BUFFER_BYTES,
    max_buffer_bytes: int | None = DEFAULT_MAX_BUFFER_BYTES,
    idle_timeout: float | None = None,
) -> Connection:
    """Connect to host:port and return the Connection (the client side).

    Args:
        host, port: where to connect.
        ssl: an SSLContext (or True for the default one) to speak TLS.
        server_hostname: name checked against the certificate (default: host).
        timeout: seconds for TCP connect plus TLS handshake; None waits forever.
        warn_buffer_bytes, max_buffer_bytes, idle_timeout: see Connection.

    Returns:
        The open Connection.

    Raises:
        TimeoutError: not connected within `timeout`.
        OSError: the connection was refused or failed (ConnectionRefusedError, ...);
            ssl.SSLError for a failed handshake. TcpClient turns the last failure of
            its retries into ConnectFailed.
    """
    loop = asyncio.get_running_loop()

    def factory() -> Connection:
        return Connection(
            warn_buffer_bytes=warn_buffer_bytes,
            max_buffer_bytes=max_buffer_bytes,
            idle_timeout=idle_timeout,
        )

    kwargs: dict[str, Any] = {}
    if ssl:
        kwargs["ssl"] = ssl
        if server_hostname is not None:
            kwargs["server_hostname"] = server_hostname
    async with asyncio.timeout(timeout):
        _, conn = await loop.create_connection(factory, host, port, **kwargs)
    return conn
