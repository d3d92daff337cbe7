"""IPv6 over real loopback sockets (::1): listening, peer addresses, screening, UDP."""
from __future__ import annotations

import socket

import pytest
import requests

from nethelp import LOOPS, echo_once, run, udp_exchange, write_source
from packetron.net import Broker, TcpServer, open_connection
from packetron.net.screening import Verdict

LOCAL6 = "::1"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind((LOCAL6, 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _ipv6_loopback(), reason="this host has no IPv6 loopback")


def free_port6(kind: int) -> int:
    with socket.socket(socket.AF_INET6, kind) as sock:
        sock.bind((LOCAL6, 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("loop", LOOPS)
def test_tcp_server_listens_on_ipv6_and_reports_the_peer(loop):
    async def main():
        server = TcpServer(0, host=LOCAL6)
        peers: list[tuple[str, int]] = []

        def on_connection(conn):
            peers.append(conn.remote_address)
            conn.on("message", conn.write)

        server.on_connection(on_connection)
        await server.listen()
        client = await open_connection(LOCAL6, server.port)
        client.write(b"over v6")
        assert await client.readexactly(7) == b"over v6"
        assert peers[0][0] == LOCAL6 and peers[0][1] > 0
        client.close()
        await server.close()

    run(main(), loop=loop)


@pytest.mark.parametrize("deny, allow", [(["::1"], []), ([], ["127.0.0.0/8"])])
def test_ipv6_peer_is_screened_by_its_own_address_family(deny, allow):
    async def main():
        server = TcpServer(0, host=LOCAL6, deny=deny, allow=allow)
        calls: list[object] = []
        rejects: list[tuple[str, Verdict]] = []
        server.on_connection(calls.append)
        server.on_reject(lambda host, verdict: rejects.append((host, verdict)))
        await server.listen()
        conn = await open_connection(LOCAL6, server.port)
        try:
            assert await conn.read() == b""  # closed before a byte
        finally:
            conn.close()
            await conn.wait_closed()
        assert calls == []
        expected = Verdict.DENIED if deny else Verdict.NOT_ALLOWED
        assert rejects == [(LOCAL6, expected)]
        await server.close()

    run(main())


def test_broker_serves_tcp_and_udp_handlers_on_ipv6(tmp_path):
    tcp_port, udp_port = free_port6(socket.SOCK_STREAM), free_port6(socket.SOCK_DGRAM)
    write_source(tmp_path / f"echo.tcp.{tcp_port}.port.py", """
        async def handle(conn, ctx):
            async for chunk in conn:
                conn.write(chunk)
    """)
    write_source(tmp_path / f"upper.udp.{udp_port}.port.py", """
        async def message(msg, rinfo, ctx):
            ctx.reply(msg.upper() + b" from " + rinfo[0].encode(), rinfo)
    """)

    async def main():
        broker = Broker(tmp_path, host=LOCAL6, poll_interval=None)
        await broker.start()
        assert await echo_once(tcp_port, b"abc", host=LOCAL6) == b"abc"
        assert await udp_exchange(udp_port, [b"hi"], 1, host=LOCAL6) == [b"HI from ::1"]
        await broker.stop()

    run(main())


def test_http_server_on_ipv6_answers_and_sees_the_client_address(make_server):
    server = make_server(host=LOCAL6)

    @server.get("whoami")
    def whoami(request, response):
        response.send_json({"ip": request.get_ip()})

    server.start()
    assert server.url == f"http://[::1]:{server.port}"
    reply = requests.get(server.url + "/whoami", timeout=5)
    assert reply.status_code == 200
    assert reply.json() == {"ip": "::1"}


def test_http_server_on_ipv6_refuses_a_denied_client(make_server):
    server = make_server(host=LOCAL6, deny=["::1/128"])
    server.get("x", lambda request, response: response.send_text_plain("no"))
    server.start()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/x", timeout=5)
