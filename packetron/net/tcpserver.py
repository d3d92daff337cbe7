"""TcpServer: one port, screened, optionally TLS, each connection handed to a callback."""
from __future__ import annotations

import asyncio
import copy
import inspect
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from time import monotonic
from typing import Any

from packetron.errors import ConfigError
from packetron.log import net_logger
from packetron.net.connection import (
    DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_WARN_BUFFER_BYTES,
    Connection,
)
from packetron.net.listener import (
    DEFAULT_BACKLOG,
    TcpListener,
    bind_tcp_socket,
    report_refused,
    start_tcp_listener,
)
from packetron.net.screening import Screen, Verdict

_ACCEPTED = Verdict.ACCEPTED
# Whether instances of a type are awaitable, for what sync callbacks return: one dict
# lookup instead of an ABC check per connection (`lambda conn: conn.on(...)` returns a
# method every time). Cleared when full, so made-up classes cannot grow it for ever.
_awaitable_types: dict[type, bool] = {}
_AWAITABLE_TYPES_MEMO_SIZE = 256

__all__ = ["TcpServer", "DEFAULT_CLOSE_TIMEOUT"]

# close(): seconds live connections get to flush their output and handlers get to
# finish before the rest is aborted / cancelled.
DEFAULT_CLOSE_TIMEOUT = 5.0

ConnectionHandler = Callable[[Connection], Any]
ErrorHandler = Callable[[BaseException, "Connection | None"], Any]


