"""The public HTTP API end to end, over real loopback sockets with `requests`."""
from __future__ import annotations

import re

import asyncio
import json
import logging

import pytest
import requests

from packetron import (HandlerFlags, HttpResponseCode, Packetron, Plugin, PluginPriority,
                       RequestMethod, ServerFlags)
from packetron.errors import ConfigError, ResponseAlreadySent
from rawhttp import exchange


def test_sync_and_async_handlers_answer(make_server) -> None:
    server = make_server()

    @server.get("api/sync")
    def sync_handler(request, response):
        response.send_json({"kind": "sync"})

    @server.get("/api/async/")
    async def async_handler(request, response):
        await asyncio.sleep(0)
        response.send_json({"kind": "async"})

    server.start()
    assert requests.get(server.url + "/api/sync").json() == {"kind": "sync"}
    assert requests.get(server.url + "/api/async?x=1").json() == {"kind": "async"}
    assert requests.get(server.url + "/api/async/").json() == {"kind": "async"}


def test_handle_returns_route_and_decorator_returns_function(make_server) -> None:
    server = make_server()

    def fn(request, response):
        response.send_ok()

    route = server.handle(RequestMethod.GET, "a", fn)
    assert route.path == "a" and route.handler is fn
    assert server.handle(RequestMethod.GET, "b")(fn) is fn
    assert server.put("c")(fn) is fn


def test_unknown_path_404_and_wrong_method_405_with_allow(make_server) -> None:
    server = make_server()
    server.get("thing", lambda q, s: s.send_ok())
    server.post("thing", lambda q, s: s.send_ok())
    server.start()
    assert requests.get(server.url + "/nothing").status_code == 404
    response = requests.delete(server.url + "/thing")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST, HEAD"


def test_route_remove_while_serving(make_server) -> None:
    server = make_server().start()
    route = server.get("temp", lambda q, s: s.send_text_plain("here"))
    assert requests.get(server.url + "/temp").text == "here"
    assert route.remove() is True
    assert requests.get(server.url + "/temp").status_code == 404
    assert route.remove() is False


def test_start_immediately_serves_routes_added_later() -> None:
    server = Packetron(port=0, host="127.0.0.1", workers=1, flags=ServerFlags.START_IMMEDIATELY)
    try:
        server.get("late", lambda q, s: s.send_text_plain("late"))
        assert requests.get(server.url + "/late").text == "late"
    finally:
        server.stop()


def test_context_manager_starts_and_stops() -> None:
    with Packetron(port=0, host="127.0.0.1", workers=1) as server:
        server.get("x", lambda q, s: s.send_ok())
        url = server.url
        assert requests.get(url + "/x").text == "OK"
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/x", timeout=2)


def test_try_next_port_skips_a_busy_port(make_server) -> None:
    first = make_server().start()
    second = make_server(port=first.port, flags=ServerFlags.TRY_NEXT_PORT).start()
    assert second.port != first.port and second.port > first.port


def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        Packetron(port=0, workers=1, max_header_size=5)


def test_two_body_modes_refused() -> None:
    server = Packetron(port=0, workers=1)
    with pytest.raises(ConfigError, match="body modes"):
        server.post("x", lambda q, s: None, flags=HandlerFlags.JSON_BODY | HandlerFlags.XML_BODY)


def test_exception_gives_500_and_connection_stays_usable(make_server, caplog) -> None:
    server = make_server()

    @server.get("boom")
    def boom(request, response):
        raise RuntimeError("kaput")

    @server.get("fine")
    def fine(request, response):
        response.send_ok()

    server.start()
    with requests.Session() as session, caplog.at_level(logging.ERROR, "packetron.server"):
        first = session.get(server.url + "/boom")
        second = session.get(server.url + "/fine")
    assert first.status_code == 500
    assert second.status_code == 200 and second.text == "OK"
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    record = failures[0]
    assert (record.name, record.levelname) == ("packetron.server", "ERROR")
    assert record.getMessage() == "GET /boom: handler raised"
    assert record.exc_info[0] is RuntimeError and str(record.exc_info[1]) == "kaput"


