"""packetron.testing: TestClient and AsyncTestClient drive the real protocol in memory."""
from __future__ import annotations

import asyncio
import io
import json
import pathlib
import time
from typing import Any

import pytest

from packetron import HandlerFlags, HttpError, Packetron, RequestMethod
from packetron.testing import (AsyncTestClient, ConnectionClosed, IncompleteResponse,
                               InvalidResponse,
                               ResponseTimeout, TestClient, TestClientError, TooManyRedirects)
from packetron.testing.cookies import parse_set_cookie
from packetron.testing.encoding import build_target, encode_multipart

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def make_server(**options: Any) -> Packetron:
    """A server that is never started: the client serves it in memory."""
    return Packetron(port=0, host="127.0.0.1", workers=1, **options)


def echo_raw(request: Any, response: Any) -> None:
    # Sync handler, no body flag: .body is the exact bytes received.
    response.send_json({
        "method": request.method,
        "url": request.url,
        "body": request.body.decode("latin-1"),
        "content_type": request.headers.get("content-type"),
        "content_length": request.headers.get("content-length"),
        "transfer_encoding": request.headers.get("transfer-encoding"),
        "host": request.headers.get("host"),
        "cookie": request.headers.get("cookie"),
        "ip": request.get_ip(),
    })


@pytest.fixture
def server() -> Packetron:
    app = make_server()
    for method in RequestMethod:
        app.handle(method, "echo", echo_raw)
    return app


# ------------------------------------------------------------------ methods and bodies


@pytest.mark.parametrize("method", METHODS)
def test_every_method_reaches_its_route(server: Packetron, method: str) -> None:
    with TestClient(server) as client:
        response = getattr(client, method.lower())("/echo")
        same = client.request(method, "/echo")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert same.status_code == 200
    if method == "HEAD":
        assert response.content == b""
        get_length = len(json.dumps({
            "method": "HEAD", "url": "/echo", "body": "", "content_type": None,
            "content_length": None, "transfer_encoding": None, "host": "testserver",
            "cookie": None, "ip": "127.0.0.1"}, separators=(",", ":")))
        assert response.headers["content-length"] == str(get_length)
        return
    body = response.json()
    assert body["method"] == method
    assert body["url"] == "/echo"
    assert body["body"] == ""
    assert body["host"] == "testserver"
    assert body["ip"] == "127.0.0.1"
    # An empty body is announced only where a length is expected.
    assert body["content_length"] == ("0" if method in ("POST", "PUT", "PATCH") else None)


def test_request_accepts_request_method_enum(server: Packetron) -> None:
    with TestClient(server) as client:
        assert client.request(RequestMethod.PATCH, "echo").json()["method"] == "PATCH"


def test_params_are_merged_into_the_target(server: Packetron) -> None:
    with TestClient(server) as client:
        body = client.get("/echo?x=0", params={"a": "1 2", "b": ["3", "4"], "c": "é"}).json()
        listed = client.get("/echo", params=[("k", "v"), ("k", "w")]).json()
    assert body["url"] == "/echo?x=0&a=1+2&b=3&b=4&c=%C3%A9"
    assert listed["url"] == "/echo?k=v&k=w"


def test_params_parsed_by_the_server() -> None:
    app = make_server()
    app.get("q", lambda request, response: response.send_json(request.get_query_params()))
    with TestClient(app) as client:
        assert client.get("/q", params={"a": "1", "b": ["x", "y"]}).json() == \
            {"a": "1", "b": ["x", "y"]}


def test_json_is_sent_compact_utf8(server: Packetron) -> None:
    with TestClient(server) as client:
        body = client.post("/echo", json={"a": [1, 2.5, None, True], "é": "ü"}).json()
    raw = '{"a":[1,2.5,null,true],"é":"ü"}'.encode("utf-8")
    assert body["body"].encode("latin-1") == raw
    assert body["content_type"] == "application/json"
    assert body["content_length"] == str(len(raw))


