"""The runtime of one handler file: its loaded versions, and the port it serves.

A `PortEntry` is one claimed (protocol, port) and the file serving it. Each import of
the file is a `HandlerVersion`; a reload adds a version, which takes the new
connections and datagrams while older versions finish their own and then run their
`close(ctx)`. Nothing here scans folders or opens ports (see `watch` and `ports`).
"""
from __future__ import annotations

import asyncio
import inspect
import re
import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from packetron.errors import HandlerLoadError
from packetron.log import net_logger
from packetron.net.connection import Connection
from packetron.net.handlerctx import HandlerContext
from packetron.net.handlerfiles import EntryName, Fingerprint, import_entry
from packetron.net.manifest import HandlerPolicy
from packetron.net.screening import Screen
from packetron.net.shared import SharedStore

if TYPE_CHECKING:
    from packetron.net.tcpserver import TcpServer

__all__ = ["HandlerVersion", "PortEntry", "DatagramProtocol", "load_version", "broker_log"]

# Every part of the broker logs here (the CLI looks for this name).
broker_log = net_logger.getChild("broker")

_module_ids = iter(range(1, 1 << 62))


class HandlerVersion:
    """One import of an entry file."""

    __slots__ = ("generation", "module", "module_name", "ctx", "fn", "close_fn", "active",
                 "tasks", "idle", "closed")

    def __init__(self, generation: int, module: ModuleType, module_name: str,
                 ctx: HandlerContext, fn: Any) -> None:
        self.generation = generation
        self.module = module
        self.module_name = module_name
        self.ctx = ctx
        self.fn = fn
        self.close_fn = getattr(module, "close", None)
        self.active = 0  # live TCP connections served by this version
        self.tasks: set[asyncio.Task[Any]] = set()
        self.idle = asyncio.Event()
        self.closed = False

    def check_idle(self) -> None:
        """Set `idle` once no connection and no datagram task is left."""
        if not self.active and not self.tasks:
            self.idle.set()


