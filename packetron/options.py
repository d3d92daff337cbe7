"""Every server option, its default and its unit, in one frozen dataclass.

`Packetron(**options)` builds a ServerOptions, so an unknown or invalid option fails at
construction with a ConfigError naming it, never later in a request.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from packetron.errors import ConfigError

__all__ = ["ServerOptions", "DEFAULT_MAX_URL_SIZE", "DEFAULT_MAX_HEADER_SIZE",
           "DEFAULT_MAX_HEADER_COUNT", "DEFAULT_MAX_BUFFERED_BODY_SIZE",
           "DEFAULT_HEADER_TIMEOUT", "DEFAULT_KEEP_ALIVE_TIMEOUT", "DEFAULT_BODY_TIMEOUT",
           "DEFAULT_MAX_PIPELINED_REQUESTS", "DEFAULT_GRACEFUL_TIMEOUT",
           "DEFAULT_MAX_MESSAGE_SIZE", "DEFAULT_PING_INTERVAL", "DEFAULT_PING_TIMEOUT"]

# Request line cap: Apache's LimitRequestLine is 8190, nginx's large header buffer 8 KiB.
DEFAULT_MAX_URL_SIZE = 8 * 1024
# All header lines together: Node's --max-http-header-size default; h11 also uses 16 KiB.
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
# Apache's LimitRequestFields default.
DEFAULT_MAX_HEADER_COUNT = 100
# Bodies a route decodes in memory (JSON, form, XML, text, raw). Streaming multipart
# routes are bounded by their own multipart_options instead.
DEFAULT_MAX_BUFFERED_BODY_SIZE = 16 * 1024 * 1024
# Time allowed from the first byte of a request head to its end: slowloris defence.
DEFAULT_HEADER_TIMEOUT = 10.0
# uvicorn's default for idle keep-alive connections.
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
# Longest pause between two pieces of a body (nginx client_body_timeout is 60 s).
DEFAULT_BODY_TIMEOUT = 60.0
# aiohttp queues at most 32 pipelined requests per connection before it stops reading.
DEFAULT_MAX_PIPELINED_REQUESTS = 32
DEFAULT_GRACEFUL_TIMEOUT = 10.0
# The biggest WebSocket message accepted, after decompression (websockets' default too).
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
# A WebSocket silent this long is pinged; one that does not answer within the timeout is
# closed (1011). The websockets library's defaults.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Limits and behaviour of a Packetron server; all durations are in seconds."""

    max_url_size_in_bytes: int = DEFAULT_MAX_URL_SIZE
    max_header_size_in_bytes: int = DEFAULT_MAX_HEADER_SIZE
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_buffered_body_size_in_bytes: int = DEFAULT_MAX_BUFFERED_BODY_SIZE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_pipelined_requests: int = DEFAULT_MAX_PIPELINED_REQUESTS
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    access_log: bool = False
    global_data_url: str | None = None
    global_data_path: str | None = None
    reuse_port: bool = False
    # Connection screening and TLS, through the same listener code as the broker layer.
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_connections: int | None = None
    max_connections_per_ip: int | None = None
    connection_rate: float | None = None  # new connections per source per second
    tls: Any = None  # an ssl.SSLContext, or {"cert": path, "key": path}
    # Best effort, never fatal: allow the bound port in ufw, firewalld or iptables.
    open_firewall: bool = False
    # Body of the server's own error answers: "text" (the reason) or "json"
    # ({"error": reason, "status": n}).
    error_format: str = "text"
    access_log_format: str = "text"  # or "json": one object per line
    # rate_limit_scope="cluster" when the global data store fails: "open" serves the
    # request (a warning is logged), "closed" refuses it with 429.
    rate_limit_store_failure: str = "open"
    # WebSockets: a bigger message is refused with close code 1009; pings keep idle
    # connections honest (None: no pings, or no timeout). Checked once a second.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ping_interval: float | None = DEFAULT_PING_INTERVAL
    ping_timeout: float | None = DEFAULT_PING_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_url_size_in_bytes", "max_header_size_in_bytes", "max_header_count",
                     "max_buffered_body_size_in_bytes", "max_pipelined_requests",
                     "max_message_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("header_timeout", "keep_alive_timeout", "body_timeout",
                     "graceful_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("ping_interval", "ping_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float))
                                      or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"{name} must be a positive number of seconds or None, "
                                  f"got {value!r}")
        for name in ("allow", "deny"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.tls is not None and not isinstance(self.tls, dict) and not hasattr(self.tls, "wrap_socket"):
            raise ConfigError("tls must be an ssl.SSLContext or {'cert': path, 'key': path}")
        for name in ("error_format", "access_log_format"):
            if getattr(self, name) not in ("text", "json"):
                raise ConfigError(f"{name} must be 'text' or 'json', got {getattr(self, name)!r}")
        if self.rate_limit_store_failure not in ("open", "closed"):
            raise ConfigError("rate_limit_store_failure must be 'open' or 'closed', "
                              f"got {self.rate_limit_store_failure!r}")
        if isinstance(self.trusted_proxies, str):
            object.__setattr__(self, "trusted_proxies", (self.trusted_proxies,))
        else:
            object.__setattr__(self, "trusted_proxies", tuple(self.trusted_proxies))

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> "ServerOptions":
        """Build from keyword arguments; an unknown name is a ConfigError listing the known."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; "
                              f"known options: {', '.join(sorted(known))}")
        return cls(**options)