def test_json_body_route_gets_the_object() -> None:
    app = make_server()
    app.post("json", lambda request, response: response.send_json({"got": request.body}),
             flags=HandlerFlags.JSON_BODY)
    with TestClient(app) as client:
        assert client.post("/json", json={"n": [1, {"m": "x"}]}).json() == \
            {"got": {"n": [1, {"m": "x"}]}}
        assert client.put("/json", json=[1]).status_code == 405


def test_data_dict_is_urlencoded_for_form_routes() -> None:
    app = make_server()

    @app.post("form", flags=HandlerFlags.FORM_DATA)
    async def form(request: Any, response: Any) -> None:
        response.send_json({"fields": await request.get_body(),
                            "type": request.headers["content-type"]})

    with TestClient(app) as client:
        body = client.post("/form", data={"name": "a b&c", "tag": ["x", "y"], "n": 3}).json()
    assert body == {"fields": {"name": "a b&c", "tag": ["x", "y"], "n": "3"},
                    "type": "application/x-www-form-urlencoded"}


def test_data_bytes_and_str_are_sent_raw(server: Packetron) -> None:
    with TestClient(server) as client:
        raw = client.post("/echo", data=b"\x00\x01raw\xff").json()
        text = client.put("/echo", data="héllo", headers={"Content-Type": "text/plain"}).json()
        chunked = client.patch("/echo", data=iter([b"ab", b"", b"cd"])).json()
    assert raw["body"].encode("latin-1") == b"\x00\x01raw\xff"
    assert raw["content_type"] is None
    assert raw["content_length"] == "6"
    assert text["body"].encode("latin-1") == "héllo".encode("utf-8")
    assert text["content_type"] == "text/plain"
    assert chunked["body"] == "abcd"
    assert chunked["transfer_encoding"] == "chunked"
    assert chunked["content_length"] is None


def test_json_with_data_is_refused(server: Packetron) -> None:
    with TestClient(server) as client:
        with pytest.raises(ValueError):
            client.post("/echo", json={}, data={"a": "b"})


def test_files_are_sent_as_multipart(tmp_path: pathlib.Path) -> None:
    app = make_server()

    @app.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
              multipart_options={"file_storage_directory": str(tmp_path)})
    async def upload(request: Any, response: Any) -> None:
        fields = await request.get_body()
        files = await request.get_files()
        response.send_json({
            "fields": fields,
            "files": {name: {"filename": entry["filename"], "mime_type": entry["mime_type"],
                             "size": entry["size"],
                             "content": pathlib.Path(entry["path"]).read_bytes().decode("latin-1")}
                      for name, entry in files.items()},
        })

    source = tmp_path / "report.csv"
    source.write_bytes(b"a,b\n1,2\n")
    with TestClient(app) as client, source.open("rb") as handle:
        response = client.post("/upload", data={"title": "Q1", "tags": ["x", "y"]}, files={
            "doc": ("name.txt", b"hello\r\n--not-a-boundary", "text/plain"),
            "blob": b"\x00\x01\x02",
            "sheet": handle,
        })
    assert response.status_code == 200
    assert response.json() == {
        "fields": {"title": "Q1", "tags": ["x", "y"]},
        "files": {
            "doc": {"filename": "name.txt", "mime_type": "text/plain", "size": 23,
                    "content": "hello\r\n--not-a-boundary"},
            "blob": {"filename": "blob", "mime_type": "application/octet-stream", "size": 3,
                     "content": "\x00\x01\x02"},
            "sheet": {"filename": "report.csv", "mime_type": "text/csv", "size": 8,
                      "content": "a,b\n1,2\n"},
        },
    }


def test_form_route_takes_multipart_fields() -> None:
    app = make_server()

    @app.post("form", flags=HandlerFlags.FORM_DATA)
    async def form(request: Any, response: Any) -> None:
        response.send_json(await request.get_body())

    with TestClient(app) as client:
        body = client.post("/form", data={"a": "1"}, files={"f": ("f.bin", io.BytesIO(b"x"))})
    assert body.json() == {"a": "1"}


