"""Static files end to end: a real server on a loopback port, requests and raw sockets."""
from __future__ import annotations

import hashlib
import os
import pathlib
import socket
from typing import Any, Callable

import pytest
import requests

from packetron import FileRouterFlags, Packetron, Plugin
from packetron.errors import ConfigError
from packetron.http.static import SENDFILE_THRESHOLD_IN_BYTES, http_date

SECRET = b"TOP-SECRET-OUTSIDE-THE-SERVED-DIRECTORY"
BIG_SIZE = 2 * 1024 * 1024 + 123


@pytest.fixture
def site(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "site"
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "style.css").write_text("body{}")
    (root / "docs" / "index.html").write_text("<p>docs</p>")
    (root / "docs" / "guide.txt").write_text("guide")
    (root / "docs" / "deep" / "x.json").write_text('{"x": 1}')
    (root / "my file é.txt").write_text("spaced")
    (root / "noext").write_bytes(b"\x00\x01")
    (root / ".env").write_text("PASSWORD=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    return root


@pytest.fixture
def serve(make_server: Callable[..., Packetron]) -> Callable[..., Packetron]:
    def start(directory: pathlib.Path, *args: Any, **kwargs: Any) -> Packetron:
        server = make_server()
        server.serve(str(directory), *args, **kwargs)
        server.start()
        return server
    return start


def get(server: Packetron, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("allow_redirects", False)
    kwargs.setdefault("timeout", 10)
    return requests.get(server.url + path, **kwargs)


def raw(server: Packetron, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request + b"\r\n" if not request.endswith(b"\r\n\r\n") else request)
        data = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(data)
            data += chunk


def raw_get(server: Packetron, target: bytes, method: bytes = b"GET") -> bytes:
    return raw(server, method + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")


def still_serves(server: Packetron) -> bool:
    return get(server, "/style.css").content == b"body{}"


# ---------------------------------------------------------------- content and headers


def test_files_are_served_with_type_length_and_validators(site: pathlib.Path,
                                                          serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    response = get(server, "/docs/deep/x.json")
    assert response.status_code == 200
    assert response.content == b'{"x": 1}'
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["content-length"] == "8"
    assert response.headers["accept-ranges"] == "bytes"
    info = (site / "docs" / "deep" / "x.json").stat()
    assert response.headers["last-modified"] == http_date(int(info.st_mtime))
    assert response.headers["etag"] == f'"{info.st_mtime_ns:x}-8"'
    assert get(server, "/noext").headers["content-type"] == "application/octet-stream"
    assert get(server, "/style.css").headers["content-type"] == "text/css; charset=utf-8"


def test_percent_encoded_unicode_name(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    assert get(server, "/my%20file%20%C3%A9.txt").content == b"spaced"


def test_large_file_goes_through_sendfile_byte_exact(site: pathlib.Path,
                                                     serve: Callable[..., Packetron]) -> None:
    assert BIG_SIZE > SENDFILE_THRESHOLD_IN_BYTES
    server = serve(site)
    response = get(server, "/big.bin")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(BIG_SIZE)
    assert hashlib.sha256(response.content).digest() == \
        hashlib.sha256((site / "big.bin").read_bytes()).digest()


def test_keep_alive_connection_serves_many_files(site: pathlib.Path,
                                                 serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(server.url + "/big.bin", timeout=10).content == \
                (site / "big.bin").read_bytes()
            assert session.get(server.url + "/style.css", timeout=10).content == b"body{}"


# ---------------------------------------------------------------- index.html


def test_index_html_is_served_at_the_directory_path(site: pathlib.Path,
                                                    serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    assert get(server, "/").content == b"<h1>home</h1>"
    assert get(server, "/index.html").content == b"<h1>home</h1>"
    assert get(server, "/docs/").content == b"<p>docs</p>"
    redirect = get(server, "/docs?x=1")
    assert (redirect.status_code, redirect.headers["location"]) == (301, "/docs/?x=1")
    assert get(server, "/docs/deep").status_code == 404  # no index.html there


def test_index_under_a_prefix(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site, "/static/")
    assert get(server, "/static/").content == b"<h1>home</h1>"
    assert get(server, "/static").headers["location"] == "/static/"
    assert get(server, "/static/docs/guide.txt").content == b"guide"
    assert get(server, "/docs/guide.txt").status_code == 404


# ---------------------------------------------------------------- conditional requests


def test_if_none_match_gives_304_without_body(site: pathlib.Path,
                                              serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    etag = get(server, "/style.css").headers["etag"]
    response = get(server, "/style.css", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert "content-length" not in response.headers
    assert get(server, "/style.css", headers={"If-None-Match": '"stale"'}).status_code == 200


def test_if_modified_since(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    last_modified = get(server, "/style.css").headers["last-modified"]
    assert get(server, "/style.css", headers={"If-Modified-Since": last_modified}).status_code == 304
    assert get(server, "/style.css",
               headers={"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"}).status_code == 200


def test_changed_file_gets_a_new_etag_and_content(site: pathlib.Path,
                                                  serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    etag = get(server, "/style.css").headers["etag"]
    (site / "style.css").write_text("body{color:red}")
    os.utime(site / "style.css", ns=(1, 10**18))
    response = get(server, "/style.css", headers={"If-None-Match": etag})
    assert response.status_code == 200
    assert response.content == b"body{color:red}"


def test_if_match_failure_is_412(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    assert get(server, "/style.css", headers={"If-Match": '"nope"'}).status_code == 412


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize("header, start, stop", [
    ("bytes=0-9", 0, 10), ("bytes=100-", 100, BIG_SIZE), ("bytes=-500", BIG_SIZE - 500, BIG_SIZE),
    ("bytes=1000-1999999", 1000, 2_000_000), ("bytes=5-5", 5, 6),
])
def test_single_range_gives_206(site: pathlib.Path, serve: Callable[..., Packetron],
                                header: str, start: int, stop: int) -> None:
    server = serve(site)
    response = get(server, "/big.bin", headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{BIG_SIZE}"
    assert response.headers["content-length"] == str(stop - start)
    assert response.content == (site / "big.bin").read_bytes()[start:stop]


def test_unsatisfiable_range_gives_416(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    response = get(server, "/style.css", headers={"Range": "bytes=100-200"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */6"


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "bytes=9-2", "pages=1-2", "bytes=x"])
def test_multiple_or_invalid_ranges_give_the_whole_file(site: pathlib.Path,
                                                        serve: Callable[..., Packetron],
                                                        header: str) -> None:
    server = serve(site)
    response = get(server, "/style.css", headers={"Range": header})
    assert (response.status_code, response.content) == (200, b"body{}")


def test_if_range_with_an_old_etag_gives_the_whole_file(site: pathlib.Path,
                                                        serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    etag = get(server, "/style.css").headers["etag"]
    assert get(server, "/style.css", headers={"Range": "bytes=0-1", "If-Range": etag}).content == b"bo"
    response = get(server, "/style.css", headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert (response.status_code, response.content) == (200, b"body{}")


# ---------------------------------------------------------------- HEAD


@pytest.mark.parametrize("path", ["/style.css", "/big.bin"])
def test_head_has_the_get_headers_and_no_body(site: pathlib.Path, serve: Callable[..., Packetron],
                                              path: str) -> None:
    server = serve(site)
    answer = raw_get(server, path.encode(), b"HEAD")
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    size = (site / path[1:]).stat().st_size
    assert f"content-length: {size}".encode() in head.lower()
    assert b"etag: " in head.lower()
    assert rest == b""


# ---------------------------------------------------------------- what is never served


def test_dotfiles_are_skipped_by_default(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    for path in ("/.env", "/.git/config", "/%2eenv"):
        assert get(server, path).status_code == 404


def test_include_dotfiles_opts_in(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site, include_dotfiles=True)
    assert get(server, "/.env").content == b"PASSWORD=1"
    assert get(server, "/.git/config").content == b"[core]"


def test_symlink_leaving_the_directory_is_never_served(site: pathlib.Path,
                                                       serve: Callable[..., Packetron]) -> None:
    (site / "passwd").symlink_to("/etc/passwd")
    (site / "leak.txt").symlink_to(site.parent / "secret.txt")
    (site / "outside").symlink_to(site.parent, target_is_directory=True)
    (site / "alias.css").symlink_to(site / "style.css")
    server = serve(site)
    for path in ("/passwd", "/leak.txt", "/outside/secret.txt", "/outside/site/style.css"):
        response = get(server, path)
        assert response.status_code == 404 and SECRET not in response.content
    assert get(server, "/alias.css").content == b"body{}"  # a link inside the tree is fine


def test_symlink_swapped_in_after_registration_is_refused(site: pathlib.Path,
                                                          serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    assert get(server, "/docs/guide.txt").content == b"guide"
    (site / "docs" / "guide.txt").unlink()
    (site / "docs" / "guide.txt").symlink_to(site.parent / "secret.txt")
    response = get(server, "/docs/guide.txt")
    assert response.status_code == 404 and SECRET not in response.content
    (site / "docs").rename(site / "docs-old")
    (site / "docs").symlink_to(site.parent, target_is_directory=True)
    (site.parent / "index.html").write_bytes(SECRET)
    response = get(server, "/docs/index.html")
    assert response.status_code == 404 and SECRET not in response.content


@pytest.mark.parametrize("target", [
    b"/../secret.txt", b"/..%2fsecret.txt", b"/%2e%2e/secret.txt", b"/%2e%2e%2fsecret.txt",
    b"/..%252fsecret.txt", b"/%252e%252e%252fsecret.txt", b"/docs/../../secret.txt",
    b"/docs/%2e%2e/%2e%2e/secret.txt", b"/..\\secret.txt", b"/..%5csecret.txt",
    b"/%5c..%5csecret.txt", b"//..//secret.txt", b"/./../secret.txt",
    b"/%c0%ae%c0%ae/secret.txt", b"/..%00/secret.txt", b"/..%2f..%2f..%2f..%2fetc/passwd",
    b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd", b"/docs/..%2f..%2fsecret.txt",
    b"http://t/../secret.txt",
])
def test_traversal_attempts_never_leave_the_directory(site: pathlib.Path,
                                                      serve: Callable[..., Packetron],
                                                      target: bytes) -> None:
    server = serve(site)
    answer = raw_get(server, target)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404)
    assert SECRET not in answer and b"root:" not in answer
    assert still_serves(server)


# ---------------------------------------------------------------- the tree changing


def test_deleted_file_gives_404_and_new_files_wait_for_serve(site: pathlib.Path,
                                                             serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    (site / "style.css").unlink()
    assert get(server, "/style.css").status_code == 404
    (site / "new.txt").write_text("new")
    assert get(server, "/new.txt").status_code == 404
    server.serve(str(site))
    assert get(server, "/new.txt").content == b"new"


def test_a_directory_replacing_a_file_gives_404(site: pathlib.Path,
                                                serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    (site / "noext").unlink()
    (site / "noext").mkdir()
    assert get(server, "/noext").status_code == 404
    os.mkfifo(site / "style.css.fifo")
    (site / "style.css").unlink()
    (site / "style.css.fifo").rename(site / "style.css")
    assert get(server, "/style.css").status_code == 404  # a FIFO must not hang the worker


# ---------------------------------------------------------------- flags and registration


def test_serve_returns_one_route_per_url(site: pathlib.Path, make_server: Callable[..., Packetron]) -> None:
    server = make_server()
    routes = server.serve(str(site))
    keys = sorted(route.key for route in routes)
    assert keys == sorted(["", "index.html", "style.css", "docs", "docs/index.html",
                           "docs/guide.txt", "docs/deep/x.json", "my file é.txt", "noext",
                           "big.bin"])


def test_non_recursive(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site, "", FileRouterFlags.NON_RECURSIVE)
    assert get(server, "/style.css").status_code == 200
    assert get(server, "/docs/guide.txt").status_code == 404


def test_no_directory_structure_flattens_and_shallower_wins(site: pathlib.Path,
                                                            serve: Callable[..., Packetron]) -> None:
    server = serve(site, "flat", FileRouterFlags.NO_DIRECTORY_STRUCTURE)
    assert get(server, "/flat/guide.txt").content == b"guide"
    assert get(server, "/flat/x.json").content == b'{"x": 1}'
    assert get(server, "/flat/index.html").content == b"<h1>home</h1>"
    assert get(server, "/flat/docs/guide.txt").status_code == 404


def test_user_specified_file(site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site / "docs" / "guide.txt", "help", FileRouterFlags.USER_SPECIFIED_FILE)
    assert get(server, "/help").content == b"guide"
    assert get(server, "/guide.txt").status_code == 404


def test_local_plugins_only_skips_global_plugins(site: pathlib.Path,
                                                 make_server: Callable[..., Packetron]) -> None:
    def deny(request: Any, response: Any) -> bool:
        response.send_status_code(403)
        return True

    server = make_server(plugins=[Plugin.create(handler=deny)])
    server.serve(str(site), "open", FileRouterFlags.LOCAL_PLUGINS_ONLY)
    server.serve(str(site), "closed")
    server.start()
    assert get(server, "/open/style.css").status_code == 200
    assert get(server, "/closed/style.css").status_code == 403


def test_route_plugins_run_before_the_file(site: pathlib.Path,
                                           make_server: Callable[..., Packetron]) -> None:
    def header(request: Any, response: Any) -> None:
        response.set_header("X-From-Plugin", "yes")

    server = make_server()
    server.serve(str(site), plugins=[Plugin.create(handler=header)])
    server.start()
    assert get(server, "/style.css").headers["x-from-plugin"] == "yes"


def test_serve_file_and_unserve(site: pathlib.Path, make_server: Callable[..., Packetron]) -> None:
    server = make_server()
    server.serve_file("/robots.txt", str(site / "docs" / "guide.txt"))
    routes = server.serve(str(site), "s")
    server.start()
    assert get(server, "/robots.txt").content == b"guide"
    assert get(server, "/s/style.css").status_code == 200
    assert server.unserve(str(site), "/s/") == len(routes)
    assert get(server, "/s/style.css").status_code == 404
    assert server.unserve(str(site), "s") == 0
    assert server.unserve(str(site / "docs" / "guide.txt"), "robots.txt") == 1
    assert get(server, "/robots.txt").status_code == 404


def test_serving_something_that_is_not_there_is_a_config_error(
        tmp_path: pathlib.Path, make_server: Callable[..., Packetron]) -> None:
    server = make_server()
    with pytest.raises(ConfigError, match="is not a directory"):
        server.serve(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a file"):
        server.serve_file("x", str(tmp_path))


# ---------------------------------------------------------------- send_file / download_file


def test_send_file_and_download_file_from_handlers(site: pathlib.Path,
                                                   make_server: Callable[..., Packetron]) -> None:
    server = make_server()
    server.get("inline", lambda req, res: res.send_file(str(site / "docs" / "guide.txt")))
    server.get("dl", lambda req, res: res.download_file(str(site / "big.bin")))
    server.get("named", lambda req, res: res.download_file(str(site / "noext"), "résumé 2.pdf"))
    server.get("gone", lambda req, res: res.send_file(str(site / "missing.txt")))

    @server.get("awaited")
    async def awaited(req: Any, res: Any) -> None:
        await res.send_file(str(site / "style.css"))

    server.start()
    inline = get(server, "/inline")
    assert (inline.content, inline.headers.get("content-disposition")) == (b"guide", None)
    dl = get(server, "/dl")
    assert dl.headers["content-disposition"] == 'attachment; filename="big.bin"'
    assert len(dl.content) == BIG_SIZE
    named = get(server, "/named")
    assert named.headers["content-type"] == "application/pdf"
    assert named.headers["content-disposition"] == (
        "attachment; filename=\"r_sum_ 2.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202.pdf")
    assert get(server, "/gone").status_code == 404
    assert get(server, "/awaited").content == b"body{}"


# ---------------------------------------------------------------- small-file cache


def test_a_cached_answer_is_byte_identical_to_the_first(site: pathlib.Path,
                                                        serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    first = raw_get(server, b"/docs/guide.txt")
    second = raw_get(server, b"/docs/guide.txt")  # from memory now
    head_first, _, body_first = first.partition(b"\r\n\r\n")
    head_second, _, body_second = second.partition(b"\r\n\r\n")
    assert body_first == body_second == b"guide"

    def fields(head: bytes) -> dict[bytes, bytes]:
        lines = head.split(b"\r\n")[1:]
        return {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)
                if k.lower() != b"date"}

    assert head_second.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert fields(head_first) == fields(head_second)
    assert fields(head_second)[b"content-length"] == b"5"
    assert fields(head_second)[b"content-type"] == b"text/plain; charset=utf-8"


def test_cached_file_rewritten_with_the_same_size_is_sent_fresh(
        site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    assert get(server, "/docs/guide.txt").content == b"guide"
    assert get(server, "/docs/guide.txt").content == b"guide"
    (site / "docs" / "guide.txt").write_bytes(b"GUIDE")  # same size, new ctime
    response = get(server, "/docs/guide.txt")
    assert response.content == b"GUIDE"
    assert get(server, "/docs/guide.txt").content == b"GUIDE"


def test_cached_file_deleted_gives_404(site: pathlib.Path,
                                       serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    for _ in range(2):
        assert get(server, "/docs/guide.txt").status_code == 200
    (site / "docs" / "guide.txt").unlink()
    assert get(server, "/docs/guide.txt").status_code == 404
    assert still_serves(server)


def test_cached_file_still_answers_conditionals_ranges_and_head(
        site: pathlib.Path, serve: Callable[..., Packetron]) -> None:
    server = serve(site)
    etag = get(server, "/docs/guide.txt").headers["etag"]
    assert get(server, "/docs/guide.txt").status_code == 200  # cached
    revalidated = get(server, "/docs/guide.txt", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and revalidated.content == b""
    part = get(server, "/docs/guide.txt", headers={"Range": "bytes=1-2"})
    assert part.status_code == 206 and part.content == b"ui"
    assert part.headers["content-range"] == "bytes 1-2/5"
    head = raw_get(server, b"/docs/guide.txt", method=b"HEAD")
    assert b"\r\ncontent-length: 5\r\n" in head and head.endswith(b"\r\n\r\n")


def test_plugin_headers_reach_cached_answers_and_the_file_type_stays(
        site: pathlib.Path, make_server: Callable[..., Packetron]) -> None:
    server = make_server()

    def add_headers(request: Any, response: Any) -> None:
        response.set_header("Cache-Control", "max-age=60")
        if request.get_query_params().get("typed"):
            response.set_header("Content-Type", "text/x-custom")

    server.insert_global_plugin(Plugin.create(handler=add_headers))
    server.serve(str(site))
    server.start()
    for path in ("/docs/guide.txt",) * 3 + ("/docs/guide.txt?typed=1",) * 2:
        response = get(server, path)
        assert response.headers["cache-control"] == "max-age=60"
        # The file's own type is sent, as for an uncached answer.
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.content == b"guide"


def test_unserve_drops_cached_files(site: pathlib.Path,
                                    make_server: Callable[..., Packetron]) -> None:
    from packetron.http import static

    server = make_server()
    server.serve(str(site))
    server.start()
    before = static._small_files.total
    assert get(server, "/docs/guide.txt").content == b"guide"
    assert static._small_files.total == before + len(b"guide")
    server.unserve(str(site))
    assert static._small_files.total == before
    assert get(server, "/docs/guide.txt").status_code == 404
