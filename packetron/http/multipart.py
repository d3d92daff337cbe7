"""Streaming multipart/form-data: file parts go to disk (or to `on_file`) as the body arrives.

The push parser (the `multipart` package) only turns bytes into events; this module's
loop acts on each event between two reads of `request.stream()`. File data is gathered
into WRITE_SIZE_IN_BYTES pieces, and the parser waits until one piece is written before
the next is, so the socket goes no faster than the disk and memory stays flat whatever
the upload size. Pieces are written in the event loop itself while the disk keeps up: a
write into the page cache is a short copy, and handing each one to a worker thread cost
more than the copy (bench/uploads.py, 1 GiB: 1,249 against 936 MB/s, 0.87 against 1.14
CPU s/GiB). A write that waits for the disk (writeback throttling, a slow file system)
would stall every connection of the worker, so after one write slower than
SLOW_WRITE_SECONDS, writes go to a worker thread, one in flight per upload, for
THREADED_WRITES_SECONDS. Fields are kept in memory, capped by `max_field_size`.

Every error path (bad input, a limit, a vanished client, cancellation) closes and unlinks
every file this request stored, so no partial upload is ever left behind. Files of a
request that succeeded stay where they were stored: the handler moves or deletes them.
"""
from __future__ import annotations

import asyncio
import errno
import inspect
import os
import secrets
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from math import inf
from typing import TYPE_CHECKING, Any, Callable

from multipart import (
    MultipartError,
    MultipartSegment,
    ParserLimitReached,
    PushMultipartParser,
    parse_options_header,
)

