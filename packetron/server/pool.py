"""One generation of workers, run by a forked, single-threaded pool process.

See packetron.server.supervisor for the process tree and why the pool exists.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass

from packetron.http.app import Application
from packetron.log import silence_internal_logs, worker_logger
from packetron.server.channelhub import ChannelHub
from packetron.server.ossupport import raise_process_priority
from packetron.server.processes import (EXIT_OK, EXIT_START_FAILED, EXIT_STOPPED_ON_ERROR,
                                        ChildProcess, SignalQueue, close_private_fd,
                                        describe_exit, dispatch_signals, fork_child,
                                        poll_events, release_signals)
from packetron.server.worker import run_worker

__all__ = ["WorkerPool", "WorkerSettings", "respawn_delay"]

# start() gives up when the first workers are not serving after this long (they normally
# need a few tens of milliseconds).
STARTUP_TIMEOUT_SECONDS = 30.0
# A reload pool waits this long before forking: long enough for a loop of registrations
# (each costs the caller one fork, 2-8 ms), short enough to go unnoticed.
RELOAD_DEBOUNCE_SECONDS = 0.1
# A worker that lived this long was healthy: its death restarts the backoff.
STABLE_SECONDS = 10.0
# Replacement delays after the first (immediate) one: 0.1, 0.2, 0.4 ... 5 s.
RESPAWN_BASE_DELAY_SECONDS = 0.1
RESPAWN_MAX_DELAY_SECONDS = 5.0
# How often the loops look at their children even when nothing woke them.
HEALTH_CHECK_INTERVAL_SECONDS = 1.0
# A worker gets this long after its graceful timeout to abort its connections and exit
# before it is SIGKILLed; the server process gives pools twice as long.
KILL_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerSettings:
    """What the process pool needs to know of a server, besides its application."""

    workers: int
    graceful_timeout: float
    stop_on_error: bool = False    # ServerFlags.STOP_ON_ERROR
    raise_priority: bool = False   # ServerFlags.RAISE_PROCESS_PRIORITY
    silence_logs: bool = False     # ServerFlags.SILENCE_INTERNAL_LOGS


class WorkerPool:
    """One generation of workers, run by a forked, single-threaded pool process."""

    def __init__(self, app: Application, settings: WorkerSettings, sock: socket.socket,
                 ctl_fd: int, status_fd: int,
                 older_ctl_fds: list[int], *, rolling: bool, debounce: float) -> None:
        self._app = app
        self._sock: socket.socket | None = sock
        self._size = settings.workers
        self._ctl_fd = ctl_fd
        self._status_fd = status_fd
        self._older = list(older_ctl_fds)  # control pipes of the generations this one replaces
        self._rolling = rolling
        self._debounce = debounce
        self._graceful_timeout = settings.graceful_timeout
        self._stop_on_error = settings.stop_on_error
        self._raise_priority = settings.raise_priority
        self._silence_logs = settings.silence_logs
        self._workers: dict[int, ChildProcess] = {}
        self._signals: SignalQueue | None = None
        self._stopping = False
        self._reported_ready = False
        self._next_spawn_at = 0.0
        self._quick_failures = 0
        self._exit_code = EXIT_OK
        self._start_failure: str | None = None  # "failed <reason>" from a worker
        # server.channels between this generation's workers, unless the backend reaches
        # every process itself (Redis).
        self._hub: ChannelHub | None = None if app.channels.cross_process else ChannelHub()

    def run(self) -> int:
        signals = self._signals = SignalQueue((signal.SIGTERM, signal.SIGINT, signal.SIGCHLD))
        release_signals()
        os.set_blocking(self._ctl_fd, False)
        if self._silence_logs:
            silence_internal_logs()  # this process and its workers only
        if self._raise_priority:
            raise_process_priority()  # inherited by every worker forked from here
        if self._debounce > 0:
            # A newer route change in this time stops us before we forked anything.
            self._next_spawn_at = time.monotonic() + self._debounce
        try:
            while not (self._stopping and not self._workers):
                self._tick()
                self._wait(self._timeout())
        finally:
            if self._hub is not None:
                self._hub.close()
            self._close_older()
            if self._sock is not None:
                self._sock.close()
            signals.close()
            if self._ctl_fd >= 0:
                close_private_fd(self._ctl_fd)
            close_private_fd(self._status_fd)
        return self._exit_code

    # ------------------------------------------------------------ the loop

    def _timeout(self) -> float:
        now = time.monotonic()
        deadline = now + HEALTH_CHECK_INTERVAL_SECONDS
        for worker in self._workers.values():
            if worker.kill_at is not None:
                deadline = min(deadline, worker.kill_at)
        if not self._stopping and self._active_count() < self._size:
            deadline = min(deadline, self._next_spawn_at)
        return max(0.0, deadline - now)

    def _wait(self, timeout: float) -> None:
        assert self._signals is not None
        by_fd = {w.status_fd: w for w in self._workers.values() if w.status_fd >= 0}
        hub = self._hub
        ready, writable = poll_events(
            [self._signals.fileno(), self._ctl_fd, *by_fd, *(hub.read_fds() if hub else ())],
            hub.write_fds() if hub else (), timeout)
        for fd in ready:
            if fd == self._signals.fileno():
                dispatch_signals(self, self._signals.pop_all())
            elif fd == self._ctl_fd:
                self._read_commands()
            elif fd in by_fd:
                self._read_worker(by_fd[fd])
            elif hub is not None and hub.owns(fd):
                hub.on_readable(fd)
        for fd in writable:
            if hub is not None:
                hub.on_writable(fd)
        self._reap()

    def _active_count(self) -> int:
        return sum(1 for w in self._workers.values() if not w.stopping)

    def _tick(self) -> None:
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.kill_at is not None and now >= worker.kill_at:
                worker_logger.warning("worker %d did not stop in time; killing it", worker.pid)
                worker.kill_at = None
                worker.kill()
        if self._stopping:
            return
        active = [w for w in self._workers.values() if not w.stopping]
        if not self._reported_ready and len(active) >= self._size \
                and all(w.ready for w in active):
            self._report_ready()
        missing = self._size - len(active)
        if missing <= 0 or now < self._next_spawn_at:
            return
        if self._rolling and not self._reported_ready:
            if any(not w.ready for w in active):
                return  # rolling reload: one new worker at a time
            missing = 1
        for _ in range(missing):
            self._spawn()

    def _spawn(self) -> None:
        assert self._signals is not None and self._sock is not None
        app, sock, stop_on_error = self._app, self._sock, self._stop_on_error
        hub = self._hub
        hub_fd, link_fd = hub.open_link() if hub is not None else (-1, -1)
        try:
            child = fork_child(lambda ctl, status: run_worker(
                app, sock, ctl, status, stop_on_error=stop_on_error,
                channel_link=link_fd if link_fd >= 0 else None))
        except BaseException:
            if hub is not None:
                close_private_fd(hub_fd)
                os.close(link_fd)
            raise
        if hub is not None:
            os.close(link_fd)  # the worker's end lives in the worker only
            hub.attach(child.pid, hub_fd)
        self._workers[child.pid] = child
        worker_logger.debug("worker %d started", child.pid)

    def _report_ready(self) -> None:
        self._reported_ready = True
        try:
            os.write(self._status_fd, b"ready\n")
        except BrokenPipeError:
            pass  # the server process is gone; end of file on the control pipe follows
        # Whatever is left of the older generations (all of it after a first start).
        for fd in self._older:
            self._send(fd, f"stop {self._graceful_timeout}")
        self._close_older()

    # ------------------------------------------------------------ events

    def _read_worker(self, worker: ChildProcess) -> None:
        messages = worker.read_messages()
        for message in messages or ():
            if message.startswith("failed ") and self._start_failure is None:
                self._start_failure = message  # passed on if the first start fails
            elif message == "ready" and not worker.ready:
                worker.ready = True
                if self._rolling and not self._reported_ready:
                    for fd in self._older:
                        self._send(fd, "retire")

    def _read_commands(self) -> None:
        chunks = []
        while True:
            try:
                data = os.read(self._ctl_fd, 4096)
            except BlockingIOError:
                break
            if not data:
                # The server process is gone (or closed us): nobody will stop us later.
                close_private_fd(self._ctl_fd)
                self._ctl_fd = -1
                self._begin_stop(self._graceful_timeout)
                break
            chunks.append(data)
        for line in b"".join(chunks).decode("ascii", "replace").splitlines():
            verb, _, argument = line.partition(" ")
            if verb == "stop":
                self._begin_stop(float(argument) if argument else self._graceful_timeout)
            elif verb == "retire":
                self._retire_one()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is None:
                continue
            worker.exit_status = status
            self._read_worker(worker)  # its last words (a start failure) before the pipe goes
            worker.close()
            if self._hub is not None:
                self._hub.detach(pid)
            self._worker_exited(worker, status)

    def _worker_exited(self, worker: ChildProcess, status: int) -> None:
        if worker.stopping or self._stopping:
            worker_logger.debug("worker %d stopped (%s)", worker.pid, describe_exit(status))
            return
        if not worker.ready and not self._reported_ready:
            worker_logger.error("worker %d failed to start (%s)", worker.pid,
                                describe_exit(status))
            if self._start_failure is not None:
                self._send(self._status_fd, self._start_failure)
            self._exit_code = EXIT_START_FAILED
            self._begin_stop(self._graceful_timeout)
            return
        now = time.monotonic()
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_STOPPED_ON_ERROR:
            worker_logger.warning("worker %d stopped itself after logging an error "
                                  "(STOP_ON_ERROR); replacing it", worker.pid)
        else:
            worker_logger.warning("worker %d exited (%s); replacing it", worker.pid,
                                  describe_exit(status))
        if now - worker.started_at < STABLE_SECONDS:
            self._quick_failures += 1
        else:
            self._quick_failures = 1
        self._next_spawn_at = now + respawn_delay(self._quick_failures)

    def _retire_one(self) -> None:
        if self._stopping:
            return
        self._size = max(0, self._size - 1)
        active = [w for w in self._workers.values() if not w.stopping]
        if active:
            oldest = min(active, key=lambda w: w.started_at)
            oldest.stop(self._graceful_timeout, KILL_MARGIN_SECONDS)
        if self._size == 0:
            self._begin_stop(self._graceful_timeout)

    def _begin_stop(self, timeout: float) -> None:
        """Stop every worker gracefully (again, with a shorter timeout, if it is shorter)."""
        for worker in self._workers.values():
            if worker.kill_at is None or worker.kill_at > \
                    time.monotonic() + timeout + KILL_MARGIN_SECONDS:
                worker.stop(timeout, KILL_MARGIN_SECONDS)
        if self._stopping:
            return
        self._stopping = True
        # No more forks: our copy of the socket only kept the port open.
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._close_older()

    def _close_older(self) -> None:
        older, self._older = self._older, []
        for fd in older:
            close_private_fd(fd)

    @staticmethod
    def _send(fd: int, command: str) -> None:
        try:
            os.write(fd, command.encode("ascii", "replace") + b"\n")
        except (BrokenPipeError, BlockingIOError):
            pass

    # ------------------------------------------------------------ signal handlers

    def handle_sigterm(self) -> None:
        self._begin_stop(self._graceful_timeout)

    def handle_sigint(self) -> None:
        self._begin_stop(self._graceful_timeout)

    def handle_sigchld(self) -> None:
        self._reap()


def respawn_delay(quick_failures: int) -> float:
    """The first replacement is immediate; then 0.1 s, doubling up to the maximum."""
    if quick_failures <= 1:
        return 0.0
    return min(RESPAWN_MAX_DELAY_SECONDS,
               RESPAWN_BASE_DELAY_SECONDS * float(2 ** (quick_failures - 2)))
