"""Small served files kept in memory: a cached answer costs one stat() instead of open,
fstat, pread and close, and no header building.

Files up to sending.SENDFILE_THRESHOLD_IN_BYTES are remembered once sent whole, up to
SMALL_FILE_CACHE_BYTES per process; the least recently cached go first. An entry is used
only while stat() reports the same inode and version (identity below).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING

from packetron.http.wire import header_line

if TYPE_CHECKING:
    from packetron.http.static.target import _StaticTarget

__all__ = ["SMALL_FILE_CACHE_BYTES"]

# Per-process budget of the cache (bench/static.py, 4 KiB file: 27k -> 72k req/s, 1.05x
# nginx).
SMALL_FILE_CACHE_BYTES = 32 * 1024 * 1024


def _file_identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    # Inode and version: a replaced, rewritten or touched file never matches.
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class _CachedFile:
    """A small file's 200 answer: its headers, also as prebuilt lines, and its bytes."""

    __slots__ = ("identity", "headers", "head_lines", "body")

    def __init__(self, info: os.stat_result, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        self.identity = _file_identity(info)
        # As pairs for answers after-hooks must see (they read and change headers), as
        # one prebuilt block for all others.
        self.headers = tuple(headers)
        self.head_lines = b"".join(header_line(name, value) for name, value in headers)
        self.body = body


class _SmallFileCache:
    """Which targets hold a cached file, oldest first, within a byte budget."""

    __slots__ = ("limit", "total", "_sizes")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._sizes: OrderedDict[_StaticTarget, int] = OrderedDict()

    def store(self, target: "_StaticTarget", entry: _CachedFile) -> None:
        size = len(entry.body)
        self.forget(target)
        if size > self.limit:
            return
        while self.total + size > self.limit:
            oldest, oldest_size = self._sizes.popitem(last=False)
            oldest.cached = None
            self.total -= oldest_size
        target.cached = entry
        self._sizes[target] = size
        self.total += size

    def forget(self, target: "_StaticTarget") -> None:
        size = self._sizes.pop(target, None)
        if size is not None:
            self.total -= size
        target.cached = None


# One per process: its budget is the process's memory.
_small_files = _SmallFileCache(SMALL_FILE_CACHE_BYTES)
