"""Runs one serving loop: the listener, the once-a-second tick and the graceful stop.

A Packetron with workers=1 runs this in a background thread (start()) or in the calling
thread (run()); each worker process of a multi-worker server runs one too.
"""
from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
import threading
from typing import Callable

from packetron.http.protocol import HttpProtocol
from packetron.http.state import ServerState
from packetron.log import server_logger
from packetron.net.listener import start_tcp_listener
from packetron.net.screening import Screen
from packetron.net.tls import server_context
from packetron.options import ServerOptions

__all__ = ["ServingLoop", "new_event_loop", "TICK_SECONDS"]

TICK_SECONDS = 1.0
# How often a graceful stop looks whether the last connection has finished.
_SHUTDOWN_POLL_SECONDS = 0.02
# A graceful stop gives connections this long to show a request before idle ones are
# closed: a connection accepted just before the stop may not have delivered its first
# request yet (clients send it right behind the handshake, so it is there within a round
# trip), and closing it as idle would drop a request the client already sent.
FIRST_REQUEST_GRACE_SECONDS = 0.1


def build_screen(options: ServerOptions) -> Screen | None:
    """The connection screen the options ask for, or None (no screening, no cost).

    Raises:
        ConfigError: a bad network, cap or rate.
    """
    screen = Screen(allow=options.allow, deny=options.deny,
                    max_connections=options.max_connections,
                    max_connections_per_ip=options.max_connections_per_ip,
                    rate=options.connection_rate, rate_window="fixed")
    return None if screen.is_noop else screen


def build_tls(options: ServerOptions) -> ssl_module.SSLContext | None:
    """The server TLS context of the `tls` option, or None for plain HTTP.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    tls = options.tls
    if tls is None or isinstance(tls, ssl_module.SSLContext):
        return tls
    return server_context(tls["cert"], tls.get("key"), password=tls.get("password"))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (about twice asyncio's throughput), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ServingLoop:
    """Serves HTTP on an already bound socket until stopped."""

    def __init__(self, state: ServerState, sock: socket.socket,
                 ssl: ssl_module.SSLContext | None = None) -> None:
        self.state = state
        self.sock = sock
        self.ssl = ssl
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        # A stop asked before serve() made its event (a signal during startup) is kept
        # here and honoured as soon as the event exists, never lost.
        self._stop_early = False
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._graceful_timeout = state.options.graceful_timeout

    # ------------------------------------------------------------ in the loop

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._stop_requested = asyncio.Event()
        if self._stop_early:
            self._stop_requested.set()
        state = self.state
        state.now = loop.time()
        app = state.app
        if app is not None and app.lifespan.startup:
            await app.lifespan.run_startup(app)  # before the first accept
        try:
            server = await start_tcp_listener(lambda: HttpProtocol(state, loop), self.sock,
                                              ssl=self.ssl or build_tls(state.options),
                                              screen=build_screen(state.options))
        except BaseException:
            if app is not None and app.lifespan.shutdown:
                await app.lifespan.run_shutdown(app)  # what startup opened is closed again
            raise
        tick_handle: list[asyncio.TimerHandle] = []

        def tick() -> None:
            state.tick(loop.time())
            tick_handle[:] = [loop.call_later(TICK_SECONDS, tick)]

        tick()
        if on_ready is not None:
            on_ready()
        try:
            await self._stop_requested.wait()
        finally:
            await self._shutdown(server)
            for handle in tick_handle:
                handle.cancel()
            if app is not None and app.lifespan.shutdown:
                await app.lifespan.run_shutdown(app)
            if app is not None:
                await app.close_channels()  # after the hooks, which may still publish

    async def _shutdown(self, server: asyncio.Server) -> None:
        """Stop accepting, let answers in progress finish, close idle keep-alive connections."""
        state = self.state
        server.close()
        if state.connections:
            await asyncio.sleep(FIRST_REQUEST_GRACE_SECONDS)
        for connection in list(state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._graceful_timeout
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(_SHUTDOWN_POLL_SECONDS)
        for connection in list(state.connections):
            server_logger.warning("graceful stop timed out; aborting a connection")
            connection.transport.abort()
        await server.wait_closed()

    def request_stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop gracefully (thread-safe)."""
        if timeout is not None:
            self._graceful_timeout = timeout
        loop, event = self.loop, self._stop_requested
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        else:
            self._stop_early = True

    # ------------------------------------------------------------ in a thread

    def start_in_thread(self, name: str = "packetron-server") -> None:
        """Run the loop in a daemon thread; returns once the port accepts connections.

        Raises:
            the error that kept the server from starting.
        """
        self._thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def _thread_main(self) -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.serve(on_ready=self._started.set))
        except BaseException as exc:  # reported to the starting thread, or logged
            if not self._started.is_set():
                self._start_error = exc
            else:
                server_logger.error("serving loop failed", exc_info=exc)
        finally:
            self._started.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True if it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
