"""Redis goes away and comes back: a real redis-server stopped, killed, frozen (SIGSTOP)
and started again on the same port by the test.

Global data calls raise GlobalDataUnavailable while it is away (503 from a handler), never
wait past their timeout, and work again once it is back, with nothing restarted. The
Broker's shared store (RedisStore) does the same with SharedStoreUnavailable, and its
subscribers resubscribe by themselves and keep receiving.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from faulthelp import wait_until
from packetron.errors import GlobalDataUnavailable, PacketronError, SharedStoreUnavailable
from packetron.globaldata import RedisGlobalData
from packetron.net import shared as shared_module
from packetron.net.shared import RedisStore

sys.path.insert(0, str(Path(__file__).parent.parent))
from test_globaldata import RedisServer  # noqa: E402  (the suite's redis-server helper)

TIMEOUT = 1.0  # the stores' timeout in these tests (the default is 2 s)
SLACK = 0.75  # what a loaded 2-core machine may add to a timeout
RECOVERY_DEADLINE = 10.0


class RestartableRedis(RedisServer):
    """RedisServer that can also be killed, frozen, and started again on its port."""

    def restart(self) -> None:
        """Start again on the same port (after stop() or kill())."""
        assert self.proc is None, "stop it first"
        log = self.workdir / "redis-restart.log"
        with open(log, "wb") as log_file:
            self.proc = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(self.workdir)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        if not self._wait_ready():
            self.stop()
            raise RuntimeError("redis-server did not restart:\n" + log.read_text()[-500:])

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye on the connections' side."""
        proc, self.proc = self.proc, None
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)


def _timed(fn) -> tuple[float, BaseException | None]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        fn()
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# ---------------------------------------------------------------- global data


def test_global_data_while_redis_is_stopped_and_after_it_is_back(redis_server, caplog):
    store = RedisGlobalData(redis_server.url, timeout=TIMEOUT)
    try:
        store.set("k", 1)
        redis_server.stop()
        took, exc = _timed(lambda: store.get("k"))
        assert isinstance(exc, GlobalDataUnavailable) and isinstance(exc, PacketronError)
        assert exc.status_code == 503
        assert "127.0.0.1" not in str(exc)  # the message may reach a client
        assert took < TIMEOUT + SLACK
        # While it stays away, calls keep failing clearly (and mostly at once).
        for _ in range(20):
            with pytest.raises(GlobalDataUnavailable):
                store.update("n", lambda n: n + 1, 0)
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1  # one line for the outage, not one per call
        redis_server.restart()
        recovery = wait_until(lambda: store.set("k", 2) is None, RECOVERY_DEADLINE)
        assert recovery < 2.5  # the retry delay is capped at 1 s
        assert store.get("k") == 2
        assert store.update("n", lambda n: n + 1, 0) == 1
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


def test_global_data_while_redis_hangs_is_bounded_by_the_timeout(redis_server):
    store = RedisGlobalData(redis_server.url, timeout=TIMEOUT)
    try:
        store.set("k", 1)
        redis_server.freeze()  # connections stay up; nothing answers
        took, exc = _timed(lambda: store.get("k"))
        assert isinstance(exc, GlobalDataUnavailable), exc
        assert TIMEOUT - 0.1 <= took < TIMEOUT + SLACK
        assert "no answer within 1 s" in str(exc)
        # The next calls do not wait again: the worker is not stalled per request.
        took, exc = _timed(lambda: store.get("k"))
        assert isinstance(exc, GlobalDataUnavailable) and took < 0.1
        redis_server.thaw()
        wait_until(lambda: store.get("k") == 1, RECOVERY_DEADLINE)
        store.set("k", 3)
        assert store.get("k") == 3
    finally:
        store.close()


def test_redis_timeout_is_an_option_of_the_url(redis_server):
    store = RedisGlobalData(redis_server.url + "?socket_timeout=0.3&socket_connect_timeout=0.3")
    try:
        store.set("k", 1)
        redis_server.freeze()
        took, exc = _timed(lambda: store.get("k"))
        assert isinstance(exc, GlobalDataUnavailable) and took < 0.3 + SLACK
    finally:
        redis_server.thaw()
        store.close()


def test_handler_answers_503_while_redis_is_away(make_server, redis_server):
    server = make_server(global_data_url=redis_server.url + "?socket_timeout=1"
                                                            "&socket_connect_timeout=1")

    @server.post("count")
    def count(request, response):
        response.send_json({"n": server.update_global_data("n", lambda n: n + 1, 0)})

    server.start()
    assert requests.post(server.url + "/count", timeout=5).json() == {"n": 1}
    redis_server.kill()
    started = time.monotonic()
    answer = requests.post(server.url + "/count", timeout=5)
    assert answer.status_code == 503 and time.monotonic() - started < 1 + SLACK
    redis_server.restart()  # empty (no persistence): counting starts again
    wait_until(lambda: requests.post(server.url + "/count", timeout=5).status_code == 200,
               RECOVERY_DEADLINE)


