"""The one error boundary: HttpError, on_error renderers, error_format, and after-plugins."""
from __future__ import annotations

import asyncio

import requests

from packetron import HandlerFlags, HttpError, Plugin, PluginPriority
from packetron.errors import NotFound


class Teapot(HttpError):
    status_code = 418


class OutOfStock(Exception):
    pass


def test_http_error_from_a_handler_answers_with_its_status_message_and_headers(make_server) -> None:
    server = make_server()

    @server.get("limited")
    def limited(request, response) -> None:
        raise HttpError("slow down", status_code=429, headers={"Retry-After": "7"})

    @server.get("teapot")
    async def teapot(request, response) -> None:
        raise Teapot()

    server.start()
    r = requests.get(server.url + "/limited", timeout=5)
    assert (r.status_code, r.text, r.headers["retry-after"]) == (429, "slow down", "7")
    r = requests.get(server.url + "/teapot", timeout=5)
    assert (r.status_code, r.text) == (418, "I'm a Teapot")


def test_on_error_renders_router_404_and_raised_not_found_alike(make_server) -> None:
    server = make_server()

    @server.on_error(404)
    def not_found(request, response, exc) -> None:
        response.send_json({"missing": request.path}, status=404)

    @server.get("item")
    def item(request, response) -> None:
        raise NotFound("no such item")

    server.start()
    r = requests.get(server.url + "/nowhere", timeout=5)
    assert (r.status_code, r.json()) == (404, {"missing": "/nowhere"})
    r = requests.get(server.url + "/item", timeout=5)
    assert (r.status_code, r.json()) == (404, {"missing": "/item"})


def test_on_error_for_405_and_for_an_application_exception(make_server) -> None:
    server = make_server()

    @server.on_error(405)
    async def not_allowed(request, response, exc) -> None:
        await asyncio.sleep(0)
        response.send_text_plain(f"use {response.get_header('allow')}", status=405)

    @server.on_error(OutOfStock)
    def out_of_stock(request, response, exc) -> None:
        response.send_json({"error": "out of stock", "item": str(exc)}, status=409)

    @server.get("buy")
    def buy(request, response) -> None:
        raise OutOfStock("widget")

    server.start()
    r = requests.post(server.url + "/buy", timeout=5)
    assert (r.status_code, r.text) == (405, "use GET, HEAD")
    r = requests.get(server.url + "/buy", timeout=5)
    assert (r.status_code, r.json()) == (409, {"error": "out of stock", "item": "widget"})


def test_a_renderer_that_raises_falls_back_to_the_plain_answer(make_server) -> None:
    server = make_server()

    @server.on_error(500)
    def broken(request, response, exc) -> None:
        raise RuntimeError("renderer bug")

    @server.get("boom")
    def boom(request, response) -> None:
        raise ValueError("handler bug")

    server.start()
    with requests.Session() as session:
        r = session.get(server.url + "/boom", timeout=5)
        assert (r.status_code, r.text) == (500, "Internal Server Error")
        r = session.get(server.url + "/boom", timeout=5)  # the connection still serves
        assert r.status_code == 500


def test_error_format_json(make_server) -> None:
    server = make_server(error_format="json")

    @server.get("boom")
    def boom(request, response) -> None:
        raise HttpError("bad thing", status_code=422)

    server.start()
    r = requests.get(server.url + "/boom", timeout=5)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "bad thing", "status": 422}
    r = requests.get(server.url + "/nothing-here", timeout=5)
    assert r.json() == {"error": "Not Found", "status": 404}


def test_after_plugins_see_every_answer_of_their_routes_errors_included(make_server) -> None:
    seen: list[tuple[str, int]] = []

    def stamp(request, response) -> None:
        seen.append((request.path, response.status))
        response.set_header("X-Stamp", str(response.status))

    server = make_server(plugins=[Plugin.create(after=stamp)])

    @server.get("ok")
    def ok(request, response) -> None:
        response.set_header("X-Remove-Me", "1")
        response.send_json({"ok": True})

    @server.get("fail")
    async def fail(request, response) -> None:
        raise RuntimeError("oops")

    server.start()
    r = requests.get(server.url + "/ok", timeout=5)
    assert (r.status_code, r.headers["x-stamp"]) == (200, "200")
    r = requests.get(server.url + "/fail", timeout=5)
    assert (r.status_code, r.headers["x-stamp"]) == (500, "500")
    r = requests.get(server.url + "/missing", timeout=5)  # the server's own 404
    assert (r.status_code, r.headers["x-stamp"]) == (404, "404")
    r = requests.delete(server.url + "/ok", timeout=5)
    assert (r.status_code, r.headers["x-stamp"]) == (405, "405")
    assert seen == [("/ok", 200), ("/fail", 500), ("/missing", 404), ("/ok", 405)]


