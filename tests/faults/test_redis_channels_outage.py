"""`server.channels` on Redis while Redis goes away: a real redis-server frozen (SIGSTOP),
killed and started again on the same port by the test.

A publish never waits past the timeout: it raises ChannelsUnavailable (and fails at once
for a short while after). A subscription notices a frozen Redis by its heartbeat, a killed
one by the reset, and goes on receiving once Redis is back, without anything restarted;
the outage is logged once, not once per reconnection attempt.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from packetron.errors import ChannelsUnavailable, ConfigError, PacketronError, ServiceUnavailable
from packetron.http.channels import Subscription
from packetron.http.channels.redis import RedisChannels

TIMEOUT = 1.0  # the channels' timeout in these tests (the default is 2 s)
HEARTBEAT = 0.5  # the default is 2 s
SLACK = 0.75  # what a loaded 2-core machine may add to a timeout
BOUND = 5.0  # the most any call may take while Redis is away
RECOVERY_DEADLINE = 10.0

LOST = "channels: the Redis pub/sub connection to"
BACK = "is back after"


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def _until(predicate: Any, deadline: float = RECOVERY_DEADLINE) -> float:
    """Poll `predicate()` (sync) until true; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > deadline:
            raise AssertionError(f"not true after {deadline} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _delivered_after_outage(publisher: RedisChannels, sub: Subscription,
                                  name: str) -> float:
    """Publish numbered messages until `sub` receives one (messages published while the
    subscription was away are lost); returns the seconds it took."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < RECOVERY_DEADLINE:
        n += 1
        try:
            await publisher.publish(name, f"after-{n}")
        except ChannelsUnavailable:
            await asyncio.sleep(0.05)  # Redis still on its way back
            continue
        try:
            message = await asyncio.wait_for(sub.__anext__(), 0.2)
        except asyncio.TimeoutError:
            continue
        assert isinstance(message, str) and message.startswith("after-")
        return time.monotonic() - started
    raise AssertionError(f"nothing delivered within {RECOVERY_DEADLINE} s")


async def _timed(coro: Any) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await coro
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# ---------------------------------------------------------------- publish


@pytest.mark.parametrize("with_subscriber", [True, False],
                         ids=["through-the-link", "short-lived-client"])
def test_publish_while_redis_is_frozen_raises_within_the_timeout(redis_server, caplog,
                                                                  with_subscriber):
    caplog.set_level(logging.WARNING, "packetron")

    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT, heartbeat=60)
        sub = channels.subscribe("room") if with_subscriber else None
        try:
            if sub is not None:
                await sub.__aenter__()
            await channels.publish("room", "before")
            if sub is not None:
                assert await asyncio.wait_for(sub.__anext__(), 5) == "before"
            redis_server.freeze()  # connections stay up; nothing answers
            took, exc = await _timed(channels.publish("room", "frozen"))
            assert type(exc) is ChannelsUnavailable, exc
            assert isinstance(exc, PacketronError) and exc.status_code == 503
            assert str(exc) == "channels (Redis) are unavailable: no answer within 1 s"
            assert "TimeoutError" in type(exc.__cause__).__name__
            assert TIMEOUT - 0.1 <= took < TIMEOUT + SLACK < BOUND
            # The next publishes do not wait again: they fail at once for a while.
            took, exc = await _timed(channels.publish("room", "frozen"))
            assert type(exc) is ChannelsUnavailable and took < 0.1
            assert str(exc).startswith("channels (Redis) are unavailable: no answer within "
                                       "1 s (next attempt in ")
            assert _logged(caplog, "channels' Redis (redis://127.0.0.1:") == 1
            redis_server.thaw()
            took = await _until_published(channels)
            assert took < RECOVERY_DEADLINE
            assert _logged(caplog, "works again after") == 1
            if sub is not None:
                # The publish that timed out had reached the frozen Redis's socket: a
                # timeout means "unknown", and Redis delivers it once it runs again.
                # The one refused at once was never sent.
                got = [await asyncio.wait_for(sub.__anext__(), 5)]
                if got[0] == "frozen":
                    got.append(await asyncio.wait_for(sub.__anext__(), 5))
                assert got in (["back"], ["frozen", "back"])
        finally:
            redis_server.thaw()
            if sub is not None:
                sub.close()
            await channels.close()

    _run(main())


async def _until_published(channels: RedisChannels) -> float:
    started = time.monotonic()
    while True:
        try:
            await channels.publish("room", "back")
            return time.monotonic() - started
        except ChannelsUnavailable:
            if time.monotonic() - started > RECOVERY_DEADLINE:
                raise
            await asyncio.sleep(0.05)


def test_publish_while_redis_is_down_fails_at_once(redis_server):
    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT)
        try:
            await channels.publish("room", "up")
            redis_server.kill()
            took, exc = await _timed(channels.publish("room", "down"))
            assert type(exc) is ChannelsUnavailable and took < TIMEOUT + SLACK
            assert str(exc) == ("channels (Redis) are unavailable: cannot connect, or the "
                                "connection was lost")
            assert "127.0.0.1" not in str(exc)  # the message may reach a client as a 503
        finally:
            await channels.close()

    _run(main())


# ---------------------------------------------------------------- subscribers


def test_subscriber_receives_again_after_redis_is_killed_and_restarted(redis_server, caplog):
    caplog.set_level(logging.WARNING, "packetron")

    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT, heartbeat=HEARTBEAT)
        publisher = RedisChannels(redis_server.url, timeout=TIMEOUT)  # another server
        try:
            async with channels.subscribe("room") as sub, channels.subscribe("other") as other:
                await publisher.publish("room", "before")
                assert await asyncio.wait_for(sub.__anext__(), 5) == "before"
                redis_server.kill()  # a crash: no goodbye on the connection
                link = channels._link
                assert link is not None
                # Noticed at once (the reset), and tried again with backoff meanwhile.
                await _until(lambda: link._failures >= 3)
                assert _logged(caplog, LOST) == 1  # one warning, not one per attempt
                assert _logged(caplog, BACK) == 0
                redis_server.restart()  # empty, on the same port
                # The same subscriptions (nothing subscribed again by hand) receive.
                assert await _delivered_after_outage(publisher, sub, "room") < RECOVERY_DEADLINE
                await publisher.publish("other", {"n": 1})
                assert await asyncio.wait_for(other.__anext__(), 5) == {"n": 1}
                await channels.publish("room", b"own")  # the link's own client is back too
                assert await asyncio.wait_for(sub.__anext__(), 5) == b"own"
            assert _logged(caplog, LOST) == 1
            assert _logged(caplog, BACK) == 1
            back = next(r.getMessage() for r in caplog.records if BACK in r.getMessage())
            assert "messages published meanwhile are lost" in back
        finally:
            await channels.close()
            await publisher.close()

    _run(main())


def test_subscriber_survives_a_freeze_longer_than_the_heartbeat(redis_server, caplog):
    caplog.set_level(logging.WARNING, "packetron")

    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT, heartbeat=HEARTBEAT)
        publisher = RedisChannels(redis_server.url, timeout=TIMEOUT)
        try:
            async with channels.subscribe("room") as sub:
                await publisher.publish("room", "before")
                assert await asyncio.wait_for(sub.__anext__(), 5) == "before"
                redis_server.freeze()  # no reset: only the heartbeat can tell
                # Noticed within one quiet heartbeat plus the PING's timeout.
                took = await _until(lambda: _logged(caplog, LOST) > 0)
                assert took < HEARTBEAT + TIMEOUT + SLACK < BOUND
                lost = next(r.getMessage() for r in caplog.records if LOST in r.getMessage())
                assert "no answer within 1 s" in lost
                # While frozen, a new subscription fails clearly instead of waiting.
                started = time.monotonic()
                with pytest.raises(ChannelsUnavailable) as raised:
                    async with channels.subscribe("late"):
                        pass
                assert time.monotonic() - started < 0.1
                assert str(raised.value) == ("channels (Redis) are unavailable: cannot "
                                             "subscribe to 'late' while the connection is lost")
                redis_server.thaw()
                assert await _delivered_after_outage(publisher, sub, "room") < RECOVERY_DEADLINE
            assert _logged(caplog, LOST) == 1
            assert _logged(caplog, BACK) == 1
        finally:
            redis_server.thaw()
            await channels.close()
            await publisher.close()

    _run(main())


def test_quiet_subscription_pings_and_stays_up(redis_server, caplog):
    """A healthy but quiet connection answers its heartbeats: no false alarm."""
    caplog.set_level(logging.WARNING, "packetron")

    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT, heartbeat=0.1)
        try:
            async with channels.subscribe("room") as sub:
                link = channels._link
                assert link is not None
                first = link._last_heard
                await _until(lambda: link._last_heard > first + 0.5)  # several PONGs
                await channels.publish("room", "still here")
                assert await asyncio.wait_for(sub.__anext__(), 5) == "still here"
            assert _logged(caplog, LOST) == 0
        finally:
            await channels.close()

    _run(main())


def test_subscribing_while_redis_is_away_fails_within_the_timeout(redis_server):
    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT)
        redis_server.freeze()
        try:
            took, exc = await _timed(channels.subscribe("room").__aenter__())
            assert type(exc) is ChannelsUnavailable, exc
            assert str(exc) == "channels (Redis) are unavailable: cannot subscribe to 'room'"
            assert took < 2 * TIMEOUT + SLACK < BOUND  # connect, then the handshake's reply
            assert "room" not in channels._subscribers  # the failed subscription is ended
        finally:
            redis_server.thaw()
            await channels.close()

    _run(main())


def test_channels_subscribed_later_are_confirmed_without_waiting_for_a_heartbeat(redis_server):
    """The supervisor sends a new SUBSCRIBE at once, not at its next heartbeat."""
    async def main() -> None:
        channels = RedisChannels(redis_server.url, timeout=TIMEOUT, heartbeat=60)
        try:
            async with channels.subscribe("a") as a:
                link = channels._link
                assert link is not None
                for name in ("b", "a", "b"):  # new, already subscribed, left and taken again
                    started = time.monotonic()
                    async with channels.subscribe(name) as sub:
                        assert time.monotonic() - started < 0.5
                        await channels.publish(name, name)
                        assert await asyncio.wait_for(sub.__anext__(), 5) == name
                    if name == "b":  # its UNSUBSCRIBE is sent at once too
                        await _until(lambda: "b" not in link._sent, 0.5)
                assert await asyncio.wait_for(a.__anext__(), 5) == "a"  # it had two readers
        finally:
            await channels.close()

    _run(main())


@pytest.mark.parametrize(("url", "options", "message"), [
    ("http://h/0", {}, "invalid Redis URL 'http://h/0': Redis URL must specify one of the "
                       "following schemes (redis://, rediss://, unix://)"),
    ("redis://:secret@h:x/0", {}, "invalid Redis URL 'redis://h/0': Port could not be cast "
                                  "to integer value as 'x'"),
    ("redis://h/0", {"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ("redis://h/0", {"heartbeat": True}, "heartbeat must be a positive number of seconds, "
                                         "got True"),
])
def test_bad_options_are_config_errors_without_the_password(url, options, message):
    with pytest.raises(ConfigError) as raised:
        RedisChannels(url, **options)
    assert str(raised.value) == message


def test_the_timeout_in_the_url_wins():
    channels = RedisChannels("redis://h/0?socket_timeout=0.3", timeout=5)
    assert channels.timeout == 0.3


def test_channels_unavailable_is_answered_503() -> None:
    assert issubclass(ChannelsUnavailable, ServiceUnavailable)
    assert issubclass(ChannelsUnavailable, PacketronError)
    assert ChannelsUnavailable("x").status_code == 503
