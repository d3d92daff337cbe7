"""The one place that opens ports.

Every server in packetron (the HTTP framework, the Broker, TcpServer) binds through
`bind_tcp_socket` / `bind_udp_socket` and starts accepting through `start_tcp_listener`,
so reuse options, TRY_NEXT_PORT, TLS and running out of file descriptors behave the same
everywhere.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import ssl as ssl_module
from time import monotonic
from typing import Any, Callable, cast

from packetron.errors import ConfigError
from packetron.log import net_logger
from packetron.net.accepting import TcpListener
from packetron.net.screening import ConnectionScreen, Verdict

__all__ = ["bind_tcp_socket", "bind_udp_socket", "start_tcp_listener", "start_udp_listener",
           "tcp_protocol_factory", "report_refused", "DEFAULT_BACKLOG", "MAX_PORT_ATTEMPTS",
           "TLS_HANDSHAKE_TIMEOUT", "TcpListener"]

# Same as the somaxconn default of recent Linux kernels; the kernel caps it anyway.
DEFAULT_BACKLOG = 4096
# TRY_NEXT_PORT walks at most this many ports upwards before giving up.
MAX_PORT_ATTEMPTS = 100
# Seconds a screened connection gets to finish its TLS handshake (asyncio's own default).
TLS_HANDSHAKE_TIMEOUT = 60.0

_ACCEPTED = Verdict.ACCEPTED


def _family_for(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_port(port: int) -> None:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer in 0..65535, got {port!r}")


def bind_tcp_socket(
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    try_next_port: bool = False,
    backlog: int = DEFAULT_BACKLOG,
) -> socket.socket:
    """Create a listening, non-blocking TCP socket.

    Args:
        host: address to bind ("0.0.0.0", "127.0.0.1", "::").
        port: port to bind; 0 lets the OS choose (read it back with getsockname()).
        reuse_port: set SO_REUSEPORT so several processes can bind the same port.
        try_next_port: on EADDRINUSE, try port+1, port+2, ... (MAX_PORT_ATTEMPTS in all).
        backlog: listen() backlog.

    Returns:
        The bound, listening socket.

    Raises:
        ConfigError: the port is out of range.
        OSError: the port could not be bound.
    """
    _check_port(port)
    attempts = MAX_PORT_ATTEMPTS if try_next_port and port != 0 else 1
    last_error: OSError | None = None
    for offset in range(attempts):
        candidate = port + offset
        if candidate > 65535:
            break
        sock = socket.socket(_family_for(host), socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR: a restarted server may bind while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, candidate))
            sock.listen(backlog)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
            if exc.errno != errno.EADDRINUSE:
                raise
    assert last_error is not None
    raise last_error


def bind_udp_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Create a bound, non-blocking UDP socket (see bind_tcp_socket for the arguments).

    A port another socket holds fails with EADDRINUSE, as for TCP. No SO_REUSEADDR
    here: UDP has no TIME_WAIT to step over, and on UDP it lets a second socket bind
    the same address and silently take over the datagrams (a second broker started on
    the same folder did). Several processes sharing a port on purpose ask for
    `reuse_port`.

    Raises:
        ConfigError: the port is out of range.
        OSError: the port could not be bound (EADDRINUSE: it is in use).
    """
    _check_port(port)
    sock = socket.socket(_family_for(host), socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def start_tcp_listener(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    *,
    ssl: ssl_module.SSLContext | None = None,
    backlog: int = DEFAULT_BACKLOG,
    screen: ConnectionScreen | None = None,
    on_reject: Callable[[str, Verdict], None] | None = None,
) -> TcpListener:
    """Start accepting on an already bound socket in the running loop.

    Args:
        protocol_factory: builds the protocol of each accepted connection. With a
            screen it must build an asyncio.Protocol (not a BufferedProtocol).
        sock: from bind_tcp_socket(); the returned server owns it from now on.
        ssl: terminate TLS with this context.
        backlog: listen() backlog.
        screen: decides per peer, before anything else happens: a refused peer's
            socket is closed before the protocol is even built, and before any TLS
            handshake (a denied peer costs no crypto). Accepted connections are
            released from the screen when they end. None: no screening, no cost.
        on_reject: called with (host, verdict) for each refused peer.

    Returns:
        A TcpListener (an asyncio.AbstractServer); close it to stop accepting.

    When accept() fails for want of file descriptors (or memory), the port is not
    accepted on for 0.1 s, doubling up to 1 s, until it works again; the loop neither
    spins nor stops, connections wait in the backlog meanwhile, and the trouble is
    logged once per interval (see packetron.net.accepting).
    """
    loop = asyncio.get_running_loop()
    if screen is None:
        factory, loop_ssl = protocol_factory, ssl
    else:
        # TLS is started by the screening protocol itself, after the verdict.
        factory = tcp_protocol_factory(protocol_factory, ssl=ssl, screen=screen,
                                       on_reject=on_reject)
        loop_ssl = None
    listener = TcpListener(loop, factory, sock, ssl=loop_ssl, backlog=backlog,
                           ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
    try:
        await listener.start()
    except BaseException:
        listener.close()
        raise
    return listener


def tcp_protocol_factory(
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    *,
    ssl: ssl_module.SSLContext | None = None,
    screen: ConnectionScreen | None = None,
    on_reject: Callable[[str, Verdict], None] | None = None,
) -> Callable[[], asyncio.BaseProtocol]:
    """The factory start_tcp_listener() gives the loop for a screened listener.

    Without a screen that is `protocol_factory` itself (TLS is then the loop's job).
    Exposed so the per-connection path can be measured without sockets
    (bench/connection_cost.py).
    """
    if screen is None:
        return protocol_factory

    def screened() -> asyncio.Protocol:
        return _ScreeningProtocol(protocol_factory, screen, ssl, on_reject)

    return screened


async def start_udp_listener(
    protocol_factory: Callable[[], asyncio.DatagramProtocol], sock: socket.socket
) -> tuple[asyncio.DatagramTransport, asyncio.DatagramProtocol]:
    """Start receiving datagrams on a socket from bind_udp_socket().

    Returns:
        (transport, protocol); closing the transport closes the socket.
    """
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(protocol_factory, sock=sock)


def report_refused(
    host: str, verdict: Verdict, on_reject: Callable[[str, Verdict], None] | None
) -> None:
    """Log a peer the screen refused and tell `on_reject`, whose errors are only logged.

    For whoever screens an accepted socket (the screening protocol here, TcpServer for
    plain TCP) once its transport has been aborted.
    """
    net_logger.debug("refused %s: %s", host, verdict)
    if on_reject is not None:
        try:
            on_reject(host, verdict)
        except Exception:
            net_logger.exception("on_reject hook failed")


def _tls_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS protocol the running loop itself uses for start_tls (uvloop has its own,
    faster one; asyncio's also works over uvloop's transports and is the fallback)."""
    if type(loop).__module__.startswith("uvloop"):
        import uvloop.loop  # only imported when that loop is the one running

        native = getattr(uvloop.loop, "SSLProtocol", None)  # not part of its public API
        if native is not None:
            return native
    from asyncio import sslproto

    return sslproto.SSLProtocol


class _ScreeningProtocol(asyncio.Protocol):
    """Sits between the transport and the real protocol: screens, then forwards.

    Refused: the transport is aborted and the real protocol is never built. Accepted:
    the real protocol is built (after the TLS handshake, if any) and every callback is
    passed on; connection_lost also releases the screen's count.

    TLS is layered here rather than by start_tls(): the TLS protocol is put on the
    transport inside connection_made, before the loop reads a byte. (uvloop starts
    reading right after connection_made returns, whatever pause_reading() said, so a
    ClientHello could otherwise reach this protocol instead of the TLS one.) Once the
    handshake is done the TLS protocol calls connection_made here again, with the
    encrypted transport, and forwards everything else as the plain one would.
    """

    __slots__ = ("_factory", "_screen", "_ssl", "_on_reject", "_inner", "_host",
                 "_admitted")

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        screen: ConnectionScreen,
        ssl: ssl_module.SSLContext | None,
        on_reject: Callable[[str, Verdict], None] | None,
    ) -> None:
        self._factory = factory
        self._screen = screen
        self._ssl = ssl
        self._on_reject = on_reject
        self._inner: Any = None
        self._host = ""
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted:
            self._start(transport)  # the TLS layer: handshake done, this is its transport
            return
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        verdict = self._screen.admit(host, monotonic())
        if verdict is not _ACCEPTED:
            cast(asyncio.Transport, transport).abort()  # a stream server's transport
            report_refused(host, verdict, self._on_reject)
            return
        self._host = host
        self._admitted = True
        if self._ssl is None:
            self._start(transport)
            return
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        handshake.add_done_callback(self._handshake_done)
        tls = _tls_protocol_class(loop)(loop, self, self._ssl, handshake, server_side=True,
                                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def _handshake_done(self, handshake: asyncio.Future[None]) -> None:
        # The TLS layer calls connection_made (which builds the inner protocol) before it
        # resolves this future, so no inner protocol means no encrypted connection came
        # of it: the handshake failed, timed out, or the peer left. The TLS layer has
        # closed the transport then, and no connection_lost will reach us.
        exc = None if handshake.cancelled() else handshake.exception()  # marks it retrieved
        if self._inner is None:
            self._release()
            net_logger.debug("TLS handshake with %s did not complete: %r", self._host, exc)

    def _start(self, transport: asyncio.BaseTransport) -> None:
        inner: Any = self._factory()  # an asyncio.Protocol: see start_tcp_listener
        self._inner = inner
        inner.connection_made(transport)

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self._screen.release(self._host)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is not None:
            inner.data_received(data)

    def eof_received(self) -> bool | None:
        inner = self._inner
        if inner is not None:
            return inner.eof_received()  # type: ignore[no-any-return]
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.connection_lost(exc)
