"""CORS: answers preflight requests and adds the Access-Control-* headers to every answer.

`CorsPolicy` holds the decisions and does no I/O; `cors()` wires it into a Plugin.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from packetron.errors import ConfigError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin
from packetron.http.response import HeaderBlock

__all__ = ["cors", "CorsPolicy", "parse_origin", "add_vary"]

DEFAULT_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

# Request headers a browser may send cross-origin without asking (Fetch standard). Content-Type
# is among them only for three values, so it is always named in Allow-Headers as well.
SAFELISTED_HEADERS = ("accept", "accept-language", "content-language", "content-type")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A serialized origin (RFC 6454 §6.2): scheme "://" host [":" port], nothing after it.
_ORIGIN = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://"
                     r"([A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])"
                     r"(?::([0-9]{1,5}))?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VARY_ORIGIN = HeaderBlock([("Vary", "Origin")])
_SIMPLE_BLOCKS_MAX = 256  # origins remembered per policy (see CorsPolicy.simple_block)


def parse_origin(value: str) -> str | None:
    """The origin as a browser serializes it, or None when `value` is not an origin.

    Scheme and host are lowercased and a scheme's default port is dropped, so
    "HTTPS://Example.COM:443" and "https://example.com" compare equal; any other
    difference (scheme, host, port) makes a different origin. "null" is not parsed here.
    """
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme, host, port_text = match.groups()
    scheme = scheme.lower()
    host = host.lower()
    if port_text is None:
        return f"{scheme}://{host}"
    port = int(port_text)
    if port > 65535:
        return None
    if _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def add_vary(response: Any, token: str) -> None:
    """Add `token` to the answer's Vary header, keeping what is there already."""
    current = response.get_header("Vary")
    if not current:
        response.set_header("Vary", token)
        return
    present = {part.strip().lower() for part in current.split(",")}
    if "*" in present or token.lower() in present:
        return  # "Vary: *" already says the answer depends on everything
    response.set_header("Vary", f"{current}, {token}")


