"""Uploads end to end: multipart bodies over real loopback sockets into a running server."""
from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import struct
import time
from typing import Any, Callable, Iterator

import pytest
import requests

from packetron import HandlerFlags, Packetron

BOUNDARY = "pktnE2EBoundary0123"
CT = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, filename: str | None = None, extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n").encode() \
        + data + b"\r\n"


def closing() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def store(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "store"


def stored(store: pathlib.Path) -> list[pathlib.Path]:
    return sorted(store.iterdir()) if store.exists() else []


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition the server reaches on its own (cleanup after a vanished client)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def app(make_server: Callable[..., Packetron], store: pathlib.Path) -> Callable[..., Packetron]:
    """A started server with upload routes; keyword arguments become multipart_options."""
    def build(**options: Any) -> Packetron:
        server = make_server()
        multipart_options = {"file_storage_directory": str(store), **options}

        async def echo(request: Any, response: Any) -> None:
            fields = await request.get_body()
            files = await request.get_files()
            response.send_json({"fields": fields, "files": files})

        server.post("upload", echo, flags=HandlerFlags.MULTIPART_FORM_DATA,
                    multipart_options=multipart_options)
        server.post("form", echo, flags=HandlerFlags.FORM_DATA,
                    multipart_options=multipart_options)
        server.post("legacy", echo, flags=HandlerFlags.FILE_UPLOAD,
                    multipart_options=multipart_options)
        server.post("capped", echo, flags=HandlerFlags.MULTIPART_FORM_DATA,
                    multipart_options=multipart_options, max_request_size_in_bytes=1000)
        server.get("ping", lambda request, response: response.send_text_plain("pong"))
        server.start()
        return server
    return build


def post_raw(server: Packetron, path: str, body: bytes, content_type: str | None = CT,
             extra_headers: str = "") -> tuple[int, bytes]:
    head = f"POST /{path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall((head + extra_headers + "\r\n").encode() + body)
        data = bytearray()
        while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, payload = bytes(data).partition(b"\r\n\r\n")
    return int(head_bytes.split(b" ", 2)[1]), payload


def _expected_length(data: bytearray) -> int:
    head, sep, _ = bytes(data).partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + len(sep) + int(value)
    return 0


def still_serves(server: Packetron) -> bool:
    return requests.get(server.url + "/ping", timeout=10).text == "pong"


# ---------------------------------------------------------------- the normal cases


def test_fields_and_files_from_requests(app: Callable[..., Packetron], store: pathlib.Path) -> None:
    server = app()
    content = os.urandom(500_000)
    response = requests.post(server.url + "/upload", timeout=10,
                             data={"title": "holiday", "tag": ["a", "b"]},
                             files=[("photo", ("beach.jpg", content, "image/jpeg")),
                                    ("doc", ("notes.txt", b"hi", "text/plain"))])
    assert response.status_code == 200
    result = response.json()
    assert result["fields"] == {"title": "holiday", "tag": ["a", "b"]}
    photo = result["files"]["photo"]
    assert {k: v for k, v in photo.items() if k != "path"} == {
        "filename": "beach.jpg", "encoding": "7bit", "mime_type": "image/jpeg",
        "size": 500_000, "truncated": False}
    path = pathlib.Path(photo["path"])
    assert path.parent == store and path.name.endswith("-beach.jpg")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
    assert pathlib.Path(result["files"]["doc"]["path"]).read_bytes() == b"hi"
    assert len(stored(store)) == 2


def test_big_chunked_upload_streams_to_disk(app: Callable[..., Packetron],
                                            store: pathlib.Path) -> None:
    server = app()
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield part("f", b"", "big.bin")[:-2]  # the part head; data follows
        for _ in range(24):
            digest.update(block)
            yield block
        yield b"\r\n" + closing()

    response = requests.post(server.url + "/upload", data=body(), timeout=30,
                             headers={"Content-Type": CT})
    assert response.status_code == 200
    entry = response.json()["files"]["f"]
    assert entry["size"] == 24 << 20
    with open(entry["path"], "rb") as file:
        assert hashlib.file_digest(file, "sha256").hexdigest() == digest.hexdigest()


def test_form_route_keeps_fields_and_drops_files(app: Callable[..., Packetron],
                                                 store: pathlib.Path) -> None:
    server = app()
    response = requests.post(server.url + "/form", timeout=10, data={"a": "1"},
                             files={"f": ("x.bin", os.urandom(100_000))})
    assert response.json() == {"fields": {"a": "1"}, "files": {}}
    assert stored(store) == []


def test_form_route_still_takes_urlencoded(app: Callable[..., Packetron]) -> None:
    server = app()
    response = requests.post(server.url + "/form", timeout=10, data={"a": "1", "b": "2"})
    assert response.json() == {"fields": {"a": "1", "b": "2"}, "files": {}}


def test_legacy_file_upload_route(app: Callable[..., Packetron], store: pathlib.Path) -> None:
    server = app()
    response = requests.post(server.url + "/legacy", timeout=10, data={"a": "1"},
                             files={"f": ("x.txt", b"legacy")})
    result = response.json()
    assert result["fields"] == ""
    assert pathlib.Path(result["files"]["f"]).read_bytes() == b"legacy"


def test_file_over_max_file_size_is_truncated_and_gone(app: Callable[..., Packetron],
                                                       store: pathlib.Path) -> None:
    events: list[tuple[Any, ...]] = []
    server = app(max_file_size=10_000, on_limit=lambda *args: events.append(args))
    response = requests.post(server.url + "/upload", timeout=10,
                             files=[("big", ("big.bin", b"x" * 50_000)),
                                    ("ok", ("ok.bin", b"y" * 10_000))])
    files = response.json()["files"]
    assert files["big"]["truncated"] is True and files["big"]["path"] is None
    assert files["big"]["size"] == 50_000
    assert files["ok"]["truncated"] is False
    assert events == [("multipart-file-limit", "big", "big.bin", 10_000)]
    assert stored(store) == [pathlib.Path(files["ok"]["path"])]


def test_on_file_receives_the_stream_instead_of_the_disk(
        make_server: Callable[..., Packetron], store: pathlib.Path) -> None:
    async def on_file(name: str, stream: Any, info: dict[str, Any]) -> dict[str, Any]:
        digest = hashlib.sha256()
        async for chunk in stream:
            digest.update(chunk)
        return {"sha256": digest.hexdigest(), **info}

    server = make_server()

    @server.post("hash", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 multipart_options={"on_file": on_file, "file_storage_directory": str(store)})
    async def hash_upload(request: Any, response: Any) -> None:
        response.send_json(await request.get_files())

    server.start()
    content = os.urandom(3_000_000)
    response = requests.post(server.url + "/hash", timeout=10,
                             files={"f": ("a.bin", content, "application/x-a")})
    assert response.json() == {"f": {"sha256": hashlib.sha256(content).hexdigest(),
                                     "filename": "a.bin", "encoding": "7bit",
                                     "mime_type": "application/x-a"}}
    assert stored(store) == []


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("content_type, status, message", [
    ("multipart/form-data", 400, b"no boundary parameter"),
    ("multipart/form-data; boundary=" + "b" * 80, 400, b"boundary is invalid"),
    ("application/octet-stream", 415, b"expected multipart/form-data"),
    (None, 415, b"Content-Type is missing"),
])
def test_bad_content_type(app: Callable[..., Packetron], store: pathlib.Path,
                          content_type: str | None, status: int, message: bytes) -> None:
    server = app()
    got, payload = post_raw(server, "upload", part("f", b"x", "f.txt") + closing(), content_type)
    assert got == status and message in payload
    assert stored(store) == [] and still_serves(server)


@pytest.mark.parametrize("name, body, status, message", [
    ("unterminated", part("a", b"1") + part("f", b"z" * 100_000, "f.bin")[:-20], 400,
     b"ended before its closing boundary"),
    ("no disposition", f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n".encode()
     + closing(), 400, b"Missing Content-Disposition"),
    ("thousands of parts", part("f", b"x", "f.txt") + part("a", b"1") * 5000 + closing(), 413,
     b"more than 1000 parts"),
    ("huge part header", part("f", b"x", "f.txt") + part("a", b"1", extra="X-A: " + "v" * 20_000
                                                          + "\r\n") + closing(), 413,
     b"header length exceeded"),
    ("many part headers", part("a", b"1", extra="".join(f"X-{i}: v\r\n" for i in range(50)))
     + closing(), 413, b"header count exceeded"),
    ("long field", part("a", b"v" * (1024 * 1024 + 1)) + closing(), 413, b"larger than 1048576"),
])
def test_bad_bodies_get_a_clear_4xx_and_leave_no_file(
        app: Callable[..., Packetron], store: pathlib.Path, name: str, body: bytes, status: int,
        message: bytes) -> None:
    server = app()
    got, payload = post_raw(server, "upload", body)
    assert got == status and message in payload
    assert stored(store) == []
    assert still_serves(server)


def test_count_limit_is_413_and_removes_earlier_files(app: Callable[..., Packetron],
                                                      store: pathlib.Path) -> None:
    events: list[tuple[Any, ...]] = []
    server = app(max_files=2, on_limit=lambda *args: events.append(args))
    body = b"".join(part(f"f{i}", b"data" * 1000, f"{i}.bin") for i in range(3)) + closing()
    got, payload = post_raw(server, "upload", body)
    assert (got, payload) == (413, b"multipart body has more than 2 files")
    assert events == [("multipart-files-limit", 2)]
    assert stored(store) == [] and still_serves(server)


def test_content_length_over_route_cap_is_413_before_the_body(app: Callable[..., Packetron],
                                                              store: pathlib.Path) -> None:
    server = app()
    got, _ = post_raw(server, "capped", part("f", b"x" * 5000, "f.bin") + closing())
    assert got == 413 and stored(store) == [] and still_serves(server)


@pytest.mark.parametrize("how", ["reset", "fin"])
def test_client_vanishing_mid_upload_leaves_no_file(app: Callable[..., Packetron],
                                                    store: pathlib.Path, how: str) -> None:
    server = app()
    head = (f"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: {CT}\r\n"
            f"Content-Length: {10 << 20}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + part("done", b"complete", "a.txt") + part("f", b"", "f.bin")[:-2])
        for _ in range(8):
            sock.sendall(os.urandom(128 * 1024))
        assert wait_until(lambda: len(stored(store)) == 2)  # both files are being written
        if how == "reset":  # a killed process or a dropped network: RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # "fin": the client closes its socket mid-body (an orderly close, then gone)
    assert wait_until(lambda: stored(store) == [], timeout=3), stored(store)
    assert still_serves(server)


def test_slow_consumer_keeps_the_socket_paused(make_server: Callable[..., Packetron],
                                               store: pathlib.Path) -> None:
    """on_file that stops reading holds the upload back instead of buffering it."""
    import asyncio

    gate: dict[str, Any] = {}

    async def on_file(name: str, stream: Any, info: dict[str, Any]) -> int:
        total = 0
        async for chunk in stream:
            total += len(chunk)
            if total > 256 * 1024 and "opened" not in gate:
                gate["opened"] = asyncio.Event()
                await gate["opened"].wait()  # stall until the test has looked
        return total

    server = make_server()

    @server.post("slow", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 multipart_options={"on_file": on_file})
    async def slow(request: Any, response: Any) -> None:
        response.send_json(await request.get_files())

    server.start()
    total = 64 << 20
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body_head = part("f", b"", "f.bin")[:-2]
        sock.sendall((f"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Type: {CT}\r\n"
                      f"Content-Length: {len(body_head) + total + 2 + len(closing())}\r\n\r\n")
                     .encode() + body_head)
        sock.setblocking(False)
        sent, block = 0, bytes(256 * 1024)
        stalled_since = None
        while sent < total:
            try:
                sent += sock.send(block[: min(len(block), total - sent)])
                stalled_since = None
            except BlockingIOError:
                now = time.monotonic()
                stalled_since = stalled_since or now
                if now - stalled_since > 0.5:  # the buffers are full: nobody reads
                    break
                time.sleep(0.01)
        # Socket buffers hold a few MiB at most; the server has stopped reading.
        assert sent < 32 << 20
        loop = server._serving.loop  # type: ignore[union-attr]
        assert wait_until(lambda: "opened" in gate)
        loop.call_soon_threadsafe(gate["opened"].set)
        sock.setblocking(True)
        remaining = total - sent
        while remaining:
            n = sock.send(block[: min(len(block), remaining)])
            remaining -= n
        sock.sendall(b"\r\n" + closing())
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b'{"f":%d}' % total)
