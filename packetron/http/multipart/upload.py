"""One request's multipart body as it is parsed: counters and limits, the current part,
the files stored so far, and the undo of all of it on any error."""
from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any

from multipart import MultipartSegment

from packetron.errors import PayloadTooLarge
from packetron.http.bodies import add_repeated
from packetron.http.multipart.limits import MultipartOptions
from packetron.http.multipart.partstream import PartStream
from packetron.http.multipart.storage import (_client_filename, _FileSink, _storage_error,
                                              _unlink, default_storage_directory,
                                              storage_name)

__all__: list[str] = []

_FIELD, _DISK, _DISCARD, _STREAM = range(4)


class _Part:
    __slots__ = ("kind", "name", "filename", "mime_type", "encoding", "charset", "value",
                 "sink", "path", "size", "truncated", "stream", "task", "entry")

    def __init__(self, kind: int, segment: MultipartSegment) -> None:
        self.kind = kind
        self.name: str = segment.name or ""
        self.filename = segment.filename
        self.mime_type = segment.content_type or (
            "text/plain" if segment.filename is None else "application/octet-stream")
        self.encoding = segment.header("Content-Transfer-Encoding", "7bit").lower()
        self.charset = segment.charset
        self.value = bytearray()
        self.sink: _FileSink | None = None
        self.path: str | None = None
        self.size = 0
        self.truncated = False
        self.stream: PartStream | None = None
        self.task: asyncio.Future[Any] | None = None
        self.entry: Any = None

    def info(self) -> dict[str, Any]:
        return {"filename": _client_filename(self.filename or ""), "encoding": self.encoding,
                "mime_type": self.mime_type}


_FLUSH, _LIMIT = 1, 2


