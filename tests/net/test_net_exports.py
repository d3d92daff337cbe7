"""packetron.net re-exports exactly what its __all__ lists, and the contract names exist."""
from __future__ import annotations

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
