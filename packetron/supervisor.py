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
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from packetron.errors import PacketronError
from packetron.flags import ServerFlags
from packetron.log import server_logger, worker_logger
from packetron.options import ServerOptions
from packetron.workers import (EXIT_OK, EXIT_START_FAILED, EXIT_STOPPED_ON_ERROR,
                               ChildProcess, SignalQueue, close_private_fd, describe_exit,
                               dispatch_signals, fork_child, poll_readable, release_signals,
                               run_worker)

if TYPE_CHECKING:
    from packetron.http.app import Packetron

__all__ = ["Supervisor", "run_in_foreground", "raise_process_priority", "open_firewall_port",
           "STARTUP_TIMEOUT_SECONDS", "RELOAD_DEBOUNCE_SECONDS", "STABLE_SECONDS",
           "RESPAWN_BASE_DELAY_SECONDS", "RESPAWN_MAX_DELAY_SECONDS", "PRIORITY_INCREMENT"]

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
# RAISE_PROCESS_PRIORITY: the pool's niceness change, inherited by its workers.
PRIORITY_INCREMENT = -5
# Each firewall tool gets this long to answer.
FIREWALL_COMMAND_TIMEOUT_SECONDS = 5.0


# ------------------------------------------------------------------ OS integration


def raise_process_priority(increment: int = PRIORITY_INCREMENT) -> bool:
    """ServerFlags.RAISE_PROCESS_PRIORITY, best effort: lower this process's niceness.

    Returns:
        True if the priority changed; False if the OS refused (logged at debug level).
    """
    try:
        os.nice(increment)
    except OSError as exc:
        worker_logger.debug("could not raise the process priority: %s", exc)
        return False
    return True


