"""Pure pieces of static file serving: containment, MIME, ETag, dates, preconditions, Range."""
from __future__ import annotations

import ast
import pathlib

import pytest

from packetron.http import mime, static
from packetron.http.static import conditional
from packetron.http.mime import DEFAULT_MIME_TYPE, content_type_for, guess_mime_type
from packetron.http.static import (
    check_preconditions,
    choose_range,
    content_disposition,
    http_date,
    is_hidden,
    is_within,
    make_etag,
    parse_http_date,
    parse_range,
)

# ---------------------------------------------------------------- containment


@pytest.mark.parametrize("path, inside", [
    ("/srv/site", True),
    ("/srv/site/a.txt", True),
    ("/srv/site/a/b/c", True),
    ("/srv/site2/a.txt", False),
    ("/srv/sit", False),
    ("/srv", False),
    ("/etc/passwd", False),
])
def test_is_within_compares_whole_components(path: str, inside: bool) -> None:
    assert is_within("/srv/site", path) is inside


def test_is_within_accepts_a_trailing_slash_on_root() -> None:
    assert is_within("/srv/site/", "/srv/site/x") is True
    assert is_within("/srv/site/", "/srv/siteX") is False


def test_is_within_root_directory_contains_everything() -> None:
    assert is_within("/", "/etc/passwd") is True


@pytest.mark.parametrize("rel, hidden", [
    (".env", True), ("a/.git/config", True), (".well-known/x", True),
    ("a\\.hidden", True), ("a/b.txt", False), ("index.html", False), ("a.b/c", False),
])
def test_is_hidden_checks_every_component(rel: str, hidden: bool) -> None:
    assert is_hidden(rel) is hidden


# ---------------------------------------------------------------- MIME


@pytest.mark.parametrize("name, expected", [
    ("index.html", "text/html"), ("A.HTML", "text/html"), ("app.js", "text/javascript"),
    ("style.css", "text/css"), ("x.png", "image/png"), ("x.JPG", "image/jpeg"),
    ("font.woff2", "font/woff2"), ("data.json", "application/json"),
    ("mod.wasm", "application/wasm"), ("a/b.c/file.svg", "image/svg+xml"),
    ("archive.tar.gz", "application/gzip"),
])
def test_guess_mime_type_by_extension(name: str, expected: str) -> None:
    assert guess_mime_type(name) == expected


@pytest.mark.parametrize("name", ["README", ".bashrc", "x.unknownext", "dir.d/noext", "a."])
def test_unknown_or_missing_extension_is_octet_stream(name: str) -> None:
    assert guess_mime_type(name) == DEFAULT_MIME_TYPE == "application/octet-stream"


def test_text_types_get_utf8_charset_binary_types_do_not() -> None:
    assert content_type_for("a.html") == "text/html; charset=utf-8"
    assert content_type_for("a.json") == "application/json; charset=utf-8"
    assert content_type_for("a.svg") == "image/svg+xml; charset=utf-8"
    assert content_type_for("a.png") == "image/png"
    assert content_type_for("a.bin") == "application/octet-stream"


def test_mime_table_keys_are_lowercase_without_dot() -> None:
    assert all(k == k.lower() and "." not in k for k in mime.MIME_TYPES)


# ---------------------------------------------------------------- ETag and dates


def test_etag_is_strong_and_changes_with_size_and_mtime() -> None:
    etag = make_etag(4096, 1_700_000_000_123_456_789)
    assert etag == f'"{1_700_000_000_123_456_789:x}-1000"' == '"17979cfe3d85cd15-1000"'
    assert make_etag(4097, 1_700_000_000_123_456_789) != etag
    assert make_etag(4096, 1_700_000_000_123_456_790) != etag


def test_http_date_round_trips() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777


@pytest.mark.parametrize("value", [
    "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850 (obsolete but must be accepted)
    "Sun Nov  6 08:49:37 1994",  # asctime
])
def test_parse_http_date_accepts_obsolete_forms(value: str) -> None:
    assert parse_http_date(value) == 784111777


