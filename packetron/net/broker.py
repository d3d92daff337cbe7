"""Broker: a folder of handler files, each serving one TCP or UDP port.

    handlers/
      echo.tcp.7000.port.py     def handle(conn, ctx): ...
      stats.udp.7001.port.py    def message(msg, rinfo, ctx): ctx.reply(b"ok", rinfo)
      lib/parsing.py            supporting code: `import lib.parsing` from a handler

Each entry file is imported once per version. The folder is polled (mtime, size and
inode of every .py file): a changed entry is loaded anew and takes the new connections
while the old version finishes its own; a new entry opens its port; a removed one
closes it; a file that fails to import is logged and the running version stays. When
supporting code changes, every entry is reloaded with fresh imports.

A manifest given as a file path is watched the same way (mtime, size and inode). A new
version that parses applies to new connections and datagrams of every handler whose
policy changed; live TCP connections keep the listener (and policy) they came in on
until they end, are never cut by the change, and still count against the new caps.
A TCP port changes hands without being closed: the new listener takes over the old one's
socket. A manifest that fails to parse, or is deleted, is logged once and the current
policies stay.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import fields
from types import ModuleType
from typing import Any

from packetron.errors import ConfigError, HandlerLoadError
from packetron.log import net_logger
from packetron.net.connection import Connection
from packetron.net.handlerctx import HandlerContext, HandlerInfo, Signal
from packetron.net.handlerfiles import (
    EntryName,
    FolderScan,
    Fingerprint,
    diff_scans,
    fingerprint,
    import_entry,
    parse_entry_name,
    scan_folder,
)
from packetron.net.listener import bind_udp_socket, start_udp_listener
from packetron.net.manifest import HandlerPolicy, Manifest, load_manifest, manifest_from_mapping
from packetron.net.screening import Screen
from packetron.net.shared import SharedStore, check_store_url, open_store
from packetron.net.tcpserver import TcpServer
from packetron.net.tls import server_context

__all__ = [
    "Broker",
    "HandlerContext",
    "HandlerInfo",
    "Signal",
    "POLL_INTERVAL_SECONDS",
    "RELOAD_GRACE_SECONDS",
    "STOP_TIMEOUT_SECONDS",
]

# How often the folder is scanned. A stat per file per second costs next to nothing and
# keeps "save, then connect" feeling immediate.
POLL_INTERVAL_SECONDS = 1.0
# After a reload or removal, the old version's close(ctx) waits this long at most for its
# connections to end (they are never cut by a reload; a removal closes them then).
RELOAD_GRACE_SECONDS = 30.0
# stop(): seconds connections and handler tasks get before they are aborted / cancelled.
STOP_TIMEOUT_SECONDS = 5.0

_log = net_logger.getChild("broker")
_module_ids = iter(range(1, 1 << 62))


class _Version:
    """One import of an entry file."""

    __slots__ = ("generation", "module", "ctx", "fn", "close_fn", "active", "tasks", "idle",
                 "closed")

    def __init__(self, generation: int, module: ModuleType, ctx: HandlerContext, fn: Any) -> None:
        self.generation = generation
        self.module = module
        self.ctx = ctx
        self.fn = fn
        self.close_fn = getattr(module, "close", None)
        self.active = 0  # live TCP connections served by this version
        self.tasks: set[asyncio.Task[Any]] = set()
        self.idle = asyncio.Event()
        self.closed = False

    def check_idle(self) -> None:
        if not self.active and not self.tasks:
            self.idle.set()


class _Entry:
    """One claimed (protocol, port) and the file serving it."""

    __slots__ = ("current", "entry", "filename", "fingerprint", "generation", "owners", "path",
                 "policy", "retired", "screen", "server", "transport", "versions")

    def __init__(self, filename: str, path: str, entry: EntryName, policy: HandlerPolicy) -> None:
        self.filename = filename
        self.path = path
        self.entry = entry
        self.policy = policy
        self.fingerprint: Fingerprint | None = None
        self.generation = 0
        self.current: _Version | None = None
        self.versions: list[_Version] = []  # every version not yet closed
        self.server: TcpServer | None = None
        # Listeners replaced by a policy change, still serving the connections they took.
        self.retired: list[TcpServer] = []
        self.owners: dict[Connection, _Version] = {}  # live connection → its version
        self.transport: asyncio.DatagramTransport | None = None
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

    def servers(self) -> list[TcpServer]:
        """The listener and every retired one still holding connections (TCP)."""
        current = [self.server] if self.server is not None else []
        return current + self.retired


class Broker:
    """Serve every entry file of `directory` on its port, hot-reloading on change.

    Args:
        directory: the folder of handlers.
        manifest: a TOML file path, a Manifest, or a dict of handler tables. A file is
            watched like the folder: a changed version that parses applies to new
            connections and datagrams (open connections keep their policy); one that
            does not parse, or a deleted file, is logged and the current one stays.
        host: address every port binds to.
        shared: the store behind ctx.shared: a store object, a URL ("redis://...") or
            None for an in-memory one.
        poll_interval: seconds between folder scans (None: no polling; call rescan()).
        reload_grace: seconds an old version's close(ctx) waits for its connections.

    Raises:
        ConfigError: an invalid manifest or shared-store URL.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        manifest: str | os.PathLike[str] | Manifest | Mapping[str, Any] | None = None,
        host: str = "0.0.0.0",
        *,
        shared: SharedStore | str | None = None,
        poll_interval: float | None = POLL_INTERVAL_SECONDS,
        reload_grace: float = RELOAD_GRACE_SECONDS,
    ) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.host = host
        self._manifest_path: str | None = None
        self._manifest_fp: Fingerprint | None = None
        if manifest is None:
            self.manifest = Manifest()
        elif isinstance(manifest, Manifest):
            self.manifest = manifest
        elif isinstance(manifest, Mapping):
            self.manifest = manifest_from_mapping(manifest)
        else:
            self._manifest_path = os.fspath(manifest)
            # Stat before reading: an edit in between shows up as a change at the next scan.
            try:
                self._manifest_fp = fingerprint(os.stat(self._manifest_path))
            except OSError:
                pass  # load_manifest() reports it
            self.manifest = load_manifest(self._manifest_path)
        self._shared_arg = shared
        if isinstance(shared, str):
            check_store_url(shared)  # refuse a bad URL now, not at start()
        self.poll_interval = poll_interval
        self.reload_grace = reload_grace
        self.shared: SharedStore | None = None
        self._owns_shared = False
        self._entries: dict[str, _Entry] = {}  # file name → entry
        self._draining: set[_Entry] = set()  # removed entries whose connections remain
        self._claims: dict[tuple[str, int], str] = {}  # (protocol, port) → file name
        self._failed: dict[str, tuple[Fingerprint, bool]] = {}  # name → (fp, conflict)
        self._listen_failed: set[str] = set()  # failed to open its port (TLS, bind)
        self._scan = FolderScan()
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._added_path = False
        self._module_names: set[str] = set()
        self._running = False

    # ------------------------------------------------------------ public state

    @property
    def handlers(self) -> list[HandlerInfo]:
        """The handlers being served, by (protocol, port)."""
        out = []
        for e in sorted(self._entries.values(), key=lambda e: e.entry.key):
            conns = sum(v.active for v in e.versions)
            out.append(HandlerInfo(e.entry.name, e.entry.protocol, e.entry.port, e.path,
                                   e.generation, conns))
        return out

    @property
    def ports(self) -> dict[tuple[str, int], str]:
        """{(protocol, port): handler name} for every port open now."""
        return {e.entry.key: e.entry.name for e in self._entries.values()}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every entry, open every port, start watching; returns once they accept.

        Raises:
            ConfigError: the directory does not exist.
            RuntimeError: already started.
        """
        if self._running:
            raise RuntimeError("Broker already started")
        if not os.path.isdir(self.directory):
            raise ConfigError(f"broker directory not found: {self.directory!r}")
        self._running = True
        if self._shared_arg is None or isinstance(self._shared_arg, str):
            self.shared = open_store(self._shared_arg)
            self._owns_shared = True
        else:
            self.shared = self._shared_arg
        if self.directory not in sys.path:
            # Supporting code in the folder is importable from handlers.
            sys.path.insert(0, self.directory)
            self._added_path = True
        await self.rescan()
        self._warn_unused_tables()
        if self.poll_interval is not None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop watching, close every port and connection, run every close(ctx).

        Connections get `timeout` seconds to flush, handler tasks to finish.
        """
        if not self._running:
            return
        self._running = False
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        async with self._lock:
            entries = list(self._entries.values()) + list(self._draining)
            self._entries.clear()
            self._draining.clear()
            self._claims.clear()
            for e in entries:
                for v in e.versions:
                    v.ctx.signal._fire("stop")
                if e.server is not None:
                    await e.server.stop_listening()
                if e.transport is not None:
                    e.transport.close()
            await asyncio.gather(*(s.close(timeout) for e in entries for s in e.servers()))
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            for e in entries:
                for v in list(e.versions):
                    if v.tasks:
                        await asyncio.wait(list(v.tasks), timeout=timeout)
                        for t in v.tasks:
                            t.cancel()
                    await self._run_close(e, v)
        if self._owns_shared and self.shared is not None:
            await self.shared.close()
        self.shared = None
        if self._added_path and self.directory in sys.path:
            sys.path.remove(self.directory)
        self._added_path = False
        for name in self._module_names:
            sys.modules.pop(name, None)
        self._module_names.clear()
        # Another broker (or a restart) must not get this folder's supporting modules.
        self._purge_support_modules([])
        self._scan = FolderScan()
        self._failed.clear()
        self._listen_failed.clear()

    async def serve_forever(self) -> None:
        """start() if needed, then run until cancelled; stop() on the way out."""
        if not self._running:
            await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _poll(self) -> None:
        assert self.poll_interval is not None
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.rescan()
            except Exception:
                _log.exception("scanning %s failed", self.directory)

    # ------------------------------------------------------------ scanning

    async def rescan(self) -> None:
        """Scan the folder and the manifest file now and apply what changed.

        The poller calls this.
        """
        async with self._lock:
            if not self._running:
                return
            manifest = self._read_changed_manifest()
            if manifest is not None:
                # Entries added by this scan are opened with the new policies already,
                # and those whose port failed to open (a TLS file, say) are tried again.
                self.manifest = manifest
                for filename in self._listen_failed:
                    self._failed.pop(filename, None)
                self._listen_failed.clear()
            await self._scan_folder()
            if manifest is not None:
                for entry in list(self._entries.values()):
                    policy = manifest.policy_for(entry.entry.name)
                    if policy != entry.policy:
                        await self._apply_policy(entry, policy)
                self._warn_unused_tables()

    def _read_changed_manifest(self) -> Manifest | None:
        """The manifest file's new version, or None when unchanged or unusable."""
        path = self._manifest_path
        if path is None:
            return None
        try:
            fp: Fingerprint | None = fingerprint(os.stat(path))
        except FileNotFoundError:
            fp = None
        except OSError as exc:
            _log.error("cannot stat manifest %s: %s; the current policies stay", path, exc)
            return None
        if fp == self._manifest_fp:
            return None
        self._manifest_fp = fp  # a bad version is reported once, not at every scan
        if fp is None:
            _log.error("manifest %s was deleted; the current policies stay", path)
            return None
        try:
            manifest = load_manifest(path)
        except ConfigError as exc:
            # load_manifest's messages name the file already.
            _log.error("manifest not applied, the current policies stay: %s", exc)
            return None
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            _log.error("manifest %s not applied, the current policies stay: %s", path, exc)
            return None
        _log.info("manifest %s reloaded", path)
        return manifest

    def _warn_unused_tables(self) -> None:
        for name in self.manifest.names():
            if not any(e.entry.name == name for e in self._entries.values()):
                _log.warning("manifest has a table for %r but no such handler file", name)

    async def _scan_folder(self) -> None:
        try:
            scan = scan_folder(self.directory)
        except OSError as exc:
            _log.error("cannot read %s: %s; serving what is loaded", self.directory, exc)
            return
        changes = diff_scans(self._scan, scan)
        old_support, self._scan = self._scan.support, scan
        for filename in changes.removed:
            self._failed.pop(filename, None)
            entry = self._entries.pop(filename, None)
            if entry is not None:
                await self._remove(entry)
        if changes.support_changed:
            self._purge_support_modules(
                [rel for rel, fp in scan.support.items() if old_support.get(rel) != fp]
            )
        # The older file claims first, so when two claim one port the later is refused.
        for filename in sorted(scan.entries, key=lambda n: (scan.entries[n][0], n)):
            fp = scan.entries[filename]
            entry = self._entries.get(filename)
            if entry is not None:
                if entry.fingerprint != fp or changes.support_changed:
                    await self._reload(entry, fp)
                continue
            failed = self._failed.get(filename)
            if failed is not None:
                old_fp, conflict = failed
                retry = old_fp != fp or changes.support_changed
                if conflict and not retry:
                    name = parse_entry_name(filename)
                    retry = name is not None and name.key not in self._claims
                if not retry:
                    continue
            await self._add(filename, fp)

    def _purge_support_modules(self, changed: list[str]) -> None:
        """Forget imported supporting code so the next imports read the new files."""
        prefix = self.directory + os.sep
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if path and os.path.abspath(path).startswith(prefix) and name not in self._module_names:
                del sys.modules[name]
        # A .pyc is validated by whole-second mtime and size: drop those of changed files.
        for rel in changed:
            try:
                os.remove(importlib.util.cache_from_source(os.path.join(self.directory, rel)))
            except (OSError, ValueError, NotImplementedError):
                pass
        importlib.invalidate_caches()

    # ------------------------------------------------------------ entries

    async def _add(self, filename: str, fp: Fingerprint) -> None:
        path = os.path.join(self.directory, filename)
        try:
            name = parse_entry_name(filename)
        except ConfigError as exc:
            self._fail(filename, fp, f"ignored: {exc}")
            return
        assert name is not None
        owner = self._claims.get(name.key)
        if owner is not None:
            self._fail(filename, fp, f"refused: {name.protocol} port {name.port} is already "
                       f"served by {owner}", conflict=True)
            return
        entry = _Entry(filename, path, name, self.manifest.policy_for(name.name))
        # Import first: the port opens only once there is code to answer on it.
        try:
            version = await self._load(entry)
        except HandlerLoadError as exc:
            self._fail(filename, fp, str(exc), exc_info=exc.__cause__)
            return
        try:
            await self._open_listener(entry)
        except (OSError, ConfigError) as exc:
            version.ctx.signal._fire("stop")
            await self._run_close(entry, version)
            self._fail(filename, fp, f"cannot open {name.protocol} port {name.port}: {exc}")
            self._listen_failed.add(filename)
            return
        version.ctx._transport = entry.transport
        entry.current = version
        entry.fingerprint = fp
        self._entries[filename] = entry
        self._claims[name.key] = filename
        self._failed.pop(filename, None)
        _log.info("%s: serving %s port %d", filename, name.protocol, name.port)

    def _fail(self, filename: str, fp: Fingerprint, message: str, *, conflict: bool = False,
              exc_info: BaseException | None = None) -> None:
        self._failed[filename] = (fp, conflict)
        _log.error("%s: %s", filename, message, exc_info=exc_info)

    async def _reload(self, entry: _Entry, fp: Fingerprint) -> None:
        entry.fingerprint = fp  # a broken file is reported once, not at every scan
        try:
            version = await self._load(entry)
        except HandlerLoadError as exc:
            _log.error("%s: %s; the previous version keeps serving", entry.filename, exc,
                       exc_info=exc.__cause__)
            return
        old, entry.current = entry.current, version
        _log.info("%s: reloaded (generation %d)", entry.filename, version.generation)
        if old is not None:
            self._retire(entry, old, "reload")

    async def _remove(self, entry: _Entry) -> None:
        self._claims.pop(entry.entry.key, None)
        # Free the port now (a renamed file may claim it in this very scan); let the
        # connections finish within the grace period, then close what is left.
        if entry.server is not None:
            await entry.server.stop_listening()
        if entry.transport is not None:
            entry.transport.close()
        for v in entry.versions:
            v.ctx.signal._fire("removed")
        _log.info("%s: removed, %s port %d closed", entry.filename, entry.entry.protocol,
                  entry.entry.port)
        self._draining.add(entry)
        self._spawn(self._drain_removed(entry))

    async def _drain_removed(self, entry: _Entry) -> None:
        servers = entry.servers()
        await asyncio.gather(*(s.wait_idle(self.reload_grace) for s in servers))
        await asyncio.gather(*(s.close(STOP_TIMEOUT_SECONDS) for s in servers))
        for v in list(entry.versions):
            await self._run_close(entry, v)
        self._draining.discard(entry)

    def _retire(self, entry: _Entry, version: _Version, reason: str) -> None:
        version.ctx.signal._fire(reason)
        version.check_idle()
        self._spawn(self._close_when_idle(entry, version))

    async def _close_when_idle(self, entry: _Entry, version: _Version) -> None:
        try:
            await asyncio.wait_for(version.idle.wait(), self.reload_grace)
        except TimeoutError:
            _log.info("%s: generation %d still has %d connection(s) after %ss; running close",
                      entry.filename, version.generation, version.active, self.reload_grace)
        await self._run_close(entry, version)

    async def _run_close(self, entry: _Entry, version: _Version) -> None:
        if version.closed:
            return
        version.closed = True
        if version in entry.versions:
            entry.versions.remove(version)
        if version.close_fn is None:
            return
        try:
            result = version.close_fn(version.ctx)
            if inspect.isawaitable(result):
                await result
        except Exception:
            version.ctx.log.exception("close(ctx) of %s failed", entry.filename)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ loading

    async def _load(self, entry: _Entry) -> _Version:
        """Import a new version of entry's file and run its open(ctx).

        Raises:
            HandlerLoadError: import failed, the required function is missing, or
                open(ctx) raised (the cause is chained).
        """
        e = entry.entry
        module_name = f"_packetron_handler_{re.sub(r'[^0-9A-Za-z_]', '_', e.name)}_" \
                      f"{e.protocol}{e.port}_{next(_module_ids)}"
        module, fn = import_entry(entry.path, module_name, e.protocol)
        assert self.shared is not None
        ctx = HandlerContext(e, entry.path, self.shared, entry.transport)
        version = _Version(entry.generation + 1, module, ctx, fn)
        open_fn = getattr(module, "open", None)
        if callable(open_fn):
            try:
                result = open_fn(ctx)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                sys.modules.pop(module_name, None)
                raise HandlerLoadError(f"open(ctx) failed: {type(exc).__name__}: {exc}") from exc
        self._module_names.add(module_name)
        entry.generation = version.generation
        entry.versions.append(version)
        return version

    # ------------------------------------------------------------ listeners

    async def _open_listener(self, entry: _Entry) -> None:
        e = entry.entry
        if e.protocol == "tcp":
            server = self._tcp_server(entry, entry.policy)
            await server.listen()
            entry.server = server
            return
        entry.screen = self._udp_screen(entry, entry.policy)
        sock = bind_udp_socket(self.host, e.port)
        try:
            transport, _ = await start_udp_listener(lambda: _DatagramProtocol(self, entry), sock)
        except BaseException:
            sock.close()
            raise
        entry.transport = transport  # type: ignore[assignment]

    def _tcp_server(self, entry: _Entry, p: HandlerPolicy) -> TcpServer:
        """A TcpServer for entry's port under policy p, not yet listening.

        Raises:
            ConfigError: the TLS files cannot be loaded.
        """
        server = TcpServer(
            entry.entry.port,
            self.host,
            ssl=server_context(p.tls_cert, p.tls_key) if p.tls_cert else None,
            allow=p.allow,
            deny=p.deny,
            max_connections=p.max_connections,
            max_connections_per_ip=p.max_connections_per_ip,
            rate=p.rate,
            idle_timeout=p.idle_timeout,
        )
        server.on_connection(entry.dispatch)
        server._on_closed = entry.connection_closed
        server.on_error(lambda exc, conn: self._handler_failed(entry, exc, conn))
        return server

    def _udp_screen(self, entry: _Entry, p: HandlerPolicy) -> Screen | None:
        """The datagram screen for policy p (None: nothing to check)."""
        d = self.manifest.defaults  # values inherited from "*" are not this handler's doing
        if (p.tls_cert, p.max_connections, p.max_connections_per_ip, p.idle_timeout) != (
            d.tls_cert, d.max_connections, d.max_connections_per_ip, d.idle_timeout
        ):
            _log.warning("%s: tls, max_connections* and idle_timeout do not apply to UDP; "
                         "ignored", entry.filename)
        screen = Screen(allow=p.allow, deny=p.deny, rate=p.rate)
        return None if screen.is_noop else screen

    async def _apply_policy(self, entry: _Entry, policy: HandlerPolicy) -> None:
        """Give entry's new connections (or datagrams) a new policy; live ones keep theirs."""
        if entry.entry.protocol == "udp":
            entry.screen = self._udp_screen(entry, policy)
        else:
            old = entry.server
            assert old is not None
            try:
                server = self._tcp_server(entry, policy)
                # The new listener takes over the old one's socket: the port is never closed.
                await server.take_over(old)
            except (ConfigError, OSError, RuntimeError) as exc:
                _log.error("%s: new manifest policy not applied, the previous one stays: %s",
                           entry.filename, exc)
                return
            entry.server = server
            entry.retired.append(old)
            self._spawn(self._close_retired(entry, old))
        changed = [f.name for f in fields(HandlerPolicy)
                   if getattr(policy, f.name) != getattr(entry.policy, f.name)]
        entry.policy = policy
        _log.info("%s: manifest policy changed (%s); applies to new %s", entry.filename,
                  ", ".join(changed), "connections" if entry.entry.protocol == "tcp"
                  else "datagrams")

    async def _close_retired(self, entry: _Entry, server: TcpServer) -> None:
        # No grace period: a policy change never cuts a connection. A TLS handshake under
        # way when the listener was replaced may still add one, hence the loop.
        while server.connections:
            await server.wait_idle()
        # Listed until closed, so that stop() closes it too if it comes first.
        await server.close(STOP_TIMEOUT_SECONDS)
        if server in entry.retired:
            entry.retired.remove(server)

    def _handler_failed(self, entry: _Entry, exc: BaseException, conn: Connection | None) -> None:
        log = entry.current.ctx.log if entry.current is not None else _log
        log.error("%s: handler failed on %r; that connection is closed", entry.filename, conn,
                  exc_info=exc)

    def _datagram(self, entry: _Entry, data: bytes, addr: tuple[Any, ...]) -> None:
        screen = entry.screen
        if screen is not None and not screen.check_datagram(addr[0], time.monotonic()).accepted:
            return
        version = entry.current
        if version is None:
            return
        try:
            result = version.fn(data, addr, version.ctx)
        except Exception:
            version.ctx.log.exception("%s: message() failed", entry.filename)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            version.tasks.add(task)

            def done(t: asyncio.Task[Any]) -> None:
                version.tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    version.ctx.log.error("%s: message() failed", entry.filename,
                                          exc_info=t.exception())
                if version is not entry.current:
                    version.check_idle()

            task.add_done_callback(done)


class _DatagramProtocol(asyncio.DatagramProtocol):
    __slots__ = ("_broker", "_entry")

    def __init__(self, broker: Broker, entry: _Entry) -> None:
        self._broker = broker
        self._entry = entry

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._broker._datagram(self._entry, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" for an earlier reply, typically; nothing to do.
        _log.debug("%s: %r", self._entry.filename, exc)