def test_multipart_encoding_is_exact() -> None:
    body, content_type = encode_multipart([("a", "1")], [("f", ("x.txt", b"hi", "text/plain"))],
                                          boundary="B")
    assert content_type == "multipart/form-data; boundary=B"
    assert body == (b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
                    b'--B\r\nContent-Disposition: form-data; name="f"; filename="x.txt"\r\n'
                    b"Content-Type: text/plain\r\n\r\nhi\r\n--B--\r\n")


def test_large_upload_is_fed_with_backpressure(tmp_path: pathlib.Path) -> None:
    app = make_server()

    @app.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
              multipart_options={"file_storage_directory": str(tmp_path)})
    async def upload(request: Any, response: Any) -> None:
        files = await request.get_files()
        response.send_json({"size": files["big"]["size"]})

    payload = bytes(range(256)) * 8192  # 2 MiB: many reads, the protocol pauses between
    with TestClient(app) as client:
        assert client.post("/upload", files={"big": ("big.bin", payload)}).json() == \
            {"size": len(payload)}


def test_target_building() -> None:
    assert build_target("a b/é", None) == "/a%20b/%C3%A9"
    assert build_target("/x%2Fy?z=1#frag", {"q": "1"}) == "/x%2Fy?z=1&q=1"
    assert build_target("/", "raw=1") == "/?raw=1"


# ------------------------------------------------------------------ cookies


