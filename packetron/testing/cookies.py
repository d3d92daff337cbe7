"""A small cookie jar for one host: Set-Cookie in, Cookie out (RFC 6265, simplified).

Honoured: Path (default-path included), Max-Age (which wins over Expires), Expires, and
deletion by Max-Age<=0 or a past Expires. Ignored: Domain (the client talks to one
application), Secure and HttpOnly (a test wants to see every cookie), SameSite.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from email.utils import parsedate_to_datetime

__all__ = ["CookieJar", "parse_set_cookie"]


class _Cookie:
    __slots__ = ("name", "value", "path", "expires")

    def __init__(self, name: str, value: str, path: str, expires: float | None) -> None:
        self.name = name
        self.value = value
        self.path = path
        self.expires = expires  # epoch seconds; None: a session cookie


def _default_path(request_path: str) -> str:
    # RFC 6265 §5.1.4: the request path up to, not including, its last "/".
    if not request_path.startswith("/") or request_path.count("/") == 1:
        return "/"
    return request_path[:request_path.rindex("/")]


def _path_matches(cookie_path: str, request_path: str) -> bool:
    # RFC 6265 §5.1.4 path-match.
    if cookie_path == request_path:
        return True
    return request_path.startswith(cookie_path) and (
        cookie_path.endswith("/") or request_path[len(cookie_path)] == "/")


def parse_set_cookie(header: str, request_path: str,
                     now: float) -> tuple[str, str, str, float | None] | None:
    """(name, value, path, expires) of one Set-Cookie value; expires < now means delete.

    Returns None for a header without a name=value pair.
    """
    pair, *attributes = header.split(";")
    name, sep, value = pair.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        return None
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    path = _default_path(request_path)
    expires: float | None = None
    max_age: float | None = None
    for attribute in attributes:
        key, _, attr_value = attribute.partition("=")
        key, attr_value = key.strip().lower(), attr_value.strip()
        if key == "max-age":
            try:
                seconds = int(attr_value)
            except ValueError:
                continue  # an invalid Max-Age is ignored (§5.2.2)
            max_age = now + seconds if seconds > 0 else 0.0
        elif key == "expires":
            try:
                expires = parsedate_to_datetime(attr_value).timestamp()
            except (TypeError, ValueError, IndexError):
                continue
        elif key == "path" and attr_value.startswith("/"):
            path = attr_value
    return name, value, path, max_age if max_age is not None else expires


class CookieJar(MutableMapping[str, str]):
    """Cookies kept between requests; as a mapping, name -> value (longest path first).

    Setting `jar[name] = value` stores a session cookie for Path=/.
    """

    def __init__(self) -> None:
        self._cookies: dict[tuple[str, str], _Cookie] = {}

    # ------------------------------------------------------------ from responses

    def update_from_response(self, set_cookie_values: list[str], request_path: str) -> None:
        """Apply every Set-Cookie of a response to the request at `request_path`."""
        now = time.time()
        for header in set_cookie_values:
            parsed = parse_set_cookie(header, request_path, now)
            if parsed is None:
                continue
            name, value, path, expires = parsed
            if expires is not None and expires <= now:
                self._cookies.pop((name, path), None)  # Max-Age=0 or a past Expires
            else:
                self._cookies[(name, path)] = _Cookie(name, value, path, expires)

    # ------------------------------------------------------------ for requests

    def _live(self) -> list[_Cookie]:
        now = time.time()
        expired = [key for key, cookie in self._cookies.items()
                   if cookie.expires is not None and cookie.expires <= now]
        for key in expired:
            del self._cookies[key]
        # Longer paths first (RFC 6265 §5.4), so the most specific cookie is sent first.
        return sorted(self._cookies.values(), key=lambda cookie: -len(cookie.path))

    def header_for(self, request_path: str, extra: dict[str, str] | None = None) -> str | None:
        """The Cookie header for a request to `request_path`, with `extra` cookies first
        (they override the jar's cookies of the same name), or None when there are none."""
        pairs: dict[str, str] = dict(extra or {})
        for cookie in self._live():
            if cookie.name not in pairs and _path_matches(cookie.path, request_path):
                pairs[cookie.name] = cookie.value
        if not pairs:
            return None
        return "; ".join(f"{name}={value}" for name, value in pairs.items())

    # ------------------------------------------------------------ MutableMapping

    def __getitem__(self, name: str) -> str:
        for cookie in self._live():
            if cookie.name == name:
                return cookie.value
        raise KeyError(name)

    def __setitem__(self, name: str, value: str) -> None:
        self._cookies[(name, "/")] = _Cookie(name, str(value), "/", None)

    def __delitem__(self, name: str) -> None:
        keys = [key for key in self._cookies if key[0] == name]
        if not keys:
            raise KeyError(name)
        for key in keys:
            del self._cookies[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(cookie.name for cookie in self._live()))

    def __len__(self) -> int:
        return len(dict.fromkeys(cookie.name for cookie in self._live()))

    def __repr__(self) -> str:
        return f"CookieJar({dict(self)!r})"