def test_async_exception_gives_500(make_server) -> None:
    server = make_server()

    @server.get("aboom")
    async def aboom(request, response):
        await asyncio.sleep(0)
        raise ValueError("async kaput")

    server.start()
    assert requests.get(server.url + "/aboom").status_code == 500
    assert requests.get(server.url + "/aboom").status_code == 500


def test_handler_returning_value_is_sent_and_nothing_is_500(make_server) -> None:
    server = make_server()
    server.get("ret", lambda q, s: {"returned": True})
    server.get("none", lambda q, s: None)
    server.start()
    assert requests.get(server.url + "/ret").json() == {"returned": True}
    assert requests.get(server.url + "/none").status_code == 500


# ------------------------------------------------------------------ body modes


def test_json_body_and_invalid_json_is_none(make_server) -> None:
    server = make_server()
    seen = []

    @server.post("json", flags=HandlerFlags.JSON_BODY)
    async def handler(request, response):
        body = await request.get_body()
        seen.append(body)
        response.send_json({"body": body})

    server.start()
    assert requests.post(server.url + "/json", json={"a": [1, 2]}).json() == {"body": {"a": [1, 2]}}
    assert requests.post(server.url + "/json", data=b"{broken").json() == {"body": None}


def test_sync_handler_reads_body_property(make_server) -> None:
    server = make_server()
    server.post("sync-json", lambda q, s: s.send_json(q.body), flags=HandlerFlags.JSON_BODY)
    server.start()
    payload = {"text": "é" * 50_000}  # several TCP segments
    assert requests.post(server.url + "/sync-json", json=payload).json() == payload


def test_form_body_urlencoded(make_server) -> None:
    server = make_server()
    server.post("form", lambda q, s: s.send_json(q.body), flags=HandlerFlags.FORM_DATA)
    server.start()
    response = requests.post(server.url + "/form", data=[("a", "1"), ("a", "2"), ("b", "x y")])
    assert response.json() == {"a": ["1", "2"], "b": "x y"}


def test_xml_body_and_billion_laughs_is_400(make_server) -> None:
    server = make_server()
    server.post("xml", lambda q, s: s.send_json(q.body), flags=HandlerFlags.XML_BODY)
    server.start()
    ok = requests.post(server.url + "/xml", data=b"<r><i>1</i><i>2</i></r>")
    assert ok.json() == {"r": {"i": ["1", "2"]}}
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">'
            b']><l>&c;</l>')
    refused = requests.post(server.url + "/xml", data=bomb, timeout=5)
    assert refused.status_code == 400
    assert "entities" in refused.text
    assert requests.post(server.url + "/xml", data=b"<r>").status_code == 400


def test_plain_text_body(make_server) -> None:
    server = make_server()
    server.post("text", lambda q, s: s.send_text_plain(q.body.upper()),
                flags=HandlerFlags.PLAIN_TEXT_BODY)
    server.start()
    assert requests.post(server.url + "/text", data="héllo".encode()).text == "HÉLLO"
    assert requests.post(server.url + "/text", data=b"\xff\xfe").status_code == 400


def test_raw_body_without_flags_is_bytes(make_server) -> None:
    server = make_server()
    server.post("raw", lambda q, s: s.send(q.body))
    server.start()
    response = requests.post(server.url + "/raw", data=bytes(range(256)))
    assert response.content == bytes(range(256))
    assert response.headers["content-type"] == "application/octet-stream"


def test_dont_use_body_discards_and_keeps_connection(make_server) -> None:
    server = make_server()
    server.post("nobody", lambda q, s: s.send_json({"body": q.body}), flags=HandlerFlags.DONT_USE_BODY)
    server.get("after", lambda q, s: s.send_ok())
    server.start()
    with requests.Session() as session:
        assert session.post(server.url + "/nobody", data=b"x" * 300_000).json() == {"body": None}
        assert session.get(server.url + "/after").text == "OK"


# ------------------------------------------------------------------ request API


