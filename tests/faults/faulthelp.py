"""Helpers for the fault tests: a small tmpfs, a server process with few file descriptors,
its CPU time, raw HTTP over a socket.

Imported by name (`from faulthelp import ...`); pytest puts this directory on sys.path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
HOST = "127.0.0.1"


# ---------------------------------------------------------------- a full disk


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of `size` on `directory` (created), unmounted afterwards.

    Skips the test (with the reason) when not root or when mount fails: a tmpfs of
    a known size is the one way to fill a disk for real without filling the machine's.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (this test fills a real, small disk)")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("mount/umount are not installed")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(directory)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield directory
    finally:
        unmounted = subprocess.run(["umount", str(directory)], capture_output=True, timeout=30)
        if unmounted.returncode != 0:  # still busy (a file left open): detach it anyway
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=30)


def fill(directory: Path, name: str = "filler") -> Path:
    """Write a file in `directory` until the disk is full; returns its path."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError:
                block = block[: len(block) // 2]  # fill the last partial block too
                if not block:
                    break
    finally:
        os.close(fd)
    return path


def used_bytes(directory: Path) -> int:
    """Bytes in use on the file system of `directory`."""
    st = os.statvfs(directory)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    """How many file descriptors a process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def stop(proc: subprocess.Popen[str], *, keep_stderr: bool = False) -> None:
    """SIGTERM a child by its PID, SIGKILL after 10 s, reap it and close its pipes
    (stderr is left to a ChildLog reading it when `keep_stderr`)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdout, None if keep_stderr else proc.stderr):
        if stream is not None:
            stream.close()


def start_child(args: list[str], *, nofile: int | None = None,
                ready_timeout: float = 20.0) -> tuple[subprocess.Popen[str], str]:
    """Start `python args...` (with RLIMIT_NOFILE lowered to `nofile`), wait for the first
    line it prints on stdout (its readiness: e.g. the port), and return (process, line).

    stderr goes to a pipe the caller reads after stopping the process (its log).
    """
    def lower_limit() -> None:
        if nofile is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=env, preexec_fn=lower_limit)
    try:
        line = _readline(proc, ready_timeout)
    except BaseException:
        stop(proc)
        raise
    return proc, line


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"child printed nothing within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise AssertionError(f"child exited ({proc.returncode}) before it was ready:\n"
                             f"{proc.stderr.read() if proc.stderr else ''}")
    return line.strip()


# ---------------------------------------------------------------- HTTP over a socket


def http_get(port: int, path: str = "/ping", timeout: float = 2.0) -> tuple[int, bytes]:
    """One GET on a fresh connection (Connection: close); returns (status, body)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def wait_until(predicate, timeout: float, interval: float = 0.05) -> float:  # type: ignore[no-untyped-def]
    """Poll `predicate()` until it is true; returns the seconds it took.

    Raises:
        AssertionError: still false after `timeout` seconds (its last exception, if any,
            is the cause).
    """
    started = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except Exception as exc:  # the condition may raise while the fault lasts
            last = exc
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition still false after {timeout} s") from last
        time.sleep(interval)


class ChildLog:
    """Collects a child's stderr lines as they come (a thread), so a test can wait for a
    log line while the child runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import threading

        assert proc.stderr is not None
        self._stream = proc.stderr
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until a line containing `text` appeared."""
        return wait_until(lambda: self.count(text) > 0, timeout)

    def join(self, timeout: float = 5.0) -> str:
        """After the child ended: everything it logged (its stderr is closed)."""
        self._thread.join(timeout)
        self._stream.close()
        return "\n".join(self.lines)
