"""packetron.net re-exports exactly what its __all__ lists, and the contract names exist."""
from __future__ import annotations

import importlib

import pytest

import packetron.net as net

CONTRACT = {"Connection", "TcpServer", "Broker", "open_connection", "BufferFull",
            "ConnectionClosed", "HandlerContext", "Signal"}


def test_every_name_in_all_is_importable():
    missing = [name for name in net.__all__ if not hasattr(net, name)]
    assert missing == []
    assert len(net.__all__) == len(set(net.__all__)), "duplicates in __all__"


def test_contract_names_are_exported():
    assert CONTRACT <= set(net.__all__)


def test_star_import_gives_the_same_names():
    namespace: dict[str, object] = {}
    exec("from packetron.net import *", namespace)
    assert set(net.__all__) <= set(namespace)


@pytest.mark.parametrize("module", ["packetron.net.broker", "packetron.net.packetstream",
                                    "packetron.net.events", "packetron.net.connection"])
def test_subpackages_export_what_their_all_lists(module):
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []
    assert len(mod.__all__) == len(set(mod.__all__)), "duplicates in __all__"


def test_public_import_paths_still_work():
    from packetron.net.broker import POLL_INTERVAL_SECONDS, Broker, HandlerContext, Signal
    from packetron.net.packetstream import DuplexStream, PacketStream

    assert net.Broker is Broker and net.PacketStream is PacketStream
    assert net.DuplexStream is DuplexStream and net.HandlerContext is HandlerContext
    assert net.Signal is Signal and POLL_INTERVAL_SECONDS > 0
