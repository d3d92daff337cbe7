"""Security headers on every answer: HSTS, nosniff, frame options, referrer policy, CSP."""
from __future__ import annotations

from typing import Any

from packetron.errors import ConfigError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin
from packetron.http.response import HeaderBlock

__all__ = ["security_headers", "security_header_list"]

DEFAULT_HSTS = "max-age=63072000; includeSubDomains"


def security_header_list(hsts: str | None | bool = DEFAULT_HSTS,
                         content_type_options: bool = True,
                         frame_options: str | None | bool = "DENY",
                         referrer_policy: str | None | bool = "strict-origin-when-cross-origin",
                         csp: str | None | bool = None) -> list[tuple[str, str]]:
    """The (name, value) pairs `security_headers` adds; None or False leaves one out.

    Raises:
        ConfigError: a value that is not a string, or holds CR/LF.
    """
    wanted = [("Strict-Transport-Security", hsts),
              ("X-Content-Type-Options", "nosniff" if content_type_options else None),
              ("X-Frame-Options", frame_options),
              ("Referrer-Policy", referrer_policy),
              ("Content-Security-Policy", csp)]
    headers = []
    for name, value in wanted:
        if value is None or value is False:
            continue
        if value is True and name == "Strict-Transport-Security":
            value = DEFAULT_HSTS
        if not isinstance(value, str) or not value or "\r" in value or "\n" in value:
            raise ConfigError(f"security_headers: {name} must be a one-line string, "
                              f"None or False, got {value!r}")
        headers.append((name, value))
    return headers


def security_headers(hsts: str | None | bool = DEFAULT_HSTS,
                     content_type_options: bool = True,
                     frame_options: str | None | bool = "DENY",
                     referrer_policy: str | None | bool = "strict-origin-when-cross-origin",
                     csp: str | None | bool = None) -> Plugin:
    """Add Strict-Transport-Security, X-Content-Type-Options: nosniff, X-Frame-Options,
    Referrer-Policy and (when given) Content-Security-Policy to every answer, errors
    included. A header the handler set itself is left as it is; None or False disables one.

    HSTS is sent over plain HTTP too, where browsers ignore it: behind a TLS-terminating
    proxy the server cannot tell the difference.
    """
    block = HeaderBlock(security_header_list(hsts, content_type_options, frame_options,
                                             referrer_policy, csp))  # checked once, here

    def add(request: Any, response: Any) -> None:
        response.add_missing_headers(block)

    # No `handler`: nothing to decide before the route runs.
    return Plugin.create(PluginPriority.MEDIUM, after=add)
