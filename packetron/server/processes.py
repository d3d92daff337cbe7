"""The process plumbing every level of a multi-worker server shares.

`fork_child` (fork with a control and a status pipe, signals reset, fds of
the other levels closed, `os._exit` at the end), `SignalQueue` (signals become queue
entries that a main loop dispatches to ``handle_<signal>`` methods) and `poll_readable`.

A server with `workers > 1` runs as three levels of processes (see packetron.server.supervisor)::

    server process        the one that called start() or run(): holds the listening socket
      pool process        one per route generation: forks, watches and replaces workers
        worker            one ServingLoop on the inherited listening socket

Every level talks to its children over two pipes made by `fork_child`:

- the control pipe (parent writes, child reads) carries short text commands, one per
  line: ``stop <timeout>`` and, to a pool, ``retire``. Its end of file tells the child
  that its parent is gone, so no process outlives the one that started it.
- the status pipe (child writes, parent reads) carries ``ready`` once the child serves.
  Its end of file is the child's exit, seen by `poll()` without a signal handler.

A forked child never returns into the caller's stack: whatever happens it ends with
`os._exit`, so the parent's atexit handlers, finalizers and buffered objects (pytest's,
for instance) never run twice.
"""
from __future__ import annotations

import asyncio
import os
import select
import signal
import sys
import time
from collections import deque
from typing import Callable, Iterable, NoReturn

from packetron.log import worker_logger

__all__ = ["ChildProcess", "fork_child", "release_signals",
           "register_private_fds", "close_private_fd", "SignalQueue", "dispatch_signals",
           "poll_readable", "poll_events", "EXIT_OK", "EXIT_FAILED", "EXIT_START_FAILED",
           "EXIT_STOPPED_ON_ERROR", "describe_exit"]

EXIT_OK = 0
# An exception escaped the child's body (it is logged first).
EXIT_FAILED = 1
# A pool whose workers could not start: the generation before it keeps serving.
EXIT_START_FAILED = 2
# ServerFlags.STOP_ON_ERROR: the worker logged an error and stopped itself.
EXIT_STOPPED_ON_ERROR = 3

# Signals whose inherited dispositions a child resets: a Python handler of the parent
# would otherwise run the parent's code in the child (a SIGUSR1 handler registering
# routes, pytest's SIGALRM timeout, a supervisor's own queue).
_RESET_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                  signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGALRM)
# Largest read from a status or control pipe; messages are a few bytes each.
_READ_SIZE = 4096

# Descriptors of this process's supervision machinery: pipe ends to its children, the
# signal wake-up pipe. A forked child closes all of them except the ones it is told to
# keep, so no process holds another's pipes (and every end of file means what it says).
_private_fds: set[int] = set()


def register_private_fds(*fds: int) -> None:
    """Mark descriptors that forked children must close (see fork_child)."""
    _private_fds.update(fds)


def close_private_fd(fd: int) -> None:
    """Close a descriptor registered with register_private_fds()."""
    _private_fds.discard(fd)
    os.close(fd)