def test_request_attributes(make_server) -> None:
    server = make_server()

    @server.get("info")
    def info(request, response):
        response.send_json({
            "method": request.method, "path": request.path, "url": request.url,
            "version": request.http_version, "agent": request.headers["USER-AGENT"],
            "query": request.get_query_params(), "cookies": request.get_cookies(),
            "one": request.get_cookie("one"), "ip": request.get_ip(), "has_body": request.has_body(),
        })

    server.start()
    response = requests.get(server.url + "/info/?a=1&a=2&b=%20x", headers={
        "User-Agent": "t/1", "Cookie": "one=1; two=2"})
    assert response.json() == {
        "method": "GET", "path": "/info/", "url": "/info/?a=1&a=2&b=%20x", "version": "1.1",
        "agent": "t/1", "query": {"a": ["1", "2"], "b": " x"}, "cookies": {"one": "1", "two": "2"},
        "one": "1", "ip": "127.0.0.1", "has_body": False}


def test_forwarded_for_only_from_trusted_proxy(make_server) -> None:
    trusting = make_server()
    trusting.get("ip", lambda q, s: s.send_text_plain(q.get_ip()))
    trusting.start()
    distrusting = make_server(trusted_proxies=())
    distrusting.get("ip", lambda q, s: s.send_text_plain(q.get_ip()))
    distrusting.start()
    header = {"X-Forwarded-For": "203.0.113.9, 127.0.0.1"}
    assert requests.get(trusting.url + "/ip", headers=header).text == "203.0.113.9"
    assert requests.get(distrusting.url + "/ip", headers=header).text == "127.0.0.1"


def test_percent_encoded_path_matches_route(make_server) -> None:
    server = make_server()
    server.get("hello world", lambda q, s: s.send_ok())
    server.start()
    assert requests.get(server.url + "/hello%20world").text == "OK"


# ------------------------------------------------------------------ response API


def test_send_variants(make_server) -> None:
    server = make_server()
    server.get("html", lambda q, s: s.send_html("<b>x</b>", status=201))
    server.get("text", lambda q, s: s.send_text_plain("plain"))
    server.get("list", lambda q, s: s.send([1, 2]))
    server.get("str", lambda q, s: s.send("s"))
    server.get("bytes", lambda q, s: s.send(b"\x00\x01"))
    server.get("code", lambda q, s: s.send_status_code(HttpResponseCode.IM_A_TEAPOT
                                                       if hasattr(HttpResponseCode, "IM_A_TEAPOT")
                                                       else 418))
    server.get("nocontent", lambda q, s: s.send_status_code(204))
    server.start()
    html = requests.get(server.url + "/html")
    assert (html.status_code, html.headers["content-type"], html.text) == (
        201, "text/html; charset=utf-8", "<b>x</b>")
    assert requests.get(server.url + "/text").headers["content-type"] == "text/plain; charset=utf-8"
    assert requests.get(server.url + "/list").json() == [1, 2]
    assert requests.get(server.url + "/str").text == "s"
    assert requests.get(server.url + "/bytes").content == b"\x00\x01"
    teapot = requests.get(server.url + "/code")
    assert teapot.status_code == 418 and teapot.text == "I'm a Teapot"
    empty = requests.get(server.url + "/nocontent")
    assert empty.status_code == 204 and "content-length" not in empty.headers


def test_headers_and_cookies_exactly_as_set(make_server) -> None:
    server = make_server()

    @server.get("cookies")
    def cookies(request, response):
        response.set_header("X-Custom", "v1")
        response.set_header("x-custom", "v2")  # replaces
        response.set_cookie("sid", "abc", max_age=3600, http_only=True, secure=True,
                            same_site="Lax", domain="example.com", path="/app")
        response.set_cookie("plain", "1")
        response.clear_cookie("old")
        response.send_ok()

    server.start()
    response = requests.get(server.url + "/cookies")
    assert response.headers["x-custom"] == "v2"
    assert response.raw.headers.getlist("Set-Cookie") == [
        "sid=abc; Max-Age=3600; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Lax",
        "plain=1; Path=/",
        "old=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/",
    ]


def test_content_type_header_overrides_default(make_server) -> None:
    server = make_server()

    @server.get("ct")
    def ct(request, response):
        response.set_header("Content-Type", "application/vnd.x+json")
        response.send_json({"a": 1})

    server.start()
    response = requests.get(server.url + "/ct")
    assert response.headers["content-type"] == "application/vnd.x+json"
    assert response.json() == {"a": 1}


