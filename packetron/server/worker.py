"""The body of one worker process: a serving loop on the inherited listening socket."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from typing import Callable

from packetron.http.app import Application
from packetron.http.runtime import ServingLoop, new_event_loop
from packetron.server.channellink import HubChannels
from packetron.http.lifespan import is_startup_failure
from packetron.server.processes import (EXIT_FAILED, EXIT_OK, EXIT_STOPPED_ON_ERROR,
                                        release_signals)

__all__ = ["run_worker", "StopOnErrorHandler"]

# Largest read from the control pipe; commands are a few bytes each.
_READ_SIZE = 4096


class _Stopper:
    """Turns stop requests into a graceful ServingLoop stop, even before serve() began."""

    __slots__ = ("serving", "started", "pending", "pending_timeout")

    def __init__(self, serving: ServingLoop) -> None:
        self.serving = serving
        self.started = False
        self.pending = False
        self.pending_timeout: float | None = None

    def stop(self, timeout: float | None = None) -> None:
        if not self.started:
            # serve() has not created its stop event yet: remember, act in on_ready().
            self.pending = True
            if timeout is not None:
                self.pending_timeout = timeout
            return
        self.serving.request_stop(timeout)

    def on_ready(self) -> None:
        self.started = True
        if self.pending:
            self.serving.request_stop(self.pending_timeout)


class StopOnErrorHandler(logging.Handler):
    """ServerFlags.STOP_ON_ERROR: the first ERROR record stops this worker gracefully.

    Installed on the "packetron" logger of a worker, so an error logged by any packetron
    logger (a handler that raised, a failed connection) ends the worker after its answers
    in progress; the pool then replaces it with a fresh one.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        super().__init__(logging.ERROR)
        self._stop = stop
        self.triggered = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.triggered:
            return
        self.triggered = True
        self._stop()


def run_worker(app: Application, sock: socket.socket, ctl_fd: int, status_fd: int,
               *, stop_on_error: bool = False, channel_link: int | None = None) -> int:
    """Serve `app`'s routes on the inherited `sock` until told to stop (in the child).

    Stops gracefully on SIGTERM, SIGINT, a ``stop <timeout>`` command, or end of file on
    the control pipe (the pool is gone).

    Args:
        app: the application whose router, plugins and options this fork inherited.
        sock: the listening socket shared by every worker.
        ctl_fd: read end of the control pipe.
        status_fd: write end of the status pipe; ``ready`` is written once serving.
        stop_on_error: ServerFlags.STOP_ON_ERROR.
        channel_link: this worker's end of its link to the pool's channels hub, or None
            (the channels backend reaches every process itself).

    Returns:
        EXIT_OK, or EXIT_STOPPED_ON_ERROR when an error record stopped the worker.
    """
    serving = ServingLoop(app.serving_state(), sock)
    stopper = _Stopper(serving)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopper.stop)
    release_signals()

    def on_command() -> None:
        try:
            data = os.read(ctl_fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            data = b""
        if not data:  # the pool is gone: nobody would replace or stop us
            loop.remove_reader(ctl_fd)
            stopper.stop()
            return
        for line in data.decode("ascii", "replace").splitlines():
            verb, _, argument = line.partition(" ")
            if verb == "stop":
                stopper.stop(float(argument) if argument else None)

    os.set_blocking(ctl_fd, False)
    loop.add_reader(ctl_fd, on_command)
    error_handler: StopOnErrorHandler | None = None
    if stop_on_error:
        error_handler = StopOnErrorHandler(stopper.stop)
        logging.getLogger("packetron").addHandler(error_handler)

    def on_ready() -> None:
        os.write(status_fd, b"ready\n")
        stopper.on_ready()

    channels: HubChannels | None = None
    try:
        if channel_link is not None:
            # Linked before the startup hooks run, which may publish or subscribe.
            channels = HubChannels(channel_link)
            app.use_channels(channels)
            loop.run_until_complete(channels.connect())
        loop.run_until_complete(serving.serve(on_ready=on_ready))
    except BaseException as exc:
        if not stopper.started:
            # Tell the pool why (a startup hook raised, the TLS context failed ...): the
            # server's start() reports it instead of a bare exit status.
            reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
            try:
                os.write(status_fd, f"failed {reason}\n".encode("utf-8", "replace"))
            except OSError:
                pass
            if is_startup_failure(exc):
                return EXIT_FAILED  # logged with its traceback where the hook ran
        raise
    finally:
        loop.remove_reader(ctl_fd)
        try:
            if channels is not None:
                # Also when serving never began (a startup hook raised): the link's
                # transport must not outlive the loop.
                loop.run_until_complete(channels.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            sock.close()
    if error_handler is not None and error_handler.triggered:
        return EXIT_STOPPED_ON_ERROR
    return EXIT_OK
