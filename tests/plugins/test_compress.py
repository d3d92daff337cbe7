"""compress: negotiation as pure functions, then a real server over loopback sockets.

Raw-socket reads go through h11, which never decodes a Content-Encoding: the bytes on the
wire are checked to decompress to exactly the identity body. `requests` decodes for us
where that is all a test needs.
"""
from __future__ import annotations

import gzip
import importlib
import json
import os
import pathlib
import socket
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import h11
import pytest
import requests

from packetron import Packetron, Plugin, PluginPriority
from packetron.errors import ConfigError
from packetron.http.static import check_preconditions
from packetron.plugins import compress

brotli = pytest.importorskip("brotli")
compress_module = importlib.import_module("packetron.plugins.compression")
negotiate = compress_module.negotiate
parse_accept_encoding = compress_module.parse_accept_encoding

# ~100 KiB of ordinary JSON: records with repeated keys and varied values.
RECORDS = [{"id": i, "name": f"user-{i}", "email": f"user{i}@example.com", "active": i % 3 == 0,
            "score": i * 1.25, "tags": ["alpha", "beta", str(i % 7)]} for i in range(1000)]
JSON_BODY = json.dumps(RECORDS, separators=(",", ":")).encode()
TEXT = ("The quick brown fox jumps over the lazy dog. " * 200).encode()

# ---------------------------------------------------------------- negotiation (pure)


@pytest.mark.parametrize("header, expected", [
    ("gzip", {"gzip": 1.0}),
    ("gzip, deflate, br", {"gzip": 1.0, "deflate": 1.0, "br": 1.0}),
    ("br;q=0.8, GZIP;q=0.9", {"br": 0.8, "gzip": 0.9}),
    ("x-gzip", {"gzip": 1.0}),
    ("gzip;q=1.000, br;q=0.", {"gzip": 1.0, "br": 0.0}),
    ("identity;q=0, *;q=0", {"identity": 0.0, "*": 0.0}),
    ("gzip;q=abc", {"gzip": 0.0}),
    ("gzip;q=2", {"gzip": 0.0}),
    ("gzip;q=-1", {"gzip": 0.0}),
    ("gzip;q=0.5555", {"gzip": 0.0}),
    ("gzip;q=", {"gzip": 0.0}),
    ("gzip;q", {"gzip": 0.0}),
    ("gzip ; level=1 ; q=0.5", {"gzip": 0.5}),
    ("gzip;q=0.5, gzip;q=1", {"gzip": 0.5}),
    (" , ,", {}),
    ("g@zip, br", {"br": 1.0}),
    ("", {}),
])
def test_parse_accept_encoding(header: str, expected: dict[str, float]) -> None:
    assert parse_accept_encoding(header) == expected


@pytest.mark.parametrize("header, with_brotli, coding, precompressed", [
    (None, True, None, ()),                       # no header: identity
    ("", True, None, ()),
    ("gzip", True, "gzip", ("gzip",)),
    ("gzip, deflate, br", True, "br", ("br", "gzip")),  # br wins a tie
    ("gzip, deflate, br", False, "gzip", ("br", "gzip")),  # siblings need no library
    ("br;q=0.5, gzip", True, "gzip", ("gzip", "br")),
    ("br, gzip;q=0", True, "br", ("br",)),
    ("*", True, "br", ("br", "gzip")),
    ("*;q=0.5, gzip", True, "gzip", ("gzip", "br")),
    ("*;q=0", True, None, ()),
    ("identity;q=0", True, None, ()),              # nothing acceptable: identity anyway
    ("identity;q=0, gzip", True, "gzip", ("gzip",)),
    ("gzip;q=0.5, identity", True, None, ()),      # identity preferred
    ("gzip;q=junk, br;q=junk", True, None, ()),
    ("deflate, compress", True, None, ()),
])
def test_negotiate(header: str | None, with_brotli: bool, coding: str | None,
                   precompressed: tuple[str, ...]) -> None:
    assert negotiate(header, with_brotli) == (coding, precompressed)


