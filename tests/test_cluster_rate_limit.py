"""rate_limit_scope="cluster": one cap for every worker of the server, SQLite or Redis."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from packetron import Packetron, ServerFlags
from packetron.errors import ConfigError

from tests.test_globaldata import redis_server  # noqa: F401  (the fixture)

HOST = "127.0.0.1"


def _burst(url: str, count: int) -> tuple[int, int, set[int], float, float]:
    """`count` requests on fresh connections: (ok, refused, worker pids, start, end)."""
    # Start right after a second boundary, so the burst normally fits in one window.
    time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    start = time.time()
    ok = refused = 0
    pids: set[int] = set()
    for _ in range(count):
        r = requests.get(url, headers={"Connection": "close"}, timeout=5)
        if r.status_code == 200:
            ok += 1
            pids.add(int(r.text))
        else:
            assert r.status_code == 429
            assert r.headers["retry-after"] == "1"
            refused += 1
    return ok, refused, pids, start, time.time()


def _serve_pid(request, response) -> None:
    response.send_text_plain(str(os.getpid()))


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_cluster_limit_holds_across_two_workers(backend: str, tmp_path: Path, request) -> None:
    options = {"global_data_path": str(tmp_path / "store.db")}
    if backend == "redis":
        options = {"global_data_url": request.getfixturevalue("redis_server").url}
    server = Packetron(port=0, host=HOST, workers=2, **options)
    server.get("limited", _serve_pid, max_requests_per_second=50, rate_limit_scope="cluster")
    with server:
        ok, refused, pids, start, end = _burst(server.url + "/limited", 200)
    windows = int(end) - int(start) + 1
    assert ok + refused == 200
    assert 50 <= ok <= 50 * windows
    assert len(pids) == 2  # both workers answered, and together they kept the cap


def test_worker_scope_is_per_worker(tmp_path: Path) -> None:
    server = Packetron(port=0, host=HOST, workers=1)
    server.get("limited", _serve_pid, max_requests_per_second=5)
    with server:
        ok, refused, _, start, end = _burst(server.url + "/limited", 12)
    assert ok + refused == 12
    assert 5 <= ok <= 5 * (int(end) - int(start) + 1)


def test_bad_scope_and_disabled_global_data_are_refused(tmp_path: Path) -> None:
    server = Packetron(port=0, host=HOST, workers=1)
    with pytest.raises(ConfigError):
        server.get("x", _serve_pid, max_requests_per_second=5, rate_limit_scope="galaxy")
    disabled = Packetron(port=0, host=HOST, workers=1, flags=ServerFlags.NO_GLOBAL_DATA)
    with pytest.raises(ConfigError):
        disabled.get("x", _serve_pid, max_requests_per_second=5, rate_limit_scope="cluster")


def test_static_files_take_the_cluster_scope(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("A")
    (tmp_path / "one.txt").write_text("1")
    server = Packetron(port=0, host=HOST, workers=1, global_data_path=str(tmp_path / "s.db"))
    [route] = server.serve(str(tmp_path / "site"), max_requests_per_second=2,
                           rate_limit_scope="cluster")
    single = server.serve_file("one", str(tmp_path / "one.txt"), max_requests_per_second=2,
                               rate_limit_scope="cluster")
    assert type(route.rate_limiter).__name__ == type(single.rate_limiter).__name__ == \
        "ClusterRateLimiter"
    with server:
        time.sleep(1.0 - (time.time() % 1.0) + 0.01)  # one window for the three requests
        codes = [requests.get(server.url + "/a.txt", timeout=5).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.parametrize("policy, expected", [("open", 200), ("closed", 429)])
def test_a_failing_store_fails_open_or_closed_as_configured(tmp_path: Path, policy: str,
                                                            expected: int) -> None:
    # A global data path whose folder is a file: every count fails, for real.
    (tmp_path / "not-a-folder").write_text("x")
    server = Packetron(port=0, host=HOST, workers=1, rate_limit_store_failure=policy,
                       global_data_path=str(tmp_path / "not-a-folder" / "store.db"))
    server.get("limited", _serve_pid, max_requests_per_second=50, rate_limit_scope="cluster")
    with server:
        codes = {requests.get(server.url + "/limited", timeout=5).status_code
                 for _ in range(3)}
    assert codes == {expected}


def test_the_store_failure_policy_is_checked() -> None:
    with pytest.raises(ConfigError):
        Packetron(port=0, host=HOST, workers=1, rate_limit_store_failure="ajar")
