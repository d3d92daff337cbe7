"""Cross-process key/value store behind `server.set/get/update_global_data`.

Three backends share one small interface (`GlobalDataBackend`), one module each:

- `sqlite.SQLiteGlobalData` (the default): one SQLite file, by default under the temp
  directory, shared by every worker and every server that uses the same path.
- `redis.RedisGlobalData`: a Redis server, for state shared by several machines.
- `disabled.DisabledGlobalData`: `ServerFlags.NO_GLOBAL_DATA`; every data call raises
  `GlobalDataDisabled` and nothing is stored anywhere.

`facade.GlobalData` is what a server holds, and `open_global_data` picks the backend.
Values are JSON: what is read back is what `json.loads` gives (a tuple comes back
as a list, an integer dict key as a string). `update` is an atomic
read-modify-write: however many processes update one key at once, no update is
lost. The API is synchronous, so plain-function handlers can use it; each call
is one short local transaction (SQLite) or a few round trips (Redis).
"""
from __future__ import annotations

from packetron.globaldata.backend import GlobalDataBackend
from packetron.globaldata.disabled import DisabledGlobalData
from packetron.globaldata.facade import GlobalData, open_global_data
from packetron.globaldata.ratelimit import FixedWindowRateCounter
# Importable from here but not in __all__ (the `as` marks them re-exported): the rate
# counter's pure step, tested on its own, and the type of stored values.
from packetron.globaldata.ratelimit import _fixed_window_step as _fixed_window_step
from packetron.globaldata.redis import DEFAULT_REDIS_PREFIX, RedisGlobalData
from packetron.globaldata.sqlite import (
    DEFAULT_BUSY_TIMEOUT_SECONDS,
    DEFAULT_DIRECTORY_NAME,
    DEFAULT_FILE_NAME,
    SQLiteGlobalData,
    default_global_data_path,
)
from packetron.globaldata.values import JsonValue as JsonValue

__all__ = [
    "GlobalData",
    "GlobalDataBackend",
    "SQLiteGlobalData",
    "RedisGlobalData",
    "DisabledGlobalData",
    "FixedWindowRateCounter",
    "open_global_data",
    "default_global_data_path",
    "DEFAULT_DIRECTORY_NAME",
    "DEFAULT_FILE_NAME",
    "DEFAULT_BUSY_TIMEOUT_SECONDS",
    "DEFAULT_REDIS_PREFIX",
]