class _Upload:
    """State of one request's multipart body: counters, the current part, stored files."""

    def __init__(self, options: MultipartOptions, mode: str) -> None:
        self.options = options
        self.mode = mode
        self.directory = options.file_storage_directory or default_storage_directory()
        self.parts = self.files_count = self.fields_count = 0
        self.part: _Part | None = None
        self.fields: dict[str, Any] = {}
        self.files: dict[str, Any] = {}
        self.stored: list[str] = []  # every path created for this request, for cleanup

    async def _limit(self, event: str, *args: Any) -> None:
        if self.options.on_limit is not None:
            result = self.options.on_limit(event, *args)
            if inspect.isawaitable(result):
                await result

    async def start_part(self, segment: MultipartSegment) -> None:
        opts = self.options
        self.parts += 1
        if opts.max_parts is not None and self.parts > opts.max_parts:
            await self._limit("multipart-parts-limit", opts.max_parts)
            raise PayloadTooLarge(f"multipart body has more than {opts.max_parts} parts")
        name = segment.name or ""
        if opts.max_field_name_size is not None \
                and len(name.encode("utf-8")) > opts.max_field_name_size:
            raise PayloadTooLarge(f"multipart field name longer than "
                                  f"{opts.max_field_name_size} bytes")
        if segment.filename is None:
            self.fields_count += 1
            if opts.max_fields is not None and self.fields_count > opts.max_fields:
                await self._limit("multipart-fields-limit", opts.max_fields)
                raise PayloadTooLarge(f"multipart body has more than {opts.max_fields} fields")
            self.part = _Part(_FIELD, segment)
            return
        self.files_count += 1
        if opts.max_files is not None and self.files_count > opts.max_files:
            await self._limit("multipart-files-limit", opts.max_files)
            raise PayloadTooLarge(f"multipart body has more than {opts.max_files} files")
        if self.mode == "form":
            self.part = _Part(_DISCARD, segment)
        elif opts.on_file is not None:
            part = self.part = _Part(_STREAM, segment)
            part.stream = PartStream()
            result = opts.on_file(name, part.stream, part.info())
            if inspect.isawaitable(result):
                part.task = asyncio.ensure_future(result)
                part.task.add_done_callback(part.stream._abandon)
            else:
                part.entry = result
                part.stream._abandon()
        else:
            self.part = _Part(_DISK, segment)

    def add_field_data(self, data: bytes) -> None:
        part = self.part
        assert part is not None
        part.value += data
        limit = self.options.max_field_size
        if limit is not None and len(part.value) > limit:
            raise PayloadTooLarge(f"multipart field {part.name!r} is larger than {limit} bytes")

    def _open(self, part: _Part) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, storage_name(part.filename))
        # O_EXCL + O_NOFOLLOW: never write through a planted file or symlink.
        part.sink = _FileSink(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                                      | getattr(os, "O_NOFOLLOW", 0), 0o600))
        part.path = path
        self.stored.append(path)

    def write_file(self, data: bytes) -> int:
        """Take a piece of the current file: 0, _FLUSH (a write is due) or _LIMIT (it
        just went over max_file_size and was dropped)."""
        part = self.part
        assert part is not None
        part.size += len(data)
        if part.truncated:
            return 0
        limit = self.options.max_file_size
        if limit is not None and part.size > limit:
            self._drop_file(part)
            return _LIMIT
        if part.sink is None:
            try:
                self._open(part)
            except OSError as exc:
                raise _storage_error(exc) from exc
        return _FLUSH if part.sink.add(data) else 0  # type: ignore[union-attr]

    async def after_write(self, status: int) -> None:
        part = self.part
        assert part is not None
        if status == _LIMIT:
            await self._limit("multipart-file-limit", part.name,
                              _client_filename(part.filename or ""), self.options.max_file_size)
            return
        try:
            await part.sink.flush()  # type: ignore[union-attr]
        except OSError as exc:
            raise _storage_error(exc) from exc

    def _drop_file(self, part: _Part) -> None:
        part.truncated = True
        if part.sink is not None:
            part.sink.discard()
            part.sink = None
        if part.path is not None:
            _unlink(part.path)
            part.path = None

    async def stream_data(self, data: bytes) -> None:
        part = self.part
        assert part is not None and part.stream is not None
        stream = part.stream
        part.size += len(data)
        stream.bytes_received = part.size
        if stream.truncated:
            return
        limit = self.options.max_file_size
        if limit is not None and part.size > limit:
            stream.truncated = part.truncated = True
            stream._end()
            await self._limit("multipart-file-limit", part.name,
                              _client_filename(part.filename or ""), limit)
            return
        await stream._put(data)

    async def finish_part(self) -> None:
        part, self.part = self.part, None
        assert part is not None
        if part.kind == _FIELD:
            add_repeated(self.fields, part.name, _decode_field(part.value, part.charset))
        elif part.kind == _DISK:
            await self._finish_disk(part)
        elif part.kind == _STREAM:
            assert part.stream is not None
            part.stream._end()
            entry = await part.task if part.task is not None else part.entry
            add_repeated(self.files, part.name, entry)

    async def _finish_disk(self, part: _Part) -> None:
        if part.size == 0 and not part.filename:
            return  # an <input type=file> left empty: browsers send filename="" and no data
        try:
            if part.sink is None and not part.truncated:
                self._open(part)  # an empty file is still a file
            if part.sink is not None:
                await part.sink.close()
                part.sink = None
        except OSError as exc:
            raise _storage_error(exc) from exc
        if self.mode == "legacy":
            if part.path is not None:
                add_repeated(self.files, part.name, part.path)
            return
        add_repeated(self.files, part.name, {
            "path": part.path, "filename": _client_filename(part.filename or ""),
            "encoding": part.encoding, "mime_type": part.mime_type, "size": part.size,
            "truncated": part.truncated})

    def abort(self) -> None:
        """Undo everything: close the open file, cancel on_file, unlink stored files."""
        part, self.part = self.part, None
        if part is not None:
            if part.sink is not None:
                part.sink.discard()
            if part.task is not None and not part.task.done():
                part.task.cancel()
                # Retrieve whatever the cancelled task ends with, so nothing is logged
                # as "never retrieved": the request's own error is what matters.
                part.task.add_done_callback(_swallow)
        for path in self.stored:
            _unlink(path)
        self.stored.clear()


def _swallow(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _decode_field(value: bytearray, charset: str | None) -> str:
    try:
        return value.decode(charset or "utf-8", "replace")
    except LookupError:  # an unknown charset name from the client
        return value.decode("utf-8", "replace")
