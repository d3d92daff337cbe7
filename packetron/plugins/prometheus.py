"""Prometheus metrics, summed over every worker process of the server.

`metrics()` counts answers by route, method and status, times them, and tracks the
requests in flight. Each process writes its own files in prometheus_client's multiprocess
format into a directory that belongs to this one `metrics()` instance; the scrape answer
merges every process's files with prometheus_client's `MultiProcessCollector`. Workers are
forked after the plugin is built, so each worker opens files named by its own PID at its
first request, and the merge adds them up.

The files are written here rather than through prometheus_client's metric classes: those
take their directory from the process-wide PROMETHEUS_MULTIPROC_DIR variable, read once
when the library is imported and again after every fork, so two servers in one process
(or an application's own prometheus_client metrics) would write into each other's files.

prometheus_client is imported only when `metrics()` is called: a server without this
plugin pays nothing for it.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
import time
import weakref
from bisect import bisect_left
from typing import Any, Iterable

from packetron.errors import ConfigError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin

__all__ = ["metrics", "MetricsPlugin", "DEFAULT_BUCKETS", "UNMATCHED_ROUTE",
           "CONTENT_TYPE"]

# Prometheus text exposition format 0.0.4, what every scraper accepts.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The route label of answers no route gave (the server's own 404 / 405 / 501): a fixed
# value, never the requested path, so a scan of random URLs cannot create new series.
UNMATCHED_ROUTE = "<unmatched>"
# Seconds. Finer at the low end than prometheus_client's defaults: most answers of a
# server like this one take well under 5 ms.
DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, float("inf"))

REQUESTS = "packetron_requests"  # the counter's samples are named packetron_requests_total
DURATION = "packetron_request_duration_seconds"
IN_FLIGHT = "packetron_requests_in_flight"
REQUESTS_HELP = "HTTP answers by route pattern, method and status."
DURATION_HELP = "Seconds from the first plugin to the answer's head, by route, method and status."
IN_FLIGHT_HELP = "Requests being answered now, in every worker."
LABELS = ("route", "method", "status")

# Anything else (a method httptools knows but nobody routes) is one label value, "other".
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS",
                      "CONNECT", "TRACE"})
# File name prefixes MultiProcessCollector reads the metric type (and gauge mode) from.
_COUNTER_FILE = "counter"
_HISTOGRAM_FILE = "histogram"
_GAUGE_FILE = "gauge_livesum"  # live: a dead worker's file is dropped; sum: workers add up


class _Series:
    """One (route, method, status) in one process: its mmap keys and current values."""

    __slots__ = ("counter_key", "sum_key", "bucket_keys", "count", "total", "buckets")

    def __init__(self, labels: tuple[str, str, str], bound_labels: list[str],
                 files: "_ProcessFiles") -> None:
        from prometheus_client.mmap_dict import mmap_key

        names, values = list(LABELS), list(labels)
        self.counter_key = mmap_key(REQUESTS, REQUESTS + "_total", names, values,
                                    REQUESTS_HELP)
        self.sum_key = mmap_key(DURATION, DURATION + "_sum", names, values, DURATION_HELP)
        self.bucket_keys = [mmap_key(DURATION, DURATION + "_bucket", [*names, "le"],
                                     [*values, bound], DURATION_HELP)
                            for bound in bound_labels]
        # read_value writes a missing key as 0: every bucket is in the file from the
        # start, so a scrape shows the whole histogram, not only the buckets hit so far.
        # A file left by an earlier process with this PID keeps its counts.
        self.count = files.counter.read_value(self.counter_key)[0]
        self.total = files.histogram.read_value(self.sum_key)[0]
        self.buckets = [files.histogram.read_value(key)[0] for key in self.bucket_keys]


class _ProcessFiles:
    """One process's three files in the metrics directory and the series written there.

    Made at the first write in each process: a forked worker never writes into its
    parent's files (the merge would count the same answers twice, and two processes
    would race on one mmap); it opens files named by its own PID.
    """

    __slots__ = ("counter", "histogram", "gauge", "series")

    def __init__(self, directory: str) -> None:
        from prometheus_client.mmap_dict import MmapedDict

        pid = os.getpid()
        self.counter = MmapedDict(os.path.join(directory, f"{_COUNTER_FILE}_{pid}.db"))
        self.histogram = MmapedDict(os.path.join(directory, f"{_HISTOGRAM_FILE}_{pid}.db"))
        self.gauge = MmapedDict(os.path.join(directory, f"{_GAUGE_FILE}_{pid}.db"))
        self.series: dict[tuple[str, str, int], _Series] = {}

    def close(self) -> None:
        for file in (self.counter, self.histogram, self.gauge):
            file.close()


class _ProcessState:
    """What the plugin holds in one process; its fork hook and finalizer share it (they
    must not hold the plugin itself, or it would never be freed)."""

    __slots__ = ("lock", "files", "live", "__weakref__")

    def __init__(self) -> None:
        # One server's loop thread writes; but one plugin attached to two workers=1
        # servers in one process has two loop threads sharing the files.
        self.lock = threading.Lock()
        self.files: _ProcessFiles | None = None  # opened at the first write
        # Requests whose first plugin ran and whose answer has not been given, with the
        # time they started. Weak: a request abandoned without an answer (the client left
        # while the handler waited for its body) drops out when it is freed (by the
        # cyclic collector: request and response point at each other) instead of counting
        # as in flight for ever.
        self.live: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def forget_after_fork(self) -> None:
        # The parent keeps its files and requests; the child opens its own files. The lock
        # may have been held by a thread the fork did not copy.
        self.lock = threading.Lock()
        self.files = None
        self.live = weakref.WeakKeyDictionary()


class MetricsPlugin(Plugin):
    """The plugin `metrics()` returns: attach it like any other, globally.

    Attributes:
        directory: where every process of the server writes its files (removed at exit
            of the process that called `metrics()`, or when the plugin is dropped).
        path: the normalized path the scrape is answered on ("" when it is not answered).
    """

    __slots__ = ("directory", "path", "_state", "_bounds", "_bound_labels",
                 "_in_flight_key", "_path_label", "__weakref__")

    def __init__(self, path: str | None, buckets: Iterable[float]) -> None:
        from prometheus_client.mmap_dict import mmap_key
        from prometheus_client.utils import floatToGoString

        bounds = [float(bound) for bound in buckets]
        if not bounds or bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ConfigError(f"metrics: buckets must be increasing numbers, got {buckets!r}")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))  # the +Inf bucket is every histogram's count
        self._bounds = bounds
        self._bound_labels = [floatToGoString(bound) for bound in bounds]
        self.path = "" if path is None else path.strip("/")
        if path is not None and not self.path:
            raise ConfigError("metrics: path must name a path (\"metrics\"), or be None "
                              "to answer no scrape")
        self._path_label = "/" + self.path
        self._in_flight_key = mmap_key(IN_FLIGHT, IN_FLIGHT, [], [], IN_FLIGHT_HELP)
        self.directory = tempfile.mkdtemp(prefix="packetron-metrics-")
        state = self._state = _ProcessState()
        # At exit, or when the plugin is dropped earlier: close the files, and remove the
        # directory if this is the process that made it (a worker that ran exit handlers
        # must not take its siblings' files with it).
        weakref.finalize(self, _release, state, self.directory, os.getpid())
        weak_state = weakref.ref(state)
        os.register_at_fork(after_in_child=lambda: _forget(weak_state))
        # EXTREMELY_HIGH: the clock starts before any other plugin runs, and the requests
        # other plugins answer (a CORS preflight, a refused login) are counted too.
        super().__init__(PluginPriority.EXTREMELY_HIGH, self._before, self._after)

    def _open(self) -> _ProcessFiles:
        """This process's files (the caller holds the lock)."""
        state = self._state
        if state.files is None:
            state.files = _ProcessFiles(self.directory)
        return state.files

    # ------------------------------------------------------------ the request path

    def _before(self, request: Any, response: Any) -> bool:
        started = time.perf_counter()
        if self.path and request.method in ("GET", "HEAD") \
                and request.path.strip("/") == self.path:
            # The snapshot is taken before this request counts as in flight: at rest a
            # scrape reads 0, and it shows up in the counts of the next scrape.
            body = self.render()
            self._start(request, started)
            response.set_header("Content-Type", CONTENT_TYPE)
            response.send(body)
            return True
        self._start(request, started)
        return False

    def _start(self, request: Any, started: float) -> None:
        state = self._state
        live = state.live
        live[request] = started
        with state.lock:
            files = state.files or self._open()
            files.gauge.write_value(self._in_flight_key, float(len(live)), 0.0)

    def _after(self, request: Any, response: Any) -> None:
        state = self._state
        # None when no plugin ran first: the router or a limit answered at once (413,
        # 429), or the request broke before its plugins' turn. It is counted, with a
        # duration of 0 (it was answered as its head arrived), and never leaves the gauge
        # it did not enter.
        started = state.live.pop(request, None)
        duration = 0.0 if started is None else time.perf_counter() - started
        route = request.route
        if route is not None:
            route_label = "/" + route.key
        elif self.path and request.path.strip("/") == self.path:
            route_label = self._path_label  # the scrape, answered by this plugin
        else:
            route_label = UNMATCHED_ROUTE
        key = (route_label, request.method, response.status)
        with state.lock:
            files = state.files or self._open()
            series = files.series.get(key)
            if series is None:
                method = key[1] if key[1] in _METHODS else "other"
                series = files.series[key] = _Series(
                    (route_label, method, str(key[2])), self._bound_labels, files)
            series.count += 1
            files.counter.write_value(series.counter_key, series.count, 0.0)
            series.total += duration
            histogram = files.histogram
            histogram.write_value(series.sum_key, series.total, 0.0)
            index = bisect_left(self._bounds, duration)
            series.buckets[index] += 1
            histogram.write_value(series.bucket_keys[index], series.buckets[index], 0.0)
            if started is not None:
                files.gauge.write_value(self._in_flight_key, float(len(state.live)), 0.0)

    # ------------------------------------------------------------ the scrape

    def render(self) -> bytes:
        """Every process's metrics, merged, in the Prometheus text format 0.0.4 (for an
        application that serves them itself: `metrics(path=None)`)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

        state = self._state
        with state.lock:
            # A request freed without an answer has left the map by now: say so.
            files = state.files or self._open()
            files.gauge.write_value(self._in_flight_key, float(len(state.live)), 0.0)
        for pid in _dead_pids(self.directory):
            # A worker that died mid-request would count as busy for ever.
            mark_process_dead(pid, self.directory)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry)

    def __repr__(self) -> str:
        return f"metrics(path={self._path_label!r}, directory={self.directory!r})"


def _forget(state: "weakref.ref[_ProcessState]") -> None:
    target = state()
    if target is not None:
        target.forget_after_fork()


def _dead_pids(directory: str) -> list[int]:
    """PIDs whose live gauge file is in `directory` but whose process is gone."""
    dead = []
    for name in glob.glob(os.path.join(directory, f"{_GAUGE_FILE}_*.db")):
        try:
            pid = int(os.path.basename(name)[len(_GAUGE_FILE) + 1:-3])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(pid)
        except PermissionError:
            pass  # it exists (another user's, after PID reuse): leave it
    return dead


def _release(state: _ProcessState, directory: str, owner: int) -> None:
    with state.lock:
        if state.files is not None:
            state.files.close()
            state.files = None
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def metrics(path: str | None = "metrics", *,
            buckets: Iterable[float] = DEFAULT_BUCKETS) -> MetricsPlugin:
    """Prometheus metrics of every answer, summed over all worker processes.

    Attach it globally (`Packetron(plugins=[metrics()])`), with one `metrics()` per
    server: it answers `GET /{path}` itself (a route of the same path and method is never
    reached) in the text format 0.0.4 with

    - `packetron_requests_total{route, method, status}`: a counter. `route` is the route's
      pattern ("/users/{id}"), "<unmatched>" for the server's own 404 / 405 / 501, or
      "/{path}" for the scrapes themselves;
    - `packetron_request_duration_seconds{route, method, status}`: a histogram, from the
      first plugin to the answer's head;
    - `packetron_requests_in_flight`: a gauge, summed over the live workers; a scrape does
      not count itself.

    Args:
        path: where the scrape is answered; None answers nothing (serve `plugin.render()`
            yourself, e.g. behind authentication).
        buckets: the histogram's upper bounds in seconds, increasing; +Inf is added.

    Raises:
        ConfigError: buckets that are not increasing numbers, or an empty path.
    """
    return MetricsPlugin(path, buckets)

