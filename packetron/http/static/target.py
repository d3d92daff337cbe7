"""Served files on disk: containment checks and opening a file that must stay in its tree.

A request path never becomes a file-system path (every served file is its own exact
route, see routes.py); what is guarded here is the tree changing under a running server.
A directory's file is resolved (symlinks followed) when it is opened under a new inode
and must lie inside the served directory, else it is not served.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from typing import TYPE_CHECKING, Any

from packetron.errors import ServiceUnavailable
from packetron.log import server_logger

if TYPE_CHECKING:
    from packetron.http.static.cache import _CachedFile

__all__ = ["is_within", "is_hidden"]

# O_NONBLOCK: opening a FIFO someone dropped into the tree must not hang the worker;
# on regular files it changes nothing.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def is_within(root: str, path: str) -> bool:
    """True when `path` is `root` itself or lies below it.

    Both must be absolute and already resolved (os.path.realpath); the comparison is on
    whole components, so "/srv/site2" is not inside "/srv/site".
    """
    root = root.rstrip("/") or "/"
    if path == root:
        return True
    return path.startswith(root if root == "/" else root + "/")


def is_hidden(relative_path: str) -> bool:
    """True when any component of a relative path starts with "." (".env", ".git/x")."""
    return any(part.startswith(".") for part in relative_path.replace("\\", "/").split("/"))


# The process (or system) ran out of descriptors or memory: the file exists, the server
# cannot open it now. 503 with Retry-After, not a 404 that caches would keep.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
_WARN_INTERVAL_SECONDS = 10.0
_last_warning = [-_WARN_INTERVAL_SECONDS]


def _refuse_if_out_of_resources(exc: OSError) -> None:
    if exc.errno not in _OUT_OF_RESOURCES:
        return
    now = time.monotonic()
    if now - _last_warning[0] >= _WARN_INTERVAL_SECONDS:
        _last_warning[0] = now  # the exchange does not log HttpErrors: say it here, rarely
        server_logger.warning("static: cannot open files (%s); answering 503", exc.strerror)
    raise ServiceUnavailable("Service Unavailable: no file descriptor left",
                             headers=[("Retry-After", "1")]) from exc


def _open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """Open a regular file for reading; None for missing, unreadable or not a file."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:  # ENOENT, EACCES, ELOOP, ENOTDIR ...: "nothing to serve"
        _refuse_if_out_of_resources(exc)
        return None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        _refuse_if_out_of_resources(exc)
        return None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


class _StaticTarget:
    """One served file: where it sits in the tree and the root it must stay inside."""

    __slots__ = ("path", "root", "verified", "redirect_to_slash", "cached", "siblings",
                 "__weakref__")

    def __init__(self, path: str, root: str | None, redirect_to_slash: bool = False,
                 siblings: tuple[tuple[str, _StaticTarget], ...] = ()) -> None:
        self.path = path
        self.root = root  # resolved directory, or None for serve_single_file
        # (st_dev, st_ino) of the file last found inside root: reopening the same inode
        # needs no new resolve, so the common request costs one open and one fstat.
        self.verified: tuple[int, int] | None = None
        self.redirect_to_slash = redirect_to_slash
        # The file's last whole answer, when small (see cache.SMALL_FILE_CACHE_BYTES).
        # Only ever set after _open_target verified that inode, and used only while
        # stat() still reports the same inode and version.
        self.cached: _CachedFile | None = None
        # Precompressed versions found next to the file when it was registered, as
        # (content coding, target): "app.css.br" → ("br", ...), "app.css.gz" → ("gzip",
        # ...). Each is checked against the root like the file itself.
        self.siblings = siblings

    def __reduce__(self) -> tuple[Any, ...]:
        return (_StaticTarget, (self.path, self.root, self.redirect_to_slash, self.siblings))


def _open_target(target: _StaticTarget) -> tuple[int, os.stat_result] | None:
    """Open the target's file; None when it is gone, not a regular file, or now
    resolves outside the target's root (logged)."""
    opened = _open_regular(target.path)
    if opened is None or target.root is None:
        return opened
    fd, info = opened
    identity = (info.st_dev, info.st_ino)
    if identity == target.verified:
        return opened
    real = os.path.realpath(target.path)
    try:
        resolved = os.stat(real)
        same = is_within(target.root, real) and (resolved.st_dev, resolved.st_ino) == identity
    except OSError:
        same = False
    if not same:
        os.close(fd)
        server_logger.warning("static: %s now resolves outside %s; not served",
                              target.path, target.root)
        return None
    target.verified = identity
    return opened
