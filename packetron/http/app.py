"""Packetron: the server object users build routes on."""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, Iterable, TypeVar

from packetron.errors import ConfigError, GlobalDataDisabled, PacketronError
from packetron.flags import RequestMethod, ServerFlags
from packetron.http.plugins import Plugin, PluginManager
from packetron.http.route import Route
from packetron.http.router import Router
from packetron.http.runtime import ServingLoop, build_screen, build_tls, new_event_loop
from packetron.http.state import ServerState
from packetron.log import server_logger, silence_internal_logs
from packetron.net.listener import bind_tcp_socket
from packetron.options import ServerOptions

__all__ = ["Packetron"]

F = TypeVar("F", bound=Callable[..., Any])


class Packetron:
    """An HTTP server with exact-match routes.

    Args:
        port: TCP port; 0 binds an ephemeral one (read it from `server.port`).
        host: address to bind.
        workers: processes serving the port; 1 serves in the calling process.
        flags: ServerFlags.
        plugins: global plugins, run before every route's own.
        **options: limits and behaviour, see packetron.options.ServerOptions.

    Raises:
        ConfigError: an unknown or invalid option.
    """

    def __init__(self, port: int = 3000, host: str = "0.0.0.0", workers: int | None = None,
                 flags: int = 0, plugins: Iterable[Plugin] = (), **options: Any) -> None:
        # `config`, not `options`: server.options(...) is the OPTIONS-route shorthand.
        self.config = ServerOptions.from_kwargs(options)
        build_screen(self.config)  # a bad network or cap fails here, not in a worker
        if isinstance(self.config.tls, dict):
            build_tls(self.config)  # likewise a missing certificate
        self.flags = ServerFlags(flags)
        self.host = host
        self.requested_port = port
        self.workers = int(workers) if workers is not None else (os.cpu_count() or 1)
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers!r}")
        self.port: int | None = None
        self._router: Router[Route] = Router()
        self._global_plugins = PluginManager()
        for plugin in plugins:
            self._global_plugins.add(plugin)
        self._serving: ServingLoop | None = None
        self._supervisor: Any = None
        self._global_data: Any = None
        self._lock = threading.Lock()
        if self.flags & ServerFlags.SILENCE_INTERNAL_LOGS:
            silence_internal_logs()
        if self.flags & ServerFlags.START_IMMEDIATELY:
            self.start()

    # ------------------------------------------------------------ routes

    def handle(self, method: int = RequestMethod.GET, route_path: str = "api/status",
               handler: Callable[..., Any] | None = None, *, plugins: Iterable[Plugin] = (),
               flags: int = 0, multipart_options: dict[str, Any] | None = None,
               max_requests_per_second: int | None = None,
               max_request_size_in_bytes: int | None = None) -> Any:
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
                          max_request_size_in_bytes=max_request_size_in_bytes)
            self._add_route(route)
            return route

        if handler is not None:
            return register(handler)

        def decorator(fn: F) -> F:
            register(fn)
            return fn

        return decorator

    def _add_route(self, route: Route) -> None:
        with self._lock:
            replaced = self._router.add(route.method, route.path, route)
            if replaced is not None:
                replaced._server = None
            self._routes_changed()

    def _remove_route(self, route: Route) -> bool:
        with self._lock:
            removed = self._router.remove(route.method, route.path, route)
            if removed:
                self._routes_changed()
            return removed

    def _routes_changed(self) -> None:
        if self._supervisor is not None:
            self._supervisor.routes_changed()

    def _shorthand(method: RequestMethod) -> Callable[..., Any]:  # type: ignore[misc]
        def shorthand(self: "Packetron", route_path: str, handler: Callable[..., Any] | None = None,
                      **kwargs: Any) -> Any:
            return self.handle(method, route_path, handler, **kwargs)

        shorthand.__name__ = method.name.lower()
        shorthand.__doc__ = f"handle(RequestMethod.{method.name}, route_path, ...)"
        return shorthand

    get = _shorthand(RequestMethod.GET)
    post = _shorthand(RequestMethod.POST)
    put = _shorthand(RequestMethod.PUT)
    delete = _shorthand(RequestMethod.DELETE)
    head = _shorthand(RequestMethod.HEAD)
    patch = _shorthand(RequestMethod.PATCH)
    options = _shorthand(RequestMethod.OPTIONS)
    del _shorthand

    @property
    def routes(self) -> list[Route]:
        return [route for _, _, route in self._router.entries()]

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
        """Serve every file under `directory` as its own GET route (see README)."""
        from packetron.http import static

        return static.serve_directory(self, directory, path_prefix, flags, plugins,
                                      max_requests_per_second, max_request_size_in_bytes,
                                      **kwargs)

    def serve_file(self, route_path: str, file_path: str, flags: int = 0,
                   plugins: Iterable[Plugin] = (), max_requests_per_second: int | None = None,
                   max_request_size_in_bytes: int | None = None) -> Route:
        """Serve one file at `route_path`."""
        from packetron.http import static

        return static.serve_single_file(self, route_path, file_path, flags, plugins,
                                        max_requests_per_second=max_requests_per_second,
                                        max_request_size_in_bytes=max_request_size_in_bytes)

    def unserve(self, directory: str, path_prefix: str = "") -> int:
        """Remove the routes `serve(directory, path_prefix)` added; returns how many."""
        from packetron.http import static

        return static.unserve_directory(self, directory, path_prefix)

    # ------------------------------------------------------------ global data

    def _store(self) -> Any:
        if self.flags & ServerFlags.NO_GLOBAL_DATA:
            raise GlobalDataDisabled(
                "global data is disabled: this server was created with ServerFlags.NO_GLOBAL_DATA")
        if self._global_data is None:
            # globaldata is a leaf module (stdlib + errors only), so importing it here does
            # not make http/ depend on a higher layer.
            from packetron.globaldata import GlobalData

            self._global_data = GlobalData(url=self.config.global_data_url,
                                           path=self.config.global_data_path)
        return self._global_data

    def set_global_data(self, key: str, value: Any) -> None:
        """Store a JSON value visible to every worker (and every server on this machine)."""
        self._store().set_global_data(key, value)

    def get_global_data(self, key: str, default: Any = None) -> Any:
        return self._store().get_global_data(key, default)

    def update_global_data(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace the value with fn(current or default); returns the new value."""
        return self._store().update_global_data(key, fn, default)

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL of the bound port, e.g. "http://127.0.0.1:34567"."""
        if self.port is None:
            raise PacketronError("the server is not started")
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.config.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._serving is not None or self._supervisor is not None

    def _state(self) -> ServerState:
        return ServerState(self._router, self._global_plugins, self.config)

    def _bind(self) -> Any:
        sock = bind_tcp_socket(self.host, self.requested_port,
                               reuse_port=self.config.reuse_port,
                               try_next_port=bool(self.flags & ServerFlags.TRY_NEXT_PORT))
        self.port = sock.getsockname()[1]
        if self.config.open_firewall:
            from packetron.supervisor import open_firewall_port  # OS integration, above http/

            open_firewall_port(self.port)
        return sock

    def start(self) -> "Packetron":
        """Start serving; returns once the port accepts connections.

        With workers=1 the loop runs in a background thread of this process; otherwise
        worker processes are forked.
        """
        if self.is_running:
            return self
        if self.workers > 1:
            from packetron.supervisor import Supervisor  # processes sit above http/

            self._supervisor = Supervisor(self)
            try:
                self._supervisor.start()
            except BaseException:
                self._supervisor = None  # not running: a later start() may try again
                raise
            return self
        sock = self._bind()
        serving = ServingLoop(self._state(), sock)
        try:
            serving.start_in_thread()
        except BaseException:
            sock.close()
            raise
        self._serving = serving
        server_logger.info("serving on %s", self.url)
        return self

    def stop(self, timeout: float = 10) -> None:
        """Graceful stop: stop accepting, finish answers in progress, close idle connections."""
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.request_stop(timeout)
            serving.join(timeout + 5)
            serving.sock.close()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop(timeout)
        if self._global_data is not None:
            self._global_data.close()
            self._global_data = None

    def run(self, host: str | None = None, port: int | None = None,
            workers: int | None = None) -> None:
        """Serve in the foreground until SIGINT or SIGTERM, then stop gracefully."""
        if host is not None:
            self.host = host
        if port is not None:
            self.requested_port = port
        if workers is not None:
            self.workers = workers
        if self.workers > 1:
            from packetron.supervisor import run_in_foreground  # processes sit above http/

            run_in_foreground(self)  # start(), wait for SIGINT/SIGTERM, stop()
            return
        if self.flags & ServerFlags.RAISE_PROCESS_PRIORITY:
            from packetron.supervisor import raise_process_priority  # OS integration

            raise_process_priority()  # best effort: this process is the only server
        sock = self._bind()
        serving = ServingLoop(self._state(), sock)
        loop = new_event_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, serving.request_stop)
        server_logger.info("serving on %s", self.url)
        try:
            loop.run_until_complete(serving.serve())
        finally:
            sock.close()
            loop.close()
            if self._global_data is not None:
                self._global_data.close()
                self._global_data = None

    def __enter__(self) -> "Packetron":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