def _run_quietly(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=FIREWALL_COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as exc:
        server_logger.debug("firewall: %s failed: %s", argv[0], exc)
        return None


def open_firewall_port(port: int, protocol: str = "tcp") -> bool:
    """Allow inbound traffic to `port` in the host firewall, best effort (never raises).

    Used when a server is created with ``open_firewall=True``. Tries, in this order,
    the first tool that is installed and active: ufw (``ufw allow PORT/tcp``, a
    persistent rule), firewalld (``firewall-cmd --add-port``, runtime only) and iptables
    (an ACCEPT rule inserted in INPUT, only when INPUT drops or rejects anything). Rules
    are left in place when the server stops.

    Args:
        port: the bound port.
        protocol: "tcp" or "udp".

    Returns:
        True if a rule was added or already allowed the port; False otherwise.
    """
    spec = f"{port}/{protocol}"
    if shutil.which("ufw"):
        status = _run_quietly(["ufw", "status"])
        if status is not None and "Status: active" in status.stdout:
            done = _run_quietly(["ufw", "allow", spec])
            return _firewall_result("ufw", spec, done)
    if shutil.which("firewall-cmd"):
        state = _run_quietly(["firewall-cmd", "--state"])
        if state is not None and state.returncode == 0:
            done = _run_quietly(["firewall-cmd", f"--add-port={spec}"])
            return _firewall_result("firewalld", spec, done)
    if shutil.which("iptables"):
        rule = ["INPUT", "-p", protocol, "--dport", str(port), "-j", "ACCEPT"]
        listing = _run_quietly(["iptables", "-S", "INPUT"])
        if listing is None or listing.returncode != 0:
            return False
        if not any(word in listing.stdout for word in ("-P INPUT DROP", "-j DROP", "-j REJECT")):
            return False  # nothing is blocked: no rule to add
        present = _run_quietly(["iptables", "-C", *rule])
        if present is not None and present.returncode == 0:
            return True
        done = _run_quietly(["iptables", "-I", *rule])
        return _firewall_result("iptables", spec, done)
    return False


def _firewall_result(tool: str, spec: str,
                     done: subprocess.CompletedProcess[str] | None) -> bool:
    if done is not None and done.returncode == 0:
        server_logger.info("firewall: %s now allows %s", tool, spec)
        return True
    detail = "" if done is None else (done.stderr or done.stdout).strip()
    server_logger.warning("firewall: %s could not open %s %s", tool, spec, detail)
    return False


# ------------------------------------------------------------------ the pool process


class _Pool:
    """One generation of workers, run by a forked, single-threaded pool process."""

    def __init__(self, server: "Packetron", sock: socket.socket, ctl_fd: int, status_fd: int,
                 older_ctl_fds: list[int], *, rolling: bool, debounce: float) -> None:
        self._server = server
        self._sock: socket.socket | None = sock
        self._size = server.workers
        self._ctl_fd = ctl_fd
        self._status_fd = status_fd
        self._older = list(older_ctl_fds)  # control pipes of the generations this one replaces
        self._rolling = rolling
        self._debounce = debounce
        self._graceful_timeout = _graceful_timeout(server)
        self._stop_on_error = bool(server.flags & ServerFlags.STOP_ON_ERROR)
        self._workers: dict[int, ChildProcess] = {}
        self._signals: SignalQueue | None = None
        self._stopping = False
        self._reported_ready = False
        self._next_spawn_at = 0.0
        self._quick_failures = 0
        self._exit_code = EXIT_OK

    def run(self) -> int:
        signals = self._signals = SignalQueue((signal.SIGTERM, signal.SIGINT, signal.SIGCHLD))
        release_signals()
        os.set_blocking(self._ctl_fd, False)
        if self._server.flags & ServerFlags.RAISE_PROCESS_PRIORITY:
            raise_process_priority()  # inherited by every worker forked from here
        if self._debounce > 0:
            # A newer route change in this time stops us before we forked anything.
            self._next_spawn_at = time.monotonic() + self._debounce
        try:
            while not (self._stopping and not self._workers):
                self._tick()
                self._wait(self._timeout())
        finally:
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
        ready = poll_readable([self._signals.fileno(), self._ctl_fd, *by_fd], timeout)
        for fd in ready:
            if fd == self._signals.fileno():
                dispatch_signals(self, self._signals.pop_all())
            elif fd == self._ctl_fd:
                self._read_commands()
            elif fd in by_fd:
                self._read_worker(by_fd[fd])
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
        server, sock, stop_on_error = self._server, self._sock, self._stop_on_error
        child = fork_child(lambda ctl, status: run_worker(server, sock, ctl, status,
                                                          stop_on_error=stop_on_error))
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
            if message == "ready" and not worker.ready:
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
            worker.close()
            self._worker_exited(worker, status)

    def _worker_exited(self, worker: ChildProcess, status: int) -> None:
        if worker.stopping or self._stopping:
            worker_logger.debug("worker %d stopped (%s)", worker.pid, describe_exit(status))
            return
        if not worker.ready and not self._reported_ready:
            worker_logger.error("worker %d failed to start (%s)", worker.pid,
                                describe_exit(status))
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
        self._next_spawn_at = now + _respawn_delay(self._quick_failures)

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
            os.write(fd, command.encode("ascii") + b"\n")
        except (BrokenPipeError, BlockingIOError):
            pass

    # ------------------------------------------------------------ signal handlers

    def handle_sigterm(self) -> None:
        self._begin_stop(self._graceful_timeout)

    def handle_sigint(self) -> None:
        self._begin_stop(self._graceful_timeout)

    def handle_sigchld(self) -> None:
        self._reap()


def _respawn_delay(quick_failures: int) -> float:
    """The first replacement is immediate; then 0.1 s, doubling up to the maximum."""
    if quick_failures <= 1:
        return 0.0
    return min(RESPAWN_MAX_DELAY_SECONDS,
               RESPAWN_BASE_DELAY_SECONDS * float(2 ** (quick_failures - 2)))


def _graceful_timeout(server: "Packetron") -> float:
    # `options` is also the name of Packetron's OPTIONS-route shorthand on the class;
    # the instance attribute (ServerOptions) is the one meant here.
    options: ServerOptions = server.config
    return options.graceful_timeout


# ------------------------------------------------------------------ the server process


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

    def __init__(self, server: "Packetron") -> None:
        self.server = server
        self._sock: socket.socket | None = None
        self._pools: list[ChildProcess] = []  # oldest first, until reaped
        self._closed = False
        self._signals: SignalQueue | None = None
        self._lock = threading.RLock()  # start/stop/routes_changed may come from any thread
        self._wait_done = False
        self._quick_failures = 0
        self._next_pool_at = 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the port, fork the pool and its workers; return once they all serve.

        Raises:
            OSError: the port could not be bound.
            PacketronError: the workers did not start.
        """
        with self._lock:
            self._sock = self.server._bind()
            try:
                pool = self._fork_pool(rolling=False, debounce=0.0)
                self._wait_until_ready(pool, STARTUP_TIMEOUT_SECONDS)
            except BaseException:
                self._stop_pools(KILL_MARGIN_SECONDS)
                self._close_socket()
                self._closed = True
                raise
        server_logger.info("serving on %s with %d workers", self.server.url,
                           self.server.workers)

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
                    pool.send(f"stop {_graceful_timeout(self.server)}")
            self._fork_pool(rolling=True, debounce=RELOAD_DEBOUNCE_SECONDS)

    # ------------------------------------------------------------ pools

    def _fork_pool(self, *, rolling: bool, debounce: float) -> ChildProcess:
        server, sock = self.server, self._sock
        assert sock is not None
        # The new pool keeps the control pipes of the older ones, to retire them.
        older = [p.ctl_fd for p in self._pools if p.ctl_fd >= 0]

        def pool_main(ctl_fd: int, status_fd: int) -> int:
            # The caller may hold the server's lock (route changes fork under it), and a
            # route registered inside a worker must stay local to that worker.
            server._lock = threading.Lock()
            server._supervisor = None
            return _Pool(server, sock, ctl_fd, status_fd, older, rolling=rolling,
                         debounce=debounce).run()

        pool = fork_child(pool_main, keep=older)
        self._pools.append(pool)
        return pool

    def _wait_until_ready(self, pool: ChildProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            messages = pool.read_messages()
            if messages is None:
                pool.reap(block=True)
                self._pools.remove(pool)
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
        self._next_pool_at = time.monotonic() + _respawn_delay(self._quick_failures)

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


def run_in_foreground(server: "Packetron") -> None:
    """Packetron.run() with workers > 1: start, serve until SIGINT or SIGTERM, stop gracefully.

    The handlers go in before the first fork, so a signal that arrives while the workers
    start stops the server gracefully too, instead of killing this process outright.

    Args:
        server: the Packetron to run (already started with START_IMMEDIATELY, or not).
    """
    signals: SignalQueue | None = None
    if threading.current_thread() is threading.main_thread():
        signals = SignalQueue((signal.SIGINT, signal.SIGTERM))
    try:
        server.start()
        server._supervisor.wait(signals)
    finally:
        try:
            server.stop()
        finally:
            if signals is not None:
                signals.close()
