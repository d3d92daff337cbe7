"""Packetron: the HTTP application plus its lifecycle — ports, workers, signals, global data.

The application (packetron.http.app) knows routes, plugins and options; this module decides
where and in how many processes it is served. With workers=1 a serving loop runs in a
thread of this process (start()) or in the calling thread (run()); with more, a Supervisor
forks a pool of workers that inherit the application.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Callable, Iterable

from packetron.version import __version__
from packetron.errors import ConfigError, PacketronError
from packetron.flags import ServerFlags
from packetron.http.app import Application
from packetron.http.plugins import Plugin
from packetron.http.runtime import ServingLoop, new_event_loop
from packetron.log import server_logger, silence_internal_logs
from packetron.net.listener import bind_tcp_socket
from packetron.server.ossupport import open_firewall_port, raise_process_priority
from packetron.server.pool import WorkerSettings
from packetron.server.processes import SignalQueue
from packetron.server.supervisor import Supervisor

__all__ = ["Packetron"]


class Packetron(Application):
    """An HTTP server: routes (see Application) served on a port by one or more processes.

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
        super().__init__(plugins=plugins, **options)
        self.flags = ServerFlags(flags)
        self.host = host
        self.requested_port = port
        self.workers = int(workers) if workers is not None else (os.cpu_count() or 1)
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers!r}")
        self.port: int | None = None
        self._serving: ServingLoop | None = None
        self._supervisor: Supervisor | None = None
        self._restore_logs: Callable[[], None] | None = None
        self.global_data_enabled = not self.flags & ServerFlags.NO_GLOBAL_DATA
        self.set_routes_listener(self._redeploy)
        if self.flags & ServerFlags.START_IMMEDIATELY:
            self.start()

    def _redeploy(self) -> None:
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.routes_changed()

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

    def _bind(self) -> Any:
        sock = bind_tcp_socket(self.host, self.requested_port,
                               reuse_port=self.config.reuse_port,
                               try_next_port=bool(self.flags & ServerFlags.TRY_NEXT_PORT))
        self.port = sock.getsockname()[1]
        if self.config.open_firewall:
            open_firewall_port(self.port)
        return sock

    def _worker_settings(self) -> WorkerSettings:
        return WorkerSettings(
            workers=self.workers, graceful_timeout=self.config.graceful_timeout,
            stop_on_error=bool(self.flags & ServerFlags.STOP_ON_ERROR),
            raise_priority=bool(self.flags & ServerFlags.RAISE_PROCESS_PRIORITY),
            silence_logs=bool(self.flags & ServerFlags.SILENCE_INTERNAL_LOGS))

    def _announce(self) -> None:
        server_logger.info("packetron %s: serving %s with %d workers", __version__, self.url,
                           self.workers)

    def _silence_logs(self) -> None:
        # One process serving: quiet for as long as the server runs, then as before.
        if self.flags & ServerFlags.SILENCE_INTERNAL_LOGS and self._restore_logs is None:
            self._restore_logs = silence_internal_logs()

    def _unsilence_logs(self) -> None:
        restore, self._restore_logs = self._restore_logs, None
        if restore is not None:
            restore()

    def start(self) -> "Packetron":
        """Start serving; returns once the port accepts connections.

        With workers=1 the loop runs in a background thread of this process; otherwise
        worker processes are forked.
        """
        if self.is_running:
            return self
        sock = self._bind()
        if self.workers > 1:
            supervisor = Supervisor(self, self._worker_settings(), sock)
            supervisor.start()  # closes the socket itself if the workers fail to start
            self._supervisor = supervisor
        else:
            self._silence_logs()
            serving = ServingLoop(self.serving_state(), sock)
            try:
                serving.start_in_thread()
            except BaseException:
                sock.close()
                self._unsilence_logs()
                raise
            self._serving = serving
        self._announce()
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
        self._close_global_data()
        self._unsilence_logs()

    def run(self, host: str | None = None, port: int | None = None,
            workers: int | None = None) -> None:
        """Serve in the foreground until SIGINT or SIGTERM, then stop gracefully."""
        if host is not None:
            self.host = host
        if port is not None:
            self.requested_port = port
        if workers is not None:
            self.workers = workers
        _default_log_handler()
        if self.workers > 1:
            self._run_supervised()
            return
        if self.flags & ServerFlags.RAISE_PROCESS_PRIORITY:
            raise_process_priority()  # best effort: this process is the only server
        sock = self._bind()
        self._silence_logs()
        serving = ServingLoop(self.serving_state(), sock)
        loop = new_event_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, serving.request_stop)
        try:
            loop.run_until_complete(serving.serve(on_ready=self._announce))
        finally:
            sock.close()
            loop.close()
            self._close_global_data()
            self._unsilence_logs()

    def _run_supervised(self) -> None:
        """run() with workers > 1: start, serve until SIGINT or SIGTERM, stop gracefully.

        The handlers go in before the first fork, so a signal that arrives while the
        workers start stops the server gracefully too, instead of killing this process.
        """
        signals: SignalQueue | None = None
        if threading.current_thread() is threading.main_thread():
            signals = SignalQueue((signal.SIGINT, signal.SIGTERM))
        try:
            self.start()
            assert self._supervisor is not None
            self._supervisor.wait(signals)
        finally:
            try:
                self.stop()
            finally:
                if signals is not None:
                    signals.close()

    def __enter__(self) -> "Packetron":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _default_log_handler() -> None:
    """run() from a script says what it serves: unless the application configured logging,
    packetron's own records go to stderr (INFO and up)."""
    package_logger = logging.getLogger("packetron")
    if logging.getLogger().handlers or package_logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)
