"""The broker folder: entry-file grammar, folder scans and what changed between two.

Entry points are top-level files `<name>.tcp.<port>.port.py` / `<name>.udp.<port>.port.py`
with port 1-65535. Every other `.py` file (nested ones included) is supporting code.
A file is identified by its (mtime_ns, size, inode) fingerprint: editors that save by
renaming a new file into place change the inode even when mtime and size match.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from packetron.errors import ConfigError, HandlerLoadError

__all__ = [
    "EntryName",
    "Fingerprint",
    "fingerprint",
    "FolderScan",
    "FolderChanges",
    "parse_entry_name",
    "scan_folder",
    "diff_scans",
    "import_entry",
]

Fingerprint = tuple[int, int, int]

# The name may hold letters, digits, "_", "-" and "."; it may not start with "." (editor
# swap and lock files such as ".#echo.tcp.7000.port.py" are hidden files).
_ENTRY_RE = re.compile(
    r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]*?)\.(?P<protocol>tcp|udp)\.(?P<port>[0-9]+)\.port\.py$"
)
# Directories never scanned for supporting code.
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", ".git", ".hg", ".svn", ".venv"})


@dataclass(frozen=True, slots=True)
class EntryName:
    """What an entry file's name says."""

    name: str
    protocol: str  # "tcp" or "udp"
    port: int

    @property
    def key(self) -> tuple[str, int]:
        """(protocol, port): what two files may not both claim."""
        return (self.protocol, self.port)


def parse_entry_name(filename: str) -> EntryName | None:
    """Parse a top-level file name.

    Returns:
        The EntryName, or None when the name is not an entry point at all.

    Raises:
        ConfigError: the name has the entry shape but its port is outside 1-65535.
    """
    m = _ENTRY_RE.match(filename)
    if m is None:
        return None
    digits = m.group("port")
    port = int(digits)
    if not 1 <= port <= 65535 or (len(digits) > 1 and digits[0] == "0"):
        raise ConfigError(f"{filename}: port must be 1-65535 without leading zeros, got {digits}")
    return EntryName(m.group("name"), m.group("protocol"), port)


@dataclass(frozen=True, slots=True)
class FolderScan:
    """One look at the folder: entry files and supporting files with fingerprints."""

    entries: dict[str, Fingerprint] = field(default_factory=dict)  # file name → fp
    support: dict[str, Fingerprint] = field(default_factory=dict)  # relative path → fp


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """Entry file names added, changed and removed; whether supporting code changed."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    support_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.support_changed)


def fingerprint(st: os.stat_result) -> Fingerprint:
    """(mtime_ns, size, inode): what identifies one version of a file."""
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def scan_folder(directory: str) -> FolderScan:
    """Stat the folder's entry files (top level) and supporting .py files (any depth).

    Files that vanish during the scan are skipped. Names that look like entries but
    are invalid are left out (the Broker reports them).

    Raises:
        OSError: the directory itself cannot be read.
    """
    entries: dict[str, Fingerprint] = {}
    support: dict[str, Fingerprint] = {}
    with os.scandir(directory) as it:
        top = list(it)
    for de in top:
        if de.name.startswith("."):
            continue
        try:
            if de.is_dir():
                if de.name not in _SKIP_DIRS:
                    _scan_support(de.path, de.name, support)
                continue
            if not de.is_file() or not de.name.endswith(".py"):
                continue
            fp = fingerprint(de.stat())
        except OSError:
            continue
        if _ENTRY_RE.match(de.name):
            entries[de.name] = fp
        else:
            support[de.name] = fp
    return FolderScan(entries, support)


def _scan_support(path: str, rel: str, out: dict[str, Fingerprint]) -> None:
    try:
        with os.scandir(path) as it:
            children = list(it)
    except OSError:
        return
    for de in children:
        if de.name.startswith("."):
            continue
        child_rel = f"{rel}/{de.name}"
        try:
            if de.is_dir(follow_symlinks=False):
                if de.name not in _SKIP_DIRS:
                    _scan_support(de.path, child_rel, out)
            elif de.name.endswith(".py") and de.is_file():
                out[child_rel] = fingerprint(de.stat())
        except OSError:
            continue


def diff_scans(old: FolderScan, new: FolderScan) -> FolderChanges:
    """What changed from one scan to the next (pure)."""
    added = tuple(sorted(n for n in new.entries if n not in old.entries))
    removed = tuple(sorted(n for n in old.entries if n not in new.entries))
    changed = tuple(
        sorted(n for n, fp in new.entries.items() if n in old.entries and old.entries[n] != fp)
    )
    return FolderChanges(added, changed, removed, old.support != new.support)


def import_entry(path: str, module_name: str, protocol: str) -> tuple[ModuleType, Any]:
    """Import an entry file as a new module and find its handler function.

    The module is registered in sys.modules under `module_name` (dataclasses and pickle
    look modules up there); each load uses a new name, so versions never mix.

    Returns:
        (module, fn): fn is `handle` for "tcp", `message` for "udp".

    Raises:
        HandlerLoadError: the import raised (the cause is chained) or the function is
            missing.
    """
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        # Compiled from the source every time, never from __pycache__: a .pyc is checked
        # against whole-second mtimes and the size, so an edit of the same length within
        # one second could otherwise load the old code.
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise HandlerLoadError(f"import failed: {type(exc).__name__}: {exc}") from exc
    fn_name = "handle" if protocol == "tcp" else "message"
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        sys.modules.pop(module_name, None)
        signature = "handle(conn, ctx)" if protocol == "tcp" else "message(msg, rinfo, ctx)"
        raise HandlerLoadError(f"defines no {signature} function")
    return module, fn
