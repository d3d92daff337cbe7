"""A full disk, for real: a 1 MiB tmpfs mounted for the test (root only; skipped otherwise).

Uploads into it are answered 507 (or 413 when a size limit is hit first), the partial file
is removed, the connection is closed after the answer, and the server serves the next
request. The SQLite global data file on a full disk raises GlobalDataUnavailable (a 503 in
a handler), and once there is room again the store works and still holds its data.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
from pathlib import Path

import pytest
import requests

from faulthelp import HOST, fill, read_until_closed, small_tmpfs, used_bytes
from packetron import HandlerFlags
from packetron.errors import GlobalDataUnavailable, InsufficientStorage, PacketronError
from packetron.globaldata import SQLiteGlobalData

UPLOAD_BYTES = 3 * 1024 * 1024  # three times the disk
BOUNDARY = "faultboundary"


@pytest.fixture
def disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk") as mounted:
        yield mounted


def _multipart_head(port: int, path: str, size: int) -> tuple[bytes, bytes, bytes]:
    """(request head, part head, closing boundary) of a one-file upload of `size` bytes."""
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"; "
            f"filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(part) + size + len(tail)
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()
    return head, part, tail


def _upload(port: int, path: str, size: int) -> tuple[int, dict[str, str], bytes, str]:
    """Send a `size`-byte file upload from a thread and read the answer meanwhile.

    Returns (status, headers, body, how the connection ended after the answer: "eof"
    for a clean close, "reset" for a reset, "open" if it was announced closed but stayed
    open, "keep-alive" when the server kept it).
    """
    head, part, tail = _multipart_head(port, path, size)
    sock = socket.create_connection((HOST, port), timeout=10)

    def send() -> None:
        try:
            sock.sendall(head + part)
            block = os.urandom(64 * 1024)
            for _ in range(size // len(block)):
                sock.sendall(block)
            sock.sendall(block[: size % len(block)] + tail)
        except OSError:
            pass  # the server answered and stopped reading: expected on a refusal

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before an answer: {data!r}"
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the answer"
            rest += chunk
        if headers.get("connection") != "close":
            return status, headers, rest[:length], "keep-alive"
        try:
            ending = "eof" if read_until_closed(sock) == b"" else "open"
        except ConnectionResetError:
            ending = "reset"
        except socket.timeout:
            ending = "open"
        return status, headers, rest[:length], ending
    finally:
        sock.close()
        sender.join(timeout=10)


def _serve_uploads(make_server, directory: Path, **route_options):  # type: ignore[no-untyped-def]
    server = make_server()
    stored: list[dict] = []

    @server.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 multipart_options={"file_storage_directory": str(directory / "files")},
                 **route_options)
    async def upload(request, response):
        files = await request.get_files()
        stored.append(files["f"])
        response.send_json({"size": files["f"]["size"]})

    @server.get("ping")
    def ping(request, response):
        response.send_text_plain("pong")

    server.start()
    return server, stored


def _files_in(directory: Path) -> list[str]:
    files = directory / "files"
    return sorted(os.listdir(files)) if files.exists() else []


def test_upload_filling_the_disk_is_507_and_leaves_nothing_behind(make_server, disk, caplog):
    server, stored = _serve_uploads(make_server, disk)
    with caplog.at_level(logging.WARNING, logger="packetron.server"):
        status, headers, body, ending = _upload(server.port, "/upload", UPLOAD_BYTES)
    assert status == 507, body
    assert b"No space left on device" in body
    assert headers.get("connection") == "close"
    assert ending == "eof"  # closed after the full answer, not reset under it
    assert stored == []  # the handler never saw a half-stored file
    assert _files_in(disk) == []  # the partial file is gone...
    assert used_bytes(disk) < 64 * 1024  # ...and so is the room it took
    assert any("could not be stored" in r.getMessage() and "No space left" in r.getMessage()
               for r in caplog.records)  # the operator learns that the disk is full
    # The server goes on: the next request, and an upload that fits, are served.
    assert requests.get(server.url + "/ping", timeout=5).text == "pong"
    fits = requests.post(server.url + "/upload", timeout=5,
                         files={"f": ("small.bin", b"x" * 100_000)})
    assert fits.status_code == 200 and fits.json() == {"size": 100_000}
    assert len(_files_in(disk)) == 1


def test_upload_on_a_disk_already_full_is_507(make_server, disk):
    server, _ = _serve_uploads(make_server, disk)
    (disk / "files").mkdir()
    filler = fill(disk)
    status, _, _, ending = _upload(server.port, "/upload", 200_000)
    # The file is smaller than one write: it fails when the part ends, once the whole
    # body has usually been read, and then the connection may stay open.
    assert status == 507 and ending in ("eof", "keep-alive")
    assert _files_in(disk) == []
    filler.unlink()  # room again: the same upload is stored
    status, _, body, ending = _upload(server.port, "/upload", 200_000)
    assert status == 200 and body == b'{"size":200000}' and ending == "keep-alive"


def test_size_limit_hit_before_the_disk_fills_is_413(make_server, disk):
    server, stored = _serve_uploads(make_server, disk, max_request_size_in_bytes=512 * 1024)
    status, headers, _, ending = _upload(server.port, "/upload", UPLOAD_BYTES)
    assert status == 413 and ending == "eof"
    assert stored == [] and _files_in(disk) == []
    assert requests.get(server.url + "/ping", timeout=5).text == "pong"


def test_insufficient_storage_is_an_http_error_with_507() -> None:
    err = InsufficientStorage("full")
    assert err.status_code == 507 and isinstance(err, PacketronError)


# ---------------------------------------------------------------- SQLite global data


def test_sqlite_store_on_a_full_disk_fails_clearly_and_is_whole_afterwards(disk, caplog):
    path = disk / "globaldata.sqlite3"
    store = SQLiteGlobalData(str(path))
    try:
        for i in range(50):
            store.set(f"k{i}", {"i": i, "pad": "v" * 200})
        filler = fill(disk)
        with caplog.at_level(logging.WARNING, logger="packetron.server"):
            with pytest.raises(GlobalDataUnavailable, match="full") as raised:
                store.set("big", "x" * 200_000)
            with pytest.raises(GlobalDataUnavailable):
                store.update("k1", lambda v: {**v, "pad": "y" * 200_000})
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert raised.value.status_code == 503
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1  # once per outage, not once per call
        assert store.get("k3")["i"] == 3  # reads go on while the disk is full
        filler.unlink()
        store.set("after", 1)  # room again: writes work without reopening anything
        assert store.update("k1", lambda v: {**v, "i": 100})["i"] == 100
        assert [store.get(f"k{i}")["i"] for i in (0, 2, 49)] == [0, 2, 49]
        assert store.get("big") is None  # the failed write left nothing half-done
    finally:
        store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_global_data_on_a_full_disk_is_503_in_a_handler(make_server, disk):
    server = make_server(global_data_path=str(disk / "store.sqlite3"))

    @server.post("count")
    def count(request, response):
        response.send_json({"n": server.update_global_data("n", lambda n: n + 1, 0)})

    server.start()
    assert requests.post(server.url + "/count", timeout=5).json() == {"n": 1}
    filler = fill(disk)
    # Fill the WAL's last free page too: each answer that still fits takes some room.
    for _ in range(200):
        answer = requests.post(server.url + "/count", timeout=5)
        if answer.status_code == 503:
            break
    assert answer.status_code == 503  # not caught in the handler: 503, not 500
    filler.unlink()
    after = requests.post(server.url + "/count", timeout=5)
    assert after.status_code == 200 and after.json()["n"] >= 2
