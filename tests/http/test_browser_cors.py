"""The cors plugin judged by a real browser: headless Chromium through chromedriver.

A page on origin A (http://127.0.0.1:PORT_A) fetch()es JSON routes of server B
(http://localhost:PORT_B), whose cors() allows A with credentials. The same page on
origin C (http://127.0.0.1:PORT_C, another port, so another origin) is not allowed. The
page's script writes what each fetch gave into a <pre> as JSON and then sets the title;
the test waits for the title, never a fixed time.

tests/prepare.d/chromium.sh installs Debian's chromium and chromium-driver; without them
this test skips.

Cookies: A and B are different sites (127.0.0.1 and localhost), so B's cookie is a
third-party one there and must be `SameSite=None; Secure`. Chromium treats
http://localhost as a secure context and keeps Secure cookies from it, so the round trip
runs on plain http: B sets the cookie in answer to a credentialed fetch, and a later
`credentials: "include"` fetch carries it back, while a plain one does not. A fresh
Chromium profile blocks third-party cookies, so the profile is given the user setting
that allows them (`profile.cookie_controls_mode` 0); without it no cross-site cookie is
stored at all, whatever the server sends.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator

import pytest

from tests.browser import chromium, requires_chromium

from packetron import Packetron, Plugin, PluginPriority, RequestMethod
from packetron.plugins import cors

pytestmark = [
    requires_chromium,
    pytest.mark.timeout(120),
]

COOKIE_VALUE = "b-session-42"

# Every check runs in order; each records {ok, status, body} or {ok: false, error}.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>running</title></head>
<body><pre id="results"></pre>
<script>
const B = %(b_url)s;
async function check(name, url, init) {
  try {
    const response = await fetch(B + url, init);
    return [name, {ok: true, status: response.status, body: await response.json()}];
  } catch (error) {
    return [name, {ok: false, error: error.name + ": " + error.message}];
  }
}
(async () => {
  const results = {};
  const checks = [
    ["simple", "/data", {}],
    ["login", "/login", {credentials: "include"}],
    ["with_credentials", "/whoami", {credentials: "include"}],
    ["without_credentials", "/whoami", {}],
    ["preflighted", "/items", {method: "PUT", credentials: "include",
      headers: {"Content-Type": "application/json", "X-Client-Tag": "chromium"},
      body: JSON.stringify({name: "widget", count: 3})}],
  ];
  for (const [name, url, init] of checks) {
    const [key, value] = await check(name, url, init);
    results[key] = value;
  }
  document.getElementById("results").textContent = JSON.stringify(results);
  document.title = "done";
})();
</script></body></html>
"""


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    # Third-party cookies allowed (see the module's docstring).
    with chromium(tmp_path / "profile", prefs={"profile.cookie_controls_mode": 0}) as driver:
        yield driver


