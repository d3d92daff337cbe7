"""Global data through the server API."""
from __future__ import annotations

import os

import pytest
import requests

from packetron import Packetron, ServerFlags
from packetron.errors import GlobalDataDisabled, PacketronError


def test_set_get_update_through_requests(make_server, tmp_path) -> None:
    server = make_server(global_data_path=str(tmp_path / "store.sqlite3"))

    @server.post("hit")
    def hit(request, response):
        response.send_json({"hits": server.update_global_data("hits", lambda n: n + 1, 0)})

    server.set_global_data("greeting", {"text": "hi"})
    server.start()
    counts = [requests.post(server.url + "/hit").json()["hits"] for _ in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    assert server.get_global_data("greeting") == {"text": "hi"}
    assert server.get_global_data("missing", default=7) == 7


def test_two_servers_share_one_store(tmp_path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    first = Packetron(port=0, workers=1, global_data_path=path)
    second = Packetron(port=0, workers=1, global_data_path=path)
    try:
        first.set_global_data("k", [1])
        assert second.get_global_data("k") == [1]
    finally:
        first.stop()
        second.stop()


def test_no_global_data_refuses_and_stores_nothing(tmp_path) -> None:
    path = tmp_path / "never.sqlite3"
    server = Packetron(port=0, workers=1, flags=ServerFlags.NO_GLOBAL_DATA,
                       global_data_path=str(path))
    for call in (lambda: server.set_global_data("a", 1), lambda: server.get_global_data("a"),
                 lambda: server.update_global_data("a", lambda v: v)):
        with pytest.raises(GlobalDataDisabled, match="NO_GLOBAL_DATA"):
            call()
    assert isinstance(GlobalDataDisabled("x"), PacketronError)
    assert not os.path.exists(path)