def cookie_server() -> Packetron:
    app = make_server()

    @app.get("login")
    def login(request: Any, response: Any) -> None:
        response.set_cookie("session", "abc", http_only=True)
        response.set_cookie("scoped", "s1", path="/admin")
        response.set_cookie("short", "t", max_age=3600)
        response.send_ok()

    @app.get("logout")
    def logout(request: Any, response: Any) -> None:
        response.clear_cookie("session")
        response.set_header("Set-Cookie", "short=; Max-Age=0; Path=/")
        response.send_ok()

    @app.get("old")
    def old(request: Any, response: Any) -> None:
        response.set_header("Set-Cookie", "short=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        response.send_ok()

    show = lambda request, response: response.send_json(request.get_cookies())  # noqa: E731
    app.get("whoami", show)
    app.get("admin/panel", show)
    return app


def test_cookies_are_kept_sent_and_deleted() -> None:
    with TestClient(cookie_server()) as client:
        login = client.get("/login")
        assert login.headers.get_list("set-cookie") == [
            "session=abc; Path=/; HttpOnly", "scoped=s1; Path=/admin",
            "short=t; Max-Age=3600; Path=/"]
        assert login.cookies == {"session": "abc", "scoped": "s1", "short": "t"}
        assert client.get("/whoami").json() == {"session": "abc", "short": "t"}
        assert client.get("/admin/panel").json() == {"scoped": "s1", "session": "abc",
                                                     "short": "t"}
        assert dict(client.cookies) == {"scoped": "s1", "session": "abc", "short": "t"}
        client.get("/logout")
        assert client.get("/whoami").json() == {}
        assert dict(client.cookies) == {"scoped": "s1"}


def test_past_expires_deletes_and_per_request_cookies_are_not_kept() -> None:
    with TestClient(cookie_server(), cookies={"pref": "dark"}) as client:
        client.get("/login")
        client.get("/old")
        assert "short" not in client.cookies
        assert client.get("/whoami", cookies={"session": "override", "one": "1"}).json() == \
            {"session": "override", "one": "1", "pref": "dark"}
        assert client.get("/whoami").json() == {"session": "abc", "pref": "dark"}
        client.cookies["extra"] = "e"
        del client.cookies["pref"]
        assert client.get("/whoami").json() == {"session": "abc", "extra": "e"}


def test_set_cookie_parsing_rules() -> None:
    now = 1_000_000.0
    assert parse_set_cookie("a=1; Max-Age=10; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
                            "/x", now) == ("a", "1", "/", now + 10)
    assert parse_set_cookie('b="q"; Path=/p', "/", now) == ("b", "q", "/p", None)
    assert parse_set_cookie("c=2", "/dir/page", now) == ("c", "2", "/dir", None)
    assert parse_set_cookie("novalue", "/", now) is None


# ------------------------------------------------------------------ lifespan


def test_lifespan_hooks_run_on_enter_and_exit() -> None:
    app = make_server()
    events: list[str] = []

    @app.on_startup
    async def open_pool(server: Packetron) -> None:
        server.state.pool = "pool"
        events.append("startup")

    @app.on_shutdown
    def close_pool(server: Packetron) -> None:
        events.append(f"shutdown:{server.state.pool}")

    app.get("pool", lambda request, response: response.send_text_plain(app.state.pool))
    client = TestClient(app)
    assert events == []
    with client:
        assert events == ["startup"]
        assert client.get("/pool").text == "pool"
    assert events == ["startup", "shutdown:pool"]
    with pytest.raises(TestClientError):
        client.get("/pool")


def test_failing_startup_hook_raises_from_enter() -> None:
    app = make_server()
    shut: list[bool] = []
    app.on_startup(lambda server: 1 / 0)
    app.on_shutdown(lambda server: shut.append(True))
    with pytest.raises(ZeroDivisionError):
        with TestClient(app):
            pass
    assert shut == []


def test_without_with_no_hooks_run() -> None:
    app = make_server()
    events: list[str] = []
    app.on_startup(lambda server: events.append("startup"))
    app.get("x", lambda request, response: response.send_ok())
    client = TestClient(app)
    assert client.get("/x").text == "OK"
    client.close()
    assert events == []


# ------------------------------------------------------------------ answers


def test_not_found_and_method_not_allowed(server: Packetron) -> None:
    app = make_server()
    app.get("only-get", lambda request, response: response.send_ok())
    with TestClient(app) as client:
        missing = client.get("/nope")
        wrong = client.delete("/only-get")
    assert (missing.status_code, missing.text) == (404, "Not Found")
    assert missing.headers["content-type"] == "text/plain; charset=utf-8"
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD"
    assert wrong.reason == "Method Not Allowed"


def test_head_has_the_get_headers_and_no_body() -> None:
    app = make_server()
    app.get("page", lambda request, response: response.send_html("<p>hello</p>"))
    with TestClient(app) as client:
        get = client.get("/page")
        head = client.head("/page")
        after = client.get("/page")  # the connection's framing survived the empty HEAD
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == "12"
    assert head.headers["content-type"] == "text/html; charset=utf-8"
    assert after.text == "<p>hello</p>"
    assert client.connections_opened == 1


def test_async_handler() -> None:
    app = make_server()

    @app.get("slow")
    async def slow(request: Any, response: Any) -> None:
        await asyncio.sleep(0.01)
        response.send_json({"done": True})

    with TestClient(app) as client:
        assert client.get("/slow").json() == {"done": True}


def test_handler_that_raises_gives_500_and_keeps_the_connection() -> None:
    app = make_server()

    @app.get("boom")
    def boom(request: Any, response: Any) -> None:
        raise RuntimeError("kaboom")

    @app.get("teapot")
    async def teapot(request: Any, response: Any) -> None:
        raise HttpError("short and stout", status_code=418)

    app.get("fine", lambda request, response: response.send_ok())
    with TestClient(app) as client:
        failed = client.get("/boom")
        tea = client.get("/teapot")
        fine = client.get("/fine")
    assert (failed.status_code, failed.text) == (500, "Internal Server Error")
    assert (tea.status_code, tea.text) == (418, "short and stout")
    assert fine.text == "OK"
    assert client.connections_opened == 1


async def stream_three(request: Any, response: Any) -> None:
    response.start(200, [("content-type", "text/plain")])
    for piece in (b"one ", b"two ", b"three"):
        await response.write(piece)
    response.end()


def stream_server() -> Packetron:
    app = make_server()
    app.get("stream", stream_three)

    @app.get("events")
    async def events(request: Any, response: Any) -> None:
        response.start(200, [("content-type", "text/event-stream")])
        number = 0
        while True:  # endless, as a live event stream is: the client hangs up
            await response.write(f"id: {number}\ndata: tick {number}\n\n".encode())
            number += 1
            await asyncio.sleep(0.001)

    return app


def test_streamed_response_is_decoded_from_chunks() -> None:
    app = stream_server()
    with TestClient(app) as client:
        whole = client.get("/stream")
        with client.stream("GET", "/stream") as streamed:
            pieces = list(streamed.iter_bytes())
        with client.stream("GET", "/stream") as read:
            assert read.read() == b"one two three"
            assert read.text == "one two three"
        again = client.get("/stream")
    assert whole.status_code == 200
    assert whole.headers["transfer-encoding"] == "chunked"
    assert whole.content == b"one two three"
    assert b"".join(pieces) == b"one two three"
    assert len(pieces) == 3
    assert again.content == b"one two three"
    assert client.connections_opened == 1


def test_endless_event_stream_is_read_line_by_line() -> None:
    app = stream_server()
    with TestClient(app) as client:
        with client.stream("GET", "/events") as response:
            assert response.headers["content-type"] == "text/event-stream"
            with pytest.raises(TestClientError):
                response.content  # noqa: B018  (not read yet)
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) == 6:
                    break
        assert lines == ["id: 0", "data: tick 0", "", "id: 1", "data: tick 1", ""]
        # Hanging up on the stream closed that connection; the next request gets a new one.
        assert client.get("/stream").content == b"one two three"
        assert client.connections_opened == 2