# ---------------------------------------------------------------- the Broker's shared store


def _run(coro):  # type: ignore[no-untyped-def]
    async def bounded():  # type: ignore[no-untyped-def]
        return await asyncio.wait_for(coro, 45)

    return asyncio.run(bounded())


async def _eventually(fn, deadline: float = RECOVERY_DEADLINE) -> float:  # type: ignore[no-untyped-def]
    """Await `fn()` until it returns true; returns the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if await fn():
                return time.monotonic() - started
        except SharedStoreUnavailable:
            pass
        if time.monotonic() - started > deadline:
            raise AssertionError(f"not true after {deadline} s")
        await asyncio.sleep(0.05)


def test_shared_store_calls_fail_clearly_and_recover(redis_server):
    async def main() -> None:
        store = RedisStore(redis_server.url, timeout=TIMEOUT)
        try:
            await store.set("k", 1)
            redis_server.kill()
            started = time.monotonic()
            with pytest.raises(SharedStoreUnavailable) as raised:
                await store.get("k")
            assert time.monotonic() - started < TIMEOUT + SLACK
            assert isinstance(raised.value, PacketronError)
            redis_server.restart()
            await _eventually(lambda: store.incr("n"))
            assert await store.get("n") == 1
            redis_server.freeze()
            started = time.monotonic()
            with pytest.raises(SharedStoreUnavailable):
                await store.get("k")
            assert time.monotonic() - started < TIMEOUT + SLACK
            redis_server.thaw()

            async def written() -> bool:
                await store.set("k", 5)
                return await store.get("k") == 5

            await _eventually(written)
        finally:
            await store.close()

    _run(main())


@pytest.mark.parametrize("fault", ["restart", "crash", "hang"])
def test_subscriber_resubscribes_and_keeps_receiving(redis_server, fault, monkeypatch, caplog):
    # A quiet subscription pings after HEARTBEAT_SECONDS (5 s by default): shortened,
    # so the frozen Redis is noticed within the test's patience.
    monkeypatch.setattr(shared_module, "HEARTBEAT_SECONDS", 0.5)

    async def main() -> None:
        store = RedisStore(redis_server.url, timeout=TIMEOUT)
        publisher = RedisStore(redis_server.url, timeout=TIMEOUT)
        got: list[object] = []
        subscription = store.subscribe("events")

        async def consume() -> None:
            async for message in subscription:
                got.append(message)

        consumer = asyncio.ensure_future(consume())
        try:
            await _eventually(lambda: publisher.publish("events", "before"))
            await _eventually(lambda: asyncio.sleep(0, "before" in got))
            if fault == "restart":
                redis_server.stop()
                redis_server.restart()
            elif fault == "crash":
                redis_server.kill()
                await asyncio.sleep(0.3)  # away for a while: attempts fail meanwhile
                redis_server.restart()
            else:
                redis_server.freeze()
                # Noticed: no answer to the heartbeat PING within the timeout.
                await _eventually(lambda: asyncio.sleep(0, any(
                    "lost its Redis connection" in r.getMessage() for r in caplog.records)))
                redis_server.thaw()
            # The same subscription (no new subscribe call) receives what is published
            # once it is back; what was published while it was away is lost.
            sequence = iter(range(1_000_000))

            async def delivered() -> bool:
                await publisher.publish("events", f"after-{next(sequence)}")
                await asyncio.sleep(0.05)
                return any(isinstance(m, str) and m.startswith("after-") for m in got)

            took = await _eventually(delivered)
            assert took < RECOVERY_DEADLINE
            assert not consumer.done()
            if fault != "restart":  # a quick restart may be bridged by redis-py itself
                assert any("is back after" in r.getMessage() for r in caplog.records)
        finally:
            await subscription.aclose()
            await asyncio.wait_for(consumer, 5)
            await store.close()
            await publisher.close()

    _run(main())


def test_subscribing_while_redis_is_away_fails_clearly(redis_server):
    async def main() -> None:
        store = RedisStore(redis_server.url, timeout=TIMEOUT)
        redis_server.kill()
        try:
            started = time.monotonic()
            with pytest.raises(SharedStoreUnavailable):
                async with store.subscribe("x"):
                    pass
            assert time.monotonic() - started < TIMEOUT + SLACK
        finally:
            await store.close()

    _run(main())
