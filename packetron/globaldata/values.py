"""JSON values and keys as every global-data backend stores them (no I/O)."""
from __future__ import annotations

import json
from typing import Any, TypeAlias

__all__ = ["JsonValue", "check_key", "encode", "decode"]

# A JSON document: None, bool, int, float, str, list or dict with str keys. Spelled
# `Any` because a recursive union would reject `list[int]` (lists are invariant).
JsonValue: TypeAlias = Any


def check_key(key: object) -> str:
    """Return `key` if it is a str.

    Raises:
        TypeError: `key` is not a str.
    """
    if not isinstance(key, str):
        raise TypeError(f"global data keys must be str, got {type(key).__name__}")
    return key


def encode(key: str, value: JsonValue) -> str:
    """The JSON text stored for `value`.

    Raises:
        TypeError: `value` is not JSON-serializable (NaN and infinities included).
    """
    # allow_nan=False: NaN and Infinity are not JSON, and other readers of a shared
    # Redis (or of the SQLite file) would choke on them.
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"global data value for key {key!r} must be JSON-serializable "
            f"(None, bool, int, float, str, list, dict with str keys): {exc}"
        ) from None


def decode(raw: str | bytes) -> JsonValue:
    """The value stored as `raw` (JSON text)."""
    return json.loads(raw)
