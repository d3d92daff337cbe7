"""A small site: static pages from examples/site/ and an upload endpoint.

    python examples/site_server.py --port 3000 --storage /tmp/packetron-site

Open http://127.0.0.1:3000/, pick files, upload. Each upload is streamed to disk,
moved into <storage>/files, hashed, and served back at /uploads?name=<stored name>.

Everything an upload leaves behind is on disk (the file, and a small JSON record of its
name, note and hash under <storage>/meta), and every answer reads the disk at request
time: with `--workers N` each worker sees the files every other worker stored.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pathlib
import time
from typing import Any
from urllib.parse import quote

from packetron import HandlerFlags, Packetron, Request, Response
from packetron.errors import PayloadTooLarge

SITE_DIRECTORY = pathlib.Path(__file__).resolve().parent / "site"
MAX_UPLOAD_SIZE_IN_BYTES = 1024 * 1024 * 1024  # 1 GiB per file
HASH_BLOCK_SIZE_IN_BYTES = 1024 * 1024


def _sha256_of(path: pathlib.Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class UploadStore:
    """Stored files and their records, kept on disk so that every worker shares them.

    Layout: `incoming/` while a request streams in, `files/<stored name>` once stored,
    `meta/<stored name>.json` with what the listing shows.
    """

    def __init__(self, storage: str | os.PathLike[str]) -> None:
        root = pathlib.Path(storage)
        self.incoming = root / "incoming"
        self.files = root / "files"
        self.meta = root / "meta"
        for folder in (self.incoming, self.files, self.meta):
            folder.mkdir(parents=True, exist_ok=True)

    def path_of(self, name: str) -> pathlib.Path | None:
        """The stored file called `name`, or None: only plain names inside files/ count."""
        if not name or name != os.path.basename(name) or name.startswith("."):
            return None
        path = self.files / name
        if path.is_symlink() or not path.is_file():
            return None
        return path

    def record(self, path: pathlib.Path, filename: str, note: str, digest: str) -> dict[str, Any]:
        """Write the record of a stored file (atomically: a reader never sees half)."""
        entry = {"filename": filename, "stored_as": path.name, "size": path.stat().st_size,
                 "sha256": digest, "note": note, "stored_at": time.time_ns(),
                 "url": "/uploads?name=" + quote(path.name)}
        target = self.meta / f"{path.name}.json"
        partial = self.meta / f".{path.name}.{os.getpid()}.tmp"
        partial.write_text(json.dumps(entry))
        os.replace(partial, target)
        return entry

    def adopt_unrecorded(self) -> None:
        """Give files stored without a record (by an older version of this example) one."""
        for path in sorted(self.files.iterdir()):
            if path.is_file() and not (self.meta / f"{path.name}.json").exists():
                self.record(path, path.name.partition("-")[2] or path.name, "",
                            _sha256_of(path))

    def listing(self) -> list[dict[str, Any]]:
        """Every stored file's record, oldest first."""
        entries = []
        for meta in self.meta.glob("*.json"):
            try:
                entry = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue  # deleted meanwhile
            if self.path_of(entry.get("stored_as", "")) is not None:
                entries.append(entry)
        entries.sort(key=lambda e: (e.get("stored_at", 0), e["stored_as"]))
        return entries


def build_server(storage: str | os.PathLike[str], *, port: int = 3000,
                 host: str = "127.0.0.1", workers: int = 1) -> Packetron:
    """The example server (not started): static site, POST /upload, GET /files, GET /uploads.

    Args:
        storage: folder for uploads (see UploadStore).
        port, host, workers: as for Packetron; any number of workers works.

    Returns:
        The configured Packetron; call `start()` or `run()`.
    """
    store = UploadStore(storage)
    store.adopt_unrecorded()
    server = Packetron(port=port, host=host, workers=workers)
    server.serve(str(SITE_DIRECTORY))

    def refuse_big_files(event: str, *args: Any) -> None:
        if event == "multipart-file-limit":
            raise PayloadTooLarge(f"{args[1]!r} is larger than {args[2]} bytes")

    @server.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 max_request_size_in_bytes=MAX_UPLOAD_SIZE_IN_BYTES + 1024 * 1024,
                 multipart_options={"file_storage_directory": str(store.incoming),
                                    "max_file_size": MAX_UPLOAD_SIZE_IN_BYTES,
                                    "max_files": 20, "on_limit": refuse_big_files})
    async def upload(request: Request, response: Response) -> None:
        fields = await request.get_body()
        files = await request.get_files()
        note = fields.get("note", "")
        note = note[-1] if isinstance(note, list) else note
        results = []
        for entry in _as_list(files.get("file")):
            target = store.files / pathlib.Path(entry["path"]).name
            os.replace(entry["path"], target)  # same file system: a rename, no copy
            digest = await asyncio.to_thread(_sha256_of, target)
            results.append(store.record(target, entry["filename"], note, digest))
        response.send_json({"stored": results}, status=201)

    @server.get("files")
    def list_files(request: Request, response: Response) -> None:
        response.send_json(store.listing())

    # One route for every upload, looked up on disk per request: a route registered by the
    # worker that stored a file would exist in that worker only.
    @server.get("uploads")
    def download(request: Request, response: Response) -> None:
        name = request.get_query_params().get("name", "")
        path = store.path_of(name) if isinstance(name, str) else None
        if path is None:
            response.send_status_code(404)
            return
        response.send_file(str(path))

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storage", default=os.path.join(os.getcwd(), "site-uploads"))
    args = parser.parse_args()
    server = build_server(args.storage, port=args.port, host=args.host, workers=args.workers)
    print(f"serving {SITE_DIRECTORY} on http://{args.host}:{args.port}/ "
          f"(uploads in {args.storage})")
    server.run()


if __name__ == "__main__":
    main()