# ------------------------------------------------------------------ connections


def test_keep_alive_reuses_one_connection(server: Packetron) -> None:
    with TestClient(server) as client:
        for _ in range(5):
            assert client.post("/echo", json={"n": 1}).status_code == 200
        assert client.connections_opened == 1


def test_connection_closed_by_the_server_is_replaced(server: Packetron) -> None:
    app = make_server()
    app.post("small", lambda request, response: response.send_ok(), max_request_size_in_bytes=10)
    app.get("x", lambda request, response: response.send_ok())
    with TestClient(app) as client:
        closing = client.get("/x", headers={"Connection": "close"})
        assert closing.headers["connection"] == "close"
        assert client.get("/x").text == "OK"
        assert client.connections_opened == 2
        # 413 before the body is read: the server answers and closes (lingering).
        too_big = client.post("/small", data=b"x" * 200_000)
        assert too_big.status_code == 413
        assert too_big.headers["connection"] == "close"
        assert client.get("/x").text == "OK"
        assert client.connections_opened == 3


def test_idle_connection_closed_by_keep_alive_timeout_is_replaced() -> None:
    app = make_server(keep_alive_timeout=0.05)
    app.get("x", lambda request, response: response.send_ok())

    async def main() -> int:
        async with AsyncTestClient(app) as client:
            assert (await client.get("/x")).text == "OK"
            await asyncio.sleep(1.2)  # one tick of the server's clock closes it
            assert (await client.get("/x")).text == "OK"
            return client.connections_opened

    assert asyncio.run(main()) == 2


