"""The one place that opens ports: a port in use fails the same way for TCP and UDP."""
from __future__ import annotations

import errno
import socket

import pytest

from packetron.net.listener import bind_tcp_socket, bind_udp_socket

LOCAL = "127.0.0.1"


@pytest.mark.parametrize("reuse_addr", [False, True], ids=["plain", "holder-with-reuseaddr"])
def test_udp_port_in_use_fails_with_eaddrinuse(reuse_addr):
    # The holder may have set SO_REUSEADDR (as brokers before this fix did): a second
    # socket still must not bind the same address and take its datagrams.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        if reuse_addr:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((LOCAL, 0))
        port = holder.getsockname()[1]
        with pytest.raises(OSError) as info:
            bind_udp_socket(LOCAL, port).close()
        assert info.value.errno == errno.EADDRINUSE


def test_tcp_port_in_use_fails_with_eaddrinuse_too():
    first = bind_tcp_socket(LOCAL, 0)
    try:
        with pytest.raises(OSError) as info:
            bind_tcp_socket(LOCAL, first.getsockname()[1]).close()
        assert info.value.errno == errno.EADDRINUSE
    finally:
        first.close()


def test_udp_port_is_free_again_once_closed():
    sock = bind_udp_socket(LOCAL, 0)
    port = sock.getsockname()[1]
    sock.close()
    again = bind_udp_socket(LOCAL, port)  # no TIME_WAIT for UDP: no SO_REUSEADDR needed
    assert again.getsockname()[1] == port
    again.close()


def test_udp_reuse_port_lets_cooperating_sockets_share_a_port():
    first = bind_udp_socket(LOCAL, 0, reuse_port=True)
    try:
        second = bind_udp_socket(LOCAL, first.getsockname()[1], reuse_port=True)
        second.close()
    finally:
        first.close()