class PortEntry:
    """One claimed (protocol, port) and the file serving it."""

    __slots__ = ("current", "entry", "filename", "fingerprint", "generation", "owners", "path",
                 "policy", "retired", "screen", "server", "transport", "transport_closed",
                 "versions")

    def __init__(self, filename: str, path: str, entry: EntryName, policy: HandlerPolicy) -> None:
        self.filename = filename
        self.path = path
        self.entry = entry
        self.policy = policy
        self.fingerprint: Fingerprint | None = None
        self.generation = 0
        self.current: HandlerVersion | None = None
        self.versions: list[HandlerVersion] = []  # every version not yet closed
        self.server: TcpServer | None = None
        # Listeners replaced by a policy change, still serving the connections they took.
        self.retired: list[TcpServer] = []
        self.owners: dict[Connection, HandlerVersion] = {}  # live connection → its version
        self.transport: asyncio.DatagramTransport | None = None
        # Resolved once the UDP socket is really closed (a transport closes it a loop
        # turn after close()), so that the port can be bound again.
        self.transport_closed: asyncio.Future[None] | None = None
        self.screen: Screen | None = None

    # The TcpServer calls these two per connection: methods of the entry itself, so no
    # lambda stands in between.

    def dispatch(self, conn: Connection) -> Any:
        """Hand a new connection to the current version (TcpServer's on_connection)."""
        version = self.current
        if version is None:
            conn.close()
            return None
        # Which version serves the connection, for as long as it lives: a reload sends
        # new connections elsewhere, and the old version closes once its count is 0.
        version.active += 1
        self.owners[conn] = version
        return version.fn(conn, version.ctx)

    def connection_closed(self, conn: Connection) -> None:
        """A connection ended: its version's count goes down (TcpServer's close hook)."""
        version = self.owners.pop(conn, None)
        if version is not None:
            version.active -= 1
            if version is not self.current:
                version.check_idle()

    async def close_transport(self) -> None:
        """Close the UDP socket and return once it is closed (the port is free then)."""
        transport, self.transport = self.transport, None
        if transport is None:
            return
        transport.close()
        if self.transport_closed is not None:
            await asyncio.shield(self.transport_closed)

    def servers(self) -> list[TcpServer]:
        """The listener and every retired one still holding connections (TCP)."""
        current = [self.server] if self.server is not None else []
        return current + self.retired

    def handler_failed(self, exc: BaseException, conn: Connection | None) -> None:
        """A TCP handler raised: only its connection is closed (TcpServer's on_error)."""
        log = self.current.ctx.log if self.current is not None else broker_log
        log.error("%s: handler failed on %r; that connection is closed", self.filename, conn,
                  exc_info=exc)

    def datagram(self, data: bytes, addr: tuple[Any, ...], now: float) -> None:
        """Screen one datagram and hand it to the current version's message()."""
        screen = self.screen
        if screen is not None and not screen.check_datagram(addr[0], now).accepted:
            return
        version = self.current
        if version is None:
            return
        try:
            result = version.fn(data, addr, version.ctx)
        except Exception:
            version.ctx.log.exception("%s: message() failed", self.filename)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            version.tasks.add(task)

            def done(t: asyncio.Task[Any]) -> None:
                version.tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    version.ctx.log.error("%s: message() failed", self.filename,
                                          exc_info=t.exception())
                if version is not self.current:
                    version.check_idle()

            task.add_done_callback(done)

    async def close_when_idle(self, version: HandlerVersion, grace: float) -> None:
        """Run a retired version's close(ctx) once its connections ended, or after `grace`."""
        try:
            await asyncio.wait_for(version.idle.wait(), grace)
        except TimeoutError:
            broker_log.info("%s: generation %d still has %d connection(s) after %ss; "
                            "running close", self.filename, version.generation, version.active,
                            grace)
        await self.run_close(version)

    async def run_close(self, version: HandlerVersion) -> None:
        """Run the version's close(ctx) once; its errors are logged."""
        if version.closed:
            return
        version.closed = True
        if version in self.versions:
            self.versions.remove(version)
        if version.close_fn is None:
            return
        try:
            result = version.close_fn(version.ctx)
            if inspect.isawaitable(result):
                await result
        except Exception:
            version.ctx.log.exception("close(ctx) of %s failed", self.filename)


class DatagramProtocol(asyncio.DatagramProtocol):
    """Receives one UDP port's datagrams for its entry."""

    __slots__ = ("_entry", "_closed")

    def __init__(self, entry: PortEntry) -> None:
        self._entry = entry
        self._closed = entry.transport_closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._entry.datagram(data, addr, time.monotonic())

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" for an earlier reply, typically; nothing to do.
        broker_log.debug("%s: %r", self._entry.filename, exc)


async def load_version(entry: PortEntry, shared: SharedStore) -> HandlerVersion:
    """Import a new version of entry's file and run its open(ctx).

    The version is added to `entry.versions`; it does not serve until it is made
    `entry.current`.

    Raises:
        HandlerLoadError: import failed, the required function is missing, or
            open(ctx) raised (the cause is chained).
    """
    e = entry.entry
    module_name = f"_packetron_handler_{re.sub(r'[^0-9A-Za-z_]', '_', e.name)}_" \
                  f"{e.protocol}{e.port}_{next(_module_ids)}"
    module, fn = import_entry(entry.path, module_name, e.protocol)
    ctx = HandlerContext(e, entry.path, shared, entry.transport)
    version = HandlerVersion(entry.generation + 1, module, module_name, ctx, fn)
    open_fn = getattr(module, "open", None)
    if callable(open_fn):
        try:
            result = open_fn(ctx)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise HandlerLoadError(f"open(ctx) failed: {type(exc).__name__}: {exc}") from exc
    entry.generation = version.generation
    entry.versions.append(version)
    return version