def test_a_handler_that_never_answers_times_out() -> None:
    app = make_server()

    @app.get("hang")
    async def hang(request: Any, response: Any) -> None:
        await asyncio.sleep(3600)

    app.get("x", lambda request, response: response.send_ok())
    with TestClient(app, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(ResponseTimeout, match="GET /hang"):
            client.get("/hang")
        assert time.monotonic() - started < 2
        assert client.get("/x").text == "OK"
        assert client.connections_opened == 2


def test_server_that_hangs_up_without_answering() -> None:
    app = make_server()

    @app.get("cut")
    async def cut(request: Any, response: Any) -> None:
        response.start(200, content_length=100)
        await response.write(b"partial")
        raise RuntimeError("died mid-body")  # half an answer out: the server cuts it

    with TestClient(app) as client:
        with pytest.raises(IncompleteResponse, match=r"middle of the response body \(7 bytes"):
            client.get("/cut")
        with pytest.raises(ConnectionClosed):  # IncompleteResponse is one
            client.get("/cut")


def test_redirects_are_followed_only_when_asked() -> None:
    app = make_server()

    @app.post("form")
    def form(request: Any, response: Any) -> None:
        response.set_header("Location", "/done?x=1")
        response.send_status_code(303)

    @app.get("loop")
    def loop(request: Any, response: Any) -> None:
        response.set_header("Location", "/loop")
        response.send_status_code(302)

    app.get("done", lambda request, response: response.send_json(request.get_query_params()))
    with TestClient(app) as client:
        first = client.post("/form", data={"a": "1"})
        followed = client.post("/form", data={"a": "1"}, follow_redirects=True)
        with pytest.raises(TooManyRedirects):
            client.get("/loop", follow_redirects=True)
    assert first.status_code == 303
    assert first.headers["location"] == "/done?x=1"
    assert followed.status_code == 200
    assert followed.json() == {"x": "1"}
    assert [r.status_code for r in followed.history] == [303]
    assert followed.url == "http://testserver/done?x=1"


def test_sync_client_refuses_a_running_loop(server: Packetron) -> None:
    async def main() -> None:
        with pytest.raises(TestClientError, match="AsyncTestClient"):
            TestClient(server).get("/echo")

    asyncio.run(main())


def test_headers_case_insensitive_and_client_defaults(server: Packetron) -> None:
    with TestClient(server, base_url="http://example.test:8080",
                    headers={"X-Default": "1"}) as client:
        response = client.get("/echo", headers={"x-extra": "2"})
    assert response.headers["Content-Type"] == response.headers["content-type"]
    assert "CONTENT-LENGTH" in response.headers
    assert response.json()["host"] == "example.test:8080"
    assert response.url == "http://example.test:8080/echo"


# ------------------------------------------------------------------ AsyncTestClient


def test_async_client_in_asyncio_run() -> None:
    app = make_server()
    events: list[str] = []
    app.on_startup(lambda server: events.append("startup"))
    app.on_shutdown(lambda server: events.append("shutdown"))

    @app.post("echo", flags=HandlerFlags.JSON_BODY)
    async def echo(request: Any, response: Any) -> None:
        body = await request.get_body()
        await asyncio.sleep(0.01 * body["n"])
        response.set_cookie("last", str(body["n"]))
        response.send_json(body)

    app.get("stream", stream_three)

    async def main() -> dict[str, Any]:
        async with AsyncTestClient(app) as client:
            assert events == ["startup"]
            answers = await asyncio.gather(*(client.post("/echo", json={"n": n})
                                             for n in (3, 1, 2)))
            async with client.stream("GET", "/stream") as streamed:
                pieces = [piece async for piece in streamed.aiter_bytes()]
            head = await client.head("/stream")
            return {"answers": [r.json() for r in answers], "pieces": pieces,
                    "cookies": dict(client.cookies), "connections": client.connections_opened,
                    "head": (head.status_code, head.content)}

    result = asyncio.run(main())
    assert events == ["startup", "shutdown"]
    assert result["answers"] == [{"n": 3}, {"n": 1}, {"n": 2}]
    assert result["pieces"] == [b"one ", b"two ", b"three"]
    assert result["cookies"]["last"] in {"1", "2", "3"}
    assert result["connections"] == 3  # three requests in flight at once: three connections
    assert result["head"] == (200, b"")


# ------------------------------------------------------------------ the h11 oracle


@pytest.mark.parametrize("answer, error", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", InvalidResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", IncompleteResponse),
    (b"", ConnectionClosed),
])
def test_broken_answers_are_reported(answer: bytes, error: type[Exception]) -> None:
    import h11

    from packetron.testing.transport import MemoryConnection

    loop = asyncio.new_event_loop()
    try:
        connection = MemoryConnection(make_server().serving_state(), loop, ("127.0.0.1", 1))
        connection.begin("GET", h11.Request(method="GET", target="/",
                                            headers=[("Host", "t")]), [])
        exchange = connection.exchange
        assert exchange is not None
        connection.transport.write(answer)
        connection.transport.close()  # what the server does after a broken answer
        assert type(exchange.error) is error
        with pytest.raises(error):
            loop.run_until_complete(
                connection.wait(exchange, lambda: exchange.complete, loop.time() + 1, "GET /"))
        assert not connection.reusable
        loop.run_until_complete(asyncio.sleep(0))  # connection_lost reaches the protocol
    finally:
        loop.close()