def test_second_send_is_refused_not_written(make_server) -> None:
    server = make_server()
    errors = []

    @server.get("twice")
    def twice(request, response):
        response.send_text_plain("first")
        try:
            response.send_text_plain("second")
        except ResponseAlreadySent as exc:
            errors.append(str(exc))

    server.start()
    with requests.Session() as session:
        assert session.get(server.url + "/twice").text == "first"
        assert session.get(server.url + "/twice").text == "first"
    assert len(errors) == 2


def test_header_injection_refused(make_server) -> None:
    server = make_server()

    @server.get("inject")
    def inject(request, response):
        response.set_header("X-A", "a\r\nSet-Cookie: evil=1")

    server.start()
    response = requests.get(server.url + "/inject")
    assert response.status_code == 500
    assert "evil" not in response.headers.get("Set-Cookie", "")


# ------------------------------------------------------------------ plugins


def test_plugins_order_global_first_then_priority(make_server) -> None:
    order: list[str] = []

    def tag(name):
        def plugin(request, response):
            order.append(name)
        return plugin

    global_low = Plugin.create(PluginPriority.LOW, tag("global-low"))
    global_high = Plugin.create(PluginPriority.EXTREMELY_HIGH, tag("global-high"))
    server = make_server(plugins=[global_low])
    server.insert_global_plugin(global_high)
    local_medium = Plugin.create(PluginPriority.MEDIUM, tag("local-medium"))
    local_high = Plugin.create(PluginPriority.VERY_HIGH, tag("local-high"))
    server.get("p", lambda q, s: (order.append("handler"), s.send_ok()),
               plugins=[local_medium, local_high])
    server.get("local-only", lambda q, s: (order.append("handler"), s.send_ok()),
               plugins=[local_medium], flags=HandlerFlags.LOCAL_PLUGINS_ONLY)
    server.start()
    requests.get(server.url + "/p")
    assert order == ["global-high", "global-low", "local-high", "local-medium", "handler"]
    order.clear()
    requests.get(server.url + "/local-only")
    assert order == ["local-medium", "handler"]
    order.clear()
    global_low.set_priority(PluginPriority.EXTEMELY_HIGH)  # the alias spelling
    global_high.set_priority(PluginPriority.EXTREMELY_LOW)
    requests.get(server.url + "/p")
    assert order == ["global-low", "global-high", "local-high", "local-medium", "handler"]
    order.clear()
    local_high.remove()
    global_high.remove(server.global_plugins)
    requests.get(server.url + "/p")
    assert order == ["global-low", "local-medium", "handler"]


def test_plugin_short_circuits_before_body_is_read(make_server) -> None:
    server = make_server()
    handled = []

    async def auth(request, response):
        if request.headers.get("authorization") != "yes":
            response.send_status_code(401)
            return True
        return False

    @server.post("upload", flags=HandlerFlags.JSON_BODY, plugins=[Plugin.create(handler=auth)])
    def upload(request, response):
        handled.append(request.body)
        response.send_ok()

    @server.get("ping")
    def ping(request, response):
        response.send_ok()

    server.start()
    with requests.Session() as session:
        refused = session.post(server.url + "/upload", json={"big": "x" * 100_000})
        assert refused.status_code == 401
        assert session.get(server.url + "/ping").text == "OK"
        assert session.post(server.url + "/upload", json=[1], headers={"Authorization": "yes"}).text == "OK"
    assert handled == [[1]]


def test_sync_plugin_short_circuit(make_server) -> None:
    blocker = Plugin.create(PluginPriority.HIGH, lambda q, s: s.send_status_code(403) or True)
    server = make_server(plugins=[blocker])
    server.get("x", lambda q, s: s.send_ok())
    server.start()
    assert requests.get(server.url + "/x").status_code == 403


# ------------------------------------------------------------------ limits


def test_rate_limit_gives_429_with_retry_after(make_server) -> None:
    server = make_server()
    server.get("limited", lambda q, s: s.send_ok(), max_requests_per_second=3)
    server.get("free", lambda q, s: s.send_ok())
    server.start()
    with requests.Session() as session:
        statuses = [session.get(server.url + "/limited") for _ in range(10)]
        free = [session.get(server.url + "/free").status_code for _ in range(10)]
    codes = [r.status_code for r in statuses]
    # The window is one wall-clock second: 3 pass per second, so at most 6 across a boundary.
    assert 3 <= codes.count(200) <= 6
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(r.headers["Retry-After"] == "1" for r in limited)
    assert free == [200] * 10


