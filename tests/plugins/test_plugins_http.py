"""The shipped plugins on a real server over loopback sockets, bad inputs included."""
from __future__ import annotations

import re
import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import requests

from packetron import HandlerFlags, HttpError, Packetron
from packetron.plugins import cors, csrf, request_id, security_headers, sessions
from packetron.plugins.sessioncookie import SessionSigner


def _serve(plugins: list[Any], routes: Any) -> Iterator[Packetron]:
    server = Packetron(port=0, host="127.0.0.1", workers=1, plugins=plugins)
    routes(server)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=2)


_serving = contextmanager(_serve)


def _get(server: Packetron, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(server.url + path, timeout=5, **kwargs)


def _raw(server: Packetron, request: bytes) -> bytes:
    """Send one request as bytes (for header values `requests` refuses) and read the answer."""
    host, port = server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _common_routes(server: Packetron) -> None:
    @server.get("items")
    def items(request, response) -> None:
        response.send_json({"items": []})

    @server.post("items")
    def create(request, response) -> None:
        response.send_json({"created": True}, 201)

    @server.get("vary")
    def vary(request, response) -> None:
        response.set_header("Vary", "Accept-Encoding")
        response.send_text_plain("varies")

    @server.get("refuse")
    def refuse(request, response) -> None:
        raise HttpError("no such item", status_code=422)

    @server.get("crash")
    async def crash(request, response) -> None:
        raise RuntimeError("boom")

    @server.post("api")
    def api(request, response) -> None:
        response.send_json({"api": True})

    @server.options("api")
    def api_options(request, response) -> None:
        # Reached only by an OPTIONS that is not a preflight: the plugin answers those.
        response.send_text_plain("the route's own OPTIONS", 200)


# ------------------------------------------------------------ CORS


@pytest.fixture(scope="module")
def cors_server() -> Iterator[Packetron]:
    yield from _serve([cors(allow_origins=["https://app.test", "http://localhost:3000"],
                            expose_headers=["X-Total"])], _common_routes)


@pytest.fixture(scope="module")
def cors_credentials_server() -> Iterator[Packetron]:
    yield from _serve([cors(allow_origins=["*"], allow_credentials=True,
                            allow_headers=["X-Token"], max_age=60)], _common_routes)


@pytest.fixture(scope="module")
def cors_null_server() -> Iterator[Packetron]:
    yield from _serve([cors(allow_origins=["null"])], _common_routes)


def _preflight(server: Packetron, path: str, origin: str, method: str = "POST",
               headers: str | None = None) -> requests.Response:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return requests.options(server.url + path, headers=sent, timeout=5)


def test_a_preflight_is_answered_204_by_the_plugin(cors_server) -> None:
    r = _preflight(cors_server, "/api", "https://app.test", "POST", "Content-Type, X-Any")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.test"
    assert r.headers["access-control-allow-methods"] == \
        "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
    assert r.headers["access-control-allow-headers"] == "content-type, x-any"
    assert r.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in r.headers
    assert "Origin" in r.headers["vary"]
    assert r.content == b""
    # An OPTIONS that is not a preflight reaches the route.
    r = requests.options(cors_server.url + "/api", headers={"Origin": "https://app.test"},
                         timeout=5)
    assert (r.status_code, r.text) == (200, "the route's own OPTIONS")
    assert r.headers["access-control-allow-origin"] == "https://app.test"


@pytest.mark.parametrize("path", ["/items", "/nowhere"])
def test_a_preflight_needs_no_options_route(cors_server, path: str) -> None:
    # DESIGN: preflights are answered "for any route ... (no OPTIONS handler needed)".
    r = _preflight(cors_server, path, "https://app.test", "POST")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://app.test"


def test_a_preflight_from_a_disallowed_origin_is_400_with_no_cors_headers(cors_server) -> None:
    r = _preflight(cors_server, "/api", "https://evil.test")
    assert (r.status_code, r.text) == (400, "Disallowed CORS origin")
    assert not [name for name in r.headers if name.lower().startswith("access-control-")]


def test_a_preflight_for_a_disallowed_method_or_header_is_400(cors_credentials_server) -> None:
    r = _preflight(cors_credentials_server, "/api", "https://a.test", "GET", "X-Other")
    assert (r.status_code, r.text) == (400, "Disallowed CORS headers")
    r = _preflight(cors_credentials_server, "/api", "https://a.test", "PURGE")
    assert (r.status_code, r.text) == (400, "Disallowed CORS method")
    assert "access-control-allow-origin" not in r.headers


def test_a_preflight_with_credentials_names_the_origin(cors_credentials_server) -> None:
    r = _preflight(cors_credentials_server, "/api", "https://a.test", "PUT", "x-token")
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://a.test"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-allow-headers"] == \
        "x-token, accept, accept-language, content-language, content-type"
    assert r.headers["access-control-max-age"] == "60"


def test_an_allowed_origin_gets_cors_headers_on_every_answer(cors_server) -> None:
    for path, status in (("/items", 200), ("/refuse", 422), ("/crash", 500)):
        r = _get(cors_server, path, headers={"Origin": "https://app.test"})
        assert r.status_code == status
        assert r.headers["access-control-allow-origin"] == "https://app.test"
        assert r.headers["access-control-expose-headers"] == "X-Total"
        assert r.headers["vary"] == "Origin"
    r = requests.post(cors_server.url + "/items", headers={"Origin": "http://localhost:3000"},
                      timeout=5)
    assert (r.status_code, r.headers["access-control-allow-origin"]) == \
        (201, "http://localhost:3000")


def test_the_servers_own_answers_carry_cors_headers(cors_server) -> None:
    r = _get(cors_server, "/nowhere", headers={"Origin": "https://app.test"})
    assert (r.status_code, r.headers["access-control-allow-origin"]) == (404, "https://app.test")
    r = requests.delete(cors_server.url + "/items", headers={"Origin": "https://app.test"},
                        timeout=5)
    assert (r.status_code, r.headers["access-control-allow-origin"]) == (405, "https://app.test")


def test_origins_compare_like_browsers_do(cors_server) -> None:
    r = _get(cors_server, "/items", headers={"Origin": "https://APP.test"})
    assert r.headers["access-control-allow-origin"] == "https://APP.test"  # host: any case
    r = _get(cors_server, "/items", headers={"Origin": "https://app.test:443"})
    assert "access-control-allow-origin" in r.headers  # the default port is no port
    for other in ("https://app.test:8443", "http://app.test", "https://app.test.evil.test",
                  "http://localhost:3001", "https://app.test/", "null", "garbage"):
        r = _get(cors_server, "/items", headers={"Origin": other})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers, other
        assert r.headers["vary"] == "Origin"


def test_origin_null_is_allowed_only_when_listed(cors_credentials_server,
                                                 cors_null_server) -> None:
    r = _get(cors_credentials_server, "/items", headers={"Origin": "null"})
    assert "access-control-allow-origin" not in r.headers  # "*" does not cover it
    r = _get(cors_null_server, "/items", headers={"Origin": "null"})
    assert r.headers["access-control-allow-origin"] == "null"


def test_vary_origin_is_appended_and_sent_without_an_origin(cors_server) -> None:
    r = _get(cors_server, "/vary", headers={"Origin": "https://app.test"})
    assert r.headers["vary"] == "Accept-Encoding, Origin"
    r = _get(cors_server, "/items")
    assert r.headers["vary"] == "Origin"  # a cache must not serve this to another origin
    assert "access-control-allow-origin" not in r.headers


def test_credentials_reflect_the_origin_on_simple_answers(cors_credentials_server) -> None:
    r = _get(cors_credentials_server, "/items", headers={"Origin": "https://a.test"})
    assert r.headers["access-control-allow-origin"] == "https://a.test"
    assert r.headers["access-control-allow-credentials"] == "true"


def test_route_local_cors_answers_only_its_route() -> None:
    def routes(server: Packetron) -> None:
        @server.get("open", plugins=[cors()])
        def open_(request, response) -> None:
            response.send_text_plain("open")

        @server.get("closed")
        def closed(request, response) -> None:
            response.send_text_plain("closed")

    with _serving([], routes) as server:
        r = _get(server, "/open", headers={"Origin": "https://a.test"})
        assert r.headers["access-control-allow-origin"] == "*"
        r = _get(server, "/closed", headers={"Origin": "https://a.test"})
        assert "access-control-allow-origin" not in r.headers


# ------------------------------------------------------------ security headers


@pytest.fixture(scope="module")
def secure_server() -> Iterator[Packetron]:
    def routes(server: Packetron) -> None:
        _common_routes(server)

        @server.get("framed")
        def framed(request, response) -> None:
            response.set_header("X-Frame-Options", "SAMEORIGIN")
            response.set_header("Content-Security-Policy", "default-src *")
            response.send_text_plain("framed")

    yield from _serve([security_headers(csp="default-src 'self'")], routes)


def test_security_headers_are_on_every_answer(secure_server) -> None:
    for path, status in (("/items", 200), ("/refuse", 422), ("/crash", 500), ("/none", 404)):
        r = _get(secure_server, path)
        assert r.status_code == status
        assert r.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert r.headers["content-security-policy"] == "default-src 'self'"


def test_security_headers_keep_what_the_handler_set(secure_server) -> None:
    r = _get(secure_server, "/framed")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert r.headers["content-security-policy"] == "default-src *"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_disabled_security_headers_are_absent() -> None:
    plugin = security_headers(hsts=None, frame_options=False, referrer_policy=None)
    with _serving([plugin], _common_routes) as server:
        r = _get(server, "/items")
        assert r.headers["x-content-type-options"] == "nosniff"
        for name in ("strict-transport-security", "x-frame-options", "referrer-policy",
                     "content-security-policy"):
            assert name not in r.headers


# ------------------------------------------------------------ CSRF


@pytest.fixture(scope="module")
def csrf_server() -> Iterator[Packetron]:
    def routes(server: Packetron) -> None:
        @server.get("form")
        def form(request, response) -> None:
            response.send_json({"token": request.csrf_token})

        @server.post("submit", flags=HandlerFlags.JSON_BODY)
        async def submit(request, response) -> None:
            response.send_json({"got": await request.get_body()})

        @server.delete("thing")
        def delete(request, response) -> None:
            response.send_status_code(204)

    yield from _serve([csrf()], routes)


def test_a_safe_request_without_a_token_is_given_one(csrf_server) -> None:
    r = _get(csrf_server, "/form")
    assert r.status_code == 200
    token = r.cookies["csrftoken"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    assert r.json() == {"token": token}  # the handler saw the token it hands out
    set_cookie = r.headers["set-cookie"]
    assert "Path=/" in set_cookie and "SameSite=Lax" in set_cookie
    assert "HttpOnly" not in set_cookie  # the page's script must read it
    again = _get(csrf_server, "/form", cookies={"csrftoken": token})
    assert "set-cookie" not in again.headers
    assert again.json() == {"token": token}


def test_an_unsafe_request_needs_the_header_to_repeat_the_cookie(csrf_server) -> None:
    token = _get(csrf_server, "/form").cookies["csrftoken"]
    url = csrf_server.url + "/submit"
    ok = requests.post(url, json={"a": 1}, cookies={"csrftoken": token},
                       headers={"X-CSRF-Token": token}, timeout=5)
    assert (ok.status_code, ok.json()) == (200, {"got": {"a": 1}})
    for cookies, headers in (({"csrftoken": token}, {}),
                             ({"csrftoken": token}, {"X-CSRF-Token": token[:-1] + "A"
                                                     if token[-1] != "A" else token[:-1] + "B"}),
                             ({}, {"X-CSRF-Token": token}),
                             ({"csrftoken": "short"}, {"X-CSRF-Token": "short"}),
                             ({"csrftoken": ""}, {"X-CSRF-Token": ""})):
        r = requests.post(url, json={"a": 1}, cookies=cookies, headers=headers, timeout=5)
        assert r.status_code == 403, (cookies, headers)
    r = requests.delete(csrf_server.url + "/thing", cookies={"csrftoken": token}, timeout=5)
    assert r.status_code == 403
    r = requests.delete(csrf_server.url + "/thing", cookies={"csrftoken": token},
                        headers={"x-csrf-token": token}, timeout=5)
    assert r.status_code == 204


def test_an_unsafe_request_no_route_serves_gets_its_404_or_405(csrf_server) -> None:
    r = requests.post(csrf_server.url + "/nowhere", timeout=5)
    assert r.status_code == 404
    r = requests.put(csrf_server.url + "/submit", timeout=5)
    assert r.status_code == 405
    assert "csrftoken=" in r.headers["set-cookie"]


def test_a_csrf_header_on_a_safe_method_is_ignored(csrf_server) -> None:
    r = _get(csrf_server, "/form", headers={"X-CSRF-Token": "anything at all"})
    assert r.status_code == 200
    token = r.cookies["csrftoken"]
    assert token != "anything at all"


def test_a_refused_upload_is_refused_before_its_body(csrf_server) -> None:
    # The 403 comes back although the 1 MB body promised is never sent.
    answer = _raw(csrf_server, b"POST /submit HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/octet-stream\r\n"
                               b"Content-Length: 1000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403")


# ------------------------------------------------------------ request ids


@pytest.fixture(scope="module")
def rid_server() -> Iterator[Packetron]:
    def routes(server: Packetron) -> None:
        @server.get("whoami")
        def whoami(request, response) -> None:
            response.send_json({"id": request.id})

        @server.get("refuse")
        def refuse(request, response) -> None:
            raise HttpError("nope", status_code=409)

    yield from _serve([request_id()], routes)


def test_a_new_request_id_is_made_and_echoed(rid_server) -> None:
    r = _get(rid_server, "/whoami")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert r.json() == {"id": r.headers["x-request-id"]}
    assert _get(rid_server, "/whoami").headers["x-request-id"] != r.headers["x-request-id"]


def test_a_well_formed_client_id_is_kept(rid_server) -> None:
    rid = "req-" + "x" * 196
    r = _get(rid_server, "/whoami", headers={"X-Request-ID": rid})
    assert (r.json(), r.headers["x-request-id"]) == ({"id": rid}, rid)


@pytest.mark.parametrize("bad", [b"x" * 201, b"two words", b"tab\there", b"caf\xc3\xa9",
                                 b"ctl\x01char", b"del\x7f"])
def test_a_malformed_client_id_is_replaced(rid_server, bad: bytes) -> None:
    answer = _raw(rid_server, b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Request-ID: " + bad
                  + b"\r\nConnection: close\r\n\r\n")
    if b"\x01" in bad or b"\x7f" in bad:
        # The HTTP parser refuses control characters in a header before any plugin runs.
        assert answer.startswith(b"HTTP/1.1 400"), answer
        return
    assert answer.startswith(b"HTTP/1.1 200"), answer
    echoed = re.search(rb"\r\nx-request-id: ([^\r]*)\r\n", answer, re.IGNORECASE)
    assert echoed is not None and re.fullmatch(rb"[0-9a-f]{32}", echoed.group(1))


def test_errors_and_the_servers_own_answers_carry_the_id(rid_server) -> None:
    for path, status in (("/refuse", 409), ("/missing", 404)):
        r = _get(rid_server, path, headers={"X-Request-ID": "trace-1"})
        assert (r.status_code, r.headers["x-request-id"]) == (status, "trace-1")
    r = requests.post(rid_server.url + "/whoami", timeout=5)
    assert r.status_code == 405
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


# ------------------------------------------------------------ sessions


def _session_routes(server: Packetron) -> None:
    @server.get("count")
    def count(request, response) -> None:
        request.session["n"] = request.session.get("n", 0) + 1
        response.send_json(request.session)

    @server.get("peek")
    def peek(request, response) -> None:
        response.send_json(request.session)

    @server.get("cart")
    def cart(request, response) -> None:
        request.session.setdefault("cart", []).append(len(request.session.get("cart", [])))
        response.send_json(request.session)

    @server.get("login-fails")
    def login_fails(request, response) -> None:
        request.session["failures"] = request.session.get("failures", 0) + 1
        raise HttpError("wrong password", status_code=401)

    @server.get("crash")
    def crash(request, response) -> None:
        request.session["half"] = "done"
        raise RuntimeError("boom")

    @server.get("logout")
    def logout(request, response) -> None:
        request.session.clear()
        response.send_text_plain("bye")


@pytest.fixture(scope="module")
def session_server() -> Iterator[Packetron]:
    yield from _serve([sessions("s3cret", max_age=3600)], _session_routes)


def _signer(secret: Any = "s3cret", max_age: int | None = 3600) -> SessionSigner:
    return SessionSigner(secret, max_age, salt="packetron.sessions:session")


def _session_in(value: str, secret: Any = "s3cret") -> dict[str, Any] | None:
    """The session a cookie value holds for `secret`, None when it does not verify."""
    loaded = _signer(secret).load(value, time.time())
    return None if loaded is None else loaded[0]


def test_a_session_survives_between_requests(session_server) -> None:
    client = requests.Session()
    url = session_server.url
    assert client.get(url + "/count", timeout=5).json() == {"n": 1}
    r = client.get(url + "/count", timeout=5)
    assert r.json() == {"n": 2}
    set_cookie = r.headers["set-cookie"]
    for attribute in ("HttpOnly", "Max-Age=3600", "SameSite=Lax", "Path=/"):
        assert attribute in set_cookie
    assert "Secure" not in set_cookie
    # Reading without changing writes no cookie.
    r = client.get(url + "/peek", timeout=5)
    assert (r.json(), "set-cookie" in r.headers) == ({"n": 2}, False)
    # A change inside a nested value is seen too.
    assert client.get(url + "/cart", timeout=5).json() == {"n": 2, "cart": [0]}
    assert client.get(url + "/cart", timeout=5).json() == {"n": 2, "cart": [0, 1]}


def test_an_empty_session_sets_no_cookie_and_logout_clears_it(session_server) -> None:
    r = _get(session_server, "/peek")
    assert (r.json(), "set-cookie" in r.headers) == ({}, False)
    value = _signer().sign({"n": 5}, time.time())
    r = _get(session_server, "/logout", cookies={"session": value})
    assert r.status_code == 200
    assert r.headers["set-cookie"].startswith("session=;")
    assert "Max-Age=0" in r.headers["set-cookie"]


def test_a_4xx_answer_saves_the_session_and_a_5xx_does_not(session_server) -> None:
    r = _get(session_server, "/login-fails")
    assert r.status_code == 401
    assert _session_in(r.cookies["session"]) == {"failures": 1}
    r = _get(session_server, "/crash")
    assert (r.status_code, "set-cookie" in r.headers) == (500, False)


@pytest.mark.parametrize("kind", ["forged", "other-secret", "garbled", "oversized", "expired",
                                  "not-ascii", "empty"])
def test_a_bad_session_cookie_is_an_empty_session(session_server, kind: str) -> None:
    good = _signer().sign({"n": 41, "admin": False}, time.time())
    payload, stamp, signature = good.split(".")
    values = {
        "forged": f"{_signer('attacker').sign({'admin': True}, time.time()).split('.')[0]}"
                  f".{stamp}.{signature}",
        "other-secret": _signer("attacker").sign({"n": 41, "admin": True}, time.time()),
        "garbled": "%%%not.a.cookie%%%",
        "oversized": good + "A" * 5000,
        "expired": _signer().sign({"n": 41}, time.time() - 3601),
        "not-ascii": "caf%C3%A9." + stamp + "." + signature,
        "empty": "",
    }
    r = _get(session_server, "/count", cookies={"session": values[kind]})
    assert (r.status_code, r.json()) == (200, {"n": 1})
    fresh = r.cookies["session"]
    assert _session_in(fresh) == {"n": 1}
    r = _get(session_server, "/peek", cookies={"session": values[kind]})
    assert (r.status_code, r.json()) == (200, {})
    assert "Max-Age=0" in r.headers["set-cookie"]  # the bad cookie is dropped


def test_rotated_secrets_verify_old_cookies_and_resign_them() -> None:
    with _serving([sessions(["new", "old"], max_age=3600)], _session_routes) as server:
        old = _signer("old").sign({"n": 7}, time.time())
        r = _get(server, "/peek", cookies={"session": old})
        assert r.json() == {"n": 7}
        resigned = r.cookies["session"]  # unchanged, but moved to the first secret
        assert _session_in(resigned, "new") == {"n": 7}
        assert _session_in(resigned, "old") is None


def test_an_old_cookie_is_refreshed_before_it_expires(session_server) -> None:
    aging = _signer().sign({"n": 3}, time.time() - 1900)  # past half of max_age
    r = _get(session_server, "/peek", cookies={"session": aging})
    assert r.json() == {"n": 3}
    issued = int(r.cookies["session"].split(".")[1])
    assert abs(issued - time.time()) < 60


def test_https_only_sessions_are_secure_cookies() -> None:
    plugin = sessions("s3cret", https_only=True, same_site="strict", max_age=None)
    with _serving([plugin], _session_routes) as server:
        r = _get(server, "/count")
        set_cookie = r.headers["set-cookie"]
        assert "Secure" in set_cookie and "SameSite=Strict" in set_cookie
        assert "Max-Age" not in set_cookie


# ------------------------------------------------------------ together


def test_all_plugins_together_on_one_server() -> None:
    def routes(server: Packetron) -> None:
        _session_routes(server)

        @server.options("count")
        def count_options(request, response) -> None:
            response.send_status_code(200)

        @server.post("count")
        def count_post(request, response) -> None:
            request.session["posted"] = True
            response.send_json(request.session)

    plugins = [cors(allow_origins=["https://app.test"], allow_credentials=True),
               security_headers(), csrf(), request_id(), sessions("s3cret")]
    with _serving(plugins, routes) as server:
        client = requests.Session()
        r = client.get(server.url + "/count", timeout=5,
                       headers={"Origin": "https://app.test", "X-Request-ID": "abc"})
        assert r.json() == {"n": 1}
        assert r.headers["access-control-allow-origin"] == "https://app.test"
        assert r.headers["x-request-id"] == "abc"
        assert r.headers["x-frame-options"] == "DENY"
        assert {"session", "csrftoken"} <= set(r.cookies.keys())
        assert len(r.raw.headers.getlist("set-cookie")) == 2
        # The preflight is answered before CSRF could refuse it, with the other headers.
        r = _preflight(server, "/count", "https://app.test", "POST", "x-csrf-token")
        assert r.status_code == 204
        assert r.headers["access-control-allow-credentials"] == "true"
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
        assert r.headers["x-content-type-options"] == "nosniff"
        r = client.post(server.url + "/count", headers={"Origin": "https://app.test"},
                        timeout=5)
        assert r.status_code == 403  # the page can read the refusal: CORS headers on it
        assert r.headers["access-control-allow-origin"] == "https://app.test"
        assert r.headers["x-frame-options"] == "DENY"
        token = client.cookies["csrftoken"]
        r = client.post(server.url + "/count", headers={"X-CSRF-Token": token}, timeout=5)
        assert (r.status_code, r.json()) == (200, {"n": 1, "posted": True})
