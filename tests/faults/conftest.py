"""Fixtures shared by the fault tests."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_redis_outage import RestartableRedis  # the suite's restartable redis-server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A real redis-server the test may stop, kill, freeze and restart on its port."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH; run `bash tests/prepare.sh` to install it")
    server = RestartableRedis(executable, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.thaw()  # a frozen process ignores SIGTERM until it runs again
        server.stop()  # by its PID (SIGTERM, then SIGKILL), and reaped