from packetron.errors import (
    BadRequest,
    ConfigError,
    HttpError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from packetron.http.bodies import add_repeated

if TYPE_CHECKING:
    from packetron.http.request import Request

__all__ = [
    "parse_multipart", "validate_multipart_options", "MultipartOptions", "PartStream",
    "boundary_from_content_type", "sanitize_filename", "storage_name",
    "default_storage_directory", "DEFAULT_MAX_FILE_SIZE_IN_BYTES", "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_FIELDS", "DEFAULT_MAX_PARTS", "DEFAULT_MAX_FIELD_SIZE_IN_BYTES",
    "DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES", "DEFAULT_MAX_HEADER_PAIRS",
    "MAX_PART_HEADER_LINE_SIZE_IN_BYTES", "WRITE_SIZE_IN_BYTES", "SMALL_READ_IN_BYTES",
    "PARSE_BATCH_IN_BYTES", "ON_FILE_HIGH_WATER_IN_BYTES", "SLOW_WRITE_SECONDS",
    "THREADED_WRITES_SECONDS",
]

# Defaults of multipart_options, and where the numbers come from.
DEFAULT_MAX_FILE_SIZE_IN_BYTES: int | None = None  # unlimited, as busboy's fileSize; the
#                                                     route's max_request_size_in_bytes caps it
DEFAULT_MAX_FILES = 1000  # Starlette's max_files
DEFAULT_MAX_FIELDS = 1000  # Starlette's max_fields, PHP's max_input_vars
DEFAULT_MAX_PARTS = 1000  # no real form has more; stops "thousands of tiny parts" early
DEFAULT_MAX_FIELD_SIZE_IN_BYTES = 1024 * 1024  # busboy's fieldSize, Starlette's max_part_size
DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES = 100  # busboy's fieldNameSize
DEFAULT_MAX_HEADER_PAIRS = 8  # multipart's max_header_count; RFC 7578 §4.8 defines only 3
# One part header line, name and value: multipart's own default (4 KiB + 128).
MAX_PART_HEADER_LINE_SIZE_IN_BYTES = 4096 + 128
# File data is gathered up to this size before one write: two socket reads of uvloop
# (250 000 bytes each). 1 MiB kept more bytes objects alive at once, which made malloc
# give memory back and fault it in again (256 MiB uploads: 184 000 page faults per GiB
# against 2 500, 850 against 1 227 MB/s).
WRITE_SIZE_IN_BYTES = 256 * 1024
# A write of WRITE_SIZE_IN_BYTES into the page cache takes well under a millisecond; one
# that took longer than this waited for the disk (writeback throttling once dirty pages
# pile up, or a slow or network file system) and stalled the event loop meanwhile.
SLOW_WRITE_SECONDS = 0.01
# After such a write, writes go to a worker thread for this long (the whole process), so
# a struggling disk stalls the loop at most once per period.
THREADED_WRITES_SECONDS = 10.0
# Body pieces under SMALL_READ_IN_BYTES (a chunked upload in small chunks gives one per
# chunk) are joined until PARSE_BATCH_IN_BYTES have gathered, then parsed as one: each
# parse call and its events cost microseconds whatever the size, a join costs one copy.
# Measured on a chunked upload: 4 KiB chunks went from 621 to 865 MB/s; with 16 KiB
# chunks joining gained nothing, so pieces from there up (uvloop reads up to 250 000
# bytes) reach the parser as they came, uncopied.
SMALL_READ_IN_BYTES = 16 * 1024
PARSE_BATCH_IN_BYTES = 256 * 1024
# on_file streams: the parser waits while this much is queued and not yet consumed.
ON_FILE_HIGH_WATER_IN_BYTES = 64 * 1024
STORAGE_SUBDIRECTORY = os.path.join(".packetroninternal", "files")

_MODES = ("multipart", "form", "legacy")
_OPTION_KEYS = ("max_file_size", "max_files", "max_fields", "max_field_size",
                "max_field_name_size", "max_parts", "max_header_pairs",
                "file_storage_directory", "on_file", "on_limit")
_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_MAX_STORED_NAME_CHARS = 64


def default_storage_directory() -> str:
    """`<tempdir>/.packetroninternal/files`, read at call time (TMPDIR may change)."""
    return os.path.join(tempfile.gettempdir(), STORAGE_SUBDIRECTORY)


@dataclass(frozen=True, slots=True)
class MultipartOptions:
    """Validated multipart_options; None in a limit means "no limit"."""

    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE_IN_BYTES
    max_files: int | None = DEFAULT_MAX_FILES
    max_fields: int | None = DEFAULT_MAX_FIELDS
    max_field_size: int | None = DEFAULT_MAX_FIELD_SIZE_IN_BYTES
    max_field_name_size: int | None = DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES
    max_parts: int | None = DEFAULT_MAX_PARTS
    max_header_pairs: int | None = DEFAULT_MAX_HEADER_PAIRS
    file_storage_directory: str | None = None  # None: default_storage_directory()
    on_file: Callable[..., Any] | None = None
    on_limit: Callable[..., Any] | None = None


def validate_multipart_options(options: dict[str, Any] | None) -> MultipartOptions:
    """Check a route's multipart_options dict and fill in the defaults.

    Args:
        options: the dict given to `server.handle(..., multipart_options=...)`, or None.

    Returns:
        A frozen MultipartOptions.

    Raises:
        ConfigError: an unknown key, a limit that is not a non-negative int (or None),
            a storage directory that is not a path, or a callback that is not callable.
    """
    if options is None:
        return MultipartOptions()
    if not isinstance(options, dict):
        raise ConfigError(f"multipart_options must be a dict, not {type(options).__name__}")
    unknown = sorted(set(options) - set(_OPTION_KEYS))
    if unknown:
        raise ConfigError(f"unknown multipart_options {unknown}; known: {', '.join(_OPTION_KEYS)}")
    for key in _OPTION_KEYS[:7]:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise ConfigError(f"multipart_options[{key!r}] must be an int >= 0 or None, "
                              f"not {value!r}")
    directory = options.get("file_storage_directory")
    if directory is not None:
        if not isinstance(directory, (str, os.PathLike)):
            raise ConfigError("multipart_options['file_storage_directory'] must be a path")
        directory = os.fspath(directory)
    for key in ("on_file", "on_limit"):
        if options.get(key) is not None and not callable(options[key]):
            raise ConfigError(f"multipart_options[{key!r}] must be callable")
    values = {k: options[k] for k in _OPTION_KEYS if k in options}
    values["file_storage_directory"] = directory
    return MultipartOptions(**values)


def boundary_from_content_type(content_type: str | None) -> str:
    """The boundary parameter of a `multipart/form-data` Content-Type.

    Raises:
        UnsupportedMediaType: no Content-Type, or not multipart/form-data.
        BadRequest: no boundary, or one RFC 2046 §5.1.1 forbids (over 70 characters,
            or characters outside printable ASCII).
    """
    if not content_type:
        raise UnsupportedMediaType("expected a multipart/form-data body; Content-Type is missing")
    media_type, params = parse_options_header(content_type)
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(f"expected multipart/form-data, got {media_type or '?'}")
    boundary: str = params.get("boundary", "")
    if not boundary:
        raise BadRequest("multipart/form-data Content-Type has no boundary parameter")
    if len(boundary) > 70 or not all(" " <= ch < "\x7f" for ch in boundary) \
            or boundary.endswith(" "):
        raise BadRequest("multipart boundary is invalid (1-70 printable ASCII characters)")
    return boundary


def sanitize_filename(filename: str | None) -> str:
    """A name safe for any file system, derived from a client's filename.

    Only the last path component counts ("/" and "\\" both separate), only ASCII letters,
    digits, ".", "_" and "-" survive (others become "_"), leading dots and dashes go
    (no hidden files, nothing that looks like an option), and the length is capped
    while keeping a short extension. Never empty: "file" is the fallback.
    """
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if ch in _SAFE_CHARS else "_" for ch in name).lstrip(".-")
    if len(name) > _MAX_STORED_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            name = stem[: _MAX_STORED_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:_MAX_STORED_NAME_CHARS]
    return name or "file"