class CorsPolicy:
    """Which origins, methods and headers are allowed, and the headers that say so."""

    __slots__ = ("allow_all", "allow_null", "origins", "origin_regex", "any_method",
                 "methods", "methods_value", "reflect_headers", "allowed_headers",
                 "allow_headers_value", "credentials", "expose_value", "max_age",
                 "_simple_blocks")

    def __init__(self, allow_origins: Iterable[str] | str = ("*",),
                 allow_origin_regex: "str | re.Pattern[str] | None" = None,
                 allow_methods: Iterable[str] | str = DEFAULT_METHODS,
                 allow_headers: Iterable[str] | str = (),
                 allow_credentials: bool = False,
                 expose_headers: Iterable[str] | str = (),
                 max_age: int | None = 600) -> None:
        origins = _as_tuple(allow_origins)
        self.allow_all = "*" in origins
        self.allow_null = "null" in origins
        normalized: set[str] = set()
        for entry in origins:
            if entry in ("*", "null"):
                continue
            origin = parse_origin(entry[:-1] if entry.endswith("/") else entry)
            if origin is None:
                raise ConfigError(f"cors: {entry!r} is not an origin "
                                  "(scheme://host[:port], '*' or 'null')")
            normalized.add(origin)
        self.origins = frozenset(normalized)
        try:
            self.origin_regex = (re.compile(allow_origin_regex)
                                 if isinstance(allow_origin_regex, str) else allow_origin_regex)
        except re.error as exc:
            raise ConfigError(f"cors: allow_origin_regex does not compile: {exc}") from None

        methods = tuple(method.upper() for method in _as_tuple(allow_methods))
        for method in methods:
            if method != "*" and not _TOKEN.fullmatch(method):
                raise ConfigError(f"cors: {method!r} is not a method name")
        self.any_method = "*" in methods
        self.methods = frozenset(methods)
        self.methods_value = ", ".join(m for m in methods if m != "*")

        headers = tuple(name.lower() for name in _as_tuple(allow_headers))
        for name in (*headers, *_as_tuple(expose_headers)):
            if name != "*" and not _TOKEN.fullmatch(name):
                raise ConfigError(f"cors: {name!r} is not a header name")
        # () or "*": whatever the browser asks for is allowed and named back.
        self.reflect_headers = not headers or "*" in headers
        listed = tuple(dict.fromkeys((*headers, *SAFELISTED_HEADERS)))
        self.allowed_headers = frozenset(listed)
        self.allow_headers_value = ", ".join(listed)

        self.credentials = bool(allow_credentials)
        self.expose_value = ", ".join(_as_tuple(expose_headers))
        if max_age is not None and (not isinstance(max_age, int) or max_age < 0):
            raise ConfigError(f"cors: max_age must be a number of seconds >= 0, got {max_age!r}")
        self.max_age = max_age
        # Origin as sent -> answer_blocks(origin). A site sees few origins; the bound
        # keeps a client sending random ones harmless.
        self._simple_blocks: dict[str, tuple[HeaderBlock | None, HeaderBlock]] = {}

    def allows_origin(self, origin: str) -> bool:
        """Whether a request from `origin` (the Origin header as sent) may see answers."""
        if origin == "null":
            # Sandboxed frames, file: pages, some redirects: never allowed by "*" alone.
            return self.allow_null
        normalized = parse_origin(origin)
        if normalized is None:
            return False
        if self.allow_all or normalized in self.origins:
            return True
        return self.origin_regex is not None and self.origin_regex.fullmatch(normalized) is not None

    def _allow_origin_value(self, origin: str) -> str:
        # "*" cannot go with credentials (browsers refuse it), so the origin is named then.
        return "*" if self.allow_all and not self.credentials and origin != "null" else origin

    def simple_headers(self, origin: str) -> list[tuple[str, str]]:
        """The CORS headers of an ordinary answer to `origin`; [] when it is not allowed."""
        if not self.allows_origin(origin):
            return []
        headers = [("Access-Control-Allow-Origin", self._allow_origin_value(origin))]
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if self.expose_value:
            headers.append(("Access-Control-Expose-Headers", self.expose_value))
        return headers

    def simple_block(self, origin: str) -> HeaderBlock | None:
        """simple_headers(origin), checked once and remembered; None when not allowed."""
        return self.answer_blocks(origin)[0]

    def answer_blocks(self, origin: str) -> tuple[HeaderBlock | None, HeaderBlock]:
        """(simple_block(origin), `Vary: Origin` followed by simple_headers(origin)),
        checked once and remembered: the second sets both in one go on an answer that
        has no Vary yet."""
        blocks = self._simple_blocks
        try:
            return blocks[origin]
        except KeyError:
            pass
        headers = self.simple_headers(origin)
        pair = ((HeaderBlock(headers), HeaderBlock([*_VARY_ORIGIN.pairs, *headers]))
                if headers else (None, _VARY_ORIGIN))
        if len(blocks) >= _SIMPLE_BLOCKS_MAX:
            blocks.clear()
        blocks[origin] = pair
        return pair

    def preflight(self, origin: str, method: str,
                  requested_headers: str | None) -> tuple[list[tuple[str, str]], str | None]:
        """Decide a preflight: (headers of the 204, None), or ([], why it is refused)."""
        failures = []
        if not self.allows_origin(origin):
            failures.append("origin")
        if not self.any_method and method not in self.methods:
            failures.append("method")
        names = [name.strip().lower() for name in (requested_headers or "").split(",")]
        names = [name for name in names if name]
        if any(not _TOKEN.fullmatch(name) for name in names) or (
                not self.reflect_headers
                and any(name not in self.allowed_headers for name in names)):
            failures.append("headers")
        if failures:
            return [], "Disallowed CORS " + ", ".join(failures)
        headers = [("Access-Control-Allow-Origin", self._allow_origin_value(origin)),
                   ("Access-Control-Allow-Methods",
                    method if self.any_method else self.methods_value)]
        if self.reflect_headers:
            if names:
                headers.append(("Access-Control-Allow-Headers", ", ".join(names)))
        else:
            headers.append(("Access-Control-Allow-Headers", self.allow_headers_value))
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if self.max_age is not None:
            headers.append(("Access-Control-Max-Age", str(self.max_age)))
        return headers, None