def describe_exit(status: int) -> str:
    """A wait status as words: "exit code 3", "signal SIGKILL"."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(signum).name}"
        except ValueError:
            return f"signal {signum}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


class ChildProcess:
    """The parent's handle on one forked child: its pid and the two pipe ends."""

    __slots__ = ("pid", "ctl_fd", "status_fd", "started_at", "ready", "stopping",
                 "kill_at", "exit_status", "_buffer")

    def __init__(self, pid: int, ctl_fd: int, status_fd: int) -> None:
        self.pid = pid
        self.ctl_fd = ctl_fd
        self.status_fd = status_fd
        self.started_at = time.monotonic()
        self.ready = False
        self.stopping = False
        self.kill_at: float | None = None  # monotonic time of the SIGKILL, once told to stop
        self.exit_status: int | None = None
        self._buffer = b""

    def stop(self, timeout: float, kill_margin: float) -> None:
        """Ask for a graceful stop within `timeout` s; SIGKILL `kill_margin` s after that."""
        kill_at = time.monotonic() + timeout + kill_margin
        self.kill_at = kill_at if self.kill_at is None else min(self.kill_at, kill_at)
        self.stopping = True
        self.send(f"stop {timeout}")

    def send(self, command: str) -> bool:
        """Write one command line to the child; False if it can no longer be told.

        Never blocks: a child that stopped reading is stuck anyway and will be killed.
        """
        if self.ctl_fd < 0:
            return False
        try:
            os.write(self.ctl_fd, command.encode("ascii") + b"\n")
        except (BrokenPipeError, BlockingIOError):
            return False
        return True

    def read_messages(self) -> list[str] | None:
        """Messages the child has written since the last call; None once it has exited."""
        if self.status_fd < 0:
            return None
        chunks = []
        while True:
            try:
                data = os.read(self.status_fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not data:
                close_private_fd(self.status_fd)
                self.status_fd = -1
                break
            chunks.append(data)
        self._buffer += b"".join(chunks)
        *lines, self._buffer = self._buffer.split(b"\n")
        messages = [line.decode("ascii", "replace") for line in lines if line]
        if self.status_fd < 0 and not messages:
            return None
        return messages

    def reap(self, block: bool = False) -> bool:
        """Collect the child's exit status; True once it has exited and been reaped."""
        if self.exit_status is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the status is lost, the child is gone
            pid, status = self.pid, 0
        if pid == 0:
            return False
        self.exit_status = status
        self.close()
        return True

    def kill(self) -> None:
        """SIGKILL the child if it has not been reaped yet."""
        if self.exit_status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Close the parent's pipe ends (the child sees end of file on its control pipe)."""
        for name in ("ctl_fd", "status_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                close_private_fd(fd)


def fork_child(body: Callable[[int, int], int], keep: Iterable[int] = ()) -> ChildProcess:
    """Fork a child that runs `body(control_fd, status_fd)` and exits with its result.

    Args:
        body: runs in the child with the read end of its control pipe and the write end
            of its status pipe; returns the exit code. It starts with the signals in
            _RESET_SIGNALS reset to their defaults and blocked, and must call
            `release_signals()` once it has installed its own handlers, so a signal sent
            while it starts is held, not lost nor fatal.
        keep: registered private descriptors the child keeps (every other one is closed
            in the child); they stay registered there, so its own children close them.

    Returns:
        The parent's ChildProcess handle.

    Raises:
        OSError: fork() or pipe() failed.
    """
    ctl_read, ctl_write = os.pipe()
    status_read, status_write = os.pipe()
    # Block the signals we reset, so nothing is delivered to the parent's handlers in the
    # child in the instant between fork() and the reset.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _RESET_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        for fd in (ctl_read, ctl_write, status_read, status_write):
            os.close(fd)
        raise
    if pid == 0:
        kept = set(keep)
        _child_main(body, ctl_read, status_write,
                    (ctl_write, status_read, *(_private_fds - kept)), kept)
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    os.close(ctl_read)
    os.close(status_write)
    os.set_blocking(ctl_write, False)
    os.set_blocking(status_read, False)
    register_private_fds(ctl_write, status_read)
    return ChildProcess(pid, ctl_write, status_read)


def _child_main(body: Callable[[int, int], int], ctl_fd: int, status_fd: int,
                close_fds: Iterable[int], kept: set[int]) -> NoReturn:
    code = EXIT_FAILED
    try:
        _reset_inherited_state()
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        _private_fds.clear()
        _private_fds.update(kept)
        register_private_fds(ctl_fd, status_fd)
        code = body(ctl_fd, status_fd)
    except BaseException:
        try:
            worker_logger.exception("process %d failed", os.getpid())
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _reset_inherited_state() -> None:
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    # A wake-up fd of the parent's loop or supervisor would get our signal numbers.
    signal.set_wakeup_fd(-1)
    # If the fork happened inside a running event loop, this thread still looks as if it
    # ran one, and run_until_complete() would refuse to start ours.
    asyncio.events._set_running_loop(None)


def release_signals() -> None:
    """Unblock every signal in this child (call it once its handlers are installed).

    The mask is emptied rather than restored: a parent that blocked signals for its own
    sigwait() must not leave its workers deaf to SIGTERM.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


# ------------------------------------------------------------------ signals and polling


class SignalQueue:
    """Turns signals into queue entries for a main loop; the handlers do nothing else.

    The signal wake-up fd makes `fileno()` readable whenever a signal arrived, so the loop
    can poll it beside its other descriptors. Must be created in the main thread.

    Args:
        signums: the signals to catch; their previous handlers come back on close().
    """

    def __init__(self, signums: Iterable[int]) -> None:
        self._pending: deque[int] = deque()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        register_private_fds(self._read_fd, self._write_fd)  # forked children close them
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in signums}

    def _on_signal(self, signum: int, frame: object) -> None:
        self._pending.append(signum)  # deque.append is atomic; the loop does the work

    def fileno(self) -> int:
        return self._read_fd

    def wake(self) -> None:
        """Wake the loop polling fileno() from another thread."""
        try:
            os.write(self._write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass

    def pop_all(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        try:
            while os.read(self._read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass
        received = []
        while self._pending:
            received.append(self._pending.popleft())
        return received

    def close(self) -> None:
        """Put the previous handlers and wake-up fd back; close the pipe."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        close_private_fd(self._read_fd)
        close_private_fd(self._write_fd)


def dispatch_signals(target: object, signums: Iterable[int]) -> None:
    """Call ``target.handle_<name>()`` for each signal, e.g. handle_sigterm() for SIGTERM."""
    for signum in signums:
        getattr(target, f"handle_{signal.Signals(signum).name.lower()}")()


def poll_readable(fds: Iterable[int], timeout: float | None) -> list[int]:
    """Descriptors among `fds` that are readable or closed, waiting at most `timeout` s."""
    poller = select.poll()
    for fd in fds:
        if fd >= 0:
            poller.register(fd, select.POLLIN)
    milliseconds = None if timeout is None else max(0, int(timeout * 1000) + 1)
    return [fd for fd, _ in poller.poll(milliseconds)]


def poll_events(read_fds: Iterable[int], write_fds: Iterable[int],
                timeout: float | None) -> tuple[list[int], list[int]]:
    """poll_readable() that also waits for `write_fds` to take more bytes.

    Returns:
        (readable or closed, writable) descriptors.
    """
    poller = select.poll()
    masks: dict[int, int] = {}
    for fd in read_fds:
        if fd >= 0:
            masks[fd] = masks.get(fd, 0) | select.POLLIN
    for fd in write_fds:
        if fd >= 0:
            masks[fd] = masks.get(fd, 0) | select.POLLOUT
    for fd, mask in masks.items():
        poller.register(fd, mask)
    milliseconds = None if timeout is None else max(0, int(timeout * 1000) + 1)
    readable, writable = [], []
    for fd, events in poller.poll(milliseconds):
        if events & ~select.POLLOUT:  # POLLIN, POLLHUP, POLLERR: reading tells which
            readable.append(fd)
        if events & select.POLLOUT:
            writable.append(fd)
    return readable, writable
