"""A registered route: handler, body mode, plugins and limits, decided once at registration."""
from __future__ import annotations

import inspect
from enum import IntEnum
from typing import Any, Callable, Iterable, Protocol

from packetron.errors import ConfigError
from packetron.flags import HandlerFlags, RequestMethod
from packetron.http.clusterlimit import ClusterRateLimiter
from packetron.http.limits import FixedWindowRateLimiter
from packetron.http.plugins import Plugin, PluginManager
from packetron.http.router import normalize_path
from packetron.options import ServerOptions


__all__ = ["Route", "BodyMode", "body_mode_for", "mode_for_content_type",
           "mode_for_content_type_bytes", "MULTIPART_OPTION_NAMES"]

Handler = Callable[[Any, Any], Any]


class RouteOwner(Protocol):
    """What a route needs of the application it is registered on."""

    config: ServerOptions

    def remove_route(self, route: "Route") -> bool: ...

    def global_data_store(self) -> Any: ...

MULTIPART_OPTION_NAMES = frozenset({
    "max_file_size", "max_files", "max_fields", "max_field_size", "max_field_name_size",
    "max_parts", "max_header_pairs", "file_storage_directory", "on_file", "on_limit",
})


class BodyMode(IntEnum):
    RAW = 0        # no body flag: get_body() gives the bytes
    DISCARD = 1    # DONT_USE_BODY: never buffered
    JSON = 2
    FORM = 3       # urlencoded in memory, or multipart with file parts drained
    XML = 4
    TEXT = 5
    MULTIPART = 6  # fields in memory, files streamed to disk
    LEGACY_UPLOAD = 7  # FILE_UPLOAD: get_files() -> {field: path}
    AUTO = 8       # AUTO_BODY: one of the above, chosen per request by its Content-Type
    STREAM = 9     # STREAM_BODY: request.stream() yields the body as it arrives


_BODY_FLAGS: tuple[tuple[HandlerFlags, BodyMode], ...] = (
    (HandlerFlags.DONT_USE_BODY, BodyMode.DISCARD),
    (HandlerFlags.JSON_BODY, BodyMode.JSON),
    (HandlerFlags.FORM_DATA, BodyMode.FORM),
    (HandlerFlags.XML_BODY, BodyMode.XML),
    (HandlerFlags.PLAIN_TEXT_BODY, BodyMode.TEXT),
    (HandlerFlags.MULTIPART_FORM_DATA, BodyMode.MULTIPART),
    (HandlerFlags.FILE_UPLOAD, BodyMode.LEGACY_UPLOAD),
    (HandlerFlags.AUTO_BODY, BodyMode.AUTO),
    (HandlerFlags.STREAM_BODY, BodyMode.STREAM),
)
def mode_for_content_type(content_type: str | None) -> BodyMode:
    """The body mode AUTO_BODY picks for a buffered body: JSON for application/json and
    any +json type, a form for urlencoded, XML for application/xml, text/xml and +xml,
    text for any other text/*, else raw bytes. (Multipart streams, decided earlier.)"""
    if not content_type:
        return BodyMode.RAW
    essence = content_type.partition(";")[0].strip().lower()
    if essence == "application/json" or essence.endswith("+json"):
        return BodyMode.JSON
    if essence == "application/x-www-form-urlencoded":
        return BodyMode.FORM
    if essence in ("application/xml", "text/xml") or essence.endswith("+xml"):
        return BodyMode.XML
    if essence.startswith("text/"):
        return BodyMode.TEXT
    return BodyMode.RAW


# Content-Type values seen on AUTO_BODY routes -> their mode: clients send a handful of
# distinct values, so the per-request decision is one dict lookup. Bounded, since the
# values come from clients.
_AUTO_MODES: dict[bytes, BodyMode] = {}
_AUTO_MODES_MAX = 256


def mode_for_content_type_bytes(content_type: bytes | None) -> BodyMode:
    """mode_for_content_type() of a raw header value, remembered per distinct value."""
    if content_type is None:
        return BodyMode.RAW
    mode = _AUTO_MODES.get(content_type)
    if mode is None:
        mode = mode_for_content_type(content_type.decode("latin-1"))
        if len(_AUTO_MODES) < _AUTO_MODES_MAX:
            _AUTO_MODES[content_type] = mode
    return mode


STREAMING_MODES = frozenset({BodyMode.MULTIPART, BodyMode.LEGACY_UPLOAD, BodyMode.STREAM})
# Modes that decide per request whether the body streams (a multipart body does).
PER_REQUEST_MODES = frozenset({BodyMode.FORM, BodyMode.AUTO})


def body_mode_for(flags: int) -> BodyMode:
    """The one body mode a route's flags ask for.

    Raises:
        ConfigError: two body modes at once (the result would depend on flag order).
    """
    chosen = [mode for flag, mode in _BODY_FLAGS if flags & flag]
    if len(chosen) > 1:
        raise ConfigError(f"flags choose {len(chosen)} body modes "
                          f"({', '.join(m.name for m in chosen)}); choose one")
    return chosen[0] if chosen else BodyMode.RAW