def test_after_plugins_run_by_priority_and_may_remove_headers(make_server) -> None:
    order: list[str] = []

    def low(request, response) -> None:
        order.append("low")

    async def high(request, response) -> None:
        order.append("high")
        response.remove_header("X-Internal")

    server = make_server()

    @server.get("page", plugins=[Plugin.create(PluginPriority.LOW, after=low),
                                 Plugin.create(PluginPriority.HIGH, after=high)],
                flags=HandlerFlags.DONT_USE_BODY)
    def page(request, response) -> None:
        response.set_header("X-Internal", "secret")
        response.send_text_plain("page")

    server.start()
    r = requests.get(server.url + "/page", timeout=5)
    assert (r.status_code, r.text) == (200, "page")
    assert "x-internal" not in r.headers
    assert order == ["high", "low"]


def test_a_plugin_that_raises_http_error_refuses_with_its_status(make_server) -> None:
    def auth(request, response) -> bool:
        if request.headers.get("authorization") != "Bearer good":
            raise HttpError("who are you?", status_code=401,
                            headers=[("WWW-Authenticate", "Bearer")])
        return False

    server = make_server(plugins=[Plugin.create(handler=auth)])

    @server.get("secret")
    def secret(request, response) -> None:
        response.send_text_plain("the secret")

    server.start()
    r = requests.get(server.url + "/secret", timeout=5)
    assert (r.status_code, r.text, r.headers["www-authenticate"]) == (401, "who are you?", "Bearer")
    r = requests.get(server.url + "/secret", headers={"Authorization": "Bearer good"}, timeout=5)
    assert (r.status_code, r.text) == (200, "the secret")


def test_after_hooks_see_the_content_type_of_whole_answers(make_server) -> None:
    seen: list[str | None] = []

    def look(request, response) -> None:
        seen.append(response.get_header("content-type"))

    server = make_server(plugins=[Plugin.create(after=look)])
    server.get("json", lambda request, response: response.send_json([1]))
    server.get("text", lambda request, response: response.send_text_plain("t"))
    server.start()
    assert requests.get(server.url + "/json", timeout=5).headers["content-type"] == \
        "application/json"
    assert requests.get(server.url + "/text", timeout=5).text == "t"
    assert requests.get(server.url + "/none", timeout=5).status_code == 404
    assert seen == ["application/json", "text/plain; charset=utf-8", "text/plain; charset=utf-8"]


def test_router_errors_keep_the_connection_alive(make_server) -> None:
    from tests.http import rawhttp

    server = make_server()
    server.get("here", lambda request, response: response.send_text_plain("here"))
    server.start()
    sock = rawhttp.connect(server.port)
    try:
        sock.sendall(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /here HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"PROPFIND /here HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /here HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = rawhttp.read_responses(sock, 4, methods=[b"GET", b"POST", b"PROPFIND", b"GET"])
    finally:
        sock.close()
    assert [(r.status_code, body) for r, body in answers] == [
        (404, b"Not Found"), (405, b"Method Not Allowed"), (501, b"Not Implemented"),
        (200, b"here")]
    assert all(dict(r.headers).get(b"connection") != b"close" for r, _ in answers)


def test_synchronous_global_plugins_on_pipelined_gets_run_for_each_in_order(make_server) -> None:
    """GETs to a plain route are answered while their head is parsed, global synchronous
    plugins included: each of 20 pipelined requests passes the plugin's handler, a refused
    one is answered by the plugin alone, and every answer carries the after-hook's header,
    in order."""
    from rawhttp import connect, read_responses

    seen: list[str] = []

    def gate(request, response) -> bool:
        seen.append(request.query_string)
        if request.query_string == "n=13":
            response.send_text_plain("refused", 403)
            return True
        return False

    def stamp(request, response) -> None:
        response.set_header("X-Seen", str(len(seen)))

    server = make_server(plugins=[Plugin.create(PluginPriority.HIGH, handler=gate, after=stamp)])
    server.get("n", lambda request, response: response.send_text_plain(request.query_string))
    server.start()
    with connect(server.port) as sock:
        sock.sendall(b"".join(b"GET /n?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)))
        answers = read_responses(sock, 20)
    assert seen == [f"n={i}" for i in range(20)]
    assert [(r.status_code, body, dict(r.headers)[b"x-seen"]) for r, body in answers] == [
        (403 if i == 13 else 200, b"refused" if i == 13 else b"n=%d" % i, b"%d" % (i + 1))
        for i in range(20)]
