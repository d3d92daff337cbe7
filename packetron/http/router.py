"""Routing: one dict lookup on the normalized path, then a slot per method.

Pure: no I/O. The protocol asks `lookup(path)` once per request and indexes the result
with the RequestMethod integer, so routing never scans a list or runs a regex. Paths with
parameters (`users/{id:int}`) live apart in a PatternTable, asked only when the exact
lookup misses and some pattern exists, so exact routes pay nothing for them.
"""
from __future__ import annotations

from typing import Any, Generic, Iterator, TypeVar

from packetron.flags import RequestMethod
from packetron.http.patterns import PatternTable, is_pattern

__all__ = ["normalize_path", "Router", "METHOD_INDEX", "METHOD_COUNT"]

T = TypeVar("T")

METHOD_COUNT = len(RequestMethod)
# Method name as httptools reports it (bytes) -> slot index; unknown methods are absent.
METHOD_INDEX: dict[bytes, int] = {m.name.encode("ascii"): int(m) for m in RequestMethod}
_METHOD_NAMES: dict[int, bytes] = {index: name for name, index in METHOD_INDEX.items()}
_GET = int(RequestMethod.GET)
_HEAD = int(RequestMethod.HEAD)


def normalize_path(path: str) -> str:
    """Route key of a path: query string and leading/trailing slashes are ignored.

    >>> normalize_path("/api/status/?x=1")
    'api/status'
    """
    query_at = path.find("?")
    if query_at >= 0:
        path = path[:query_at]
    return path.strip("/")


class Router(Generic[T]):
    """Maps normalized paths to one entry per RequestMethod."""

    __slots__ = ("_table", "_raw_table", "targets", "patterns")

    def __init__(self) -> None:
        self._table: dict[str, list[T | None]] = {}
        # The same slot lists keyed by the UTF-8 bytes of the path, so a request target
        # without percent-escapes is routed without decoding it first.
        self._raw_table: dict[bytes, list[T | None]] = {}
        # Request targets exactly as most clients send them ("/api/status", and the same
        # with one trailing slash) -> {method as httptools reports it: entry}. A target
        # found here needs no query split, no decoding and no normalizing; one not found
        # may still be routable (query, escapes, extra slashes): ask lookup() then.
        # Updated in place, never replaced, so a server may keep a reference to it.
        self.targets: dict[bytes, dict[bytes, T]] = {}
        self.patterns: PatternTable[T] = PatternTable()

    def add(self, method: int, path: str, entry: T) -> T | None:
        """Register `entry` for (method, path); returns the entry it replaced, if any.

        Raises:
            ConfigError: an invalid pattern, or one matching the same paths as another.
        """
        if is_pattern(path):
            return self.patterns.add(method, normalize_path(path), entry)
        key = normalize_path(path)
        slots = self._table.get(key)
        if slots is None:
            slots = [None] * METHOD_COUNT
            self._table[key] = slots
            self._raw_table[key.encode("utf-8")] = slots
        previous = slots[method]
        slots[method] = entry
        self._index_targets(key, slots)
        return previous

    def remove(self, method: int, path: str, entry: T | None = None) -> bool:
        """Unregister (method, path); when `entry` is given, only if it is still the one there."""
        if is_pattern(path):
            return self.patterns.remove(method, normalize_path(path), entry)
        key = normalize_path(path)
        slots = self._table.get(key)
        if slots is None or slots[method] is None:
            return False
        if entry is not None and slots[method] is not entry:
            return False
        slots[method] = None
        if all(slot is None for slot in slots):
            del self._table[key]
            del self._raw_table[key.encode("utf-8")]
        self._index_targets(key, slots)
        return True

    def _index_targets(self, key: str, slots: list[T | None]) -> None:
        methods = {_METHOD_NAMES[index]: entry for index, entry in enumerate(slots)
                   if entry is not None}
        raw = b"/" + key.encode("utf-8")
        targets = (raw,) if not key else (raw, raw + b"/")
        for target in targets:
            if methods:
                self.targets[target] = methods
            else:
                self.targets.pop(target, None)

    def lookup(self, key: str) -> list[T | None] | None:
        """Slots of an already normalized path, or None for an unknown path (404)."""
        return self._table.get(key)

    def lookup_raw(self, key: bytes) -> list[T | None] | None:
        """lookup() for a path given as bytes without percent-escapes."""
        return self._raw_table.get(key)

    def match(self, raw_path: str) -> tuple[list[T | None], dict[str, Any]] | None:
        """Slots and converted parameters of the pattern matching a path that is not yet
        percent-decoded, without its query string and outer slashes; None: no pattern."""
        return self.patterns.match(raw_path)

    def entries(self) -> Iterator[tuple[str, int, T]]:
        for key, slots in self._table.items():
            for method, entry in enumerate(slots):
                if entry is not None:
                    yield key, method, entry
        yield from self.patterns.entries()

    def __len__(self) -> int:
        return sum(1 for _ in self.entries())


def resolve(slots: list[T | None], method: int) -> T | None:
    """The entry serving `method`; HEAD falls back to GET as every mature server does."""
    entry = slots[method]
    if entry is None and method == _HEAD:
        entry = slots[_GET]
    return entry


def allowed_methods(slots: list[T | None]) -> str:
    """Value of the Allow header of a 405 (RFC 9110 §15.5.6)."""
    names = [RequestMethod(i).name for i, entry in enumerate(slots) if entry is not None]
    if slots[_GET] is not None and slots[_HEAD] is None:
        names.append("HEAD")
    return ", ".join(names)