@pytest.mark.parametrize("content_type, compressible", [
    ("application/json", True), ("text/html; charset=utf-8", True), ("text/css", True),
    ("application/javascript", True), ("image/svg+xml", True), ("IMAGE/SVG+XML", True),
    ("image/bmp", True), ("font/ttf", True), ("application/wasm", True),
    ("image/png", False), ("image/jpeg", False), ("image/webp", False), ("video/mp4", False),
    ("audio/mpeg", False), ("application/zip", False), ("application/gzip", False),
    ("application/x-7z-compressed", False), ("font/woff2", False), ("font/woff", False),
    ("application/octet-stream", False), ("application/pdf", False),
    ("application/epub+zip", False), ("text/event-stream", False),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", False),
])
def test_is_compressible_type(content_type: str, compressible: bool) -> None:
    assert compress_module.is_compressible_type(content_type) is compressible


def test_looks_compressed() -> None:
    looks = compress_module.looks_compressed
    assert looks(gzip.compress(b"x" * 100))
    assert looks(b"\x89PNG\r\n\x1a\n....") and looks(b"PK\x03\x04...") and looks(b"\xff\xd8\xff\xe0")
    assert looks(b"RIFF\x00\x00\x00\x00WEBPVP8 ") and looks(b"\x00\x00\x00\x18ftypmp42")
    assert not looks(JSON_BODY) and not looks(b"") and not looks(TEXT)


@pytest.mark.parametrize("current, expected", [
    (None, "Accept-Encoding"), ("", "Accept-Encoding"), ("Origin", "Origin, Accept-Encoding"),
    ("origin, accept-encoding", None), ("*", None), ("Accept-Encoding", None),
])
def test_add_vary(current: str | None, expected: str | None) -> None:
    assert compress_module.add_vary(current) == expected


def test_coding_etag() -> None:
    assert compress_module.coding_etag('"abc"', "gzip") == '"abc-gzip"'
    assert compress_module.coding_etag('"abc"', "br") == '"abc-br"'
    assert compress_module.coding_etag('W/"abc"', "gzip") == 'W/"abc"'  # weak: unchanged
    assert compress_module.coding_etag("junk", "gzip") == "junk"


def test_a_suffixed_etag_revalidates_the_same_file_version() -> None:
    # If-None-Match compares weakly and knows the suffix; If-Match does not.
    assert check_preconditions('"5-a"', 0, None, '"5-a-gzip"', None, None) == 304
    assert check_preconditions('"5-a"', 0, None, 'W/"5-a-br"', None, None) == 304
    assert check_preconditions('"6-a"', 0, None, '"5-a-gzip"', None, None) == 0
    assert check_preconditions('"5-a"', 0, None, '"5-a-zstd"', None, None) == 0
    assert check_preconditions('"5-a"', 0, '"5-a-gzip"', None, None, None) == 412


@pytest.mark.parametrize("kwargs", [{"min_size": -1}, {"min_size": "1"}, {"min_size": True},
                                    {"gzip_level": 0}, {"gzip_level": 10},
                                    {"brotli_quality": 12}, {"brotli_quality": -1}])
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        compress(**kwargs)


def test_it_runs_after_every_other_after_hook() -> None:
    plugin = compress()
    assert isinstance(plugin, Plugin) and plugin.priority == PluginPriority.EXTREMELY_LOW
    assert plugin.after is not None and plugin.handler is not None
    assert not plugin.is_async and not plugin.after_is_async


# ---------------------------------------------------------------- a real server


def _routes(server: Packetron) -> None:
    @server.get("json")
    def as_json(request: Any, response: Any) -> None:
        response.send_json(RECORDS)

    @server.get("small")
    def small(request: Any, response: Any) -> None:
        response.send_json({"ok": True})

    @server.get("text")
    def text(request: Any, response: Any) -> None:
        response.send_text_plain(TEXT.decode())

    @server.get("typed")
    def typed(request: Any, response: Any) -> None:
        response.set_header("Content-Type", request.get_query_params()["type"])
        response.send(TEXT)

    @server.get("bytes")
    def raw_bytes(request: Any, response: Any) -> None:
        response.send(gzip.compress(TEXT))  # application/octet-stream, already compressed

    @server.get("random")
    def random_text(request: Any, response: Any) -> None:
        response.set_header("Content-Type", "text/plain")
        response.send(os.urandom(8192))  # compresses to more than it is

    @server.get("encoded")
    def encoded(request: Any, response: Any) -> None:
        response.set_header("Content-Type", "text/plain")
        response.set_header("Content-Encoding", "gzip")
        response.send(gzip.compress(TEXT))

    @server.get("no-transform")
    def no_transform(request: Any, response: Any) -> None:
        response.set_header("Cache-Control", "public, no-transform")
        response.send_text_plain(TEXT.decode())

    @server.get("etag")
    def etag(request: Any, response: Any) -> None:
        response.set_header("ETag", request.get_query_params().get("tag", '"v1"'))
        response.set_header("Vary", "Origin")
        response.send_text_plain(TEXT.decode())

    @server.get("empty")
    def empty(request: Any, response: Any) -> None:
        response.send_status_code(204)

    @server.get("status")
    def status(request: Any, response: Any) -> None:
        response.send_text_plain(TEXT.decode(), int(request.get_query_params()["code"]))

    @server.get("stream")
    async def stream(request: Any, response: Any) -> None:
        response.start(200, [("content-type", "text/plain")])
        for _ in range(4):
            await response.write(TEXT)
        response.end()