@pytest.mark.parametrize("value", [None, "", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT"])
def test_parse_http_date_rejects_garbage(value: str | None) -> None:
    assert parse_http_date(value) is None


# ---------------------------------------------------------------- preconditions

ETAG = '"abc-10"'
MTIME = 784111777
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"


def pre(im: str | None = None, inm: str | None = None, ims: str | None = None,
        ius: str | None = None) -> int:
    return check_preconditions(ETAG, MTIME, im, inm, ims, ius)


def test_no_conditions_go_on() -> None:
    assert pre() == 0


@pytest.mark.parametrize("inm", ['"abc-10"', 'W/"abc-10"', '"x", "abc-10"', "*"])
def test_if_none_match_hit_gives_304(inm: str) -> None:
    assert pre(inm=inm) == 304


def test_if_none_match_miss_goes_on_and_beats_if_modified_since() -> None:
    assert pre(inm='"other"', ims=DATE) == 0


def test_if_modified_since_equal_or_later_gives_304() -> None:
    assert pre(ims=DATE) == 304
    assert pre(ims="Mon, 07 Nov 1994 00:00:00 GMT") == 304


def test_if_modified_since_earlier_or_invalid_goes_on() -> None:
    assert pre(ims=EARLIER) == 0
    assert pre(ims="not a date") == 0


def test_if_match_uses_strong_comparison() -> None:
    assert pre(im='"abc-10"') == 0
    assert pre(im="*") == 0
    assert pre(im='W/"abc-10"') == 412
    assert pre(im='"nope"') == 412


def test_if_unmodified_since() -> None:
    assert pre(ius=DATE) == 0
    assert pre(ius=EARLIER) == 412
    assert pre(im='"abc-10"', ius=EARLIER) == 0  # If-Match wins (§13.2.2 step 2)


# ---------------------------------------------------------------- Range


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-0", [(0, 1)]),
    ("bytes=0-99", [(0, 100)]),
    ("bytes=10-", [(10, 100)]),
    ("bytes=-10", [(90, 100)]),
    ("bytes=-1000", [(0, 100)]),
    ("bytes=50-1000", [(50, 100)]),
    ("BYTES = 1-2", [(1, 3)]),
    ("bytes=0-1, 5-6", [(0, 2), (5, 7)]),
    ("bytes=100-", []),
    ("bytes=200-300", []),
    ("bytes=-0", []),
    ("bytes=100-, 0-1", [(0, 2)]),
])
def test_parse_range(header: str, expected: list[tuple[int, int]]) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", [
    "bytes=5-3", "bytes=a-b", "bytes=", "bytes=-", "items=0-1", "bytes 0-1", "bytes=0-1-2",
    "bytes=+1-2", "bytes=1-+2", "bytes=0x1-2",
])
def test_invalid_range_is_ignored(header: str) -> None:
    assert parse_range(header, 100) is None


def test_any_range_of_an_empty_file_is_unsatisfiable() -> None:
    assert parse_range("bytes=0-", 0) == []
    assert parse_range("bytes=-5", 0) == []


def test_choose_range_decisions() -> None:
    assert choose_range(None, None, ETAG, MTIME, 100) == (200, 0, 100)
    assert choose_range("bytes=10-19", None, ETAG, MTIME, 100) == (206, 10, 20)
    assert choose_range("bytes=0-1,5-6", None, ETAG, MTIME, 100) == (200, 0, 100)
    assert choose_range("bytes=500-", None, ETAG, MTIME, 100) == (416, 0, 0)
    assert choose_range("bytes=junk", None, ETAG, MTIME, 100) == (200, 0, 100)


def test_if_range_must_match_exactly() -> None:
    assert choose_range("bytes=1-2", ETAG, ETAG, MTIME, 100) == (206, 1, 3)
    assert choose_range("bytes=1-2", '"old"', ETAG, MTIME, 100) == (200, 0, 100)
    assert choose_range("bytes=1-2", "W/" + ETAG, ETAG, MTIME, 100) == (200, 0, 100)
    assert choose_range("bytes=1-2", DATE, ETAG, MTIME, 100) == (206, 1, 3)
    assert choose_range("bytes=1-2", EARLIER, ETAG, MTIME, 100) == (200, 0, 100)


# ---------------------------------------------------------------- Content-Disposition


def test_content_disposition_plain_ascii() -> None:
    assert content_disposition("report.pdf") == 'attachment; filename="report.pdf"'
    assert content_disposition("a.txt", attachment=False) == 'inline; filename="a.txt"'


def test_content_disposition_unicode_gets_filename_star() -> None:
    assert content_disposition("résumé 1.pdf") == (
        "attachment; filename=\"r_sum_ 1.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf")


def test_content_disposition_never_lets_quotes_newlines_or_paths_through() -> None:
    value = content_disposition('../a"b\r\nSet-Cookie: x=1\\c.txt')
    assert "\r" not in value and "\n" not in value
    assert value.startswith('attachment; filename=".._a_bSet-Cookie: x=1_c.txt"; filename*=')
    assert "%22" in value  # the quote survives only percent-encoded in filename*


def test_content_disposition_of_empty_name() -> None:
    assert content_disposition("") == 'attachment; filename="download"'


# ---------------------------------------------------------------- purity


@pytest.mark.parametrize("module", [mime, static, conditional])
def test_module_imports_no_io_event_loop_or_clock(module: object) -> None:
    tree = ast.parse(pathlib.Path(module.__file__).read_text())  # type: ignore[attr-defined]
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "ssl", "time"}


def test_small_file_cache_evicts_the_oldest_within_its_budget() -> None:
    import os

    from packetron.http.static.cache import _CachedFile, _SmallFileCache
    from packetron.http.static.target import _StaticTarget

    info = os.stat(__file__)
    cache = _SmallFileCache(limit=10)
    a, b, c, huge = (_StaticTarget(f"/x/{name}", "/x") for name in "abch")
    cache.store(a, _CachedFile(info, [("etag", '"1"')], b"aaaa"))
    cache.store(b, _CachedFile(info, [], b"bbbb"))
    assert cache.total == 8 and a.cached is not None and b.cached is not None
    assert a.cached.head_lines == b'etag: "1"\r\n'
    cache.store(c, _CachedFile(info, [], b"cccc"))  # 12 > 10: the oldest (a) goes
    assert a.cached is None and b.cached is not None and c.cached is not None
    assert cache.total == 8
    cache.store(b, _CachedFile(info, [], b"bb"))  # replacing counts the new size only
    assert cache.total == 6
    cache.store(huge, _CachedFile(info, [], b"h" * 11))  # bigger than the budget: never
    assert huge.cached is None and cache.total == 6
    cache.forget(c)
    assert c.cached is None and cache.total == 2
