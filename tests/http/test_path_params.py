"""Pattern routes over the wire: conversion, precedence, 404/405, plugins, limits, removal."""
from __future__ import annotations

import pytest
import requests

from packetron import Plugin
from packetron.errors import ConfigError

from tests.http import rawhttp


@pytest.fixture
def server(make_server):
    server = make_server()

    @server.get("users/{id:int}")
    def user(request, response) -> None:
        response.send_json({"route": "int", "params": dict(request.path_params)})

    @server.delete("users/{id:int}")
    def delete_user(request, response) -> None:
        response.send_status_code(204)

    @server.get("users/{name}")
    def user_by_name(request, response) -> None:
        response.send_json({"route": "str", "params": dict(request.path_params)})

    @server.get("users/me")
    def me(request, response) -> None:
        response.send_json({"route": "exact", "params": dict(request.path_params)})

    @server.get("files/{rest:path}")
    async def files(request, response) -> None:
        response.send_json({"route": "path", "params": dict(request.path_params)})

    return server.start()


def get(server, path: str) -> requests.Response:
    return requests.get(server.url + path, timeout=5)


def test_converters_and_precedence(server) -> None:
    assert get(server, "/users/42").json() == {"route": "int", "params": {"id": 42}}
    assert get(server, "/users/ada/").json() == {"route": "str", "params": {"name": "ada"}}
    assert get(server, "/users/me").json() == {"route": "exact", "params": {}}
    assert get(server, "/files/a/b/c.txt?x=1").json() == {
        "route": "path", "params": {"rest": "a/b/c.txt"}}


def test_percent_encoded_slash_stays_in_one_segment(server) -> None:
    assert get(server, "/users/a%2Fb").json() == {"route": "str", "params": {"name": "a/b"}}
    assert get(server, "/users/caf%C3%A9").json() == {"route": "str", "params": {"name": "café"}}


@pytest.mark.parametrize("path", ["/files/../etc/passwd", "/files/a/%2E%2E/b", "/files/a%00b",
                                  "/users", "/users/a/b"])
def test_unsafe_or_unmatched_values_are_404(server, path: str) -> None:
    sock = rawhttp.connect(server.port)
    try:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        [(response, _)] = rawhttp.read_responses(sock)
    finally:
        sock.close()
    assert response.status_code == 404


def test_a_ten_thousand_digit_int_is_404_not_a_slow_parse(make_server) -> None:
    server = make_server(max_url_size_in_bytes=20_000)
    server.get("n/{value:int}", lambda request, response: response.send_json(1))
    server.start()
    r = requests.get(server.url + "/n/" + "9" * 10_000, timeout=5)
    assert r.status_code == 404
    assert requests.get(server.url + "/n/12", timeout=5).status_code == 200


def test_405_lists_the_methods_of_the_pattern(server) -> None:
    r = requests.put(server.url + "/users/7", timeout=5)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, DELETE, HEAD"
    assert requests.delete(server.url + "/users/7", timeout=5).status_code == 204
    assert requests.head(server.url + "/users/7", timeout=5).status_code == 200


def test_conflicting_patterns_are_refused_at_registration(make_server) -> None:
    server = make_server()
    server.get("items/{id}", lambda request, response: None)
    with pytest.raises(ConfigError):
        server.get("items/{name}", lambda request, response: None)


def test_plugins_limits_and_removal_work_for_patterns(make_server) -> None:
    server = make_server()
    seen: list[str] = []

    def local(request, response) -> None:
        seen.append(request.path)

    route = server.get("orders/{id:int}", lambda request, response: response.send_json(
        request.path_params["id"]), plugins=[Plugin.create(handler=local)],
        max_requests_per_second=2)
    server.start()
    assert [get(server, f"/orders/{n}").status_code for n in (1, 2, 3)] == [200, 200, 429]
    assert seen == ["/orders/1", "/orders/2"]
    assert route.remove() is True
    assert get(server, "/orders/1").status_code == 404
    server.get("orders/{id:int}", lambda request, response: response.send_text_plain("again"))
    assert get(server, "/orders/5").text == "again"