class Route:
    """One (method, path) registration. `route.remove()` unregisters it, even while serving."""

    __slots__ = ("method", "method_name", "path", "key", "handler", "is_async", "flags", "body_mode",
                 "streams", "needs_task", "buffered_cap", "plain", "plain_sync", "auto_body",
                 "bodiless_inline",
                 "plugins", "multipart_options", "rate_limiter", "max_request_size_in_bytes",
                 "local_plugins_only", "_app", "__weakref__")

    # The application's handler of a WebSocket route (packetron.http.websocket.route sets
    # it in a subclass slot); None for every other route, read by the protocol's routing.
    websocket: Any = None

    def __init__(
        self,
        app: RouteOwner | None,
        method: int,
        path: str,
        handler: Handler,
        *,
        flags: int = 0,
        plugins: Iterable[Plugin] = (),
        multipart_options: dict[str, Any] | None = None,
        max_requests_per_second: int | None = None,
        max_request_size_in_bytes: int | None = None,
        rate_limit_scope: str = "worker",
    ) -> None:
        if not callable(handler):
            raise ConfigError(f"handler for {path!r} is not callable: {handler!r}")
        self.method = RequestMethod(method)
        self.method_name = self.method.name  # Request.method of every request it serves
        self.path = path
        self.key = normalize_path(path)
        self.handler = handler
        self.is_async = inspect.iscoroutinefunction(handler)
        self.flags = HandlerFlags(flags)
        self.body_mode = body_mode_for(flags)
        # Upload routes always stream; FORM_DATA streams only for multipart bodies.
        self.streams = self.body_mode in STREAMING_MODES
        # Decided once so the per-request path knows whether it may answer without a task.
        self.needs_task = self.is_async or self.streams
        self.local_plugins_only = bool(flags & HandlerFlags.LOCAL_PLUGINS_ONLY)
        self.plain_sync = False
        self.bodiless_inline = False
        self.plugins = PluginManager(on_change=self._update_plain_sync)
        for plugin in plugins:
            self.plugins.add(plugin)
        if multipart_options is not None:
            unknown = set(multipart_options) - MULTIPART_OPTION_NAMES
            if unknown:
                raise ConfigError(f"unknown multipart option(s): {', '.join(sorted(unknown))}")
            # Bad values fail here, at registration, rather than as a 500 per request.
            from packetron.http.multipart import validate_multipart_options

            multipart_options = validate_multipart_options(multipart_options)  # type: ignore[assignment]
        self.multipart_options = multipart_options
        if rate_limit_scope not in ("worker", "cluster"):
            raise ConfigError(f"rate_limit_scope must be 'worker' or 'cluster', "
                              f"got {rate_limit_scope!r}")
        self.rate_limiter: Any = None
        if max_requests_per_second is not None:
            if rate_limit_scope == "cluster":
                if app is None or not getattr(app, "global_data_enabled", True):
                    raise ConfigError("a cluster-wide rate limit counts in the global data "
                                      "store, which this server does not have "
                                      "(ServerFlags.NO_GLOBAL_DATA)")
                self.rate_limiter = ClusterRateLimiter(
                    max_requests_per_second, f"{self.method.name} /{self.key}",
                    app.global_data_store,
                    fail_open=app.config.rate_limit_store_failure == "open")
            else:
                self.rate_limiter = FixedWindowRateLimiter(max_requests_per_second)
        if max_request_size_in_bytes is not None and (
                not isinstance(max_request_size_in_bytes, int) or max_request_size_in_bytes < 0):
            raise ConfigError("max_request_size_in_bytes must be a non-negative integer")
        self.max_request_size_in_bytes = max_request_size_in_bytes
        self._app = app
        # The body cap when the body is decoded in memory: the route's own, or the server's
        # max_buffered_body_size_in_bytes. Streaming routes are capped by their own only.
        if self.streams:
            self.buffered_cap = max_request_size_in_bytes
        elif max_request_size_in_bytes is not None or self.body_mode is BodyMode.DISCARD:
            self.buffered_cap = max_request_size_in_bytes
        else:
            self.buffered_cap = (app.config.max_buffered_body_size_in_bytes
                                 if app is not None else None)
        # A plain route needs no per-request decision beyond the body cap: no rate limit,
        # no body that may or may not stream, nothing discarded.
        # AUTO_BODY counts as plain: only a multipart body (decided per request, from
        # the Content-Type the protocol already holds) takes it off that path.
        self.auto_body = self.body_mode is BodyMode.AUTO
        self.plain = (self.rate_limiter is None and not self.streams
                      and self.body_mode is not BodyMode.FORM
                      and self.body_mode is not BodyMode.DISCARD)
        self._update_plain_sync()

    def _update_plain_sync(self) -> None:
        """bodiless_inline: a request without a body is answered inside the parser
        callbacks (a sync handler, no plugins of its own, no rate limit, not HEAD, whose
        answer has no body); the body mode decides nothing then, so DONT_USE_BODY routes
        (static files among them) qualify. plain_sync: the same for any request, which
        takes a plain route too. Kept current as plugins are added or removed; the
        server's global plugins are checked per request."""
        self.bodiless_inline = (not self.needs_task and not self.plugins.plugins
                                and getattr(self, "rate_limiter", None) is None
                                and self.method is not RequestMethod.HEAD)
        self.plain_sync = self.bodiless_inline and getattr(self, "plain", False)

    def remove(self) -> bool:
        """Unregister this route; True if it was still registered."""
        if self._app is None:
            return False
        removed = self._app.remove_route(self)
        self._app = None
        return removed

    def detach(self) -> None:
        """Forget the application (this route was replaced by another on its path)."""
        self._app = None

    def __repr__(self) -> str:
        return f"Route({self.method.name} /{self.key} -> {getattr(self.handler, '__name__', self.handler)!r})"