@contextmanager
def serving(plugins: list[Any] | None = None,
            routes: Callable[[Packetron], None] = _routes) -> Iterator[Packetron]:
    server = Packetron(port=0, host="127.0.0.1", workers=1,
                       plugins=[compress()] if plugins is None else plugins)
    routes(server)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=2)


@pytest.fixture(scope="module")
def server() -> Iterator[Packetron]:
    with serving() as running:
        yield running


def raw_get(server: Packetron, path: str, accept_encoding: str | None = None, *,
            method: str = "GET", headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; the body exactly as it came off the wire."""
    fields = [("Host", "127.0.0.1"), ("Connection", "close")]
    if accept_encoding is not None:
        fields.append(("Accept-Encoding", accept_encoding))
    fields.extend((headers or {}).items())
    client = h11.Connection(our_role=h11.CLIENT)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(client.send(h11.Request(method=method, target=path, headers=fields))
                     + client.send(h11.EndOfMessage()))
        head: h11.Response | None = None
        body = bytearray()
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    assert head is not None
    found: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode().lower()
        found[key] = f"{found[key]}, {value.decode()}" if key in found else value.decode()
    return head.status_code, found, bytes(body)


def test_gzip_on_the_wire_decompresses_to_the_identity_body(server: Packetron) -> None:
    status, identity_headers, identity = raw_get(server, "/json", "identity")
    assert status == 200 and identity == JSON_BODY
    assert "content-encoding" not in identity_headers
    assert identity_headers["vary"] == "Accept-Encoding"
    status, headers, body = raw_get(server, "/json", "gzip")
    assert status == 200
    assert headers["content-encoding"] == "gzip" and headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body) < len(JSON_BODY) // 4
    assert headers["content-type"] == "application/json"
    assert body[:2] == b"\x1f\x8b" and gzip.decompress(body) == identity


def test_brotli_on_the_wire_decompresses_to_the_identity_body(server: Packetron) -> None:
    status, headers, body = raw_get(server, "/json", "gzip, deflate, br")
    assert status == 200 and headers["content-encoding"] == "br"
    assert int(headers["content-length"]) == len(body)
    assert brotli.decompress(body) == JSON_BODY


@pytest.mark.parametrize("accept, coding", [
    ("br;q=0.5, gzip", "gzip"), ("gzip;q=0.5, br;q=0.6", "br"), ("x-gzip", "gzip"),
    ("*", "br"), ("identity;q=0, gzip;q=0.1", "gzip"),
    (None, None), ("", None), ("identity", None), ("deflate", None),
    ("identity;q=0", None), ("*;q=0", None), ("gzip;q=junk", None), ("gzip;q=1.5", None),
    ("gzip;q=0.5, identity;q=1", None),
])
def test_the_coding_follows_accept_encoding(server: Packetron, accept: str | None,
                                            coding: str | None) -> None:
    status, headers, body = raw_get(server, "/text", accept)
    assert status == 200  # never 406, whatever the header says
    assert headers.get("content-encoding") == coding
    assert headers["vary"] == "Accept-Encoding"
    decoded = {"gzip": gzip.decompress, "br": brotli.decompress, None: bytes}[coding](body)
    assert decoded == TEXT


def test_requests_decodes_what_it_asked_for(server: Packetron) -> None:
    response = requests.get(server.url + "/json", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == RECORDS


def test_keep_alive_answers_in_a_row_are_each_complete(server: Packetron) -> None:
    with requests.Session() as session:
        for accept in ("gzip", "br", "identity", "gzip"):
            response = session.get(server.url + "/json", headers={"Accept-Encoding": accept},
                                   timeout=5)
            assert response.headers.get("content-encoding") == (
                None if accept == "identity" else accept)
            assert response.content == JSON_BODY


@pytest.mark.parametrize("path", ["/small", "/bytes", "/encoded", "/no-transform", "/empty",
                                  "/status?code=206", "/stream",
                                  "/typed?type=image/png", "/typed?type=application/zip",
                                  "/typed?type=font/woff2", "/typed?type=video/mp4",
                                  "/typed?type=application/octet-stream"])
def test_what_is_left_alone(server: Packetron, path: str) -> None:
    _, plain_headers, plain = raw_get(server, path, "identity")
    status, headers, body = raw_get(server, path, "gzip, br")
    assert body == plain
    assert headers.get("content-encoding") == plain_headers.get("content-encoding")
    if path != "/encoded":
        assert "content-encoding" not in headers
    assert "accept-encoding" not in headers.get("vary", "").lower()
    if path == "/stream":
        assert body == TEXT * 4 and headers["transfer-encoding"] == "chunked"


@pytest.mark.parametrize("path", ["/typed?type=image/svg%2Bxml", "/typed?type=text/css",
                                  "/typed?type=application/javascript", "/status?code=404",
                                  "/status?code=500", "/status?code=201"])
def test_compressible_types_and_statuses(server: Packetron, path: str) -> None:
    status, headers, body = raw_get(server, path, "gzip")
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT


def test_a_body_that_would_grow_is_sent_as_it_is(server: Packetron) -> None:
    status, headers, body = raw_get(server, "/random", "gzip")
    assert status == 200 and len(body) == 8192
    assert "content-encoding" not in headers
    assert headers["vary"] == "Accept-Encoding"


def test_head_is_not_compressed_but_varies(server: Packetron) -> None:
    status, headers, body = raw_get(server, "/text", "gzip", method="HEAD")
    assert status == 200 and body == b""
    assert "content-encoding" not in headers
    assert headers["content-length"] == str(len(TEXT))
    assert headers["vary"] == "Accept-Encoding"


def test_etag_vary_and_content_length_of_a_compressed_answer(server: Packetron) -> None:
    status, headers, body = raw_get(server, "/etag", "gzip")
    assert headers["etag"] == '"v1-gzip"'
    assert headers["vary"] == "Origin, Accept-Encoding"
    assert headers["content-length"] == str(len(body))
    assert gzip.decompress(body) == TEXT
    _, headers, _ = raw_get(server, "/etag?tag=W/%22v1%22", "br")
    assert headers["etag"] == 'W/"v1"'  # weak: the same for every encoding
    _, headers, _ = raw_get(server, "/etag", "identity")
    assert headers["etag"] == '"v1"'


def test_without_brotli_gzip_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compress_module, "_brotli", None)
    assert not compress_module.brotli_available()
    with serving() as running:
        status, headers, body = raw_get(running, "/json", "br, gzip")
        assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == JSON_BODY
        _, headers, body = raw_get(running, "/json", "br")
        assert "content-encoding" not in headers and body == JSON_BODY


def test_min_size_is_the_threshold() -> None:
    size = len(TEXT)
    for min_size, compressed in ((size, True), (size + 1, False), (0, True)):
        with serving([compress(min_size=min_size)]) as running:
            _, headers, _ = raw_get(running, "/text", "gzip")
            assert ("content-encoding" in headers) is compressed


def test_earlier_after_hooks_are_seen() -> None:
    """Higher-priority after-hooks run first: compress gets their body and headers."""
    def shout(request: Any, response: Any) -> None:
        if request.path == "/text" and response.body is not None:
            response.body = response.body.upper()
        if request.path == "/json":
            response.set_header("Cache-Control", "no-transform")

    plugins = [compress(), Plugin.create(PluginPriority.LOW, after=shout)]
    with serving(plugins) as running:
        _, headers, body = raw_get(running, "/text", "gzip")
        assert gzip.decompress(body) == TEXT.upper()
        _, headers, body = raw_get(running, "/json", "gzip")
        assert "content-encoding" not in headers and body == JSON_BODY


def test_a_route_plugin_compresses_only_its_route() -> None:
    def routes(server: Packetron) -> None:
        @server.get("a", plugins=[compress()])
        def a(request: Any, response: Any) -> None:
            response.send_text_plain(TEXT.decode())

        @server.get("b")
        def b(request: Any, response: Any) -> None:
            response.send_text_plain(TEXT.decode())

    with serving([], routes) as running:
        assert raw_get(running, "/a", "gzip")[1]["content-encoding"] == "gzip"
        assert "content-encoding" not in raw_get(running, "/b", "gzip")[1]


# ---------------------------------------------------------------- static files

CSS = ("body { color: #333; margin: 0 auto; }\n" * 300).encode()  # ~11 KiB, cached
BIG = ("p { padding: 1px; } /* filler */\n" * 6000).encode()      # ~200 KiB, sendfile


@pytest.fixture
def site(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "plain.css").write_bytes(CSS)
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 4000)
    (root / "app.css").write_bytes(CSS)
    # Sibling contents told apart from on-the-fly output: a maximal gzip, and a brotli
    # body of quality 11; both decompress to the file.
    (root / "app.css.gz").write_bytes(gzip.compress(CSS, 9, mtime=0))
    (root / "app.css.br").write_bytes(brotli.compress(CSS, quality=11))
    (root / "big.css").write_bytes(BIG)
    (root / "big.css.gz").write_bytes(gzip.compress(BIG, 1, mtime=0))
    (root / "only-gz.css").write_bytes(CSS)
    (root / "only-gz.css.gz").write_bytes(gzip.compress(CSS, 9, mtime=0))
    for name in ("app.css.gz", "app.css.br", "big.css.gz", "only-gz.css.gz"):
        _same_mtime(root / name, root / name.rsplit(".", 1)[0])
    return root


def _same_mtime(path: pathlib.Path, like: pathlib.Path) -> None:
    # `gzip -k` and `brotli -k` keep the original's times: so do the fixtures.
    info = like.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@contextmanager
def serving_site(root: pathlib.Path, plugins: list[Any] | None = None) -> Iterator[Packetron]:
    def routes(server: Packetron) -> None:
        server.serve(str(root))

        @server.get("download")
        def download(request: Any, response: Any) -> None:
            response.send_file(str(root / "app.css"))

    with serving(plugins, routes) as running:
        yield running


def test_a_static_file_is_compressed_and_revalidates(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        for _ in range(2):  # the second answer comes from the small-file cache
            status, headers, body = raw_get(running, "/plain.css", "gzip")
            assert status == 200 and headers["content-encoding"] == "gzip"
            assert gzip.decompress(body) == CSS
            assert headers["content-type"].startswith("text/css")
            assert headers["etag"].endswith('-gzip"') and "accept-ranges" not in headers
            assert headers["vary"] == "Accept-Encoding"
        status, headers, body = raw_get(running, "/plain.css", "gzip",
                                        headers={"If-None-Match": headers["etag"]})
        assert status == 304 and body == b""
        assert headers["etag"].endswith('-gzip"') and headers["vary"] == "Accept-Encoding"
        status, identity_headers, body = raw_get(running, "/plain.css", None)
        assert status == 200 and body == CSS and identity_headers["accept-ranges"] == "bytes"
        assert identity_headers["etag"] + "" != headers["etag"]
        # If-Range with the compressed variant's tag does not match the identity file.
        status, _, body = raw_get(running, "/plain.css", None,
                                  headers={"Range": "bytes=0-9", "If-Range": headers["etag"]})
        assert status == 200 and body == CSS
        status, headers, body = raw_get(running, "/plain.css", "gzip",
                                        headers={"Range": "bytes=0-9"})
        assert status == 206 and body == CSS[:10] and "content-encoding" not in headers


def test_a_static_image_is_not_compressed(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        for _ in range(2):
            _, headers, body = raw_get(running, "/logo.png", "gzip, br")
            assert "content-encoding" not in headers and body.startswith(b"\x89PNG")


@pytest.mark.parametrize("accept, coding, suffix", [
    ("br, gzip", "br", ".br"), ("gzip", "gzip", ".gz"), ("br;q=0.1, gzip", "gzip", ".gz"),
    ("identity", None, ""), (None, None, ""),
])
def test_precompressed_siblings_are_sent_as_they_are(site: pathlib.Path, accept: str | None,
                                                     coding: str | None, suffix: str) -> None:
    with serving_site(site) as running:
        for _ in range(2):
            status, headers, body = raw_get(running, "/app.css", accept)
            assert status == 200 and body == (site / f"app.css{suffix}").read_bytes()
            assert headers.get("content-encoding") == coding
            assert headers["vary"] == "Accept-Encoding"
            assert headers["content-type"].startswith("text/css")
            assert headers["content-length"] == str(len(body))
        if coding is not None:
            assert "accept-ranges" not in headers
            # The sibling's own validators: it revalidates as itself.
            status, again, body = raw_get(running, "/app.css", accept,
                                          headers={"If-None-Match": headers["etag"]})
            assert status == 304 and again["etag"] == headers["etag"] and body == b""
            assert again["vary"] == "Accept-Encoding"
            status, head_headers, body = raw_get(running, "/app.css", accept, method="HEAD")
            assert head_headers["content-length"] == headers["content-length"] and body == b""
            assert head_headers["content-encoding"] == coding


def test_a_large_sibling_goes_out_with_sendfile(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        status, headers, body = raw_get(running, "/big.css", "gzip, br")  # only .gz exists
        assert status == 200 and headers["content-encoding"] == "gzip"
        assert body == (site / "big.css.gz").read_bytes() and gzip.decompress(body) == BIG
        status, headers, body = raw_get(running, "/big.css", "br")
        # No .br, and 200 KiB goes out with sendfile: identity, but it varies.
        assert "content-encoding" not in headers and body == BIG
        assert headers["vary"] == "Accept-Encoding"


def test_the_best_existing_sibling_is_chosen(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        _, headers, body = raw_get(running, "/only-gz.css", "br, gzip")
        assert headers["content-encoding"] == "gzip"
        assert body == (site / "only-gz.css.gz").read_bytes()
        # Accepting br only: no sibling fits, so brotli compresses the file on the fly.
        _, headers, body = raw_get(running, "/only-gz.css", "br")
        assert headers["content-encoding"] == "br" and brotli.decompress(body) == CSS


def test_a_range_request_gets_the_identity_file(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        status, headers, body = raw_get(running, "/app.css", "gzip", headers={"Range": "bytes=5-14"})
        assert status == 206 and body == CSS[5:15] and "content-encoding" not in headers
        assert headers["vary"] == "Accept-Encoding"


def test_a_stale_sibling_is_never_sent(site: pathlib.Path) -> None:
    stat = (site / "app.css").stat()
    os.utime(site / "app.css.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
    with serving_site(site) as running:
        _, headers, body = raw_get(running, "/app.css", "gzip")
        assert headers["content-encoding"] == "gzip"
        assert body != (site / "app.css.gz").read_bytes()  # compressed on the fly instead
        assert gzip.decompress(body) == CSS


def test_a_sibling_deleted_later_is_skipped(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        (site / "app.css.br").unlink()
        _, headers, body = raw_get(running, "/app.css", "br, gzip")
        assert headers["content-encoding"] == "gzip"
        assert body == (site / "app.css.gz").read_bytes()


def test_a_sibling_that_leaves_the_directory_is_never_sent(site: pathlib.Path,
                                                           tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside.gz"
    outside.write_bytes(gzip.compress(b"SECRET" * 1000))
    _same_mtime(outside, site / "plain.css")
    os.symlink(outside, site / "plain.css.gz")
    with serving_site(site) as running:
        _, headers, body = raw_get(running, "/plain.css", "gzip")
        assert gzip.decompress(body) == CSS


def test_send_file_from_a_handler_uses_siblings(site: pathlib.Path) -> None:
    with serving_site(site) as running:
        _, headers, body = raw_get(running, "/download", "br")
        assert headers["content-encoding"] == "br"
        assert body == (site / "app.css.br").read_bytes()
        assert headers["vary"] == "Accept-Encoding"
        _, headers, body = raw_get(running, "/download", "identity")
        assert "content-encoding" not in headers and body == CSS
        assert headers["vary"] == "Accept-Encoding"


def test_without_the_plugin_siblings_are_never_sent(site: pathlib.Path) -> None:
    with serving_site(site, plugins=[]) as running:
        for path in ("/app.css", "/download", "/big.css"):
            _, headers, body = raw_get(running, path, "gzip, br")
            assert "content-encoding" not in headers and "vary" not in headers
            assert body in (CSS, BIG)


def test_an_unrouted_404_is_left_alone(server: Packetron) -> None:
    status, headers, _ = raw_get(server, "/nowhere", "gzip")
    assert status == 404 and "content-encoding" not in headers


def test_gzip_output_is_standard_gzip(server: Packetron) -> None:
    _, _, body = raw_get(server, "/json", "gzip")
    # A whole gzip member (header, deflate, CRC-32 and size trailer) that zlib reads too.
    assert zlib.decompress(body, 31) == JSON_BODY
