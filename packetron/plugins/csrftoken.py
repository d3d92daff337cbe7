"""CSRF protection by double submit: an unsafe request must repeat its token cookie in a header.

A page on another site can make the browser send the cookie, but cannot read it, so it
cannot put the same value in a header.
"""
from __future__ import annotations

import hmac
import re
import secrets
from typing import Any

from packetron.errors import ConfigError, HttpError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin

__all__ = ["csrf", "SAFE_METHODS", "new_token", "is_token", "tokens_match"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
TOKEN_MAX_AGE = 365 * 24 * 3600  # outlives browser restarts, so open tabs keep working
# What new_token() makes (43 characters), with room for tokens made elsewhere.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def new_token() -> str:
    """A fresh token: 32 random bytes, base64url."""
    return secrets.token_urlsafe(32)


def is_token(value: str | None) -> bool:
    """Whether `value` looks like a token (a cookie with anything else is replaced)."""
    return value is not None and _TOKEN.fullmatch(value) is not None


def tokens_match(cookie: str | None, header: str | None) -> bool:
    """Whether the header repeats the cookie, compared in constant time."""
    if not is_token(cookie) or header is None:
        return False
    assert cookie is not None
    return hmac.compare_digest(cookie.encode("utf-8", "surrogatepass"),
                               header.encode("utf-8", "surrogatepass"))


def csrf(cookie_name: str = "csrftoken", header_name: str = "x-csrf-token") -> Plugin:
    """Double-submit CSRF protection.

    GET, HEAD, OPTIONS and TRACE pass (a token header on them is ignored). Any other
    method needs the `header_name` header equal to the `cookie_name` cookie, else 403,
    refused before its body is read (a request no route serves keeps its 404 / 405). A client without a valid token cookie is given one
    (SameSite=Lax, Path=/, readable by the page's script so it can copy it into the
    header). `request.csrf_token` holds the token to use, e.g. in a page's meta tag.
    """
    if not _COOKIE_NAME.fullmatch(cookie_name):
        raise ConfigError(f"csrf: {cookie_name!r} is not a cookie name")
    if not _COOKIE_NAME.fullmatch(header_name):
        raise ConfigError(f"csrf: {header_name!r} is not a header name")

    def check(request: Any, response: Any) -> bool:
        cookie = request.get_cookie(cookie_name)
        request.csrf_token = cookie if is_token(cookie) else new_token()
        # No route (404/405 to come): no handler to protect, and the true answer is better.
        if request.method not in SAFE_METHODS and request.route is not None \
                and not tokens_match(cookie, request.headers.get(header_name)):
            raise HttpError("Forbidden: CSRF token missing or incorrect", status_code=403)
        return False

    def give_token(request: Any, response: Any) -> None:
        if is_token(request.get_cookie(cookie_name)):
            return
        # The token the handler saw, or (for the server's own answers) a new one.
        token = getattr(request, "csrf_token", None) or new_token()
        response.set_cookie(cookie_name, token, max_age=TOKEN_MAX_AGE, path="/",
                            same_site="Lax")

    return Plugin.create(PluginPriority.MEDIUM, handler=check, after=give_token)