class Origins:
    """Server B (the API, on localhost) and the two page servers A (allowed) and C."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, str | None]] = []
        self.api = Packetron(port=0, host="127.0.0.1", workers=1)
        self.page_a = Packetron(port=0, host="127.0.0.1", workers=1)
        self.page_c = Packetron(port=0, host="127.0.0.1", workers=1)

    def start(self) -> None:
        for server in (self.api, self.page_a, self.page_c):
            server.start()
        self.origin_a = f"http://127.0.0.1:{self.page_a.port}"
        self.origin_c = f"http://127.0.0.1:{self.page_c.port}"
        self.api_url = f"http://localhost:{self.api.port}"
        # Plugins may be added after start; every request, the preflights included, is
        # noted before cors() answers it, to see what reached the server.
        self.api.insert_global_plugin(Plugin.create(PluginPriority.EXTREMELY_HIGH,
                                                    handler=self._note))
        self.api.insert_global_plugin(cors(allow_origins=[self.origin_a],
                                           allow_credentials=True))
        self._api_routes()
        page = PAGE % {"b_url": json.dumps(self.api_url)}

        def serve_page(request: Any, response: Any) -> None:
            response.send_html(page)

        for server in (self.page_a, self.page_c):
            server.handle(RequestMethod.GET, "page", serve_page)

    def _note(self, request: Any, response: Any) -> bool:
        self.seen.append((request.method, request.path, request.headers.get("origin"),
                          request.headers.get("access-control-request-headers")))
        return False

    def _api_routes(self) -> None:
        api = self.api

        @api.get("data")
        def data(request: Any, response: Any) -> None:
            response.send_json({"hello": "from B", "numbers": [1, 2, 3]})

        @api.get("login")
        def login(request: Any, response: Any) -> None:
            # Cross-site (127.0.0.1 -> localhost): only SameSite=None cookies go along,
            # and those must be Secure, which Chromium accepts from http://localhost.
            response.set_cookie("sid", COOKIE_VALUE, path="/", http_only=True, secure=True,
                                same_site="None")
            response.send_json({"logged_in": True})

        @api.get("whoami")
        def whoami(request: Any, response: Any) -> None:
            response.send_json({"sid": request.get_cookie("sid")})

        @api.put("items")
        async def put_item(request: Any, response: Any) -> None:
            body = json.loads(await request.get_body())
            response.send_json({"stored": body, "tag": request.headers.get("x-client-tag"),
                                "sid": request.get_cookie("sid")})

    def stop(self) -> None:
        for server in (self.api, self.page_a, self.page_c):
            server.stop(timeout=2)


@pytest.fixture
def origins() -> Iterator[Origins]:
    servers = Origins()
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def run_page(browser: Any, url: str) -> dict[str, Any]:
    """Open the page and return what its script recorded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30, poll_frequency=0.05).until(lambda d: d.title == "done")
    results: dict[str, Any] = json.loads(browser.find_element(By.ID, "results").text)
    return results


def test_the_allowed_origin_reads_answers_and_its_credentials_flow(
        browser: Any, origins: Origins) -> None:
    results = run_page(browser, origins.origin_a + "/page")

    assert results["simple"] == {"ok": True, "status": 200,
                                 "body": {"hello": "from B", "numbers": [1, 2, 3]}}
    assert results["login"] == {"ok": True, "status": 200, "body": {"logged_in": True}}
    # The cookie B set on a credentialed fetch comes back on the next credentialed one,
    # and only there: a plain cross-origin fetch sends no cookies.
    assert results["with_credentials"] == {"ok": True, "status": 200,
                                           "body": {"sid": COOKIE_VALUE}}
    assert results["without_credentials"] == {"ok": True, "status": 200, "body": {"sid": None}}
    assert results["preflighted"] == {"ok": True, "status": 200, "body": {
        "stored": {"name": "widget", "count": 3}, "tag": "chromium", "sid": COOKIE_VALUE}}

    # The browser asked before the PUT, naming the custom header, and then sent it.
    api_seen = [entry for entry in origins.seen if entry[1] == "/items"]
    assert [(method, origin) for method, _, origin, _ in api_seen] == [
        ("OPTIONS", origins.origin_a), ("PUT", origins.origin_a)]
    assert "x-client-tag" in (api_seen[0][3] or "").split(",")


def test_a_disallowed_origin_is_blocked_by_the_browser(browser: Any, origins: Origins) -> None:
    results = run_page(browser, origins.origin_c + "/page")

    for name in ("simple", "login", "with_credentials", "without_credentials", "preflighted"):
        assert results[name]["ok"] is False, (name, results[name])
        # fetch() rejects with a TypeError and says nothing more: CORS errors are opaque
        # to the page by design.
        assert results[name]["error"].startswith("TypeError"), results[name]
    # The simple requests reached B (the browser hid the answers from the page); the
    # preflight was refused, so the PUT itself was never sent.
    methods = [(method, path) for method, path, origin, _ in origins.seen
               if origin == origins.origin_c]
    assert ("GET", "/data") in methods
    assert ("OPTIONS", "/items") in methods
    assert ("PUT", "/items") not in methods


def test_the_allowed_origin_gets_the_cors_headers_the_browser_relies_on(
        origins: Origins) -> None:
    """What Chromium saw, checked on the wire (no browser needed)."""
    import requests

    allowed = requests.get(origins.api_url + "/data", timeout=5,
                           headers={"Origin": origins.origin_a})
    assert allowed.headers["access-control-allow-origin"] == origins.origin_a
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in allowed.headers["vary"]
    refused = requests.get(origins.api_url + "/data", timeout=5,
                           headers={"Origin": origins.origin_c})
    assert "access-control-allow-origin" not in refused.headers