def storage_name(filename: str | None) -> str:
    """Stored file name: 16 random hex digits, "-", then the sanitized client name."""
    return f"{secrets.token_hex(8)}-{sanitize_filename(filename)}"


def _client_filename(filename: str) -> str:
    # The entry keeps the client's name without any directory part it tried to send.
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


class PartStream:
    """The body of one file part, handed to `on_file(fieldname, stream, info)`.

    `async for chunk in stream` yields bytes until the part ends. The parser waits while
    ON_FILE_HIGH_WATER_IN_BYTES are queued, so a slow consumer slows the upload down.
    `truncated` becomes True when the part went over max_file_size (the stream then
    ends early); `bytes_received` counts the part's bytes so far.
    """

    __slots__ = ("_chunks", "_queued", "_waiter", "_space", "_ended", "_abandoned",
                 "truncated", "bytes_received")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._ended = False
        self._abandoned = False
        self.truncated = False
        self.bytes_received = 0

    def __aiter__(self) -> PartStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._queued -= len(chunk)
        _wake(self._space)
        return chunk

    async def _put(self, chunk: bytes) -> None:
        if self._abandoned or self._ended:
            return  # nobody reads any more: the rest of the part is drained
        self._chunks.append(bytes(chunk))
        self._queued += len(chunk)
        _wake(self._waiter)
        while self._queued >= ON_FILE_HIGH_WATER_IN_BYTES and not self._abandoned:
            self._space = asyncio.get_running_loop().create_future()
            try:
                await self._space
            finally:
                self._space = None

    def _end(self) -> None:
        self._ended = True
        _wake(self._waiter)

    def _abandon(self, _task: object = None) -> None:
        self._abandoned = True
        self._chunks.clear()
        self._queued = 0
        _wake(self._space)