class TcpServer:
    """Accept TCP (or TLS) connections on one port and hand each to `on_connection`.

    Args:
        port: port to listen on; 0 lets the OS choose (then read `server.port`).
        host: address to bind.
        ssl: an SSLContext (see packetron.net.tls.server_context) to terminate TLS.
        allow, deny: CIDR lists; screened-out peers never reach the callback.
        max_connections: live connections at most; more are closed on accept.
        max_connections_per_ip: live connections per source address at most.
        rate: new connections per source per second at most.
        idle_timeout: close connections idle (no byte either way) this many seconds.
        warn_buffer_bytes, max_buffer_bytes: outgoing buffer marks of each Connection.
        reuse_port, backlog: passed to the listener.

    Raises:
        ConfigError: an invalid option (port out of range, bad CIDR, cap below 1 ...).

    The callback `fn(conn)` may be sync or async. When an async callback (or one that
    returns an awaitable) finishes, the connection is closed unless "message" listeners
    were added (callback style); a plain sync callback leaves the connection open. An
    exception in the callback goes to the `on_error` callbacks (or the log) and closes
    that connection only.
    """

    def __init__(
        self,
        port: int,
        host: str = "0.0.0.0",
        ssl: ssl_module.SSLContext | None = None,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        max_connections: int | None = None,
        *,
        max_connections_per_ip: int | None = None,
        rate: float | None = None,
        idle_timeout: float | None = None,
        warn_buffer_bytes: int = DEFAULT_WARN_BUFFER_BYTES,
        max_buffer_bytes: int | None = DEFAULT_MAX_BUFFER_BYTES,
        reuse_port: bool = False,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be an integer in 0..65535, got {port!r}")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise ConfigError("ssl must be an ssl.SSLContext (see packetron.net.tls)")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ConfigError(f"idle_timeout must be None or > 0 seconds, got {idle_timeout!r}")
        # Validate the buffer marks now rather than on the first connection.
        Connection(warn_buffer_bytes=warn_buffer_bytes, max_buffer_bytes=max_buffer_bytes)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._ssl = ssl
        self._screen = Screen(
            allow=allow,
            deny=deny,
            max_connections=max_connections,
            max_connections_per_ip=max_connections_per_ip,
            rate=rate,
        )
        self._idle_timeout = idle_timeout
        self._warn = warn_buffer_bytes
        self._max = max_buffer_bytes
        self._reuse_port = reuse_port
        self._backlog = backlog
        self._handler: ConnectionHandler | None = None
        self._handler_is_async = False
        self._error_handlers: list[ErrorHandler] = []
        self._reject_handlers: list[Callable[[str, Verdict], Any]] = []
        self._server: TcpListener | None = None
        self._live: set[Connection] = set()
        # Internal: the Broker learns here which connections end (no listener per conn).
        self._on_closed: Callable[[Connection], Any] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        # Plain TCP is screened by the Connection's own open hook (below) rather than by
        # a screening protocol in front of it: one object and one call per event fewer,
        # and the peer address is read once. With TLS the listener screens, so that a
        # refused peer costs no handshake.
        self._own_screen: Screen | None = None
        # Bound once: a bound method made per connection is one more allocation.
        self._opened_hook = self._opened
        self._report_hook = self._report
        self._forget_hook = self._forget

    # ------------------------------------------------------------ configuration

    def on_connection(self, fn: ConnectionHandler) -> ConnectionHandler:
        """Set the callback run once per screened connection; usable as a decorator."""
        self._handler = fn
        self._handler_is_async = inspect.iscoroutinefunction(fn)
        return fn

    def on_error(self, fn: ErrorHandler) -> ErrorHandler:
        """Add a callback `fn(exc, conn)` for errors raised by connection callbacks."""
        self._error_handlers.append(fn)
        return fn

    def on_reject(self, fn: Callable[[str, Verdict], Any]) -> Callable[[str, Verdict], Any]:
        """Add a callback `fn(host, verdict)` for each peer refused by screening."""
        self._reject_handlers.append(fn)
        return fn

    # ------------------------------------------------------------ state

    @property
    def port(self) -> int:
        """The bound port (the OS's choice when constructed with port=0).

        Raises:
            RuntimeError: listen() has not run yet.
        """
        if self._port is None:
            raise RuntimeError("TcpServer.port is known once listen() has returned")
        return self._port

    @property
    def listening(self) -> bool:
        """True between listen() and close()."""
        return self._server is not None and not self._closing

    @property
    def connections(self) -> frozenset[Connection]:
        """The live connections."""
        return frozenset(self._live)

    # ------------------------------------------------------------ lifecycle

    async def listen(self) -> None:
        """Bind and start accepting; returns once the port accepts connections.

        Raises:
            OSError: the port could not be bound.
            RuntimeError: already listening.
        """
        if self._server is not None:
            raise RuntimeError("TcpServer is already listening")
        sock = bind_tcp_socket(
            self.host, self._requested_port, reuse_port=self._reuse_port, backlog=self._backlog
        )
        await self._serve_on(sock)

    async def take_over(self, previous: TcpServer) -> None:
        """Start accepting on `previous`'s listening socket, then stop `previous` accepting.

        For changing a listener's options (screening, TLS, timeouts) while it runs: the
        socket is never closed in between, so connections waiting in its backlog are
        accepted here and the port cannot be lost. `previous` keeps its live connections
        (and TLS handshakes under way) until they end or it is close()d. Both share one
        screen from now on, set to this server's lists, caps and rate, so the caps count
        `previous`'s connections too.

        Raises:
            RuntimeError: this server is already listening, or `previous` is not.
            OSError: the socket could not be taken over (`previous` then goes on).
        """
        if self._server is not None:
            raise RuntimeError("TcpServer is already listening")
        old = previous._server
        if old is None or previous._closing or not old.sockets:
            raise RuntimeError("the previous TcpServer is not listening")
        listening = old.sockets[0]
        # A second descriptor of the same socket: it stays open when `previous` closes its own.
        sock = socket.fromfd(listening.fileno(), listening.family, listening.type)
        sock.setblocking(False)
        shared, mine = previous._screen, self._screen
        before = copy.copy(shared)  # previous's own policy, should the take-over fail
        shared.reconfigure(mine)
        self._screen = shared
        try:
            await self._serve_on(sock)
        except BaseException:
            shared.reconfigure(before)
            self._screen = mine
            raise
        previous._server = None
        # Not stop_listening(): that also refuses connections accepted but not yet opened.
        old.close()

    async def _serve_on(self, sock: socket.socket) -> None:
        """Accept on a bound, listening socket, which this server owns from now on."""
        screen = None if self._screen.is_noop else self._screen
        self._own_screen = screen if self._ssl is None else None
        try:
            self._port = sock.getsockname()[1]
            self._closing = False
            self._server = await start_tcp_listener(
                # One Connection per accepted socket, its options validated in __init__
                # (a partial: no Python frame of its own).
                partial(Connection._unchecked, self._warn, self._max, self._idle_timeout,
                        self._opened_hook, asyncio.get_running_loop()),
                sock,
                ssl=self._ssl,
                backlog=self._backlog,
                screen=screen if self._ssl is not None else None,
                on_reject=self._rejected,
            )
        except BaseException:
            sock.close()
            raise
        net_logger.debug("TcpServer listening on %s:%s", self.host, self._port)

    async def stop_listening(self) -> None:
        """Stop accepting (the port is released); live connections go on.

        close() later ends them. Used by the Broker to retire a port gently.
        """
        server, self._server = self._server, None
        self._closing = True
        if server is not None:
            # close() releases the listening socket at once. Not wait_closed(): since
            # Python 3.12 that also waits for every live connection to end.
            server.close()

    async def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT) -> None:
        """Stop accepting, then close every live connection.

        Connections get `timeout` seconds to flush their output (then they are aborted);
        handler tasks still running after that are cancelled. Each connection fires
        "close" exactly once. Idempotent.
        """
        server, self._server = self._server, None
        self._closing = True
        if server is not None:
            server.close()  # stop accepting first: nothing new arrives while we close
        live = list(self._live)
        for conn in live:
            conn.close()
        if live:
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed()) for c in live], timeout=timeout
            )
            if pending:
                for conn in live:
                    conn.abort()
                await asyncio.wait(pending, timeout=1.0)
        if self._tasks:
            _, still = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=1.0)
        if server is not None:
            await server.wait_closed()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no connection is live (or timeout seconds pass).

        Returns:
            True when none is live.
        """
        live = [asyncio.ensure_future(c.wait_closed()) for c in self._live]
        if not live:
            return True
        _, pending = await asyncio.wait(live, timeout=timeout)
        for fut in pending:
            fut.cancel()
        return not pending

    async def serve_forever(self) -> None:
        """listen() if needed, then wait until the task is cancelled (close() follows)."""
        if self._server is None:
            await self.listen()
        try:
            await asyncio.Future()
        finally:
            await self.close()

    async def __aenter__(self) -> TcpServer:
        await self.listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ per connection

    def _opened(self, conn: Connection) -> None:
        if self._closing:
            # A TLS handshake that finished after close() started, or a socket accepted
            # in the same loop iteration as close().
            conn.abort()
            return
        screen = self._own_screen
        if screen is not None:
            peer = conn._peer  # what remote_address is made of; as the listener reads it
            host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            verdict = screen.admit(host, monotonic())
            if verdict is not _ACCEPTED:
                # Before any byte is read: reading starts after connection_made.
                conn.abort()
                report_refused(host, verdict, self._rejected)
                return
        self._live.add(conn)
        conn._error_hook = self._report_hook
        conn._close_hook = self._forget_hook
        fn = self._handler
        if fn is None:
            conn.close()
            return
        if self._handler_is_async:
            self._track(asyncio.get_running_loop().create_task(self._run(fn, conn)))
            return
        # Sync callback: run right here, inside connection_made (no task, no extra hop).
        try:
            result = fn(conn)
        except Exception as exc:
            self._report(exc, conn)
            conn.close()
            return
        if result is not None:
            awaitable = _awaitable_types.get(type(result))
            if awaitable is None:
                awaitable = _learn_awaitable(result)
            if awaitable:
                self._track(asyncio.ensure_future(self._await(result, conn)))

    def _forget(self, conn: Connection) -> None:
        screen = self._own_screen
        if screen is not None:
            peer = conn._peer
            screen.release(str(peer[0]) if isinstance(peer, tuple) and peer else "")
        self._live.discard(conn)
        if self._on_closed is not None:
            self._on_closed(conn)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, fn: ConnectionHandler, conn: Connection) -> None:
        try:
            await fn(conn)
        except Exception as exc:
            self._report(exc, conn)
            conn.close()
            return
        if conn._message_fns is None:
            conn.close()

    async def _await(self, awaitable: Any, conn: Connection) -> None:
        try:
            await awaitable
        except Exception as exc:
            self._report(exc, conn)
            conn.close()
            return
        if conn._message_fns is None:
            conn.close()

    def _report(self, exc: BaseException, conn: Connection | None) -> None:
        if not self._error_handlers:
            net_logger.error("connection handler failed (%r)", conn, exc_info=exc)
            return
        for fn in list(self._error_handlers):
            try:
                result = fn(exc, conn)
                if inspect.isawaitable(result):
                    self._track(asyncio.ensure_future(result))
            except Exception:
                net_logger.exception("on_error callback failed")

    def _rejected(self, host: str, verdict: Verdict) -> None:
        for fn in list(self._reject_handlers):
            fn(host, verdict)


def _learn_awaitable(result: object) -> bool:
    """isinstance(result, Awaitable), remembered for its type (see _awaitable_types)."""
    if len(_awaitable_types) >= _AWAITABLE_TYPES_MEMO_SIZE:
        _awaitable_types.clear()
    # The ABC, not hasattr(result, "__await__"): a failed hasattr builds and formats an
    # AttributeError.
    awaitable = _awaitable_types[type(result)] = isinstance(result, Awaitable)
    return awaitable
