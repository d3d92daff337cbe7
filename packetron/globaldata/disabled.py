"""The backend of `ServerFlags.NO_GLOBAL_DATA`: stores nothing, anywhere."""
from __future__ import annotations

from typing import Callable

from packetron.errors import GlobalDataDisabled
from packetron.globaldata.values import JsonValue

__all__ = ["DisabledGlobalData"]


class DisabledGlobalData:
    """The backend of `ServerFlags.NO_GLOBAL_DATA`: stores nothing, anywhere.

    Every data call raises `GlobalDataDisabled`; `close()` does nothing, so a
    server can close its store without asking which kind it has.
    """

    _MESSAGE = (
        "global data is disabled (the server was started with ServerFlags.NO_GLOBAL_DATA); "
        "{op}({key!r}) stores and reads nothing"
    )

    def _refuse(self, op: str, key: object) -> GlobalDataDisabled:
        return GlobalDataDisabled(self._MESSAGE.format(op=op, key=key))

    def set(self, key: str, value: JsonValue) -> None:
        """Raises: GlobalDataDisabled, always."""
        raise self._refuse("set", key)

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """Raises: GlobalDataDisabled, always."""
        raise self._refuse("get", key)

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """Raises: GlobalDataDisabled, always (`fn` is not called)."""
        raise self._refuse("update", key)

    def delete(self, key: str) -> bool:
        """Raises: GlobalDataDisabled, always."""
        raise self._refuse("delete", key)

    def close(self) -> None:
        """Does nothing."""

    def __repr__(self) -> str:
        return "DisabledGlobalData()"