def _wake(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


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


def _write_chunks(fd: int, chunks: list[bytes]) -> None:
    """Write pieces in order with one writev where possible."""
    if len(chunks) > 64:  # many tiny pieces (a slow client): one buffer, under IOV_MAX
        chunks = [b"".join(chunks)]
    total = sum(map(len, chunks))
    written = os.writev(fd, chunks)
    if written < total:  # a short write: finish the remainder
        view = memoryview(b"".join(chunks))[written:]
        while view:
            view = view[os.write(fd, view):]


class _WriteMode:
    """Where file writes run: in the event loop, or in a worker thread for a while after
    a write was slow. Times come from the caller (time.monotonic())."""

    __slots__ = ("threaded_until",)

    def __init__(self) -> None:
        self.threaded_until = 0.0

    def inline(self, now: float) -> bool:
        """True when the next write may run in the event loop."""
        return now >= self.threaded_until

    def record(self, now: float, seconds: float) -> None:
        """An inline write that ended at `now` took `seconds`."""
        if seconds > SLOW_WRITE_SECONDS:
            self.threaded_until = now + THREADED_WRITES_SECONDS


_write_mode = _WriteMode()  # one per process: the disk is shared by all its uploads


class _FileSink:
    """One stored file. Data is gathered up to WRITE_SIZE_IN_BYTES, then written before
    the parser goes on (backpressure): in the loop, or by a worker thread with at most
    one write in flight while `_write_mode` says the disk is slow."""

    __slots__ = ("fd", "chunks", "buffered", "writing")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.writing: asyncio.Future[None] | None = None

    def add(self, data: bytes) -> bool:
        """Gather a piece; True when enough is gathered for a write."""
        self.chunks.append(data)
        self.buffered += len(data)
        return self.buffered >= WRITE_SIZE_IN_BYTES

    async def flush(self) -> None:
        """Wait for a write in flight, then write what was gathered: now, or by starting
        a write in a worker thread."""
        writing, self.writing = self.writing, None
        if writing is not None:
            await writing
        if self.buffered:
            chunks, self.chunks, self.buffered = self.chunks, [], 0
            started = time.monotonic()
            if _write_mode.inline(started):
                _write_chunks(self.fd, chunks)
                ended = time.monotonic()
                _write_mode.record(ended, ended - started)
            else:
                self.writing = asyncio.get_running_loop().run_in_executor(
                    None, _write_chunks, self.fd, chunks)

    async def close(self) -> None:
        """Write everything, wait for it, close the file."""
        await self.flush()
        writing, self.writing = self.writing, None
        if writing is not None:
            await writing
        fd, self.fd = self.fd, -1
        os.close(fd)

    def discard(self) -> None:
        """Error path: drop gathered data; the fd closes once a write in flight ends
        (closing it under a running write could hand the number to another file)."""
        self.chunks, self.buffered = [], 0
        fd, self.fd = self.fd, -1
        writing, self.writing = self.writing, None
        if fd < 0:
            return
        if writing is None:
            os.close(fd)
        elif writing.done():
            _close_after(writing, fd)
        else:
            writing.add_done_callback(lambda done: _close_after(done, fd))


def _close_after(write: asyncio.Future[None], fd: int) -> None:
    if not write.cancelled():
        write.exception()  # retrieved: the request's own error is what counts
    os.close(fd)


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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _decode_field(value: bytearray, charset: str | None) -> str:
    try:
        return value.decode(charset or "utf-8", "replace")
    except LookupError:  # an unknown charset name from the client
        return value.decode("utf-8", "replace")


def _storage_error(exc: OSError) -> HttpError:
    full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    return HttpError(f"could not store the uploaded file: {exc.strerror}",
                     status_code=507 if full else 500)


def _parser_error(exc: MultipartError) -> HttpError:
    if isinstance(exc, ParserLimitReached):
        return PayloadTooLarge(f"multipart body refused: {exc} (part headers are limited "
                               f"in count and to {MAX_PART_HEADER_LINE_SIZE_IN_BYTES} bytes "
                               f"per line)")
    message = str(exc)
    if "Unexpected end" in message:
        return BadRequest("multipart body ended before its closing boundary")
    return BadRequest(f"malformed multipart body: {message}")


async def _parse(parser: PushMultipartParser, data: bytes, upload: _Upload) -> None:
    """Feed one piece to the parser and act on its events."""
    for event in parser.parse(data):
        if event is None:
            await upload.finish_part()
        elif isinstance(event, MultipartSegment):
            await upload.start_part(event)
        else:
            kind = upload.part.kind  # type: ignore[union-attr]
            if kind == _DISK:
                status = upload.write_file(event)
                if status:
                    await upload.after_write(status)
            elif kind == _FIELD:
                upload.add_field_data(event)
            elif kind == _STREAM:
                await upload.stream_data(event)


async def parse_multipart(request: Request,
                          options: dict[str, Any] | MultipartOptions | None, *,
                          mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a multipart/form-data body from `request.stream()` as it arrives.

    Args:
        request: the request; its Content-Type gives the boundary.
        options: the route's multipart_options (see validate_multipart_options), or
            a MultipartOptions it returned (validated once, at registration).
        mode: "multipart" (MULTIPART_FORM_DATA: fields, and files stored on disk),
            "form" (FORM_DATA: fields only, file parts read and discarded) or
            "legacy" (FILE_UPLOAD: files as {field: path}).

    Returns:
        (fields, files). Fields map names to str. Files map names to entries
        `{"path", "filename", "encoding", "mime_type", "size", "truncated"}` (in
        "legacy" mode to the stored path; truncated files are left out there), or to
        what `on_file` returned. A repeated name maps to a list in arrival order. A file
        over max_file_size keeps its entry with `path: None`, `truncated: True` and
        `size` the part's full size; its bytes are not kept.

    Raises:
        UnsupportedMediaType: the body is not multipart/form-data (415).
        BadRequest: no or a bad boundary, a malformed or unterminated body (400).
        PayloadTooLarge: over max_parts, max_files, max_fields (after on_limit ran),
            max_field_size or max_field_name_size, or part headers too many or too long
            (413).
        HttpError: the file could not be written (507 when the disk is full, else 500).
        ConnectionClosed: the client went away mid-body.
        Whatever on_file or on_limit raise.
        On every error all files stored for this request are unlinked first.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
    opts = options if isinstance(options, MultipartOptions) else validate_multipart_options(options)
    boundary = boundary_from_content_type(request.headers.get("content-type"))
    upload = _Upload(opts, mode)
    header_pairs = inf if opts.max_header_pairs is None else opts.max_header_pairs
    try:
        parser = PushMultipartParser(boundary, max_header_size=MAX_PART_HEADER_LINE_SIZE_IN_BYTES,
                                     max_header_count=header_pairs)
        # Nothing is joined for on_file: its consumer gets the pieces as they came, and its
        # queue is held to ON_FILE_HIGH_WATER_IN_BYTES.
        small = 0 if opts.on_file is not None else SMALL_READ_IN_BYTES
        pending: list[bytes] = []  # small pieces not parsed yet, under PARSE_BATCH_IN_BYTES
        pending_size = 0
        ready: tuple[bytes, ...]
        async for chunk in request.stream():
            if not chunk:
                continue  # an empty chunk would mean "end of input" to the parser
            if chunk.__class__ is not bytes:
                chunk = bytes(chunk)  # it may wait in `pending`; the parser would copy it anyway
            if len(chunk) < small:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size < PARSE_BATCH_IN_BYTES:
                    continue
                ready = (b"".join(pending),)
                pending.clear()
                pending_size = 0
            elif pending:  # a large read after small ones: parse both, copy only the small
                ready = (b"".join(pending), chunk)
                pending.clear()
                pending_size = 0
            else:
                ready = (chunk,)
            for data in ready:
                await _parse(parser, data, upload)
        if pending:
            await _parse(parser, b"".join(pending), upload)
        parser.close()  # raises when the closing boundary never came
    except MultipartError as exc:
        upload.abort()
        raise _parser_error(exc) from None
    except BaseException:
        upload.abort()
        raise
    return upload.fields, upload.files
