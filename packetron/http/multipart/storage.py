"""Where uploaded files go: safe stored names, and writes that keep pace with the disk.

Stored names are sanitized and carry a random token, so a client's filename never
chooses a directory or an existing file. File data is gathered into WRITE_SIZE_IN_BYTES
pieces and written before the parser goes on (backpressure): in the event loop while the
disk keeps up, else (after one write slower than SLOW_WRITE_SECONDS) in a worker thread,
one write in flight per upload, for THREADED_WRITES_SECONDS.
"""
from __future__ import annotations

import asyncio
import errno
import os
import secrets
import tempfile
import time

from packetron.errors import HttpError, InsufficientStorage, ServiceUnavailable
from packetron.log import server_logger

__all__ = [
    "default_storage_directory", "sanitize_filename", "storage_name", "STORAGE_SUBDIRECTORY",
    "WRITE_SIZE_IN_BYTES", "SLOW_WRITE_SECONDS", "THREADED_WRITES_SECONDS",
    "STORAGE_WARNING_INTERVAL_SECONDS",
]

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
STORAGE_SUBDIRECTORY = os.path.join(".packetroninternal", "files")

_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_MAX_STORED_NAME_CHARS = 64


def default_storage_directory() -> str:
    """`<tempdir>/.packetroninternal/files`, read at call time (TMPDIR may change)."""
    return os.path.join(tempfile.gettempdir(), STORAGE_SUBDIRECTORY)


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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# errno values that mean "no room": the disk is full, or the user's quota is spent.
_NO_ROOM = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
# errno values that mean "no file descriptor or memory for one now": retry later.
_NO_DESCRIPTOR = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# A full disk fails every upload at once; one warning per this many seconds says so.
STORAGE_WARNING_INTERVAL_SECONDS = 10.0


class _Warnings:
    """Rate limit for the storage warning: at most one line per interval per process,
    with how many uploads failed since the last one (HttpErrors are not logged by the
    error boundary, and an operator must learn that the disk is full)."""

    __slots__ = ("last", "suppressed")

    def __init__(self) -> None:
        self.last = -STORAGE_WARNING_INTERVAL_SECONDS
        self.suppressed = 0

    def warn(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self.last < STORAGE_WARNING_INTERVAL_SECONDS:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last warning)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        server_logger.warning("an upload could not be stored: %s%s", exc, more)


_warnings = _Warnings()


def _storage_error(exc: OSError) -> HttpError:
    """The answer to an upload whose file could not be created or written.

    507 InsufficientStorage when the disk (or quota) is full, 503 ServiceUnavailable when
    no file descriptor was left (both pass once the operator has made room), else 500.
    """
    _warnings.warn(exc)
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _NO_ROOM:
        return InsufficientStorage(f"could not store the uploaded file: {reason}")
    if exc.errno in _NO_DESCRIPTOR:
        return ServiceUnavailable(f"could not store the uploaded file: {reason}",
                                  headers=[("Retry-After", "1")])
    return HttpError(f"could not store the uploaded file: {reason}", status_code=500)
