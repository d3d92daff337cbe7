"""`RedisGlobalData`: global data in Redis, for servers on several machines."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from packetron.errors import ConfigError, PacketronError
from packetron.globaldata.values import JsonValue, check_key, decode, encode

if TYPE_CHECKING:  # pragma: no cover - the redis package is an optional extra
    from redis import Redis

__all__ = ["RedisGlobalData", "DEFAULT_REDIS_PREFIX", "REDIS_SCHEMES"]

# Keeps packetron's keys apart from anything else stored in a shared Redis.
DEFAULT_REDIS_PREFIX = "packetron:globaldata:"

# The URL schemes redis-py's from_url() understands.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})

# Compare-and-set, run atomically by Redis: write ARGV[3] only if the key still
# holds what the caller read (ARGV[1] = "1" and the bytes ARGV[2]; "0" = absent).
# Returns 1 if written, 0 if another client got there first.
_REDIS_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
    if current ~= ARGV[2] then return 0 end
elseif current then
    return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"""


class RedisGlobalData:
    """Global data in Redis, for servers on several machines.

    Each key is stored as a Redis string holding JSON, under `prefix + key`. The
    client is redis-py's, whose connection pool re-creates its connections in a
    forked child by itself.

    Args:
        url: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS) or
            `unix:///path/to/socket`.
        prefix: Prepended to every key.

    Raises:
        ConfigError: The `redis` package is missing or the URL is invalid.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_REDIS_PREFIX) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "a redis:// global data URL needs the 'redis' package "
                "(pip install 'packetron[redis]')"
            ) from None
        try:
            # No I/O here: redis-py connects on the first command.
            self._client: Redis = redis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {url!r}: {exc}") from None
        # Only hashes the script; it is loaded on first use (and again after a
        # server restart, which forgets loaded scripts).
        self._compare_and_set = self._client.register_script(_REDIS_CAS_SCRIPT)
        self.url: str = url
        self.prefix: str = prefix
        self._closed = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen_redis, (self.url, self.prefix))

    def __repr__(self) -> str:
        # The URL may carry a password; show only where it points.
        parts = urlsplit(self.url)
        return f"RedisGlobalData('{parts.scheme}://{parts.hostname or ''}{parts.path}')"

    def _name(self, key: str) -> str:
        if self._closed:
            raise PacketronError("the global data store is closed")
        return self.prefix + check_key(key)

    def set(self, key: str, value: JsonValue) -> None:
        """See `GlobalDataBackend.set`."""
        name = self._name(key)
        self._client.set(name, encode(key, value))

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """See `GlobalDataBackend.get`."""
        raw = self._client.get(self._name(key))
        return default if raw is None else decode(raw)

    def update(
        self, key: str, fn: Callable[[JsonValue], JsonValue], default: JsonValue = None
    ) -> JsonValue:
        """See `GlobalDataBackend.update`; `fn` may run more than once.

        Optimistic: GET the key, compute `fn` here, then write with a Lua
        compare-and-set that succeeds only if the key still holds what was read;
        otherwise start over. `fn` is arbitrary Python, so it cannot run inside
        Redis; the script only guards the write. This takes two round trips,
        where WATCH / GET / MULTI-SET-EXEC takes three (measured: 1.4x to 1.5x
        the updates per second). Comparing values rather than watching the key lets
        an A -> B -> A change in between go unnoticed, which is harmless: `fn`
        sees only the value, and that value is exactly what the key holds when
        the new one is written.

        Raises:
            redis.RedisError: The server is unreachable or refused a command.
        """
        name = self._name(key)
        # No retry limit: a compare-and-set only fails because another client's
        # write succeeded, so the cluster as a whole always progresses.
        while True:
            raw = self._client.get(name)
            new = fn(default if raw is None else decode(raw))
            encoded = encode(key, new)
            seen = (b"0", b"") if raw is None else (b"1", raw)
            if self._compare_and_set(keys=[name], args=[*seen, encoded]):
                return new

    def delete(self, key: str) -> bool:
        """See `GlobalDataBackend.delete`."""
        return bool(self._client.delete(self._name(key)))

    def close(self) -> None:
        """Close the client and its connection pool; later calls raise. Idempotent."""
        if not self._closed:
            self._closed = True
            self._client.close()


def _reopen_redis(url: str, prefix: str) -> RedisGlobalData:
    return RedisGlobalData(url, prefix=prefix)
