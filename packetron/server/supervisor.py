"""Multi-process serving: fork workers, replace the ones that die, stop and reload gracefully.

Process tree of a server with ``workers=N > 1``::

    server process   start() binds the port here, once; run() waits here for SIGINT/SIGTERM
      pool process   one per route generation; forks N workers, reaps and replaces them
        worker x N   a ServingLoop each, all on the one listening socket they inherit

Why a pool process between the server and its workers: every fork must happen in a
process with a single thread (forking a multi-threaded process can deadlock the child on
a lock another thread held, and Python 3.12+ warns about it). `start()` returns while the
caller goes on, so the health-check loop cannot live in the caller's process without a
thread; it lives in the pool, which runs nothing else. The server process keeps no
thread at all: it forks only from the thread that calls start() or registers a route.

Routes changed after start (handle(), Route.remove(), serve()): the server process forks a
new pool, which inherits the current router. The new pool first waits
RELOAD_DEBOUNCE_SECONDS (a newer change in that time replaces it before it forked
anything, so a burst of registrations costs one reload), then rolls: it starts one
worker, and once that one serves, tells the previous pool to retire one of its own
(graceful stop), and so on; with its N workers serving it stops what is left of the old
generation. The listening socket is never closed on the way, so no connection is
dropped. Each registration after start costs the caller one fork (about 2 ms on an idle
2-core machine, up to 8 ms when it is busy).

Health checks: a worker's exit is seen twice, as end of file on its status pipe and as
SIGCHLD; the pool reaps it with waitpid and forks a replacement at once, then after
RESPAWN_BASE_DELAY_SECONDS doubling up to RESPAWN_MAX_DELAY_SECONDS while replacements
keep dying within STABLE_SECONDS, so a crash loop does not spin. Signals (SIGINT, SIGTERM
and SIGCHLD in a pool, SIGINT and SIGTERM in run()) only append to a queue; the main loop
wakes on the signal wake-up fd and calls the matching ``handle_<signal>`` method.

Graceful stop (stop(timeout), SIGINT, SIGTERM): every worker stops accepting, finishes the
requests in progress, closes idle keep-alive connections and exits; what is still open
after `timeout` is aborted, and a worker still alive then is SIGKILLed.

One listening socket, bound here and inherited by every worker, rather than one
SO_REUSEPORT socket per worker; measured with ``bench/workers.py --sockets`` (2 workers on
2 CPUs shared with the client, short connections, 5 runs at 16 or 64 client threads)::

                                         inherited socket    SO_REUSEPORT
    share of the busier worker, 1 client      53-65 %           51-53 %
    share of the busier worker, 16-64         51-55 %           50-51 %
    failed, 12 graceful restarts / run       0 (all runs)       0, 0, 21, 26, 76
    failed, 5 SIGKILLs / run                    4-21              40-184

(of 8 000-23 000 requests per phase). With SO_REUSEPORT each worker has its own accept
queue: the connections the kernel already queued on a worker that stops or dies are reset
(Linux moves them only with net.ipv4.tcp_migrate_req=1, off by default). With one shared
queue a stopping worker just stops taking from it, and a killed one loses only what it had
accepted. The kernel's hash spreads SO_REUSEPORT connections more evenly, but under load
the shared queue stays within 55/45, and the skew with one client at a time costs nothing
(the other worker is idle because nobody waits). The `reuse_port` option still sets
SO_REUSEPORT on the one socket, which only lets other processes bind the same port.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

from packetron.errors import PacketronError
from packetron.http.app import Application
from packetron.log import server_logger
from packetron.server.pool import (HEALTH_CHECK_INTERVAL_SECONDS, KILL_MARGIN_SECONDS,
                                   RELOAD_DEBOUNCE_SECONDS, STABLE_SECONDS,
                                   STARTUP_TIMEOUT_SECONDS, WorkerPool, WorkerSettings,
                                   respawn_delay)
from packetron.server.processes import (EXIT_OK, EXIT_START_FAILED, ChildProcess, SignalQueue,
                                        describe_exit, dispatch_signals, fork_child,
                                        poll_readable)

__all__ = ["Supervisor"]


class Supervisor:
    """Runs a Packetron's workers (``workers > 1``); lives in the server process.

    Packetron.start() calls start(), Packetron.stop() calls stop(), Packetron.run() calls
    run_in_foreground() (start, wait, stop), and every route change after start calls
    routes_changed().

    The server process runs no thread of its own, so it looks at its pool processes only
    inside these calls: during wait() a pool that dies is replaced within a second; after
    a bare start() that happens at the next route change, and a retired pool stays a
    zombie until then (its workers are watched by the pool, always).

    Args:
        server: the Packetron to serve; its router is inherited by each fork.
    """

    def __init__(self, app: Application, settings: WorkerSettings,
                 sock: socket.socket) -> None:
        self.app = app
        self.settings = settings
        self._sock: socket.socket | None = sock
        self._pools: list[ChildProcess] = []  # oldest first, until reaped
        self._closed = False
        self._signals: SignalQueue | None = None
        self._lock = threading.RLock()  # start/stop/routes_changed may come from any thread
        self._wait_done = False
        self._quick_failures = 0
        self._next_pool_at = 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Fork the pool and its workers; return once they all serve.

        Raises:
            PacketronError: the workers did not start.
        """
        with self._lock:
            try:
                pool = self._fork_pool(rolling=False, debounce=0.0)
                self._wait_until_ready(pool, STARTUP_TIMEOUT_SECONDS)
            except BaseException:
                self._stop_pools(KILL_MARGIN_SECONDS)
                self._close_socket()
                self._closed = True
                raise

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop of every worker; SIGKILL only for what is left after `timeout`.

        Args:
            timeout: seconds the requests in progress get to finish.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._signals is not None:
                self._signals.wake()
            # Closed first, so that once the workers have closed theirs, new connections
            # are refused at once instead of queueing for nobody.
            self._close_socket()
            self._stop_pools(timeout)

    def wait(self, signals: SignalQueue | None = None) -> None:
        """Block until SIGINT or SIGTERM (or stop() from another thread).

        Replaces the pool process if it dies.

        Args:
            signals: a SignalQueue for SIGINT and SIGTERM that the caller installed before
                start() (see run_in_foreground). Without it, one is installed for the time
                of the call; outside the main thread, only stop() ends the wait.
        """
        own: SignalQueue | None = None
        if signals is None:
            if threading.current_thread() is threading.main_thread():
                own = signals = SignalQueue((signal.SIGINT, signal.SIGTERM))
            else:
                server_logger.warning("wait() outside the main thread: "
                                      "SIGINT/SIGTERM are not handled")
        self._signals = signals
        self._wait_done = False
        try:
            while not self._closed and not self._wait_done:
                fds = [p.status_fd for p in self._pools]
                if signals is not None:
                    fds.append(signals.fileno())
                readable = poll_readable(fds, self._wait_timeout())
                if signals is not None and signals.fileno() in readable:
                    dispatch_signals(self, signals.pop_all())
                with self._lock:
                    if not self._closed:
                        self._check_pools()
                        self._ensure_pool()
        finally:
            self._signals = None
            if own is not None:
                own.close()

    def handle_sigint(self) -> None:
        server_logger.info("SIGINT: stopping")
        self._wait_done = True

    def handle_sigterm(self) -> None:
        server_logger.info("SIGTERM: stopping")
        self._wait_done = True

    def routes_changed(self) -> None:
        """Deploy the current routes to every worker (a rolling reload; see the module doc)."""
        with self._lock:
            if self._closed or self._sock is None or not self._pools:
                return
            self._check_pools()
            for pool in self._pools:
                if not pool.ready and not pool.stopping:
                    pool.stopping = True  # a reload still waiting or rolling: superseded
                    pool.send(f"stop {self.settings.graceful_timeout}")
            self._fork_pool(rolling=True, debounce=RELOAD_DEBOUNCE_SECONDS)

    # ------------------------------------------------------------ pools

    def _fork_pool(self, *, rolling: bool, debounce: float) -> ChildProcess:
        app, settings, sock = self.app, self.settings, self._sock
        assert sock is not None
        # The new pool keeps the control pipes of the older ones, to retire them.
        older = [p.ctl_fd for p in self._pools if p.ctl_fd >= 0]

        def pool_main(ctl_fd: int, status_fd: int) -> int:
            # The caller may hold the application's lock (route changes fork under it),
            # and a route registered inside a worker must stay local to that worker.
            app.detach_after_fork()
            return WorkerPool(app, settings, sock, ctl_fd, status_fd, older, rolling=rolling,
                         debounce=debounce).run()

        pool = fork_child(pool_main, keep=older)
        self._pools.append(pool)
        return pool

    def _wait_until_ready(self, pool: ChildProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        reason = ""
        while True:
            messages = pool.read_messages()
            for message in messages or ():
                if message.startswith("failed "):
                    reason = message.removeprefix("failed ")
            if messages is None:
                pool.reap(block=True)
                self._pools.remove(pool)
                if reason:
                    raise PacketronError(f"the workers failed to start: {reason}")
                raise PacketronError("the workers failed to start ("
                                     f"{describe_exit(pool.exit_status or 0)}); see the log")
            if "ready" in messages:
                pool.ready = True
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PacketronError(f"the workers did not start within {timeout:g} s")
            poll_readable([pool.status_fd], remaining)

    def _check_pools(self) -> None:
        """Read what pools reported, reap the ones that exited (never blocks)."""
        exited = []
        # Every "ready" first: a pool retired by a newer one may have exited meanwhile.
        for index, pool in enumerate(self._pools):
            messages = pool.read_messages()
            if messages is None:
                exited.append(pool)
            elif "ready" in messages and not pool.ready:
                pool.ready = True
                for older in self._pools[:index]:
                    older.stopping = True  # the new generation retires them
        for pool in exited:
            if pool.reap():
                self._pools.remove(pool)
                self._pool_exited(pool)

    def _pool_exited(self, pool: ChildProcess) -> None:
        status = pool.exit_status or 0
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_OK:
            # Pools exit 0 only when told: stopped, retired by a newer generation, or
            # orphaned by a server process that closed its end.
            server_logger.debug("worker pool %d exited", pool.pid)
            return
        if code == EXIT_START_FAILED:
            server_logger.error("the workers with the new routes failed to start; "
                                "the previous ones keep serving")
            return
        server_logger.error("the worker pool %d exited (%s)", pool.pid, describe_exit(status))
        if time.monotonic() - pool.started_at < STABLE_SECONDS:
            self._quick_failures += 1
        else:
            self._quick_failures = 1
        self._next_pool_at = time.monotonic() + respawn_delay(self._quick_failures)

    def _ensure_pool(self) -> None:
        """Fork a new pool when none is serving or about to (run() only: single thread)."""
        if any(not p.stopping for p in self._pools) or self._sock is None:
            return
        if time.monotonic() < self._next_pool_at:
            return
        server_logger.warning("no worker pool is running; starting one")
        self._fork_pool(rolling=False, debounce=0.0)

    def _wait_timeout(self) -> float:
        if any(not p.stopping for p in self._pools):
            return HEALTH_CHECK_INTERVAL_SECONDS
        return max(0.0, min(HEALTH_CHECK_INTERVAL_SECONDS, self._next_pool_at - time.monotonic()))

    def _stop_pools(self, timeout: float) -> None:
        for pool in self._pools:
            pool.stopping = True
            pool.send(f"stop {timeout}")
        deadline = time.monotonic() + timeout + 2 * KILL_MARGIN_SECONDS
        while self._pools:
            for pool in list(self._pools):
                if pool.read_messages() is None and pool.reap():
                    self._pools.remove(pool)
            remaining = deadline - time.monotonic()
            if not self._pools or remaining <= 0:
                break
            poll_readable([p.status_fd for p in self._pools], min(remaining, 0.1))
        for pool in self._pools:
            server_logger.warning("worker pool %d did not stop in time; killing it", pool.pid)
            pool.kill()  # its workers see end of file on their control pipes and stop
            pool.reap(block=True)
        self._pools.clear()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
