"""Global data benchmark: update_global_data() operations per second.

For each backend (SQLite, Redis) and each process count (1, 2): fork that many
processes, let them all increment one shared key with `update_global_data` for
`--duration` seconds, and report the total updates per second. Afterwards the key
must equal the sum of the updates the processes counted; a run where it does not
is flagged, since a fast store that loses updates is worth nothing.

Redis: with `--redis-url` that server is used (the key is deleted first);
otherwise a throwaway `redis-server` is started on a free loopback port and
stopped afterwards; without either, the Redis rows are skipped.

Usage (from the repository root)::

    .venv/bin/python bench/globaldata.py [--duration 2] [--processes 1,2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Run as a script, Python puts bench/ first on sys.path, where bench/http.py would
# shadow the standard library's http package; the repository root goes there instead.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == BENCH_DIR:
    sys.path[0] = REPO_ROOT

from bench.procs import NotReady, free_port, stop, wait_ready  # noqa: E402
from packetron.globaldata import GlobalData, open_global_data  # noqa: E402

KEY = "bench:counter"


@dataclass(frozen=True)
class Result:
    backend: str
    processes: int
    updates: int
    seconds: float
    final_value: int

    @property
    def per_second(self) -> float:
        return self.updates / self.seconds

    @property
    def consistent(self) -> bool:
        return self.final_value == self.updates


def _worker(store: GlobalData, start: multiprocessing.synchronize.Event, seconds: float,
            results: multiprocessing.queues.SimpleQueue[int]) -> None:
    # Forked: inherits the store and reopens its connection on first use.
    count = 0
    try:
        # One update outside the clock, so connecting is not measured.
        store.update_global_data(KEY, lambda v: v + 1, 0)
        count = 1
        start.wait()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            store.update_global_data(KEY, lambda v: v + 1, 0)
            count += 1
    finally:
        results.put(count)
        store.close()


def measure(backend: str, store: GlobalData, processes: int, seconds: float) -> Result:
    store.set_global_data(KEY, 0)
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results: multiprocessing.queues.SimpleQueue[int] = context.SimpleQueue()
    children = [context.Process(target=_worker, args=(store, start, seconds, results))
                for _ in range(processes)]
    for child in children:
        child.start()
    began = time.perf_counter()
    start.set()
    counts = [results.get() for _ in children]
    elapsed = time.perf_counter() - began
    for child in children:
        child.join(timeout=30)
        if child.exitcode is None:
            os.kill(child.pid or 0, 9)
            child.join()
    # The warm-up update of each process is in both the count and the final value.
    return Result(backend, processes, sum(counts), max(elapsed, seconds),
                  int(store.get_global_data(KEY)))


@contextmanager
def redis_url(given: str | None) -> Iterator[str | None]:
    """Yield a Redis URL: the given one, a throwaway server's, or None."""
    if given is not None:
        yield given
        return
    executable = shutil.which("redis-server")
    if executable is None:
        print("redis-server not found (bash tests/prepare.sh installs it): Redis skipped")
        yield None
        return
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", tempfile.gettempdir()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        try:  # readiness: PING until it answers, or the server exits
            wait_ready(proc, client.ping, 10, errors=(redis.ConnectionError,), interval=0.02)
        except NotReady as exc:
            raise RuntimeError(f"redis-server {exc}") from None
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop(proc, 10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a throwaway one")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.processes.split(",")]

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        with open_global_data(path=os.path.join(tmp, "bench.sqlite3")) as store:
            results += [measure("sqlite", store, n, args.duration) for n in counts]
    with redis_url(args.redis_url) as url:
        if url is not None:
            with open_global_data(url) as store:
                results += [measure("redis", store, n, args.duration) for n in counts]
                store.backend.delete(KEY)

    print(f"\nupdate_global_data() on one key, {args.duration:g} s per row, "
          f"{os.cpu_count()} CPUs\n")
    print("| backend | processes | updates/s | updates | final value ok |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r.backend} | {r.processes} | {r.per_second:,.0f} | {r.updates:,} | "
              f"{'yes' if r.consistent else f'NO ({r.final_value:,})'} |")
    return 0 if all(r.consistent for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
