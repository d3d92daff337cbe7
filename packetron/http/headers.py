"""Case-insensitive request headers, built lazily from httptools' raw pairs."""
from __future__ import annotations

from typing import Iterator, Mapping

__all__ = ["Headers"]

# Raw header names as the parser gives them -> their lowercase text: most requests carry
# the same few names, decoded and lowercased once per process instead of once per request.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX = 1024  # bounded: names come from clients


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive view of request headers.

    Repeated headers are joined with ", " (RFC 9110 §5.3); `get_all(name)` returns each
    value on its own. Values lose the spaces and tabs around them (OWS, RFC 9112 §5.1;
    httptools strips only the leading ones). `raw` keeps the (name, value) byte pairs as
    the parser gave them, in order.
    """

    __slots__ = ("raw", "_map")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        merged: dict[str, str] = {}
        for name, value in raw:
            key = _KEYS.get(name)
            if key is None:
                key = name.decode("latin-1").lower()
                if len(_KEYS) < _KEYS_MAX:
                    _KEYS[name] = key
            text = value.decode("latin-1").strip(" \t")
            if key in merged:
                merged[key] = merged[key] + ", " + text
            else:
                merged[key] = text
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._map.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [value.decode("latin-1").strip(" \t") for key, value in self.raw
                if key.lower() == wanted]

    def __repr__(self) -> str:
        return f"Headers({self._map!r})"
