"""The HTTP application: routes, plugins, static files and options — no processes.

`packetron.server.Packetron` builds on it to bind ports and run workers; a serving loop
(packetron.http.runtime) serves it on a socket it is given.
"""
from __future__ import annotations

import threading
import types
from typing import Any, Callable, Iterable, Protocol, TypeVar, overload

from packetron.errors import ConfigError, GlobalDataDisabled
from packetron.globaldata import GlobalData
from packetron.flags import RequestMethod
from packetron.http.channels import Channels, LocalChannels
from packetron.http.channels.redis import RedisChannels, is_redis_url
from packetron.http.errorpages import ErrorHandler
from packetron.http.lifespan import Hook, Lifespan
from packetron.http.plugins import Plugin, PluginManager
from packetron.http.route import Route
from packetron.http.router import Router
from packetron.http.runtime import build_screen, build_tls
from packetron.http.state import ServerState
from packetron.options import ServerOptions

__all__ = ["Application"]

# A handler's own type: decorators give back exactly the function they were given.
H = TypeVar("H", bound=Callable[..., Any])


class RouteRegistrar(Protocol):
    """`server.get` and its siblings: `(path, handler)` registers and returns the Route;
    `(path)` returns a decorator that registers and gives the function back unchanged."""

    @overload
    def __call__(self, route_path: str, handler: None = None,
                 **options: Any) -> Callable[[H], H]: ...

    @overload
    def __call__(self, route_path: str, handler: H, **options: Any) -> Route: ...


class _Shorthand:
    """A route method with the HTTP method fixed (one descriptor instead of seven copies)."""

    def __init__(self, method: RequestMethod) -> None:
        self.method = method
        self.__doc__ = f"handle(RequestMethod.{method.name}, route_path, handler, **options)"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, app: None, owner: type) -> "_Shorthand": ...

    @overload
    def __get__(self, app: "Application", owner: type) -> RouteRegistrar: ...

    def __get__(self, app: "Application | None", owner: type) -> Any:
        if app is None:
            return self
        method = self.method

        def register(route_path: str, handler: Any = None, **options: Any) -> Any:
            return app.handle(method, route_path, handler, **options)

        register.__name__ = self.name
        register.__doc__ = self.__doc__
        return register


