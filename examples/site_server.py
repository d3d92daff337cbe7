"""A small site: static pages from examples/site/ and an upload endpoint.

    python examples/site_server.py --port 3000 --storage /tmp/packetron-site

Open http://127.0.0.1:3000/, pick files, upload. Each upload is streamed to disk,
moved into <storage>/files, hashed, and served back at /uploads/<stored name>.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pathlib
from typing import Any

from packetron import HandlerFlags, Packetron
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


def build_server(storage: str | os.PathLike[str], *, port: int = 3000,
                 host: str = "127.0.0.1") -> Packetron:
    """The example server (not started): static site, POST /upload, GET /files.

    It runs one worker: the catalogue lives in memory, and a route a handler registers
    (each upload's /uploads/<name>) stays in the worker that registered it.

    Args:
        storage: folder for uploads: `incoming/` while they arrive, `files/` once stored.
        port, host: as for Packetron.

    Returns:
        The configured Packetron; call `start()` or `run()`.
    """
    storage = pathlib.Path(storage)
    incoming, stored_dir = storage / "incoming", storage / "files"
    stored_dir.mkdir(parents=True, exist_ok=True)
    server = Packetron(port=port, host=host, workers=1)
    server.serve(str(SITE_DIRECTORY))
    catalogue: list[dict[str, Any]] = []

    def publish(path: pathlib.Path, filename: str, note: str, digest: str) -> dict[str, Any]:
        route = f"uploads/{path.name}"
        server.serve_file(route, str(path))  # a new exact route for the new file
        entry = {"filename": filename, "stored_as": path.name, "size": path.stat().st_size,
                 "sha256": digest, "note": note, "url": "/" + route}
        catalogue.append(entry)
        return entry

    for path in sorted(stored_dir.iterdir()):  # files stored by an earlier run
        if path.is_file():
            publish(path, path.name.partition("-")[2] or path.name, "", _sha256_of(path))

    def refuse_big_files(event: str, *args: Any) -> None:
        if event == "multipart-file-limit":
            raise PayloadTooLarge(f"{args[1]!r} is larger than {args[2]} bytes")

    @server.post("upload", flags=HandlerFlags.MULTIPART_FORM_DATA,
                 max_request_size_in_bytes=MAX_UPLOAD_SIZE_IN_BYTES + 1024 * 1024,
                 multipart_options={"file_storage_directory": str(incoming),
                                    "max_file_size": MAX_UPLOAD_SIZE_IN_BYTES,
                                    "max_files": 20, "on_limit": refuse_big_files})
    async def upload(request: Any, response: Any) -> None:
        fields = await request.get_body()
        files = await request.get_files()
        note = fields.get("note", "")
        note = note[-1] if isinstance(note, list) else note
        results = []
        for entry in _as_list(files.get("file")):
            target = stored_dir / pathlib.Path(entry["path"]).name
            os.replace(entry["path"], target)  # same file system: a rename, no copy
            digest = await asyncio.to_thread(_sha256_of, target)
            results.append(publish(target, entry["filename"], note, digest))
        response.send_json({"stored": results}, status=201)

    @server.get("files")
    def list_files(request: Any, response: Any) -> None:
        response.send_json(catalogue)

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--storage", default=os.path.join(os.getcwd(), "site-uploads"))
    args = parser.parse_args()
    server = build_server(args.storage, port=args.port, host=args.host)
    print(f"serving {SITE_DIRECTORY} on http://{args.host}:{args.port}/ "
          f"(uploads in {args.storage})")
    server.run()


if __name__ == "__main__":
    main()
