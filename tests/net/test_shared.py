"""ctx.shared: one suite over both backends (memory always, Redis when redis-server exists)."""
from __future__ import annotations

import asyncio
import pytest

from nethelp import run, start_redis, stop_process
from packetron.errors import ConfigError
from packetron.net.shared import (
    SUBSCRIPTION_QUEUE_SIZE,
    MemoryStore,
    RedisStore,
    open_store,
)


@pytest.fixture(scope="module")
def redis_url():
    """A throwaway redis-server on a free port, stopped by its PID afterwards."""
    proc, url = start_redis()
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(params=["memory", "redis"])
def store_url(request):
    if request.param == "memory":
        return None
    return request.getfixturevalue("redis_url")


def with_store(url, body):
    async def main():
        store = open_store(url)
        try:
            if isinstance(store, RedisStore):
                await store._client.flushdb()
            await body(store)
        finally:
            await store.close()

    run(main())


def test_get_set_delete(store_url):
    async def body(store):
        assert await store.get("missing") is None
        assert await store.get("missing", "dflt") == "dflt"
        await store.set("k", {"a": [1, 2], "b": "x"})
        assert await store.get("k") == {"a": [1, 2], "b": "x"}
        assert await store.delete("k") is True
        assert await store.delete("k") is False
        assert await store.get("k") is None

    with_store(store_url, body)


def test_concurrent_incr_loses_no_update(store_url):
    async def body(store):
        results = await asyncio.gather(*(store.incr("n") for _ in range(100)))
        assert sorted(results) == list(range(1, 101))
        assert await store.get("n") == 100
        assert await store.incr("n", 5) == 105

    with_store(store_url, body)


def test_publish_reaches_every_subscriber_in_order(store_url):
    async def body(store):
        assert await store.publish("room", "nobody") == 0
        async with store.subscribe("room") as a, store.subscribe("room") as b:
            assert await store.publish("room", "one") == 2
            assert await store.publish("room", {"two": 2}) == 2
            assert await store.publish("other", "x") == 0
            for sub in (a, b):
                assert [await sub.__anext__(), await sub.__anext__()] == ["one", {"two": 2}]
        assert await store.publish("room", "gone") == 0

    with_store(store_url, body)


def test_async_for_ends_when_the_subscription_is_closed(store_url):
    async def body(store):
        sub = store.subscribe("feed")
        got = []

        async def consume():
            async for msg in sub:
                got.append(msg)
                if msg == 3:
                    await sub.aclose()

        task = asyncio.ensure_future(consume())
        # Wait until the subscription is registered (Redis subscribes on first iteration).
        while await store.publish("feed", 1) == 0:
            await asyncio.sleep(0.005)
        await store.publish("feed", 2)
        await store.publish("feed", 3)
        await asyncio.wait_for(task, 5)
        # Publishes that reached nobody (returned 0) are lost, the rest arrive in order.
        assert got == [1, 2, 3]

    with_store(store_url, body)


def test_memory_subscriber_that_falls_behind_loses_the_oldest_messages(caplog):
    async def body(store):
        async with store.subscribe("firehose") as sub:
            for i in range(SUBSCRIPTION_QUEUE_SIZE + 3):
                await store.publish("firehose", i)
            assert await sub.__anext__() == 3
        assert any("dropping the oldest" in r.getMessage() for r in caplog.records)

    with_store(None, body)


def test_open_store_picks_the_backend_from_the_url():
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store("memory://"), MemoryStore)
    with pytest.raises(ConfigError, match="unknown shared store URL"):
        open_store("mongodb://localhost")

    async def main():
        store = open_store("redis://127.0.0.1:1/0")  # lazy: nothing connects yet
        assert isinstance(store, RedisStore)
        await store.close()

    run(main())


def test_memory_incr_on_a_non_integer_is_a_type_error():
    async def body(store):
        await store.set("s", "text")
        with pytest.raises(TypeError):
            await store.incr("s")

    with_store(None, body)