def _as_tuple(value: Iterable[str] | str) -> tuple[str, ...]:
    # A lone string is one entry, not its characters.
    return (value,) if isinstance(value, str) else tuple(value)


def _is_preflight(request: Any) -> bool:
    # Callers test the method first: most requests are not OPTIONS, and skip the call.
    headers = request.headers
    return (request.method == "OPTIONS" and "origin" in headers
            and "access-control-request-method" in headers)


def cors(allow_origins: Iterable[str] | str = ("*",),
         allow_origin_regex: "str | re.Pattern[str] | None" = None,
         allow_methods: Iterable[str] | str = DEFAULT_METHODS,
         allow_headers: Iterable[str] | str = (),
         allow_credentials: bool = False,
         expose_headers: Iterable[str] | str = (),
         max_age: int | None = 600) -> Plugin:
    """Cross-origin resource sharing.

    A preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered by the
    plugin itself: 204 with the Access-Control-Allow-* headers, or 400 "Disallowed CORS
    origin/method/headers" with none. Every other answer, errors included, gets
    Access-Control-Allow-Origin (and -Credentials, -Expose-Headers) when its Origin is
    allowed, and `Vary: Origin` always.

    Args:
        allow_origins: origins as "scheme://host[:port]"; "*" allows every origin except
            "null", which is allowed only when listed itself.
        allow_origin_regex: origins that fully match it are allowed too (matched against
            the lowercased origin, default port dropped).
        allow_methods: methods a preflight may ask for; "*" for any.
        allow_headers: request headers a preflight may ask for (the CORS-safelisted ones
            always); () or "*" allows and names back whatever is asked.
        allow_credentials: send Access-Control-Allow-Credentials (the origin is then named
            instead of "*").
        expose_headers: response headers the page's script may read.
        max_age: seconds a browser may cache a preflight's answer; None to omit.

    Raises:
        ConfigError: an entry that is not an origin, method or header name.
    """
    policy = CorsPolicy(allow_origins, allow_origin_regex, allow_methods, allow_headers,
                        allow_credentials, expose_headers, max_age)

    def answer_preflight(request: Any, response: Any) -> bool:
        if request.method != "OPTIONS" or not _is_preflight(request):
            return False
        headers = request.headers
        allowed, refusal = policy.preflight(headers["origin"],
                                            headers["access-control-request-method"],
                                            headers.get("access-control-request-headers"))
        if refusal is not None:
            response.send_text_plain(refusal, 400)
            return True
        for name, value in allowed:
            response.set_header(name, value)
        response.send_status_code(204)
        return True

    remembered = policy._simple_blocks

    def add_headers(request: Any, response: Any) -> None:
        origin = request.headers.get("origin")
        if origin is None or (request.method == "OPTIONS" and _is_preflight(request)):
            # No origin to name; a preflight's headers were decided when it was answered.
            block, with_vary = None, _VARY_ORIGIN
        else:
            # answer_blocks' memory read here: no call for an origin seen before.
            pair = remembered.get(origin)
            block, with_vary = pair if pair is not None else policy.answer_blocks(origin)
        if response.get_header("Vary") is None:
            # With no Vary yet, setting `Vary: Origin` and then the block is setting both
            # at once: one call, one extend when the handler set none of them.
            response.set_headers(with_vary)
            return
        add_vary(response, "Origin")
        if block is not None:
            response.set_headers(block)

    # HIGH: a preflight carries no credentials, so it must be answered before an
    # authentication plugin refuses it.
    return Plugin.create(PluginPriority.HIGH, handler=answer_preflight, after=add_headers)
