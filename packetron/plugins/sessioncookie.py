"""Sessions kept in the client: a JSON dict in an HMAC-SHA256-signed cookie.

The cookie is `payload.timestamp.signature`: the session as base64url JSON, the second it
was signed, and HMAC-SHA256 over both. The data is signed, not encrypted: the client can
read it, not change it. `SessionSigner` does no I/O; `sessions()` wires it into a Plugin.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
import weakref
from typing import Any, Iterable, Literal, Mapping

from packetron.errors import ConfigError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin

__all__ = ["sessions", "SessionSigner", "MAX_COOKIE_SIZE"]

MAX_COOKIE_SIZE = 4096  # what browsers keep for one cookie; anything longer is refused
_log = logging.getLogger("packetron.plugins")
_COOKIE_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SameSite = Literal["Lax", "Strict", "None"]
_SAME_SITE: dict[str, _SameSite] = {"lax": "Lax", "strict": "Strict", "none": "None"}

Secret = str | bytes


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # validate=True: a character outside the alphabet is an error, not skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _dumps(session: Mapping[str, Any]) -> str:
    return json.dumps(session, separators=(",", ":"), ensure_ascii=False)


class SessionSigner:
    """Signs session dicts into cookie values and verifies them back.

    Args:
        secrets: one secret, or several: the first signs, every one verifies (rotation).
        max_age: seconds a value stays valid after it was signed (None: no limit).
        salt: separates these keys from other uses of the same secret.
    """

    __slots__ = ("_keys", "max_age")

    def __init__(self, secrets: Secret | Iterable[Secret], max_age: int | None,
                 salt: str = "packetron.sessions") -> None:
        if isinstance(secrets, (str, bytes)):
            listed: list[Any] = [secrets]
        elif isinstance(secrets, Iterable):
            listed = list(secrets)
        else:
            raise ConfigError("sessions: secret must be a str, bytes or a list of them")
        if not listed:
            raise ConfigError("sessions: at least one secret is needed")
        keys = []
        for secret in listed:
            if isinstance(secret, str):
                secret = secret.encode("utf-8")
            if not isinstance(secret, bytes) or not secret:
                raise ConfigError("sessions: each secret must be a non-empty str or bytes")
            # A key per purpose: the same secret used elsewhere signs nothing valid here.
            keys.append(hmac.new(secret, salt.encode("utf-8"), hashlib.sha256).digest())
        self._keys = tuple(keys)
        if max_age is not None and (not isinstance(max_age, int) or max_age <= 0):
            raise ConfigError(f"sessions: max_age must be seconds > 0 or None, got {max_age!r}")
        self.max_age = max_age

    def _signature(self, key: bytes, signed: bytes) -> bytes:
        return hmac.new(key, signed, hashlib.sha256).digest()

    def sign(self, session: Mapping[str, Any], now: float) -> str:
        """The cookie value of `session`, signed at `now` with the first secret.

        Raises:
            TypeError: the session holds something JSON cannot represent.
        """
        payload = _b64encode(_dumps(session).encode("utf-8"))
        signed = f"{payload}.{int(now)}"
        return f"{signed}.{_b64encode(self._signature(self._keys[0], signed.encode('ascii')))}"

    def load(self, value: str, now: float) -> tuple[dict[str, Any], int, bool] | None:
        """Verify a cookie value: (session, the second it was signed, whether it was signed
        with the first secret), or None when it is oversized, garbled, forged or expired."""
        if len(value) > MAX_COOKIE_SIZE or not value.isascii():
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
            return None
        payload, stamp, signature = parts
        try:
            given = _b64decode(signature)
        except (binascii.Error, ValueError):
            return None
        signed = f"{payload}.{stamp}".encode("ascii")
        # Every key is tried, so the time taken does not tell which one matched.
        matches = [hmac.compare_digest(self._signature(key, signed), given) for key in self._keys]
        if not any(matches):
            return None
        issued = int(stamp)
        if self.max_age is not None and now - issued > self.max_age:
            return None  # checked here: the cookie's own Max-Age is the client's to ignore
        try:
            session = json.loads(_b64decode(payload).decode("utf-8"))
        except (binascii.Error, ValueError):
            return None  # signed but not ours to read (e.g. another salt's format)
        if not isinstance(session, dict):
            return None
        return session, issued, matches[0]


class _Loaded:
    """What the request brought: kept per request to decide what the answer must write."""

    __slots__ = ("had_cookie", "valid", "json", "issued", "current_key")

    def __init__(self, had_cookie: bool, valid: bool, json_text: str, issued: int,
                 current_key: bool) -> None:
        self.had_cookie = had_cookie
        self.valid = valid
        self.json = json_text
        self.issued = issued
        self.current_key = current_key


def sessions(secret: Secret | Iterable[Secret], cookie_name: str = "session",
             max_age: int | None = 14 * 24 * 3600, https_only: bool = False,
             same_site: str | None = "lax") -> Plugin:
    """Signed-cookie sessions: `request.session` is a dict, saved when it changes.

    A tampered, garbled, oversized (over 4096 bytes) or expired cookie is an empty
    session, never an error. The cookie is written (HttpOnly, Max-Age, SameSite, Secure
    when `https_only`) when the session changed, when it was signed with an older secret,
    and when more than half of `max_age` has passed (so an active session does not
    expire); it is cleared when the session became empty. A 5xx answer saves nothing: the
    handler failed midway, and the session it left may be half changed.

    Args:
        secret: str or bytes, or a list of them: the first signs, all verify.
        max_age: seconds a session lives after it was last written, checked on the server
            from the signed timestamp; None for a browser-session cookie with no limit.
        same_site: "lax", "strict", "none" (needs https_only) or None to omit it.

    Raises:
        ConfigError: no secret, an empty one, a bad cookie name or same_site.
    """
    if not _COOKIE_NAME.fullmatch(cookie_name):
        raise ConfigError(f"sessions: {cookie_name!r} is not a cookie name")
    site: _SameSite | None = None
    if same_site is not None:
        site = _SAME_SITE.get(same_site.lower())
        if site is None:
            raise ConfigError(f"sessions: same_site must be lax, strict, none or None, "
                              f"not {same_site!r}")
        if site == "None" and not https_only:
            raise ConfigError("sessions: same_site='none' needs https_only=True "
                              "(browsers drop such cookies otherwise)")
    signer = SessionSigner(secret, max_age, salt=f"packetron.sessions:{cookie_name}")
    refresh_after = None if max_age is None else max_age // 2
    # Per request, without adding a private attribute to it; gone with the request.
    loaded_by_request: "weakref.WeakKeyDictionary[Any, _Loaded]" = weakref.WeakKeyDictionary()

    def load(request: Any, response: Any) -> bool:
        value = request.get_cookie(cookie_name)
        result = signer.load(value, time.time()) if value is not None else None
        if result is None:
            request.session = {}
            loaded_by_request[request] = _Loaded(value is not None, False, "{}", 0, True)
        else:
            session, issued, current_key = result
            request.session = session
            loaded_by_request[request] = _Loaded(True, True, _dumps(session), issued,
                                                 current_key)
        return False

    def save(request: Any, response: Any) -> None:
        loaded = loaded_by_request.pop(request, None)
        if loaded is None:
            return  # the handler never ran (the server answered itself): nothing changed
        if response.status >= 500:
            return  # the handler failed midway: its changes may be half made, keep the old
        session = getattr(request, "session", None)
        if not session:
            if loaded.had_cookie:
                response.clear_cookie(cookie_name, path="/")
            return
        try:
            text = _dumps(session)
        except (TypeError, ValueError) as exc:
            _log.error("%s %s: the session was not saved, it is not JSON: %s",
                       request.method, request.path, exc)
            return
        now = time.time()
        stale = refresh_after is not None and now - loaded.issued > refresh_after
        if text == loaded.json and loaded.valid and loaded.current_key and not stale:
            return  # unchanged: no Set-Cookie at all
        value = signer.sign(session, now)
        if len(value) + len(cookie_name) + 1 > MAX_COOKIE_SIZE:
            _log.error("%s %s: the session was not saved, its cookie would be %d bytes "
                       "(browsers keep %d)", request.method, request.path,
                       len(value) + len(cookie_name) + 1, MAX_COOKIE_SIZE)
            return
        response.set_cookie(cookie_name, value, max_age=max_age, path="/", http_only=True,
                            secure=https_only, same_site=site)

    # HIGH: plugins that authenticate from the session run after it is loaded.
    return Plugin.create(PluginPriority.HIGH, handler=load, after=save)
