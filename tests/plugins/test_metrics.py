"""The metrics plugin on real servers: what a scrape says, parsed back by prometheus_client.

Counts must equal exactly what was sent, summed over every worker process; the gauge of
requests in flight must read exactly 0 at rest and never go negative.
"""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import pathlib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator

import pytest
import requests

from packetron import HandlerFlags, Packetron
from packetron.errors import ConfigError
from packetron.plugins import metrics
from packetron.plugins.prometheus import CONTENT_TYPE, UNMATCHED_ROUTE, MetricsPlugin

prometheus_parser = pytest.importorskip("prometheus_client.parser")

Key = tuple[str, str, str]  # (route, method, status)
CLOSE = {"Connection": "close"}  # a fresh connection each time, so every worker serves


class Scrape:
    """One /metrics answer, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}
        self.requests: dict[Key, float] = {}
        self.histogram_count: dict[Key, float] = {}
        self.histogram_inf: dict[Key, float] = {}
        self.histogram_sum: dict[Key, float] = {}
        self.buckets: dict[Key, list[tuple[float, float]]] = {}
        for sample in self.family("packetron_requests", "counter").samples:
            if sample.name == "packetron_requests_total":
                self.requests[self._key(sample.labels)] = sample.value
        for sample in self.family("packetron_request_duration_seconds", "histogram").samples:
            key = self._key(sample.labels)
            if sample.name.endswith("_count"):
                self.histogram_count[key] = sample.value
            elif sample.name.endswith("_sum"):
                self.histogram_sum[key] = sample.value
            elif sample.name.endswith("_bucket"):
                self.buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
                if sample.labels["le"] == "+Inf":
                    self.histogram_inf[key] = sample.value
        (gauge,) = self.family("packetron_requests_in_flight", "gauge").samples
        self.in_flight = gauge.value

    def family(self, name: str, kind: str) -> Any:
        family = self.families.get(name)
        if family is None:
            # In multiprocess mode a series exists once some process wrote it: before the
            # first answer there is no counter or histogram at all.
            return prometheus_parser.Metric(name, "", kind)
        assert family.type == kind
        return family

    @staticmethod
    def _key(labels: dict[str, str]) -> Key:
        return labels["route"], labels["method"], labels["status"]

    def without_scrapes(self) -> dict[Key, float]:
        return {key: value for key, value in self.requests.items() if key[0] != "/metrics"}


def scrape(server: Packetron, path: str = "/metrics") -> Scrape:
    response = requests.get(server.url + path, headers=CLOSE, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return Scrape(response.text)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def add_routes(server: Packetron) -> None:
    @server.get("pid")
    def pid(request: Any, response: Any) -> None:
        response.send_json({"pid": os.getpid()})

    @server.get("items/{id:int}")
    def item(request: Any, response: Any) -> None:
        response.send_json({"id": request.path_params["id"], "pid": os.getpid()})

    @server.post("items", flags=HandlerFlags.JSON_BODY)
    async def create(request: Any, response: Any) -> None:
        response.send_json(await request.get_body(), 201)

    @server.get("boom")
    def boom(request: Any, response: Any) -> None:
        raise RuntimeError("meant to fail")


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Packetron, MetricsPlugin]]]:
    servers: list[Packetron] = []

    def factory(workers: int = 1, routes: Callable[[Packetron], None] = add_routes,
                **kwargs: Any) -> tuple[Packetron, MetricsPlugin]:
        plugin = kwargs.pop("plugin", None) or metrics()
        server = Packetron(port=0, host="127.0.0.1", workers=workers, plugins=[plugin], **kwargs)
        routes(server)  # before start(): the workers are forked with the routes
        servers.append(server)
        server.start()
        return server, plugin

    yield factory
    for server in servers:
        server.stop(timeout=5)


def send_traffic(server: Packetron, workers: int) -> tuple[Counter[Key], set[int]]:
    """A mix of answers over fresh connections; returns what was sent and the PIDs seen."""
    sent: Counter[Key] = Counter()
    pids: set[int] = set()

    def get(path: str, key: Key, method: str = "GET", **kwargs: Any) -> requests.Response:
        response = requests.request(method, server.url + path, headers=CLOSE, timeout=5,
                                    **kwargs)
        assert str(response.status_code) == key[2], (path, response.status_code)
        sent[key] += 1
        return response

    # At least 30 answers from /pid, and as many more as it takes to see every worker.
    deadline = time.monotonic() + 15
    while sent[("/pid", "GET", "200")] < 30 or len(pids) < workers:
        assert time.monotonic() < deadline, f"only saw workers {pids}"
        pids.add(get("/pid", ("/pid", "GET", "200")).json()["pid"])
    for number in range(7):
        pids.add(get(f"/items/{number}", ("/items/{id:int}", "GET", "200")).json()["pid"])
    for number in range(3):
        get("/items", ("/items", "POST", "201"), method="POST", json={"n": number})
    # Different unknown URLs, one label: the raw path never becomes a series.
    for number in range(5):
        get(f"/no/such/page/{number}", (UNMATCHED_ROUTE, "GET", "404"))
    get("/items/not-a-number", (UNMATCHED_ROUTE, "GET", "404"))
    for _ in range(2):
        get("/pid", (UNMATCHED_ROUTE, "DELETE", "405"), method="DELETE")
    for _ in range(2):
        get("/boom", ("/boom", "GET", "500"))
    return sent, pids


@pytest.mark.parametrize("workers", [2, 1])
def test_counts_are_exactly_the_requests_sent_summed_over_workers(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]], workers: int) -> None:
    server, plugin = serve(workers=workers)
    sent, pids = send_traffic(server, workers)
    assert len(pids) == workers

    # Each worker wrote its own files, made after the fork and named by its PID; the
    # process that built the plugin served nothing and wrote nothing.
    files = set(os.listdir(plugin.directory))
    if workers > 1:
        for pid in pids:
            assert {f"counter_{pid}.db", f"histogram_{pid}.db",
                    f"gauge_livesum_{pid}.db"} <= files
        assert not any(name.endswith(f"_{os.getpid()}.db") for name in files)
    else:
        assert pids == {os.getpid()}

    for earlier_scrapes in range(4):
        result = scrape(server)
        assert result.without_scrapes() == dict(sent)
        # A scrape is counted once it has been answered, so it sees the earlier ones only.
        assert result.requests.get(("/metrics", "GET", "200"), 0) == earlier_scrapes
        assert sum(result.requests.values()) == sum(sent.values()) + earlier_scrapes
        assert result.histogram_count == result.requests
        assert result.histogram_inf == result.requests
        for key, buckets in result.buckets.items():
            counts = [count for _, count in sorted(buckets)]
            assert counts == sorted(counts), f"buckets of {key} are not cumulative"
            assert len(buckets) == 15  # every bucket, not only those hit
            assert 0 <= result.histogram_sum[key] < 10 * result.histogram_count[key]
        # A scrape does not count itself as in flight; nothing else is running.
        assert result.in_flight == 0


def test_in_flight_counts_running_requests_and_returns_to_zero(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]], tmp_path: pathlib.Path) -> None:
    release = tmp_path / "release"  # a file: the workers are other processes

    def routes(server: Packetron) -> None:
        @server.get("slow")
        async def slow(request: Any, response: Any) -> None:
            while not release.exists():
                await asyncio.sleep(0.01)
            response.send_text_plain("done")

    server, _ = serve(workers=2, routes=routes)
    answers: list[int] = []
    clients = [threading.Thread(target=lambda: answers.append(requests.get(
        server.url + "/slow", headers=CLOSE, timeout=20).status_code)) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: scrape(server).in_flight == 3, "3 requests in flight")
    finally:
        release.touch()
        for client in clients:
            client.join(20)
    assert answers == [200, 200, 200]
    result = scrape(server)
    assert result.in_flight == 0
    assert result.without_scrapes() == {("/slow", "GET", "200"): 3}
    assert min(result.histogram_sum.values()) >= 0


def test_a_worker_killed_mid_request_leaves_the_gauge_and_keeps_its_counts(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    from prometheus_client.mmap_dict import MmapedDict

    def routes(server: Packetron) -> None:
        add_routes(server)

        @server.get("hang")
        async def hang(request: Any, response: Any) -> None:
            await asyncio.sleep(3600)

    server, plugin = serve(workers=2, routes=routes)
    sent, _ = send_traffic(server, 2)
    def hang() -> None:
        with pytest.raises(requests.ConnectionError):  # its worker is killed under it
            requests.get(server.url + "/hang", timeout=20)

    client = threading.Thread(target=hang)
    client.start()
    wait_for(lambda: scrape(server).in_flight == 1, "the hanging request in flight")

    def busy_worker() -> int | None:
        # The worker holding the request is the one whose gauge file says 1.
        for name in os.listdir(plugin.directory):
            if name.startswith("gauge_livesum_"):
                path = os.path.join(plugin.directory, name)
                if any(value == 1 for _, value, _, _ in
                       MmapedDict.read_all_values_from_file(path)):
                    return int(name.removeprefix("gauge_livesum_").removesuffix(".db"))
        return None

    os.kill(wait_for(busy_worker, "the busy worker"), signal.SIGKILL)
    client.join(20)
    result = wait_for(lambda: (lambda s: s if s.in_flight == 0 else None)(scrape(server)),
                      "the dead worker's request to leave the gauge")
    # What the dead worker answered before it died is still counted.
    assert result.without_scrapes() == dict(sent)


def test_counts_survive_a_new_generation_of_workers(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    server, _ = serve(workers=2)
    sent, first_pids = send_traffic(server, 2)

    # A route added after start() reaches the workers by replacing them.
    @server.get("late")
    def late(request: Any, response: Any) -> None:
        response.send_json({"pid": os.getpid()})

    def late_answer() -> requests.Response | None:
        response = requests.get(server.url + "/late", headers=CLOSE, timeout=5)
        key = ("/late", "GET", "200") if response.status_code == 200 \
            else (UNMATCHED_ROUTE, "GET", str(response.status_code))
        sent[key] += 1
        return response if response.status_code == 200 else None

    new_pids = {wait_for(late_answer, "the new route").json()["pid"]}

    def both_new_workers() -> bool:
        answer = late_answer()  # a retiring worker may still answer 404: counted too
        if answer is not None:
            new_pids.add(answer.json()["pid"])
        return len(new_pids) == 2

    wait_for(both_new_workers, "both new workers")
    assert not new_pids & first_pids
    result = scrape(server)
    # The retired workers' answers are still in the sum, next to the new workers'.
    assert result.without_scrapes() == dict(sent)
    assert result.in_flight == 0


def test_answers_given_before_any_plugin_are_counted_but_never_leave_the_gauge(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    def routes(server: Packetron) -> None:
        @server.post("upload", max_request_size_in_bytes=10)
        def upload(request: Any, response: Any) -> None:
            response.send_ok()

        @server.get("limited", max_requests_per_second=1)
        def limited(request: Any, response: Any) -> None:
            response.send_ok()

    server, _ = serve(routes=routes)
    # 413 and 429 are decided by the route's limits before its plugins run.
    assert requests.post(server.url + "/upload", data=b"x" * 100, timeout=5).status_code == 413
    statuses = Counter(requests.get(server.url + "/limited", timeout=5).status_code
                       for _ in range(3))
    result = scrape(server)
    assert result.in_flight == 0  # not -1: what never entered the gauge does not leave it
    assert statuses[429] >= 1
    # The router decides a 429 before it sets request.route, so the plugin cannot name
    # the route; should the router name it one day, the 429s move to "/limited".
    limited_route = "/limited" if ("/limited", "GET", "429") in result.requests \
        else UNMATCHED_ROUTE
    assert result.without_scrapes() == {
        ("/upload", "POST", "413"): 1,
        ("/limited", "GET", "200"): statuses[200],
        (limited_route, "GET", "429"): statuses[429],
    }
    assert result.histogram_count == result.requests


def test_a_request_abandoned_without_an_answer_leaves_the_gauge(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    def routes(server: Packetron) -> None:
        @server.post("wait", flags=HandlerFlags.PLAIN_TEXT_BODY)
        async def wait(request: Any, response: Any) -> None:
            response.send_text_plain(await request.get_body())

    server, _ = serve(routes=routes)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /wait HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 1000\r\n\r\nonly part of it")
        wait_for(lambda: scrape(server).in_flight == 1, "the request in flight")
    # The client left: no answer is given (so no after-hook runs), yet it is not busy
    # once the request is freed. Request and response point at each other, so that is
    # the cyclic collector's next pass; with workers=1 it runs here, in this process.
    def gone() -> Scrape | None:
        gc.collect()
        result = scrape(server)
        return result if result.in_flight == 0 else None

    result = wait_for(gone, "the abandoned request to leave the gauge")
    assert result.without_scrapes() == {}  # no answer, nothing counted


def test_scrapes_on_another_path_and_plugins_that_answer(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    from packetron.plugins import cors

    server, plugin = serve(plugin=metrics(path="/internal/metrics/"),
                           routes=lambda s: None)
    server.insert_global_plugin(cors(allow_origins=["http://a.example"]))
    assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
    # A preflight answered by the CORS plugin is counted like any answer.
    preflight = requests.options(server.url + "/anything", timeout=5, headers={
        "Origin": "http://a.example", "Access-Control-Request-Method": "PUT"})
    assert preflight.status_code == 204
    assert requests.head(server.url + "/internal/metrics", timeout=5).content == b""
    result = scrape(server, "/internal/metrics")
    assert result.requests == {
        (UNMATCHED_ROUTE, "GET", "404"): 1,
        (UNMATCHED_ROUTE, "OPTIONS", "204"): 1,
        ("/internal/metrics", "HEAD", "200"): 1,
    }
    assert plugin.render().decode().count("packetron_requests_total{") == 4


def test_two_servers_in_one_process_keep_their_own_counts(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    first, first_plugin = serve()
    second, second_plugin = serve()
    assert first_plugin.directory != second_plugin.directory
    for _ in range(3):
        requests.get(first.url + "/pid", timeout=5)
    requests.get(second.url + "/items/1", timeout=5)
    assert scrape(first).without_scrapes() == {("/pid", "GET", "200"): 3}
    assert scrape(second).without_scrapes() == {("/items/{id:int}", "GET", "200"): 1}


def test_path_none_answers_nothing_and_render_still_works(
        serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    server, plugin = serve(plugin=metrics(path=None))
    assert requests.get(server.url + "/metrics", timeout=5).status_code == 404
    result = Scrape(plugin.render().decode())
    assert result.requests == {(UNMATCHED_ROUTE, "GET", "404"): 1}


@pytest.mark.parametrize("kwargs", [{"path": ""}, {"path": "/"}, {"buckets": (1, 0.5)},
                                    {"buckets": ()}, {"buckets": (0.1, 0.1)}])
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        metrics(**kwargs)


def test_custom_buckets(serve: Callable[..., tuple[Packetron, MetricsPlugin]]) -> None:
    server, _ = serve(plugin=metrics(buckets=[0.1, 1]))
    requests.get(server.url + "/pid", timeout=5)
    result = scrape(server)
    assert [bound for bound, _ in result.buckets[("/pid", "GET", "200")]] == [
        0.1, 1.0, float("inf")]
    assert result.histogram_inf[("/pid", "GET", "200")] == 1


def test_nothing_is_imported_until_used_and_the_directory_goes_at_exit() -> None:
    code = ("import sys, packetron, packetron.plugins\n"
            "assert 'prometheus_client' not in sys.modules\n"
            "m = packetron.plugins.metrics()\n"
            "print(m.directory)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    directory = result.stdout.strip()
    assert directory and not os.path.exists(directory)
