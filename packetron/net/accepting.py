"""Accepting connections when the process runs out of file descriptors (or memory).

`TcpListener` is the server object `start_tcp_listener` returns. It accepts as fast as
the loop allows while all is well, and when accept() fails for want of a resource
(EMFILE, ENFILE, ENOBUFS, ENOMEM) it stops accepting on that port for a while
(ACCEPT_RETRY_FIRST_DELAY_SECONDS doubling to ACCEPT_RETRY_MAX_DELAY_SECONDS), so the
loop neither spins nor dies, and connections that arrive meanwhile wait in the kernel's
backlog until they can be served. The first failure is logged at once, then at most one
line per ACCEPT_ERROR_LOG_INTERVAL_SECONDS while it lasts, and the recovery once.

Two ways of accepting, the same behaviour:

- asyncio's loop: accept() runs here (`_accept_ready`), each socket handed to
  `loop.connect_accepted_socket`, as asyncio's own server does (its pause on EMFILE is
  a fixed second with a traceback logged each time).
- uvloop's loop: its own accept loop in C is kept, for speed (it costs about 15 µs per
  connection less). libuv never reports EMFILE to it: it closes a spare descriptor,
  accepts and at once closes every pending connection, and takes the spare back (load
  shedding: clients see their connection closed unanswered, and nothing is logged). So
  a watch (FD_WATCH_INTERVAL_SECONDS) looks whether a descriptor is left; when none is,
  the port is taken from uvloop and accepted here, with the pauses above, until it has
  been calm for FD_CALM_SECONDS. Between the exhaustion and the next look, libuv sheds.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl as ssl_module
import weakref
from collections.abc import Callable
from typing import Any

from packetron.log import net_logger

__all__ = ["TcpListener", "ACCEPT_RETRY_FIRST_DELAY_SECONDS", "ACCEPT_RETRY_MAX_DELAY_SECONDS",
           "ACCEPT_ERROR_LOG_INTERVAL_SECONDS", "FD_WATCH_INTERVAL_SECONDS", "FD_CALM_SECONDS",
           "ACCEPT_BATCH"]

# A failed accept for want of a resource pauses the port this long, doubling up to the
# maximum; a successful accept starts over from the first delay. The maximum bounds how
# long the port stays shut once descriptors are free again.
ACCEPT_RETRY_FIRST_DELAY_SECONDS = 0.1
ACCEPT_RETRY_MAX_DELAY_SECONDS = 1.0
# While accepting keeps failing, one log line per this many seconds.
ACCEPT_ERROR_LOG_INTERVAL_SECONDS = 10.0
# uvloop only: how often the watch looks whether a descriptor is left, and how long
# accepting must go without a failure before uvloop's accept loop takes the port back.
FD_WATCH_INTERVAL_SECONDS = 1.0
FD_CALM_SECONDS = 5.0
# Connections accepted per readiness event, at most: the rest waits for the next turn
# of the loop, so one busy port cannot starve the connections already open.
ACCEPT_BATCH = 64

# accept() failing for want of a resource: pause, or the loop would spin on a port that
# stays readable.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() reporting a problem of the connection it was taking, already gone: skip it
# (accept(2): Linux passes pending network errors on the new socket to accept()).
_PEER_GONE = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
    "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ETIMEDOUT", "ECONNRESET")
    if hasattr(errno, name))

_NATIVE, _OWN, _CLOSED = "native", "own", "closed"


def _is_uvloop(loop: asyncio.AbstractEventLoop) -> bool:
    return type(loop).__module__.startswith("uvloop")


def _descriptor_limit() -> str:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return "unknown"
    return "unlimited" if soft == getattr(resource, "RLIM_INFINITY", -1) else str(soft)


class TcpListener(asyncio.Server):
    """A listening socket served in the running loop; what `start_tcp_listener` returns.

    An asyncio.Server to the code that holds it (`close()`, `await wait_closed()`,
    `sockets`, `is_serving()`, `async with`), whose accepting is its own: every public
    method is defined here and asyncio.Server's constructor is not run (no transport is
    ever attached to it, so its connection counting is not needed). It owns the socket
    it was given.
    """

    def __init__(  # asyncio.Server.__init__ is deliberately not called (see above)
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        *,
        ssl: ssl_module.SSLContext | None,
        backlog: int,
        ssl_handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self._factory = protocol_factory
        self._sock = sock
        self._fd = sock.fileno()
        self._ssl = ssl
        self._backlog = backlog
        self._handshake_timeout = ssl_handshake_timeout if ssl is not None else None
        self._native_capable = _is_uvloop(loop)
        self._mode = _OWN
        self._inner: asyncio.AbstractServer | None = None  # uvloop's server, native mode
        self._reading = False  # our reader is on the socket
        self._retry: asyncio.TimerHandle | None = None
        self._delay = ACCEPT_RETRY_FIRST_DELAY_SECONDS
        self._failing_since: float | None = None  # loop time accepting first failed
        self._last_failure = 0.0
        self._logged_at = 0.0
        self._pauses = 0  # pauses since accepting first failed
        self._handovers: set[asyncio.Task[Any]] = set()
        self._closed_future: asyncio.Future[None] = loop.create_future()
        try:
            host, port = sock.getsockname()[:2]
            self._name = f"{host}:{port}"
        except OSError:
            self._name = repr(sock)

    # ------------------------------------------------------------ starting

    async def start(self) -> None:
        """Begin accepting (called once, by start_tcp_listener)."""
        if self._native_capable:
            await self._go_native()
            _FdWatch.of(self._loop).add(self)
        else:
            self._sock.listen(self._backlog)
            self._start_reading()

    async def _go_native(self) -> None:
        """Hand the port to uvloop's accept loop, on a second descriptor of the socket
        (closing uvloop's server later leaves ours, and the backlog, in place)."""
        dup = socket.socket(self._sock.family, self._sock.type, self._sock.proto,
                            os.dup(self._fd))
        try:
            inner = await self._loop.create_server(self._factory, sock=dup, ssl=self._ssl,
                                                   backlog=self._backlog,
                                                   ssl_handshake_timeout=self._handshake_timeout)
        except BaseException:
            dup.close()
            raise
        if self._mode == _CLOSED:  # closed while uvloop's server was being made
            inner.close()
            return
        self._inner = inner
        self._mode = _NATIVE
        self._stop_reading()

    # ------------------------------------------------------------ our own accept loop

    def _start_reading(self) -> None:
        if not self._reading and self._mode != _CLOSED:
            self._loop.add_reader(self._fd, self._accept_ready)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _accept_ready(self) -> None:
        sock = self._sock
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break  # the backlog is empty
            except OSError as exc:
                if exc.errno in _PEER_GONE:
                    continue
                if self._mode != _CLOSED:
                    self._pause(exc)
                return
            self._hand_over(conn)
        # A round without a failure ends the trouble (one accept that succeeds between
        # two failures, on a descriptor that just came free, does not).
        if self._failing_since is not None:
            self._recovered()

    def _hand_over(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        task = self._loop.create_task(self._loop.connect_accepted_socket(
            self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout))
        self._handovers.add(task)
        task.add_done_callback(lambda done: self._handed_over(done, conn))

    def _handed_over(self, task: asyncio.Task[Any], conn: socket.socket) -> None:
        self._handovers.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: a failed handshake is the peer's business
        if exc is None:
            return
        net_logger.debug("connection accepted on %s could not be set up: %r", self._name, exc)
        if not self._native_capable:
            # asyncio's transport holds this very socket object: closing it again is
            # harmless, and it must not stay open if no transport was made. (uvloop
            # detaches the object from the descriptor it closes itself.)
            conn.close()

    def _pause(self, exc: OSError, *, noticed_late: bool = False) -> None:
        """accept() failed for want of a resource (or for a reason we do not know, which
        retrying at once would only repeat): stop reading the port for a while."""
        self._stop_reading()
        now = self._loop.time()
        delay = self._delay
        self._delay = min(delay * 2, ACCEPT_RETRY_MAX_DELAY_SECONDS)
        self._last_failure = now
        self._pauses += 1
        since = self._failing_since
        if since is None:
            self._failing_since = since = self._logged_at = now
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                why = f"out of file descriptors, limit {_descriptor_limit()}"
            else:
                why = f"errno {exc.errno}"
            late = ("; until this was noticed, the event loop closed new connections "
                    "unanswered" if noticed_late else "")
            net_logger.warning(
                "cannot accept connections on %s: %s (%s)%s; they wait in the backlog, "
                "accepting is retried after %.1f s, then less often, up to every %.1f s",
                self._name, exc.strerror or exc, why, late, delay,
                ACCEPT_RETRY_MAX_DELAY_SECONDS)
            if exc.errno not in _OUT_OF_RESOURCES:  # worth a traceback, once
                net_logger.error("unexpected accept() error on %s", self._name, exc_info=exc)
        elif now - self._logged_at >= ACCEPT_ERROR_LOG_INTERVAL_SECONDS:
            self._logged_at = now
            net_logger.warning("still cannot accept connections on %s after %.0f s (%d "
                               "pauses): %s", self._name, now - since,
                               self._pauses, exc.strerror or exc)
        self._retry = self._loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._mode == _OWN:
            self._start_reading()

    def _recovered(self) -> None:
        assert self._failing_since is not None
        net_logger.warning("accepting connections on %s again after %.1f s (%d pauses)",
                           self._name, self._loop.time() - self._failing_since, self._pauses)
        self._failing_since = None
        self._delay = ACCEPT_RETRY_FIRST_DELAY_SECONDS
        self._pauses = 0

    # ------------------------------------------------------------ uvloop: the watch's calls

    def _exhausted(self, exc: OSError) -> None:
        """The watch found no descriptor left: take the port from uvloop, pause."""
        if self._mode != _NATIVE:
            return
        inner, self._inner = self._inner, None
        self._mode = _OWN
        if inner is not None:
            inner.close()  # its descriptor of the socket; ours keeps the backlog
        self._pause(exc, noticed_late=True)

    def _calm(self, now: float) -> bool:
        """True when accepting here has gone without failure for FD_CALM_SECONDS."""
        return (self._mode == _OWN and self._failing_since is None and self._retry is None
                and now - self._last_failure >= FD_CALM_SECONDS)

    async def _back_to_native(self) -> None:
        try:
            await self._go_native()
        except OSError as exc:  # no descriptor for the second one after all: later
            net_logger.debug("uvloop cannot take %s back yet: %r", self._name, exc)

    # ------------------------------------------------------------ asyncio.AbstractServer

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening socket (empty once closed)."""
        return () if self._mode == _CLOSED else (self._sock,)

    def __repr__(self) -> str:
        return f"<TcpListener {self._name} {self._mode}>"

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._mode != _CLOSED

    async def start_serving(self) -> None:
        """Accepting starts at creation; nothing to do."""

    async def serve_forever(self) -> None:
        await asyncio.shield(self._closed_future)

    def close(self) -> None:
        """Stop accepting and close the listening socket; live connections go on."""
        if self._mode == _CLOSED:
            return
        self._stop_reading()
        self._mode = _CLOSED
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._native_capable:
            _FdWatch.of(self._loop).discard(self)
        if self._inner is not None:
            self._inner.close()
        self._sock.close()
        if not self._closed_future.done():
            self._closed_future.set_result(None)

    def close_clients(self) -> None:
        """Nothing to do: the servers built on this track and close their own
        connections (asyncio.Server has this since Python 3.13)."""

    def abort_clients(self) -> None:
        """Nothing to do (see close_clients)."""

    async def wait_closed(self) -> None:
        """Wait until close() has been called (and uvloop's server, if any, is done)."""
        await asyncio.shield(self._closed_future)
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.wait_closed()


class _FdWatch:
    """uvloop only: one per loop. Every FD_WATCH_INTERVAL_SECONDS (while a listener is
    open) it looks whether a file descriptor is left; when none is, every listener of the
    loop leaves uvloop's accept loop for the one above, which pauses. Listeners calm for
    FD_CALM_SECONDS go back to uvloop's."""

    # Weak both ways: a loop closed with a listener still open (which its owner forgot
    # to close) is not kept alive by this table.
    _watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _FdWatch] = \
        weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)
        self.listeners: weakref.WeakSet[TcpListener] = weakref.WeakSet()
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_ref()
        assert loop is not None, "used only from a callback of its running loop"
        return loop

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _FdWatch:
        watch = cls._watches.get(loop)
        if watch is None:
            watch = cls._watches[loop] = cls(loop)
        return watch

    def add(self, listener: TcpListener) -> None:
        self.listeners.add(listener)
        if self.timer is None:
            self.timer = self.loop.call_later(FD_WATCH_INTERVAL_SECONDS, self.look)

    def discard(self, listener: TcpListener) -> None:
        self.listeners.discard(listener)
        if not self.listeners:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self._watches.pop(self.loop, None)

    def look(self) -> None:
        self.timer = None
        if not self.listeners or self.loop.is_closed():
            self._watches.pop(self.loop, None)
            return
        shortage = _descriptor_shortage(next(iter(self.listeners))._fd)
        now = self.loop.time()
        for listener in list(self.listeners):
            if shortage is not None:
                listener._exhausted(shortage)
            elif listener._calm(now):
                task = self.loop.create_task(listener._back_to_native())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        self.timer = self.loop.call_later(FD_WATCH_INTERVAL_SECONDS, self.look)


def _descriptor_shortage(fd: int) -> OSError | None:
    """The error of making one more descriptor (EMFILE: this process has none left,
    ENFILE: the system has none), or None when one could be made."""
    try:
        probe = os.dup(fd)
    except OSError as exc:
        # Anything else (a descriptor closed under us) is not a shortage: the listener
        # that owns it is closing, and the next look uses another.
        return exc if exc.errno in _OUT_OF_RESOURCES else None
    os.close(probe)
    return None
