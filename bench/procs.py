"""Process helpers the benchmark scripts share: ports, CPU pinning, readiness, stopping, /proc.

Linux only where it reads /proc (peak RSS, CPU time). Import it as ``bench.procs``: a script
run as ``python bench/<name>.py`` first puts the repository root in place of bench/ on
sys.path (see any script's preamble), since bench/http.py would shadow the standard
library's ``http`` package.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# The address every benchmarked server binds, and where free_port() looks.
HOST = "127.0.0.1"
# SIGTERM first; SIGKILL if the process has not exited after this long.
STOP_TIMEOUT_S = 5.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port(host: str = HOST) -> int:
    """A TCP port on host that nothing is bound to right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    """command run by ``taskset -c cpu``; unchanged when cpu is None or taskset is missing."""
    if cpu is None or shutil.which("taskset") is None:
        return command
    # taskset execs the command, so the child's PID is the command's own.
    return ["taskset", "-c", str(cpu), *command]


class NotReady(RuntimeError):
    """A process exited, or did not answer in time, while wait_ready() polled it."""


def wait_ready(
    proc: subprocess.Popen[Any],
    probe: Callable[[], object],
    timeout: float,
    *,
    errors: tuple[type[BaseException], ...] = (OSError,),
    interval: float = 0.05,
) -> float:
    """Poll probe() until it returns anything but False without raising one of errors.

    Returns the seconds that took; raises NotReady when proc exits or timeout passes first.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if proc.poll() is not None:
            raise NotReady(f"exited with code {proc.returncode} before answering")
        try:
            if probe() is not False:
                return time.monotonic() - started
        except errors:
            pass  # not listening yet, or not answering yet: poll again
        if time.monotonic() > deadline:
            raise NotReady(f"did not answer within {timeout:g} s")
        time.sleep(interval)


def stop(
    proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S, *, group: bool = False
) -> None:
    """SIGTERM proc; after timeout seconds SIGKILL it, or its whole process group if group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # group: a server started in its own session also takes its workers down.
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()


def process_tree(pid: int) -> list[int]:
    """pid followed by all its descendants' PIDs (a server may fork workers)."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        try:
            # Every thread has its own children list: a child forked from any thread counts.
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    queue.extend(int(child) for child in f.read().split())
        except OSError:
            pass
    return pids


def _vm_kib(pid: int) -> int | None:
    """VmHWM of one process in KiB (VmRSS where the kernel gives no VmHWM), or None."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    fields[key] = int(rest.split()[0])  # always in kB
    except (OSError, ValueError, IndexError):
        pass
    return fields.get("VmHWM") or fields.get("VmRSS")


def rss_kib(pid: int, *, children: bool = False) -> int:
    """Resident set now (VmRSS) of pid, summed over its descendants if children, in KiB."""
    total = 0
    for each in (process_tree(pid) if children else [pid]):
        try:
            with open(f"/proc/{each}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])  # always in kB
                        break
        except (OSError, ValueError, IndexError):
            pass
    return total


def peak_rss_kib(pid: int, *, children: bool = False) -> int | None:
    """Peak resident set (VmHWM) of pid, summed over its descendants if children, in KiB."""
    values = [_vm_kib(p) for p in (process_tree(pid) if children else [pid])]
    found = [value for value in values if value is not None]
    return sum(found) if found else None


def peak_rss_mb(pid: int, *, children: bool = False) -> float:
    """peak_rss_kib() in MB of 1024 KiB, 0.0 when /proc has nothing to read."""
    return (peak_rss_kib(pid, children=children) or 0) / 1024


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time pid has used (all threads; descendants too if children)."""
    ticks = 0
    for p in process_tree(pid) if children else [pid]:
        try:
            with open(f"/proc/{p}/stat") as f:
                # Fields after the ")" that ends the command name; utime and stime are
                # fields 14 and 15 of proc(5), in clock ticks.
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / _CLOCK_TICKS


def choose_cpus(server_cpu: int, client_cpu: int) -> tuple[int | None, int | None]:
    """The two CPUs to pin the server and the load generator to, or (None, None) when
    taskset or two distinct usable CPUs are missing (said on stderr)."""
    if shutil.which("taskset") is None:
        print("taskset not found (package util-linux): processes are not pinned",
              file=sys.stderr)
        return None, None
    allowed = os.sched_getaffinity(0)
    if server_cpu not in allowed or client_cpu not in allowed or server_cpu == client_cpu:
        print(f"CPUs {server_cpu} and {client_cpu} are not two distinct usable CPUs "
              f"(usable: {sorted(allowed)}): processes are not pinned", file=sys.stderr)
        return None, None
    return server_cpu, client_cpu


def git_state(root: str) -> dict[str, Any]:
    """The commit of the checkout at `root` and the packetron files changed on top of it
    (uncommitted), for a benchmark's report; empty values where git is missing."""
    def git(*words: str) -> str:
        try:
            done = subprocess.run(["git", *words], cwd=root, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout if done.returncode == 0 else ""

    # Porcelain lines are "XY path": stripping the whole output first would eat the
    # leading space of " M path" and with it the path's first letter.
    changed = git("status", "--porcelain", "--", "packetron")
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None,
            "packetron_uncommitted": [line[3:] for line in changed.splitlines() if line]}
