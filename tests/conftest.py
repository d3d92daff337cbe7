"""Fixtures shared by the whole suite."""
from __future__ import annotations

import socket
from typing import Iterator

import pytest

from packetron import Packetron


@pytest.fixture
def make_server() -> Iterator:
    """Build an in-process Packetron on an ephemeral loopback port; stopped after the test."""
    servers: list[Packetron] = []

    def factory(**kwargs) -> Packetron:
        kwargs.setdefault("port", 0)
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("workers", 1)
        server = Packetron(**kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop(timeout=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
