"""parse_multipart against a fake request whose stream() yields the body in pieces.

Every behaviour runs with the body whole, one byte at a time and in odd splits, since
the parser must give the same answer however the socket cut the bytes. Small pieces are
joined before parsing; the `feeding` fixture also runs them unjoined, so the parser
itself still sees every split. Tests of storing files run with writes in the event loop
and in a worker thread (`write_mode`).
"""
from __future__ import annotations

import asyncio
import hashlib
import math
import os
import pathlib
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterable

import pytest
from multipart import PushMultipartParser

from packetron.errors import (BadRequest, ConnectionClosed, HttpError, PayloadTooLarge,
                              UnsupportedMediaType)
from packetron.http.multipart import parser as multipart_parser
from packetron.http.multipart import storage as multipart_storage
from packetron.http.multipart import (PARSE_BATCH_IN_BYTES, SMALL_READ_IN_BYTES, PartStream,
                                      parse_multipart)

BOUNDARY = "----packetronTestBoundary7MA4YWxk"
CT = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, filename: str | None = None,
         content_type: str | None = None, extra: Iterable[str] = ()) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    lines = [f"Content-Disposition: {disposition}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(extra)
    head = f"--{BOUNDARY}\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("utf-8") + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def split(data: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    sizes, pieces, i, k = (7, 1, 13, 64, 3, 1021, 2), [], 0, 0
    while i < len(data):
        size = sizes[k % len(sizes)]
        pieces.append(data[i:i + size])
        i += size
        k += 1
    return pieces


class Headers(dict[str, str]):
    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class FakeRequest:
    """What parse_multipart uses of a Request: headers.get and stream()."""

    def __init__(self, chunks: list[bytes], content_type: str | None = CT,
                 fail_after: int | None = None, fail_with: BaseException | None = None,
                 before_fail: Callable[[], None] | None = None):
        self.method = "POST"
        self.path = "/upload"
        self.headers = Headers({} if content_type is None else {"content-type": content_type})
        self.chunks = chunks
        self.fail_after = fail_after
        self.fail_with = fail_with or ConnectionClosed("client went away")
        self.before_fail = before_fail
        self.consumed = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if self.fail_after is not None and index == self.fail_after:
                if self.before_fail is not None:
                    self.before_fail()
                raise self.fail_with
            self.consumed += 1
            await asyncio.sleep(0)  # a socket read lets other tasks run, as here
            yield chunk


def run(data: bytes | list[bytes], options: dict[str, Any] | None = None, *,
        mode: str = "multipart", how: str = "whole", content_type: str | None = CT,
        **fake: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    chunks = data if isinstance(data, list) else split(data, how)
    request = FakeRequest(chunks, content_type, **fake)
    return asyncio.run(parse_multipart(request, options, mode=mode))


def stored(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


SPLITS = ["whole", "bytes", "odd"]


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "uploads"


@pytest.fixture(autouse=True)
def fresh_write_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with writes in the event loop, whatever an earlier test recorded."""
    monkeypatch.setattr(multipart_storage, "_write_mode", multipart_storage._WriteMode())


@pytest.fixture(params=["joined", "as-read"])
def feeding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Small pieces joined before they reach the parser (the default), or each parsed as
    it came."""
    if request.param == "as-read":
        monkeypatch.setattr(multipart_parser, "SMALL_READ_IN_BYTES", 0)
    return str(request.param)


@pytest.fixture(params=["inline", "threaded"])
def write_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """File writes in the event loop (the default), or in a worker thread, as after a slow
    write."""
    mode = multipart_storage._WriteMode()
    if request.param == "threaded":
        mode.threaded_until = math.inf
    monkeypatch.setattr(multipart_storage, "_write_mode", mode)
    return str(request.param)


@pytest.fixture
def parser_pieces(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every piece handed to the push parser, in order."""
    pieces: list[bytes] = []

    class RecordingParser(PushMultipartParser):
        def parse(self, chunk: Any) -> Any:
            pieces.append(chunk)
            return super().parse(chunk)

    monkeypatch.setattr(multipart_parser, "PushMultipartParser", RecordingParser)
    return pieces


def opts(store: pathlib.Path, **extra: Any) -> dict[str, Any]:
    return {"file_storage_directory": str(store), **extra}


# ---------------------------------------------------------------- the normal cases


@pytest.mark.parametrize("how", SPLITS)
def test_fields_and_a_file_are_parsed_and_stored(store: pathlib.Path, how: str,
                                                 feeding: str) -> None:
    content = bytes(range(256)) * 8 + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n"
    data = body(part("title", "héllo wörld".encode()), part("n", b""),
                part("doc", content, "report.bin", "application/x-thing"))
    fields, files = run(data, opts(store), how=how)
    assert fields == {"title": "héllo wörld", "n": ""}
    entry = files["doc"]
    assert set(entry) == {"path", "filename", "encoding", "mime_type", "size", "truncated"}
    assert (entry["filename"], entry["encoding"], entry["mime_type"], entry["size"],
            entry["truncated"]) == ("report.bin", "7bit", "application/x-thing",
                                    len(content), False)
    path = pathlib.Path(entry["path"])
    assert path.parent == store
    assert path.read_bytes() == content
    assert stored(store) == [path.name]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("how", ["whole", "odd"])
def test_large_file_is_stored_byte_exact(store: pathlib.Path, how: str, feeding: str,
                                         write_mode: str) -> None:
    content = os.urandom(300_000)
    fields, files = run(body(part("f", content, "big.dat")), opts(store), how=how)
    assert hashlib.sha256(pathlib.Path(files["f"]["path"]).read_bytes()).digest() == \
        hashlib.sha256(content).digest()
    assert files["f"]["size"] == 300_000


def test_repeated_names_become_lists_in_order(store: pathlib.Path) -> None:
    data = body(part("tag", b"a"), part("tag", b"b"), part("tag", b"c"),
                part("f", b"1", "one.txt"), part("f", b"22", "two.txt"))
    fields, files = run(data, opts(store))
    assert fields == {"tag": ["a", "b", "c"]}
    assert [e["filename"] for e in files["f"]] == ["one.txt", "two.txt"]
    assert [pathlib.Path(e["path"]).read_bytes() for e in files["f"]] == [b"1", b"22"]


def test_client_filename_never_picks_a_directory(store: pathlib.Path) -> None:
    fields, files = run(body(part("f", b"x", "../../../etc/cron.d/evil")), opts(store))
    path = pathlib.Path(files["f"]["path"])
    assert path.parent == store
    assert path.name.endswith("-evil") and len(path.name) == 16 + 1 + 4
    assert files["f"]["filename"] == "evil"


def test_default_mime_types_and_transfer_encoding(store: pathlib.Path) -> None:
    data = body(part("f", b"x", "a"), part("g", b"y", "b", extra=["Content-Transfer-Encoding: BINARY"]))
    _, files = run(data, opts(store))
    assert files["f"]["mime_type"] == "application/octet-stream"
    assert files["g"]["encoding"] == "binary"


def test_empty_file_input_is_skipped_but_empty_named_file_is_kept(store: pathlib.Path) -> None:
    data = body(part("none", b"", ""), part("empty", b"", "empty.txt"))
    _, files = run(data, opts(store))
    assert "none" not in files
    assert files["empty"]["size"] == 0
    assert pathlib.Path(files["empty"]["path"]).read_bytes() == b""
    assert len(stored(store)) == 1


def test_field_charset_from_part_content_type(store: pathlib.Path) -> None:
    data = body(part("a", "café".encode("latin-1"), content_type="text/plain; charset=latin-1"),
                part("b", b"\xff", content_type="text/plain; charset=nope"))
    fields, _ = run(data, opts(store))
    assert fields == {"a": "café", "b": "\ufffd"}


def test_preamble_and_epilogue_are_ignored(store: pathlib.Path) -> None:
    data = b"preamble text\r\n" + body(part("a", b"1")) + b"epilogue"
    assert run(data, opts(store)) == ({"a": "1"}, {})


def test_default_storage_directory_is_used_and_created(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: pathlib.Path) -> None:
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _, files = run(body(part("f", b"data", "a.txt")), None)
    path = pathlib.Path(files["f"]["path"])
    assert path.parent == tmp_path / ".packetroninternal" / "files"
    assert path.read_bytes() == b"data"


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize("how", SPLITS)
def test_form_mode_keeps_fields_and_drains_files(store: pathlib.Path, how: str,
                                                 feeding: str) -> None:
    data = body(part("a", b"1"), part("f", b"x" * 5000, "f.bin"), part("b", b"2"))
    assert run(data, opts(store), mode="form", how=how) == ({"a": "1", "b": "2"}, {})
    assert stored(store) == []


def test_legacy_mode_gives_field_to_path(store: pathlib.Path) -> None:
    data = body(part("a", b"1"), part("f", b"x", "x.txt"), part("g", b"y", "y.txt"),
                part("g", b"z", "z.txt"))
    fields, files = run(data, opts(store), mode="legacy")
    assert fields == {"a": "1"}
    assert pathlib.Path(files["f"]).read_bytes() == b"x"
    assert [pathlib.Path(p).read_bytes() for p in files["g"]] == [b"y", b"z"]


def test_unknown_mode_is_a_programming_error(store: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        run(body(), opts(store), mode="json")


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("how", ["whole", "odd"])
def test_file_over_max_file_size_is_unlinked_and_marked_truncated(store: pathlib.Path,
                                                                  how: str, feeding: str,
                                                                  write_mode: str) -> None:
    events: list[tuple[Any, ...]] = []
    data = body(part("big", b"x" * 100_000, "big.bin"), part("small", b"ok", "s.txt"),
                part("after", b"still parsed"))
    fields, files = run(data, opts(store, max_file_size=1000,
                                   on_limit=lambda *a: events.append(a)), how=how)
    assert files["big"] == {"path": None, "filename": "big.bin", "encoding": "7bit",
                            "mime_type": "application/octet-stream", "size": 100_000,
                            "truncated": True}
    assert events == [("multipart-file-limit", "big", "big.bin", 1000)]
    assert files["small"]["truncated"] is False
    assert fields == {"after": "still parsed"}
    assert stored(store) == [pathlib.Path(files["small"]["path"]).name]


def test_file_exactly_at_max_file_size_is_kept(store: pathlib.Path) -> None:
    _, files = run(body(part("f", b"x" * 1000, "f")), opts(store, max_file_size=1000))
    assert files["f"]["truncated"] is False and files["f"]["size"] == 1000


def test_legacy_mode_leaves_truncated_files_out(store: pathlib.Path) -> None:
    _, files = run(body(part("f", b"x" * 10, "f")), opts(store, max_file_size=5),
                   mode="legacy")
    assert files == {}


@pytest.mark.parametrize("limit_key, event, build", [
    ("max_files", "multipart-files-limit", lambda i: part(f"f{i}", b"data", f"{i}.txt")),
    ("max_fields", "multipart-fields-limit", lambda i: part(f"a{i}", b"v")),
    ("max_parts", "multipart-parts-limit", lambda i: part(f"p{i}", b"v", f"{i}.txt")),
])
def test_count_limits_call_on_limit_then_413_and_delete_files(
        store: pathlib.Path, limit_key: str, event: str, build: Any) -> None:
    events: list[tuple[Any, ...]] = []
    data = body(part("early", b"stored first", "early.txt"), *(build(i) for i in range(5)))
    with pytest.raises(PayloadTooLarge) as info:
        run(data, opts(store, **{limit_key: 3}, on_limit=lambda *a: events.append(a)))
    assert info.value.status_code == 413
    assert "more than 3" in str(info.value)
    assert events == [(event, 3)]
    assert stored(store) == []


def test_async_on_limit_is_awaited_and_may_raise_its_own_error(store: pathlib.Path) -> None:
    async def on_limit(event: str, *args: Any) -> None:
        await asyncio.sleep(0)
        raise BadRequest(f"custom: {event}")

    with pytest.raises(BadRequest, match="custom: multipart-file-limit"):
        run(body(part("f", b"x" * 10, "f")), opts(store, max_file_size=5, on_limit=on_limit))
    assert stored(store) == []


def test_thousands_of_parts_stop_at_the_default_limit(store: pathlib.Path) -> None:
    request = FakeRequest([body(*(part("x", b"") for _ in range(5000)))])
    with pytest.raises(PayloadTooLarge, match="more than 1000 parts"):
        asyncio.run(parse_multipart(request, opts(store), mode="multipart"))


def test_field_over_max_field_size_is_413(store: pathlib.Path) -> None:
    with pytest.raises(PayloadTooLarge, match="field 'a' is larger than 10 bytes"):
        run(body(part("a", b"x" * 11)), opts(store, max_field_size=10), how="odd")


def test_field_name_over_max_field_name_size_is_413(store: pathlib.Path) -> None:
    with pytest.raises(PayloadTooLarge, match="field name longer than 100 bytes"):
        run(body(part("n" * 101, b"x")), opts(store))
    assert run(body(part("n" * 100, b"x")), opts(store)) == ({"n" * 100: "x"}, {})


def test_too_many_part_headers_is_413(store: pathlib.Path) -> None:
    extra = [f"X-H{i}: v" for i in range(8)]
    with pytest.raises(PayloadTooLarge, match="header count exceeded"):
        run(body(part("a", b"1", extra=extra)), opts(store))
    assert run(body(part("a", b"1", extra=extra)), opts(store, max_header_pairs=9))[0] == {"a": "1"}


@pytest.mark.parametrize("how", ["whole", "odd"])
def test_huge_part_header_is_413(store: pathlib.Path, how: str, feeding: str) -> None:
    data = body(part("f", b"x", "f.txt"), part("a", b"1", extra=["X-Big: " + "v" * 100_000]))
    with pytest.raises(PayloadTooLarge, match="header length exceeded"):
        run(data, opts(store), how=how)
    assert stored(store) == []


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("how", SPLITS)
def test_unterminated_body_is_400_and_leaves_no_file(store: pathlib.Path, how: str,
                                                     feeding: str) -> None:
    data = part("a", b"1") + part("f", b"y" * 3000, "f.bin")[:-30]
    with pytest.raises(BadRequest, match="ended before its closing boundary"):
        run(data, opts(store), how=how)
    assert stored(store) == []


def test_empty_body_is_400(store: pathlib.Path) -> None:
    with pytest.raises(BadRequest, match="ended before its closing boundary"):
        run([], opts(store))


def test_part_without_content_disposition_is_400(store: pathlib.Path) -> None:
    data = f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    with pytest.raises(BadRequest, match="malformed multipart body: Missing Content-Disposition"):
        run(data, opts(store))


def test_bare_lf_after_boundary_is_400(store: pathlib.Path) -> None:
    data = f"--{BOUNDARY}\nContent-Disposition: form-data; name=a\n\nx\n--{BOUNDARY}--\n".encode()
    with pytest.raises(BadRequest, match="malformed multipart body"):
        run(data, opts(store))


@pytest.mark.parametrize("content_type, error", [
    (None, UnsupportedMediaType), ("application/json", UnsupportedMediaType),
    ("multipart/form-data", BadRequest), ("multipart/form-data; boundary=" + "b" * 71, BadRequest),
])
def test_bad_content_type(store: pathlib.Path, content_type: str | None, error: type) -> None:
    with pytest.raises(error):
        run(body(part("a", b"1")), opts(store), content_type=content_type)


@pytest.mark.parametrize("how", ["whole", "odd"])
def test_client_vanishing_mid_file_unlinks_everything(store: pathlib.Path, how: str,
                                                      feeding: str, write_mode: str) -> None:
    data = body(part("first", b"done", "1.txt"), part("second", os.urandom(1_000_000), "2.bin"))
    chunks = split(data, how)
    at_failure: list[list[str]] = []
    with pytest.raises(ConnectionClosed):
        run(chunks, opts(store), fail_after=len(chunks) * 3 // 4,
            before_fail=lambda: at_failure.append(stored(store)))
    if how == "odd":
        assert len(at_failure[0]) == 2  # both files were being written when it failed
    assert stored(store) == []


def test_cancellation_mid_file_unlinks_everything(store: pathlib.Path, feeding: str,
                                                  write_mode: str) -> None:
    data = body(part("f", b"x" * 1_000_000, "f.bin"))
    chunks = split(data, "odd")
    at_failure: list[list[str]] = []
    with pytest.raises(asyncio.CancelledError):
        run(chunks, opts(store), fail_after=len(chunks) // 2, fail_with=asyncio.CancelledError(),
            before_fail=lambda: at_failure.append(stored(store)))
    assert len(at_failure[0]) == 1
    assert stored(store) == []


# ---------------------------------------------------------------- on_file


@pytest.mark.parametrize("how", SPLITS)
def test_on_file_gets_the_stream_and_its_result_becomes_the_entry(store: pathlib.Path,
                                                                   how: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> dict[str, Any]:
        seen.append((name, info))
        digest = hashlib.sha256()
        async for chunk in stream:
            assert isinstance(chunk, bytes)
            digest.update(chunk)
        return {"sha256": digest.hexdigest(), "bytes": stream.bytes_received}

    content = os.urandom(20_000 if how != "bytes" else 2000)
    data = body(part("a", b"1"), part("up", content, "c.bin", "image/png"), part("b", b"2"))
    fields, files = run(data, opts(store, on_file=on_file), how=how)
    assert fields == {"a": "1", "b": "2"}
    assert files == {"up": {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}}
    assert seen == [("up", {"filename": "c.bin", "encoding": "7bit", "mime_type": "image/png"})]
    assert stored(store) == []


def test_on_file_that_ignores_the_stream_gets_it_drained(store: pathlib.Path) -> None:
    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> str:
        return "ignored"

    data = body(part("f", os.urandom(500_000), "f"), part("after", b"ok"))
    assert run(data, opts(store, on_file=on_file), how="odd") == ({"after": "ok"}, {"f": "ignored"})


def test_on_file_reading_part_then_stopping_is_drained(store: pathlib.Path) -> None:
    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> int:
        async for chunk in stream:
            return len(chunk)
        return 0

    fields, files = run(body(part("f", b"z" * 300_000, "f"), part("x", b"y")),
                        opts(store, on_file=on_file), how="odd")
    assert fields == {"x": "y"} and files["f"] > 0


def test_on_file_stream_applies_backpressure(store: pathlib.Path) -> None:
    queued: list[int] = []

    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> int:
        total = 0
        async for chunk in stream:
            queued.append(stream._queued)
            total += len(chunk)
            await asyncio.sleep(0)
        return total

    _, files = run(body(part("f", b"q" * 1_000_000, "f")), opts(store, on_file=on_file), how="odd")
    assert files["f"] == 1_000_000
    assert max(queued) < 64 * 1024 + 1021  # never more than the high water plus one piece


def test_on_file_over_max_file_size_ends_the_stream_early(store: pathlib.Path) -> None:
    events: list[tuple[Any, ...]] = []

    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> tuple[int, bool]:
        total = 0
        async for chunk in stream:
            total += len(chunk)
        return total, stream.truncated

    _, files = run(body(part("f", b"x" * 50_000, "f")),
                   opts(store, on_file=on_file, max_file_size=10_000,
                        on_limit=lambda *a: events.append(a)), how="odd")
    total, truncated = files["f"]
    assert truncated is True and total <= 10_000
    assert events == [("multipart-file-limit", "f", "f", 10_000)]


def test_on_file_error_propagates_and_earlier_files_are_removed(store: pathlib.Path) -> None:
    calls = 0

    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        async for _ in stream:
            raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        run(body(part("f", b"x" * 1000, "f")), opts(store, on_file=on_file))
    assert calls == 1


def test_on_file_is_cancelled_when_the_client_vanishes(store: pathlib.Path) -> None:
    outcome: list[str] = []

    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> None:
        try:
            async for _ in stream:
                pass
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def main() -> None:
        chunks = split(body(part("f", b"x" * 100_000, "f")), "odd")
        request = FakeRequest(chunks, fail_after=len(chunks) // 2)
        with pytest.raises(ConnectionClosed):
            await parse_multipart(request, opts(store, on_file=on_file), mode="multipart")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert outcome == ["cancelled"]


def test_sync_on_file_result_is_the_entry(store: pathlib.Path) -> None:
    _, files = run(body(part("f", b"x" * 100, "f")),
                   opts(store, on_file=lambda name, stream, info: info["filename"]))
    assert files == {"f": "f"}


def test_form_mode_never_calls_on_file(store: pathlib.Path) -> None:
    def on_file(*args: Any) -> None:
        raise AssertionError("must not be called")

    assert run(body(part("f", b"x", "f"), part("a", b"b")), opts(store, on_file=on_file),
               mode="form") == ({"a": "b"}, {})


# ---------------------------------------------------------------- storage failures


@pytest.mark.parametrize("error, status", [(28, 507), (5, 500)])  # ENOSPC, EIO
def test_write_failure_is_a_clear_5xx_and_leaves_no_file(
        store: pathlib.Path, monkeypatch: pytest.MonkeyPatch, error: int, status: int,
        feeding: str, write_mode: str) -> None:
    def failing_writev(fd: int, chunks: list[bytes]) -> int:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "writev", failing_writev)
    data = body(part("ok", b"a" * 10, "ok.txt"), part("f", os.urandom(600_000), "f.bin"))
    with pytest.raises(HttpError) as info:
        run(data, opts(store), how="odd")
    assert info.value.status_code == status
    assert str(info.value).startswith("could not store the uploaded file: ")
    assert stored(store) == []


def test_storage_directory_that_cannot_be_created_is_500(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(HttpError) as info:
        run(body(part("f", b"x", "f.txt")), {"file_storage_directory": str(tmp_path / "file" / "d")})
    assert info.value.status_code == 500


def test_many_flushes_keep_the_bytes_in_order(store: pathlib.Path, feeding: str,
                                              write_mode: str) -> None:
    content = os.urandom(3_000_000)
    _, files = run(body(part("f", content, "f.bin")), opts(store), how="odd")
    assert pathlib.Path(files["f"]["path"]).read_bytes() == content


def test_a_slow_write_sends_the_next_writes_to_a_worker_thread(
        store: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart_storage, "SLOW_WRITE_SECONDS", -1.0)  # every write is slow
    in_loop_thread: list[bool] = []
    writev = os.writev

    def recording_writev(fd: int, chunks: list[bytes]) -> int:
        in_loop_thread.append(threading.current_thread() is threading.main_thread())
        return writev(fd, chunks)

    monkeypatch.setattr(os, "writev", recording_writev)
    content = os.urandom(1_000_000)
    _, files = run(body(part("f", content, "f.bin")), opts(store), how="odd")
    assert pathlib.Path(files["f"]["path"]).read_bytes() == content
    assert in_loop_thread[0] is True  # the first write ran in the loop and was slow
    assert len(in_loop_thread) > 1 and not any(in_loop_thread[1:])
    assert multipart_storage._write_mode.threaded_until > time.monotonic()


# ---------------------------------------------------------------- what the parser is fed


def test_small_pieces_are_joined_before_they_reach_the_parser(
        store: pathlib.Path, parser_pieces: list[bytes]) -> None:
    content = os.urandom(1_000_000)
    data = body(part("f", content, "f.bin"))
    _, files = run(data, opts(store), how="odd")  # pieces of at most 1021 bytes
    assert pathlib.Path(files["f"]["path"]).read_bytes() == content
    assert b"".join(parser_pieces) == data
    assert all(len(piece) >= PARSE_BATCH_IN_BYTES for piece in parser_pieces[:-1])
    assert len(parser_pieces[-1]) < PARSE_BATCH_IN_BYTES  # the rest, once the body ended


def test_large_pieces_reach_the_parser_as_they_came(store: pathlib.Path,
                                                    parser_pieces: list[bytes]) -> None:
    data = body(part("f", os.urandom(1_000_000), "f.bin"))
    size = SMALL_READ_IN_BYTES * 4
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assert len(chunks[-1]) >= SMALL_READ_IN_BYTES
    run(chunks, opts(store))
    assert len(parser_pieces) == len(chunks)
    assert all(piece is chunk for piece, chunk in zip(parser_pieces, chunks))  # not copied


def test_a_large_piece_after_small_ones_is_parsed_on_its_own(
        store: pathlib.Path, parser_pieces: list[bytes]) -> None:
    data = body(part("a", b"1"), part("f", os.urandom(100_000), "f.bin"))
    chunks = [data[:10], data[10:20], data[20:]]
    assert run(chunks, opts(store))[0] == {"a": "1"}
    assert parser_pieces == [data[:20], data[20:]]
    assert parser_pieces[1] is chunks[2]


def test_on_file_gets_the_pieces_unjoined(store: pathlib.Path,
                                          parser_pieces: list[bytes]) -> None:
    async def on_file(name: str, stream: PartStream, info: dict[str, Any]) -> int:
        return sum([len(chunk) async for chunk in stream])

    _, files = run(body(part("f", os.urandom(300_000), "f.bin")),
                   opts(store, on_file=on_file), how="odd")
    assert files["f"] == 300_000
    assert max(map(len, parser_pieces)) <= 1021  # as split, since its queue is bounded


def test_prevalidated_options_are_accepted(store: pathlib.Path) -> None:
    from packetron.http.multipart import validate_multipart_options

    options = validate_multipart_options(opts(store, max_fields=1))
    assert run(body(part("a", b"1")), options) == ({"a": "1"}, {})  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLarge):
        run(body(part("a", b"1"), part("b", b"2")), options)  # type: ignore[arg-type]
