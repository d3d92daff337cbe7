"""Cookie parsing and Set-Cookie serialization (sans-I/O, RFC 6265)."""
from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Literal
from urllib.parse import unquote

__all__ = ["parse_cookie_header", "build_set_cookie", "SameSite"]

SameSite = Literal["Strict", "Lax", "None"]

# RFC 6265 §4.1.1 cookie-name is an RFC 9110 token.
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# cookie-octet: visible ASCII without DQUOTE, comma, semicolon and backslash.
_FORBIDDEN_VALUE_CHARS = frozenset('",;\\ \t\r\n')


def parse_cookie_header(header: str) -> dict[str, str]:
    """Cookies of a Cookie header; the first occurrence of a name wins (RFC 6265 §5.4)."""
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        if name not in cookies:
            cookies[name] = unquote(value)
    return cookies


def _check_cookie_text(name: str, value: str) -> None:
    if not name or any(ch not in _TOKEN_CHARS for ch in name):
        raise ValueError(f"invalid cookie name {name!r}")
    if any(ch in _FORBIDDEN_VALUE_CHARS or ord(ch) < 0x21 or ord(ch) > 0x7E for ch in value):
        raise ValueError(f"invalid character in value of cookie {name!r}; encode it first")


def build_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    expires: datetime | str | int | float | None = None,
    path: str | None = "/",
    domain: str | None = None,
    http_only: bool = False,
    secure: bool = False,
    same_site: SameSite | None = None,
) -> str:
    """The value of one Set-Cookie header, attributes in the order given above.

    Args:
        expires: a datetime (naive means UTC), a preformatted HTTP date, or epoch seconds.
        same_site: "Strict", "Lax" or "None" ("None" requires secure, as browsers do).

    Raises:
        ValueError: a name/value with forbidden characters, or SameSite=None without Secure.
    """
    _check_cookie_text(name, value)
    parts = [f"{name}={value}"]
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if expires is not None:
        parts.append(f"Expires={_http_date(expires)}")
    if path is not None:
        parts.append(f"Path={path}")
    if domain is not None:
        parts.append(f"Domain={domain}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    if same_site is not None:
        normalized = same_site.capitalize()
        if normalized not in ("Strict", "Lax", "None"):
            raise ValueError(f"same_site must be Strict, Lax or None, not {same_site!r}")
        if normalized == "None" and not secure:
            raise ValueError("SameSite=None requires secure=True (browsers drop it otherwise)")
        parts.append(f"SameSite={normalized}")
    for part in parts[1:]:
        if any(ch in part for ch in ";\r\n"):
            raise ValueError(f"invalid cookie attribute {part!r}")
    return "; ".join(parts)


def _http_date(expires: datetime | str | int | float) -> str:
    if isinstance(expires, str):
        return expires
    if isinstance(expires, (int, float)):
        expires = datetime.fromtimestamp(expires, tz=timezone.utc)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    return format_datetime(expires.astimezone(timezone.utc), usegmt=True)
