"""TcpClient: connect to a TCP (or TLS) server, with retries and exponential backoff.

The retry schedule is a pure function (`backoff_delay`, `retry_schedule`) of its
options and an injected random source, so it is tested without sockets or clocks;
`TcpClient.connect_with_retry` only sleeps for what it says.
"""
from __future__ import annotations

import asyncio
import random as _random
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from packetron.errors import ConfigError, ConnectFailed
from packetron.log import net_logger
from packetron.net.connection import Connection, open_connection

__all__ = [
    "TcpClient",
    "RetryPolicy",
    "backoff_delay",
    "retry_schedule",
    "DEFAULT_CONNECT_TIMEOUT",
]

# Seconds for one connect (TCP + TLS handshake): the contract's default.
DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How `connect_with_retry` spaces its attempts.

    Attempt 0 is made at once; retry i (1-based) waits
    ``min(max_delay, initial_delay * backoff_multiplier ** (i - 1))`` seconds first.
    With jitter, each wait is drawn uniformly from [delay / 2, delay] ("equal
    jitter"): clients that failed together spread out, yet none retries at once and
    none waits longer than the cap.

    Args:
        max_retries: retries after the first attempt (0: try once).
        initial_delay: seconds before the first retry.
        backoff_multiplier: growth factor of the delay (>= 1).
        max_delay: cap on any single delay, in seconds.
        jitter: randomise each delay as described above.

    Raises:
        ConfigError: a value is out of range.
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    backoff_multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not self.initial_delay >= 0:
            raise ConfigError(f"initial_delay must be >= 0 seconds, got {self.initial_delay!r}")
        if not self.backoff_multiplier >= 1:
            raise ConfigError(
                f"backoff_multiplier must be >= 1, got {self.backoff_multiplier!r}")
        if not self.max_delay >= 0:
            raise ConfigError(f"max_delay must be >= 0 seconds, got {self.max_delay!r}")


def backoff_delay(retry: int, policy: RetryPolicy,
                  rand: Callable[[], float] = _random.random) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry).

    Args:
        retry: 1-based retry number.
        policy: the schedule's options.
        rand: returns a float in [0, 1); injected so tests are deterministic.

    Returns:
        The delay in seconds.
    """
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # Cap the exponent's result early: 2.0 ** 5000 overflows a float.
    delay = policy.initial_delay
    for _ in range(retry - 1):
        delay *= policy.backoff_multiplier
        if delay >= policy.max_delay:
            break
    delay = min(policy.max_delay, delay)
    if policy.jitter:
        delay = delay / 2 + rand() * delay / 2
    return delay


def retry_schedule(policy: RetryPolicy,
                   rand: Callable[[], float] = _random.random) -> list[float]:
    """Every delay `connect_with_retry` would sleep, in order (max_retries of them)."""
    return [backoff_delay(i, policy, rand) for i in range(1, policy.max_retries + 1)]


class TcpClient:
    """A TCP client that returns packetron Connections.

    Args:
        host: server name or address.
        port: server port.
        timeout: seconds allowed for one connect (TCP plus TLS handshake).
        ssl: an SSLContext (or True for the default context) to speak TLS.
        server_hostname: name checked against the server certificate (default: host).
        warn_buffer_bytes, max_buffer_bytes, idle_timeout: passed to the Connection.

    Raises:
        ConfigError: port or timeout out of range.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        ssl: ssl_module.SSLContext | bool | None = None,
        *,
        server_hostname: str | None = None,
        **connection_options: object,
    ) -> None:
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise ConfigError(f"port must be an integer in 1..65535, got {port!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be None or > 0 seconds, got {timeout!r}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl = ssl
        self.server_hostname = server_hostname
        self._options = connection_options
        #: the error of the last failed attempt, if any
        self.last_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<TcpClient {self.host}:{self.port}{' tls' if self.ssl else ''}>"

    async def connect(self) -> Connection:
        """Connect once.

        Returns:
            The open Connection.

        Raises:
            ConnectFailed: refused, unreachable, timed out or a failed TLS handshake;
                the original error is chained as __cause__.
        """
        try:
            conn = await open_connection(
                self.host, self.port, ssl=self.ssl, server_hostname=self.server_hostname,
                timeout=self.timeout, **self._options)  # type: ignore[arg-type]
        except (OSError, TimeoutError) as exc:
            self.last_error = exc
            if isinstance(exc, TimeoutError):
                reason = "timed out"
            else:
                reason = str(exc) or type(exc).__name__
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {reason}") from exc
        self.last_error = None
        return conn

    async def connect_with_retry(
        self,
        max_retries: int = 5,
        initial_delay: float = 1.0,
        backoff_multiplier: float = 2.0,
        max_delay: float = 30.0,
        jitter: bool = True,
        *,
        rand: Callable[[], float] = _random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> Connection:
        """Connect, retrying with exponential backoff (see RetryPolicy).

        A certificate that fails verification is not retried: waiting does not fix it.

        Args:
            max_retries, initial_delay, backoff_multiplier, max_delay, jitter: the
                schedule (RetryPolicy).
            rand, sleep: injection points for tests.

        Returns:
            The open Connection.

        Raises:
            ConnectFailed: every attempt failed; says how many, and chains the last
                attempt's error as __cause__.
            ConfigError: a schedule option is out of range.
        """
        policy = RetryPolicy(max_retries, initial_delay, backoff_multiplier, max_delay, jitter)
        attempts = policy.max_retries + 1
        last: ConnectFailed | None = None
        for attempt in range(attempts):
            if attempt:
                delay = backoff_delay(attempt, policy, rand)
                net_logger.info("connect to %s:%s failed (%s); retry %d/%d in %.2fs",
                                self.host, self.port, last, attempt, policy.max_retries, delay)
                await sleep(delay)
            try:
                return await self.connect()
            except ConnectFailed as exc:
                last = exc
                if isinstance(exc.__cause__, ssl_module.SSLCertVerificationError):
                    attempts = attempt + 1
                    break
        assert last is not None
        cause = last.__cause__
        raise ConnectFailed(
            f"cannot connect to {self.host}:{self.port} after {attempts} attempt"
            f"{'s' if attempts != 1 else ''}: {cause if cause is not None else last}"
        ) from cause