class Application:
    """Routes, plugins and options of one HTTP server.

    Args:
        plugins: global plugins, run before every route's own.
        **options: limits and behaviour, see packetron.options.ServerOptions.

    Raises:
        ConfigError: an unknown or invalid option.
    """

    def __init__(self, plugins: Iterable[Plugin] = (), **options: Any) -> None:
        # `config`, not `options`: server.options(...) is the OPTIONS-route shorthand.
        self.config = ServerOptions.from_kwargs(options)
        build_screen(self.config)  # a bad network or cap fails here, not in a worker
        if isinstance(self.config.tls, dict):
            build_tls(self.config)  # likewise a missing certificate
        self.router: Router[Route] = Router()
        self._global_plugins = PluginManager()
        for plugin in plugins:
            self._global_plugins.add(plugin)
        self._lock = threading.Lock()
        self._on_routes_changed: Callable[[], None] | None = None
        self.global_data_enabled = True
        self._global_data: GlobalData | None = None
        self.lifespan = Lifespan()
        # on_error registrations: an HTTP status (int) or an exception class -> renderer.
        self.error_handlers: dict[int | type[BaseException], ErrorHandler] = {}
        # A per-process namespace for what startup hooks open (pools, clients).
        self.state = types.SimpleNamespace()

    # ------------------------------------------------------------ global data

    def global_data_store(self) -> GlobalData:
        """The store behind set/get/update_global_data, opened on first use.

        Raises:
            GlobalDataDisabled: the server was created with ServerFlags.NO_GLOBAL_DATA.
        """
        if not self.global_data_enabled:
            raise GlobalDataDisabled(
                "global data is disabled: this server was created with ServerFlags.NO_GLOBAL_DATA")
        if self._global_data is None:
            self._global_data = GlobalData(url=self.config.global_data_url,
                                           path=self.config.global_data_path)
        return self._global_data

    def set_global_data(self, key: str, value: Any) -> None:
        """Store a JSON value visible to every worker (and every server on this machine)."""
        self.global_data_store().set_global_data(key, value)

    def get_global_data(self, key: str, default: Any = None) -> Any:
        return self.global_data_store().get_global_data(key, default)

    def update_global_data(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace the value with fn(current or default); returns the new value."""
        return self.global_data_store().update_global_data(key, fn, default)

    def _close_global_data(self) -> None:
        store, self._global_data = self._global_data, None
        if store is not None:
            store.close()

    # ------------------------------------------------------------ errors

    def on_error(self, status_or_exception: int | type[BaseException],
                 fn: ErrorHandler | None = None) -> Any:
        """Render the answers of one status (404, 405, 413, 429, 500, ...) or one exception
        class with `fn(request, response, exc)` (sync or async).

        `on_error(404)` renders every 404, whether the router or an HttpError produced it;
        an exception class also matches its subclasses. A renderer that raises (or sends
        nothing) falls back to the plain answer. Usable as a decorator.

        Raises:
            ConfigError: neither an HTTP error status nor an exception class.
        """
        key = status_or_exception
        if isinstance(key, int) and not isinstance(key, bool):
            if not 400 <= key <= 599:
                raise ConfigError(f"on_error takes an error status 400..599, got {key}")
        elif not (isinstance(key, type) and issubclass(key, BaseException)):
            raise ConfigError(f"on_error takes a status or an exception class, got {key!r}")

        def register(handler: ErrorHandler) -> ErrorHandler:
            if not callable(handler):
                raise ConfigError(f"an error handler must be callable, got {handler!r}")
            self.error_handlers[key] = handler
            return handler

        return register(fn) if fn is not None else register

    # ------------------------------------------------------------ lifespan

    def on_startup(self, fn: Hook) -> Hook:
        """Register `fn(server)` (sync or async) to run in every serving process before it
        accepts a connection; usable as a decorator. A hook that raises makes start() /
        run() fail with that error."""
        return self.lifespan.add_startup(fn)

    def on_shutdown(self, fn: Hook) -> Hook:
        """Register `fn(server)` to run in every serving process at stop, after its
        in-flight requests finished; usable as a decorator."""
        return self.lifespan.add_shutdown(fn)

    # ------------------------------------------------------------ routes

    @overload
    def handle(self, method: int = ..., route_path: str = ..., handler: None = None,
               *, plugins: Iterable[Plugin] = ...,
               flags: int = ..., multipart_options: dict[str, Any] | None = ...,
               max_requests_per_second: int | None = ...,
               max_request_size_in_bytes: int | None = ...,
               rate_limit_scope: str = ...) -> Callable[[H], H]: ...

    @overload
    def handle(self, method: int, route_path: str, handler: H,
               *, plugins: Iterable[Plugin] = ...,
               flags: int = ..., multipart_options: dict[str, Any] | None = ...,
               max_requests_per_second: int | None = ...,
               max_request_size_in_bytes: int | None = ...,
               rate_limit_scope: str = ...) -> Route: ...

    def handle(self, method: int = RequestMethod.GET, route_path: str = "api/status",
               handler: Callable[..., Any] | None = None, *, plugins: Iterable[Plugin] = (),
               flags: int = 0, multipart_options: dict[str, Any] | None = None,
               max_requests_per_second: int | None = None,
               max_request_size_in_bytes: int | None = None,
               rate_limit_scope: str = "worker") -> Route | Callable[[H], H]:
        """Register `handler(request, response)` for an exact (method, path).

        Returns:
            The Route when `handler` is given; otherwise a decorator that registers the
            function and returns it unchanged.

        Raises:
            ConfigError: invalid flags or options.
        """
        def register(fn: Callable[..., Any]) -> Route:
            route = Route(self, method, route_path, fn, flags=flags, plugins=plugins,
                          multipart_options=multipart_options,
                          max_requests_per_second=max_requests_per_second,
                          max_request_size_in_bytes=max_request_size_in_bytes,
                          rate_limit_scope=rate_limit_scope)
            self._add_route(route)
            return route

        if handler is not None:
            return register(handler)

        def decorator(fn: H) -> H:
            register(fn)
            return fn

        return decorator

    def websocket(self, route_path: str, handler: Callable[..., Any] | None = None, *,
                  plugins: Iterable[Plugin] = (), flags: int = 0,
                  max_requests_per_second: int | None = None,
                  rate_limit_scope: str = "worker") -> Any:
        """Register `async def handler(ws, request)` for WebSocket upgrades of GET `route_path`
        (exact or pattern path). Plugins run before the upgrade; one that short-circuits
        refuses it with its answer.

        Returns:
            The Route when `handler` is given; otherwise a decorator that registers the
            function and returns it unchanged.

        Raises:
            ConfigError: the handler is not an async function, or flags other than
                LOCAL_PLUGINS_ONLY.
        """
        from packetron.http.websocket.route import WebSocketRoute

        def register(fn: Callable[..., Any]) -> Route:
            route = WebSocketRoute(self, route_path, fn, plugins=plugins, flags=flags,
                                   max_requests_per_second=max_requests_per_second,
                                   rate_limit_scope=rate_limit_scope)
            self._add_route(route)
            return route

        if handler is not None:
            return register(handler)

        def decorator(fn: H) -> H:
            register(fn)
            return fn

        return decorator

    # ------------------------------------------------------------ channels

    _channels: Channels | None = None

    @property
    def channels(self) -> Channels:
        """Publish/subscribe between handlers: `await channels.publish(name, message)`,
        `async for message in channels.subscribe(name)` (see packetron.http.channels)."""
        channels = self._channels
        if channels is None:
            if is_redis_url(self.config.global_data_url):
                assert self.config.global_data_url is not None
                channels = RedisChannels(self.config.global_data_url)
            else:
                channels = LocalChannels()
            self._channels = channels
        return channels

    def use_channels(self, channels: Channels) -> None:
        """Serve `server.channels` with another backend (the server's workers use one
        that reaches every worker process)."""
        self._channels = channels

    async def close_channels(self) -> None:
        """Release what the channels backend opened on the running loop (at its stop)."""
        channels = self._channels
        if channels is not None:
            await channels.close()

    def _add_route(self, route: Route) -> None:
        with self._lock:
            replaced = self.router.add(route.method, route.path, route)
            if replaced is not None:
                replaced.detach()
            self._routes_changed()

    def remove_route(self, route: Route) -> bool:
        """Unregister `route` (what `route.remove()` calls); True if it was registered."""
        with self._lock:
            removed = self.router.remove(route.method, route.path, route)
            if removed:
                self._routes_changed()
            return removed

    def _routes_changed(self) -> None:
        listener = self._on_routes_changed
        if listener is not None:
            listener()

    def set_routes_listener(self, listener: Callable[[], None] | None) -> None:
        """Call `listener()` after every route change (the server redeploys its workers)."""
        self._on_routes_changed = listener

    def detach_after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent may have held it while forking) and
        no routes listener, so a route registered in a child stays in that child."""
        self._lock = threading.Lock()
        self._on_routes_changed = None

    # server.get(path) / server.get(path, handler) ... : handle() with the method fixed.
    get = _Shorthand(RequestMethod.GET)
    post = _Shorthand(RequestMethod.POST)
    put = _Shorthand(RequestMethod.PUT)
    delete = _Shorthand(RequestMethod.DELETE)
    head = _Shorthand(RequestMethod.HEAD)
    patch = _Shorthand(RequestMethod.PATCH)
    options = _Shorthand(RequestMethod.OPTIONS)

    @property
    def routes(self) -> list[Route]:
        return [route for _, _, route in self.router.entries()]

    # ------------------------------------------------------------ plugins

    def insert_global_plugin(self, plugin: Plugin) -> None:
        """Run `plugin` before every route (except LOCAL_PLUGINS_ONLY routes)."""
        self._global_plugins.add(plugin)

    @property
    def global_plugins(self) -> PluginManager:
        return self._global_plugins

    # ------------------------------------------------------------ static files

    def serve(self, directory: str, path_prefix: str = "", flags: int = 0,
              plugins: Iterable[Plugin] = (), max_requests_per_second: int | None = None,
              max_request_size_in_bytes: int | None = None, **kwargs: Any) -> list[Route]:
        """Serve every file under `directory` as its own GET route (see README).

        Keyword options: `include_dotfiles=False`, `rate_limit_scope="worker" | "cluster"`.
        """
        from packetron.http import static

        return static.serve_directory(self, directory, path_prefix, flags, plugins,
                                      max_requests_per_second, max_request_size_in_bytes,
                                      **kwargs)

    def serve_file(self, route_path: str, file_path: str, flags: int = 0,
                   plugins: Iterable[Plugin] = (), max_requests_per_second: int | None = None,
                   max_request_size_in_bytes: int | None = None, *,
                   rate_limit_scope: str = "worker") -> Route:
        """Serve one file at `route_path`."""
        from packetron.http import static

        return static.serve_single_file(self, route_path, file_path, flags, plugins,
                                        max_requests_per_second=max_requests_per_second,
                                        max_request_size_in_bytes=max_request_size_in_bytes,
                                        rate_limit_scope=rate_limit_scope)

    def unserve(self, directory: str, path_prefix: str = "") -> int:
        """Remove the routes `serve(directory, path_prefix)` added; returns how many."""
        from packetron.http import static

        return static.unserve_directory(self, directory, path_prefix)

    def serving_state(self) -> ServerState:
        """A fresh per-loop state over this application's router, plugins and options."""
        return ServerState(self.router, self._global_plugins, self.config, app=self)
