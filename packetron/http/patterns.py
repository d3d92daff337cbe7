"""Routes with path parameters: ``users/{id:int}``, ``files/{rest:path}``.

Pure: no I/O. Patterns live in a segment trie; a request path is matched by one
depth-first walk that tries, at every node, the literal child first, then the ``int``
child, then ``str``, then ``path``. That order *is* the precedence rule: the pattern with
a literal segment wins at the first position where two candidates differ, and among
parameters ``int`` beats ``str`` beats ``path``. A miss deeper in a literal branch
backtracks into the parameter branches (``users/me/x`` vs ``users/{id}/y``). Every edge but
``path`` consumes exactly one segment, so each trie node is visited at most once per
request: the cost is bounded by the trie, never by the number of patterns.

Converters:

- ``str`` (the default): exactly one non-empty segment. Segments are percent-decoded after
  splitting on "/", so ``%2F`` never splits a segment and a ``str`` value may contain "/".
  A value with a NUL does not match.
- ``int``: ASCII decimal digits only, no sign, at most 18 of them (so a 10,000-digit
  segment is refused by its length before ``int()`` ever sees it). Leading zeros are
  accepted: ``007`` is 7.
- ``path``: the decoded rest of the path, slashes included; only allowed as the last
  segment. It does not match when it would contain an empty, "." or ".." segment (also one
  smuggled in with ``%2F``), a NUL or a backslash, so a handler may join it to a directory.

Decisions:

- A pattern's *shape* is its literal segments and its converters at their places. One
  shape has one slot list (indexed by RequestMethod, like ``Router.lookup``), shared by all
  methods, so the caller can answer 405 with ``Allow``.
- Two patterns with the same shape and different parameter names (``users/{id}`` and
  ``users/{name}``) match the same paths: ``ConfigError``, *whatever their methods*. Sharing
  one slot list needs one set of names, and a handler's ``path_params`` keys should not
  depend on the method.
- Literal segments are compared, as written, against the decoded request segment, the
  same as the exact router compares its keys against the decoded path.
- A pattern with an empty segment inside (``a//{x}``) is refused: no decoded segment a
  ``str`` or ``int`` matches is empty, and a literal empty segment is surely a typo.
- A pattern without any parameter is accepted and matched as a literal path, though the
  caller normally keeps those in the exact router.
- Paths as they come off the wire (`match_raw`) are remembered: the answer for up to
  ``MEMO_SIZE`` recent paths (each at most ``MEMO_KEY_MAX`` bytes) is kept, so a path asked
  for again skips decoding, splitting, the walk and the conversions. Every request still
  gets its own params dict. Any add or remove forgets everything; a full memo is emptied
  and refilled rather than kept in LRU order, so a stream of distinct paths costs one dict
  insert each and nothing more.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar
from urllib.parse import unquote_to_bytes

from packetron.errors import ConfigError
from packetron.flags import RequestMethod

__all__ = ["CONVERTERS", "MEMO_KEY_MAX", "MEMO_SIZE", "PatternTable", "is_pattern"]

T = TypeVar("T")

CONVERTERS = ("str", "int", "path")
METHOD_COUNT = len(RequestMethod)  # slots per shape, as in packetron.http.router
# Longest int value accepted: 18 digits always fit in a signed 64-bit integer, and a
# longer segment is refused before int() could spend quadratic time on it.
_INT_MAX_DIGITS = 18
# match_raw's memo: how many paths, and the longest one kept (longer paths are matched
# every time; they are rare and would make the memo's memory depend on the client).
MEMO_SIZE = 1024
MEMO_KEY_MAX = 256
_UNSEEN: Any = object()  # a memo miss (None is a remembered "no pattern matches")

# A parsed segment: a literal string, or (converter, name).
_Segment = str | tuple[str, str]


def is_pattern(path: str) -> bool:
    """Whether `path` has a ``{name}`` / ``{name:conv}`` part (or any brace at all).

    Any brace counts, so that a malformed pattern reaches PatternTable.add and fails
    there with a clear ConfigError instead of becoming an exact route nobody can reach.
    """
    return "{" in path or "}" in path


def _parse(path: str) -> list[_Segment]:
    """Segments of a registered pattern; ConfigError when it is malformed."""
    text = path.strip("/")
    segments: list[_Segment] = []
    names: set[str] = set()
    parts = text.split("/") if text else []
    for position, part in enumerate(parts):
        if not part:
            raise ConfigError(f"route pattern {path!r}: empty segment")
        if "{" not in part and "}" not in part:
            segments.append(part)
            continue
        if not (part.startswith("{") and part.endswith("}")) or part.count("{") != 1 \
                or part.count("}") != 1:
            raise ConfigError(
                f"route pattern {path!r}: segment {part!r} must be exactly one "
                "'{name}' or '{name:converter}' (unbalanced braces or mixed text)")
        name, _, converter = part[1:-1].partition(":")
        converter = converter or "str"
        if not name.isidentifier():
            raise ConfigError(
                f"route pattern {path!r}: parameter name {name!r} is not an identifier")
        if converter not in CONVERTERS:
            raise ConfigError(
                f"route pattern {path!r}: unknown converter {converter!r} "
                f"(known: {', '.join(CONVERTERS)})")
        if name in names:
            raise ConfigError(f"route pattern {path!r}: parameter {name!r} appears twice")
        if converter == "path" and position != len(parts) - 1:
            raise ConfigError(
                f"route pattern {path!r}: {{{name}:path}} must be the last segment")
        names.add(name)
        segments.append((converter, name))
    return segments


def _render(segments: list[_Segment]) -> str:
    """Normalized pattern text: no outer slashes, ``:str`` left implicit."""
    out = []
    for segment in segments:
        if isinstance(segment, str):
            out.append(segment)
        else:
            converter, name = segment
            out.append(f"{{{name}}}" if converter == "str" else f"{{{name}:{converter}}}")
    return "/".join(out)


def _shape(segments: list[_Segment]) -> tuple[str | tuple[str], ...]:
    """What a pattern matches, names left out: literals as str, converters as 1-tuples."""
    return tuple(s if isinstance(s, str) else (s[0],) for s in segments)


class _Node(Generic[T]):
    """One trie position. `path_*` describe the terminal ``{x:path}`` child, if any."""

    __slots__ = (
        "int_child",
        "literals",
        "names",
        "path_names",
        "path_slots",
        "slots",
        "str_child",
    )

    def __init__(self) -> None:
        self.literals: dict[str, _Node[T]] = {}
        self.int_child: _Node[T] | None = None
        self.str_child: _Node[T] | None = None
        # A pattern ending at this node: its slot list and its parameter names in order.
        self.slots: list[T | None] | None = None
        self.names: tuple[str, ...] = ()
        self.path_slots: list[T | None] | None = None
        self.path_names: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return (not self.literals and self.int_child is None and self.str_child is None
                and self.slots is None and self.path_slots is None)


class _Shape(Generic[T]):
    """Bookkeeping of one registered shape: the text it was registered as, its slots."""

    __slots__ = ("pattern", "segments", "slots")

    def __init__(self, pattern: str, segments: list[_Segment], slots: list[T | None]):
        self.pattern = pattern
        self.segments = segments
        self.slots = slots


def _path_value(segments: list[str], start: int) -> str | None:
    """The ``path`` value made of segments[start:], or None when it is unsafe or empty."""
    value = "/".join(segments[start:]) if start < len(segments) - 1 else segments[start]
    if not value or "\x00" in value or "\\" in value:
        return None
    # Checked on the joined value, so "a%2F..%2Fb" is refused like "a/../b".
    for part in value.split("/"):
        if not part or part == "." or part == "..":
            return None
    return value


class PatternTable(Generic[T]):
    """Path patterns -> one entry per RequestMethod, matched through a segment trie."""

    __slots__ = ("count", "_memo", "_root", "_shapes")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._shapes: dict[tuple[str | tuple[str], ...], _Shape[T]] = {}
        # Patterns registered. The protocol reads this attribute rather than testing the
        # table's truth, which would call __bool__ on every request.
        self.count = 0
        # raw path -> what match() found for it (None: no pattern matches).
        self._memo: dict[bytes, tuple[list[T | None], dict[str, Any]] | None] = {}

    # ------------------------------------------------------------ registration

    def add(self, method: int, path: str, entry: T) -> T | None:
        """Register `entry` for (method, pattern); returns the entry it replaced, if any.

        ConfigError when the pattern is malformed, or when a pattern with the same shape
        but other parameter names is registered (they would match the same paths).
        """
        segments = _parse(path)
        shape_key = _shape(segments)
        shape = self._shapes.get(shape_key)
        self._memo.clear()  # a new shape may now match a remembered path better
        if shape is not None:
            if shape.segments != segments:
                raise ConfigError(
                    f"route patterns {shape.pattern!r} and {path!r} match the same paths "
                    "(only their parameter names differ); use one of them")
            slots = shape.slots
        else:
            slots = [None] * METHOD_COUNT
            self._attach(segments, slots)
            self._shapes[shape_key] = _Shape(path, segments, slots)
        previous = slots[method]
        slots[method] = entry
        if previous is None:
            self.count += 1
        return previous

    def _attach(self, segments: list[_Segment], slots: list[T | None]) -> None:
        node = self._root
        names = tuple(s[1] for s in segments if not isinstance(s, str))
        for segment in segments:
            if isinstance(segment, str):
                child = node.literals.get(segment)
                if child is None:
                    child = node.literals[segment] = _Node()
            elif segment[0] == "path":
                # Always last (checked by _parse): the terminal lives on the parent node.
                node.path_slots = slots
                node.path_names = names
                return
            elif segment[0] == "int":
                child = node.int_child
                if child is None:
                    child = node.int_child = _Node()
            else:
                child = node.str_child
                if child is None:
                    child = node.str_child = _Node()
            node = child
        node.slots = slots
        node.names = names

    def remove(self, method: int, path: str, entry: T | None = None) -> bool:
        """Unregister (method, pattern); when `entry` is given, only if it is still there.

        The pattern must be the registered one, parameter names included; a malformed
        pattern was never registered, so it is simply not found.
        """
        try:
            segments = _parse(path)
        except ConfigError:
            return False
        shape_key = _shape(segments)
        shape = self._shapes.get(shape_key)
        if shape is None or shape.segments != segments:
            return False
        current = shape.slots[method]
        if current is None or (entry is not None and current is not entry):
            return False
        shape.slots[method] = None
        self.count -= 1
        self._memo.clear()
        if all(slot is None for slot in shape.slots):
            del self._shapes[shape_key]
            self._detach(self._root, segments, 0)
        return True

    def _detach(self, node: _Node[T], segments: list[_Segment], index: int) -> None:
        """Drop the terminal of `segments` and prune the nodes left empty on the way back."""
        if index == len(segments):
            node.slots = None
            node.names = ()
            return
        segment = segments[index]
        if isinstance(segment, str):
            child = node.literals[segment]
            self._detach(child, segments, index + 1)
            if child.is_empty():
                del node.literals[segment]
        elif segment[0] == "path":
            node.path_slots = None
            node.path_names = ()
        elif segment[0] == "int":
            int_child = node.int_child
            assert int_child is not None
            self._detach(int_child, segments, index + 1)
            if int_child.is_empty():
                node.int_child = None
        else:
            str_child = node.str_child
            assert str_child is not None
            self._detach(str_child, segments, index + 1)
            if str_child.is_empty():
                node.str_child = None

    # ------------------------------------------------------------ matching

    def match_raw(self, raw_path: bytes) -> tuple[list[T | None], dict[str, Any]] | None:
        """match() for a path as the request line carries it: bytes, still percent-encoded,
        without the query string, with its slashes ("/users/42"). Remembered (see the
        module's decisions); the params dict returned is the caller's own.
        """
        memo = self._memo
        found = memo.get(raw_path, _UNSEEN)
        if found is _UNSEEN:
            found = None
            if raw_path[:1] == b"/":  # not absolute- or asterisk-form (exact routes only)
                try:
                    found = self.match(raw_path.decode("utf-8").strip("/"))
                except UnicodeDecodeError:
                    pass
            if len(raw_path) <= MEMO_KEY_MAX:
                if len(memo) >= MEMO_SIZE:
                    memo.clear()
                memo[raw_path] = found
        if found is None:
            return None
        return found[0], found[1].copy()  # type: ignore[union-attr]

    def match(self, raw_path: str) -> tuple[list[T | None], dict[str, Any]] | None:
        """Slots of the best pattern for `raw_path` and its converted params, or None (404).

        `raw_path` is the request path without query string, not yet percent-decoded, with
        its leading and trailing "/" stripped ("users/42").
        """
        segments = raw_path.split("/") if raw_path else []
        if "%" in raw_path:
            # Decoded one segment at a time, after the split, so "%2F" stays inside.
            try:
                segments = [unquote_to_bytes(s).decode("utf-8") if "%" in s else s
                            for s in segments]
            except UnicodeDecodeError:
                return None
        found = _descend(self._root, segments)
        if found is not None:
            return found
        values: list[Any] = []
        walked = _walk(self._root, segments, 0, len(segments), values)
        if walked is None:
            return None
        slots, names = walked
        return slots, dict(zip(names, values))

    # ------------------------------------------------------------ introspection

    def entries(self) -> Iterator[tuple[str, int, T]]:
        """(normalized pattern, method, entry) for every registration."""
        for shape in list(self._shapes.values()):
            pattern = _render(shape.segments)
            for method, entry in enumerate(shape.slots):
                if entry is not None:
                    yield pattern, method, entry

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0


def _descend(node: _Node[T], segments: list[str]) -> tuple[list[T | None], dict[str, Any]] | None:
    """The first path of _walk's depth-first order, as a loop: at each segment the best
    child (literal, then int, then str, then a path tail). When that path ends in a
    pattern, it is the one _walk would return; when it dead-ends, None, and _walk's
    backtracking search decides (so most matches cost no recursion)."""
    values: list[Any] = []
    for index, segment in enumerate(segments):
        child = node.literals.get(segment)
        if child is None:
            child = node.int_child
            if child is not None and 0 < len(segment) <= _INT_MAX_DIGITS \
                    and segment.isascii() and segment.isdigit():
                values.append(int(segment))
            else:
                child = node.str_child
                if child is not None and segment and "\x00" not in segment:
                    values.append(segment)
                elif node.path_slots is not None:
                    value = _path_value(segments, index)
                    if value is None:
                        return None
                    values.append(value)
                    return node.path_slots, dict(zip(node.path_names, values))
                else:
                    return None
        node = child
    if node.slots is None:
        return None
    return node.slots, dict(zip(node.names, values))


def _walk(node: _Node[T], segments: list[str], index: int, end: int,
          values: list[Any]) -> tuple[list[T | None], tuple[str, ...]] | None:
    """Depth-first match from `node` at segments[index]; `values` collects the params.

    On success `values` holds the converted values in pattern order; on failure it is
    left as it was found, so the caller can try its next branch.
    """
    if index == end:
        if node.slots is not None:
            return node.slots, node.names
        return None
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        found = _walk(child, segments, index + 1, end, values)
        if found is not None:
            return found
    child = node.int_child
    if child is not None and 0 < len(segment) <= _INT_MAX_DIGITS \
            and segment.isascii() and segment.isdigit():
        values.append(int(segment))
        found = _walk(child, segments, index + 1, end, values)
        if found is not None:
            return found
        values.pop()
    child = node.str_child
    if child is not None and segment and "\x00" not in segment:
        values.append(segment)
        found = _walk(child, segments, index + 1, end, values)
        if found is not None:
            return found
        values.pop()
    if node.path_slots is not None:
        value = _path_value(segments, index)
        if value is not None:
            values.append(value)
            return node.path_slots, node.path_names
    return None