def test_request_size_cap_413(make_server) -> None:
    server = make_server()
    server.post("small", lambda q, s: s.send_ok(), max_request_size_in_bytes=100)
    server.get("ping", lambda q, s: s.send_ok())
    server.start()
    assert requests.post(server.url + "/small", data=b"x" * 100).text == "OK"
    refused = requests.post(server.url + "/small", data=b"x" * 101)
    assert refused.status_code == 413
    assert refused.headers["connection"] == "close"

    def chunks():
        for _ in range(10):
            yield b"y" * 50

    chunked = requests.post(server.url + "/small", data=chunks())
    assert chunked.status_code == 413
    assert requests.get(server.url + "/ping").text == "OK"


def test_access_log_when_enabled(make_server, caplog) -> None:
    server = make_server(access_log=True)
    server.get("logged", lambda q, s: s.send_status_code(202))
    server.start()
    with caplog.at_level("INFO", "packetron.access"), requests.Session() as session:
        session.get(server.url + "/logged?x=1")
        # Same connection: the server logs the first answer before it reads the second
        # request, so once the second answer is here the first line is written.
        session.get(server.url + "/nothing-here")
    lines = [r.getMessage() for r in caplog.records if r.name == "packetron.access"]
    assert re.fullmatch(r'127\.0\.0\.1 "GET /logged\?x=1 HTTP/1\.1" 202 8 \d+\.\dms '
                        r'"python-requests/[\d.]+" -', lines[0]), lines[0]


def test_answered_requests_are_freed_without_the_cyclic_gc(make_server) -> None:
    """Request and Response point at each other until the answer is written; the link is
    cut then, so reference counting frees both at once (no GC pauses under load)."""
    import gc
    import weakref

    refs = []
    server = make_server()

    @server.get("track")
    def track(request, response):
        refs.append((weakref.ref(request), weakref.ref(response)))
        response.send_ok()

    server.start()
    gc.disable()
    try:
        with requests.Session() as session:
            for _ in range(3):
                assert session.get(server.url + "/track").text == "OK"
        assert len(refs) == 3
        assert [(r(), s()) for r, s in refs[:2]] == [(None, None), (None, None)]
    finally:
        gc.enable()


def test_fast_lane_and_general_path_give_the_same_answer(make_server) -> None:
    # A plain GET (with or without "Connection: keep-alive") is answered inside the head
    # callback; the same request with a Content-Type, or with percent-escapes in the
    # path, takes the general path. Both must look the same to the handler. Raw bytes,
    # so that nothing is added or unescaped on the way.
    server = make_server()

    @server.get("api/item")
    def item(request, response):
        response.send_json({
            "method": request.method, "path": request.path, "url": request.url,
            "version": request.http_version, "query": request.get_query_params(),
            "has_body": request.has_body(), "headers": sorted(request.headers),
        })

    server.start()

    def ask(target: bytes, extra: bytes = b"") -> dict:
        status, _, body = exchange(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n"
                                   b"X-A: 1\r\n" + extra + b"\r\n")
        assert status == 200
        return json.loads(body)

    plain = ask(b"/api/item?x=1&y=2")
    assert plain == {"method": "GET", "path": "/api/item", "url": "/api/item?x=1&y=2",
                     "version": "1.1", "query": {"x": "1", "y": "2"}, "has_body": False,
                     "headers": ["host", "x-a"]}
    with_connection = ask(b"/api/item?x=1&y=2", b"Connection: keep-alive\r\n")
    assert with_connection == {**plain, "headers": ["connection", "host", "x-a"]}
    with_type = ask(b"/api/item?x=1&y=2", b"Content-Type: text/plain\r\n")
    assert with_type == {**plain, "headers": ["content-type", "host", "x-a"]}
    escaped = ask(b"/api/%69tem?x=1&y=2")
    assert escaped == {**plain, "url": "/api/%69tem?x=1&y=2"}
    assert ask(b"/api/item/") == {**plain, "path": "/api/item/", "url": "/api/item/",
                                  "query": {}}
