"""TcpClient: the pure retry schedule, then connects over loopback."""
from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from nethelp import make_certs, run

from packetron.errors import ConfigError, ConnectFailed
from packetron.net.client import RetryPolicy, TcpClient, backoff_delay, retry_schedule

# ---------------------------------------------------------------- the schedule, pure


def test_default_schedule_doubles_from_one_second():
    assert retry_schedule(RetryPolicy(jitter=False)) == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_schedule_is_capped_at_max_delay():
    policy = RetryPolicy(max_retries=8, jitter=False)
    assert retry_schedule(policy) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_custom_multiplier_and_initial_delay():
    policy = RetryPolicy(max_retries=4, initial_delay=0.5, backoff_multiplier=3.0, max_delay=10,
                         jitter=False)
    assert retry_schedule(policy) == [0.5, 1.5, 4.5, 10.0]


def test_multiplier_of_one_is_a_constant_delay():
    assert retry_schedule(RetryPolicy(max_retries=3, backoff_multiplier=1.0, jitter=False)) == [
        1.0, 1.0, 1.0]


def test_zero_retries_means_no_delay_at_all():
    assert retry_schedule(RetryPolicy(max_retries=0)) == []


def test_jitter_stays_between_half_and_the_full_delay():
    policy = RetryPolicy(max_retries=6)
    assert retry_schedule(policy, rand=lambda: 0.0) == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0]
    assert retry_schedule(policy, rand=lambda: 0.5) == [0.75, 1.5, 3.0, 6.0, 12.0, 22.5]
    top = retry_schedule(policy, rand=lambda: 0.999999)
    assert all(d <= cap for d, cap in zip(top, [1, 2, 4, 8, 16, 30]))


def test_jitter_uses_the_injected_random_source_once_per_delay():
    draws = iter([0.1, 0.9, 0.3])
    assert retry_schedule(RetryPolicy(max_retries=3), rand=lambda: next(draws)) == pytest.approx(
        [0.55, 1.9, 2.6])


def test_very_late_retries_do_not_overflow():
    policy = RetryPolicy(max_retries=5000, backoff_multiplier=10.0, jitter=False)
    assert backoff_delay(5000, policy) == 30.0


def test_retry_numbers_start_at_one():
    with pytest.raises(ValueError):
        backoff_delay(0, RetryPolicy())


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"initial_delay": -1},
                                    {"backoff_multiplier": 0.5}, {"max_delay": -2},
                                    {"initial_delay": float("nan")}])
def test_policy_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [{"port": 0}, {"port": 70000}, {"timeout": 0}])
def test_client_rejects_bad_options(kwargs):
    args = {"host": "127.0.0.1", "port": 1, **kwargs}
    with pytest.raises(ConfigError):
        TcpClient(**args)


# ---------------------------------------------------------------- over loopback


def closed_port() -> int:
    """A loopback port with nothing listening (connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def echo_server(port: int = 0) -> asyncio.Server:
    async def handle(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_connect_returns_a_working_connection():
    async def main():
        server = await echo_server()
        port = server.sockets[0].getsockname()[1]
        try:
            conn = await TcpClient("127.0.0.1", port).connect()
            conn.write(b"ping")
            assert await conn.read(100) == b"ping"
            assert conn.remote_address == ("127.0.0.1", port)
            conn.close()
            await conn.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_refused_connect_is_connect_failed_with_cause():
    async def main():
        port = closed_port()
        client = TcpClient("127.0.0.1", port)
        with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}") as info:
            await client.connect()
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert client.last_error is info.value.__cause__

    run(main())


def test_connect_times_out_on_a_silent_tls_server():
    async def main():
        async def silent(reader, writer):
            await reader.read()  # never answers the TLS ClientHello
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            client = TcpClient("127.0.0.1", port, timeout=0.2, ssl=ssl.create_default_context())
            with pytest.raises(ConnectFailed, match="timed out") as info:
                await client.connect()
            assert isinstance(info.value.__cause__, TimeoutError)
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_retry_gives_up_with_clear_error_after_last_attempt():
    async def main():
        port = closed_port()
        slept = []

        async def fake_sleep(delay):
            slept.append(delay)

        with pytest.raises(ConnectFailed, match="after 4 attempts") as info:
            await TcpClient("127.0.0.1", port).connect_with_retry(
                max_retries=3, initial_delay=0.5, jitter=False, sleep=fake_sleep)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert slept == [0.5, 1.0, 2.0]

    run(main())


def test_retry_with_zero_retries_tries_once():
    async def main():
        with pytest.raises(ConnectFailed, match="after 1 attempt:"):
            await TcpClient("127.0.0.1", closed_port()).connect_with_retry(max_retries=0)

    run(main())


def test_retry_succeeds_once_the_server_comes_up():
    async def main():
        port = closed_port()
        servers = []
        slept = []

        async def sleep_then_start(delay):
            slept.append(delay)
            if len(slept) == 2:  # the server appears before the third attempt
                servers.append(await echo_server(port))

        try:
            conn = await TcpClient("127.0.0.1", port).connect_with_retry(
                max_retries=5, initial_delay=0.01, rand=lambda: 0.0, sleep=sleep_then_start)
            assert slept == [0.005, 0.01]
            conn.write(b"hi")
            assert await conn.read(10) == b"hi"
            conn.close()
            await conn.wait_closed()
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()

    run(main())


def test_retry_really_sleeps_between_attempts():
    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(ConnectFailed):
            await TcpClient("127.0.0.1", closed_port()).connect_with_retry(
                max_retries=2, initial_delay=0.05, jitter=False)
        assert loop.time() - start >= 0.15 - 0.01  # 0.05 + 0.10

    run(main())


def test_certificate_failure_is_not_retried(tmp_path):
    cert, key, _ca = make_certs(tmp_path)

    async def main():
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)

        async def handle(reader, writer):
            try:
                await reader.read()
            except (ssl.SSLError, ConnectionError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        slept = []

        async def fake_sleep(delay):
            slept.append(delay)

        try:
            client = TcpClient("127.0.0.1", port, ssl=ssl.create_default_context())  # no CA
            with pytest.raises(ConnectFailed, match="after 1 attempt:") as info:
                await client.connect_with_retry(max_retries=3, sleep=fake_sleep)
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
            assert slept == []
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_tls_connect_with_trusted_ca(tmp_path):
    cert, key, ca = make_certs(tmp_path)

    async def main():
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)

        async def handle(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()
            try:
                await writer.wait_closed()
            except (ssl.SSLError, ConnectionError):
                pass

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            client_ctx = ssl.create_default_context(cafile=ca)
            conn = await TcpClient("127.0.0.1", port, ssl=client_ctx).connect()
            conn.write(b"secret")
            assert await conn.read(100) == b"secret"
            conn.close()
            await conn.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run(main())
