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

This module holds the lifecycle and what a scan changes; `runtime` the per-file
versions, `ports` the listeners, `watch` the manifest and supporting code.
"""
from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine, Mapping
from typing import Any

from packetron.errors import ConfigError, HandlerLoadError, NoPortOpened
from packetron.net.broker.ports import STOP_TIMEOUT_SECONDS, apply_policy, open_listener
from packetron.net.broker.runtime import HandlerVersion, PortEntry, broker_log, load_version
from packetron.net.broker.watch import ManifestWatch, purge_support_modules
from packetron.net.handlerctx import HandlerInfo
from packetron.net.handlerfiles import (
    EntryName,
    FolderScan,
    Fingerprint,
    diff_scans,
    parse_entry_name,
    scan_folder,
)
from packetron.net.manifest import Manifest, manifest_from_mapping
from packetron.net.shared import SharedStore, check_store_url, open_store

__all__ = [
    "Broker",
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
        self._manifest_watch: ManifestWatch | None = None
        if manifest is None:
            self.manifest = Manifest()
        elif isinstance(manifest, Manifest):
            self.manifest = manifest
        elif isinstance(manifest, Mapping):
            self.manifest = manifest_from_mapping(manifest)
        else:
            self._manifest_watch = ManifestWatch(os.fspath(manifest))
            self.manifest = self._manifest_watch.manifest
        self._shared_arg = shared
        if isinstance(shared, str):
            check_store_url(shared)  # refuse a bad URL now, not at start()
        self.poll_interval = poll_interval
        self.reload_grace = reload_grace
        self.shared: SharedStore | None = None
        self._owns_shared = False
        self._entries: dict[str, PortEntry] = {}  # file name → entry
        self._draining: set[PortEntry] = set()  # removed entries whose connections remain
        self._claims: dict[tuple[str, int], str] = {}  # (protocol, port) → file name
        self._failed: dict[str, tuple[Fingerprint, bool]] = {}  # name → (fp, conflict)
        self._listen_failed: set[str] = set()  # failed to open its port (TLS, bind)
        # start(require_ports=True) collects the ports that failed to open here instead of
        # logging each: if none opened, one line says so.
        self._open_failures: list[tuple[str, EntryName, BaseException]] | None = None
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

    async def start(self, *, require_ports: bool = False) -> None:
        """Load every entry, open every port, start watching; returns once they accept.

        A port that cannot be opened (in use, TLS files missing) is logged, and its file
        is tried again when it or the manifest changes; the other ports are served.

        Args:
            require_ports: Fail when ports were tried and not one of them opened (a
                second broker on the same folder, say): log one line, stop, and raise
                NoPortOpened. A folder with no entry file, or whose files all fail to
                import, starts all the same (the folder is watched for fixes).

        Raises:
            ConfigError: the directory does not exist.
            RuntimeError: already started.
            NoPortOpened: (require_ports) no declared port could be opened; its
                `failures` say why, port by port. The broker is stopped.
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
        self._open_failures = [] if require_ports else None
        try:
            await self.rescan()
        finally:
            failures, self._open_failures = self._open_failures or [], None
        if failures and not self._entries:
            await self._refuse_start(failures)
        for filename, name, exc in failures:
            broker_log.error("%s: %s", filename, _cannot_open(name, exc))
        self._warn_unused_tables()
        if self.poll_interval is not None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _refuse_start(self, failures: list[tuple[str, EntryName, BaseException]]) -> None:
        ports = "; ".join(f"{name.protocol}/{name.port} ({filename}): {exc}"
                          for filename, name, exc in failures)
        message = f"no port could be opened in {self.directory}: {ports}"
        broker_log.error("%s", message)
        await self.stop()
        raise NoPortOpened(message, [(name.protocol, name.port, exc)
                                     for _, name, exc in failures])

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
                await e.close_transport()
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
                    await e.run_close(v)
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
        purge_support_modules(self.directory, self._module_names, ())
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
                broker_log.exception("scanning %s failed", self.directory)

    # ------------------------------------------------------------ scanning

    async def rescan(self) -> None:
        """Scan the folder and the manifest file now and apply what changed.

        The poller calls this.
        """
        async with self._lock:
            if not self._running:
                return
            watch = self._manifest_watch
            manifest = watch.changed() if watch is not None else None
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
                        await apply_policy(entry, policy, self.host, manifest.defaults,
                                           self._spawn)
                self._warn_unused_tables()

    def _warn_unused_tables(self) -> None:
        for name in self.manifest.names():
            if not any(e.entry.name == name for e in self._entries.values()):
                broker_log.warning("manifest has a table for %r but no such handler file", name)

    async def _scan_folder(self) -> None:
        try:
            scan = scan_folder(self.directory)
        except OSError as exc:
            broker_log.error("cannot read %s: %s; serving what is loaded", self.directory, exc)
            return
        changes = diff_scans(self._scan, scan)
        old_support, self._scan = self._scan.support, scan
        for filename in changes.removed:
            self._failed.pop(filename, None)
            entry = self._entries.pop(filename, None)
            if entry is not None:
                await self._remove(entry)
        if changes.support_changed:
            purge_support_modules(
                self.directory, self._module_names,
                [rel for rel, fp in scan.support.items() if old_support.get(rel) != fp],
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
        entry = PortEntry(filename, path, name, self.manifest.policy_for(name.name))
        # Import first: the port opens only once there is code to answer on it.
        try:
            version = await self._load(entry)
        except HandlerLoadError as exc:
            self._fail(filename, fp, str(exc), exc_info=exc.__cause__)
            return
        try:
            await open_listener(entry, self.host, self.manifest.defaults)
        except (OSError, ConfigError) as exc:
            version.ctx.signal._fire("stop")
            await entry.run_close(version)
            if self._open_failures is not None:
                self._failed[filename] = (fp, False)  # reported by start()
                self._open_failures.append((filename, name, exc))
            else:
                self._fail(filename, fp, _cannot_open(name, exc))
            self._listen_failed.add(filename)
            return
        version.ctx._transport = entry.transport
        entry.current = version
        entry.fingerprint = fp
        self._entries[filename] = entry
        self._claims[name.key] = filename
        self._failed.pop(filename, None)
        broker_log.info("%s: serving %s port %d", filename, name.protocol, name.port)

    def _fail(self, filename: str, fp: Fingerprint, message: str, *, conflict: bool = False,
              exc_info: BaseException | None = None) -> None:
        self._failed[filename] = (fp, conflict)
        broker_log.error("%s: %s", filename, message, exc_info=exc_info)

    async def _reload(self, entry: PortEntry, fp: Fingerprint) -> None:
        entry.fingerprint = fp  # a broken file is reported once, not at every scan
        try:
            version = await self._load(entry)
        except HandlerLoadError as exc:
            broker_log.error("%s: %s; the previous version keeps serving", entry.filename, exc,
                       exc_info=exc.__cause__)
            return
        old, entry.current = entry.current, version
        broker_log.info("%s: reloaded (generation %d)", entry.filename, version.generation)
        if old is not None:
            self._retire(entry, old, "reload")

    async def _remove(self, entry: PortEntry) -> None:
        self._claims.pop(entry.entry.key, None)
        # Free the port now (a renamed file may claim it in this very scan); let the
        # connections finish within the grace period, then close what is left.
        if entry.server is not None:
            await entry.server.stop_listening()
        await entry.close_transport()
        for v in entry.versions:
            v.ctx.signal._fire("removed")
        broker_log.info("%s: removed, %s port %d closed", entry.filename, entry.entry.protocol,
                  entry.entry.port)
        self._draining.add(entry)
        self._spawn(self._drain_removed(entry))

    async def _drain_removed(self, entry: PortEntry) -> None:
        servers = entry.servers()
        await asyncio.gather(*(s.wait_idle(self.reload_grace) for s in servers))
        await asyncio.gather(*(s.close(STOP_TIMEOUT_SECONDS) for s in servers))
        for v in list(entry.versions):
            await entry.run_close(v)
        self._draining.discard(entry)

    def _retire(self, entry: PortEntry, version: HandlerVersion, reason: str) -> None:
        version.ctx.signal._fire(reason)
        version.check_idle()
        self._spawn(entry.close_when_idle(version, self.reload_grace))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _load(self, entry: PortEntry) -> HandlerVersion:
        """Import a new version of entry's file (see runtime.load_version).

        Raises:
            HandlerLoadError: import or open(ctx) failed.
        """
        assert self.shared is not None
        version = await load_version(entry, self.shared)
        self._module_names.add(version.module_name)
        return version


def _cannot_open(name: EntryName, exc: BaseException) -> str:
    return f"cannot open {name.protocol} port {name.port}: {exc}"
