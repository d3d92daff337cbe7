"""The reading half of Connection: coroutines that take bytes from the receive buffer.

`StreamReading` is a mixin: Connection supplies the buffer (`_rbuf`), the EOF flag, the
waiter future and the transport; this module holds the read methods and the inbound
flow control (pause the transport above READ_HIGH_WATER_BYTES unread, resume at the low
mark).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from packetron.errors import (
    ConnectionClosed,
    ConnectionModeError,
    FramingError,
    FrameTooLarge,
    IncompleteRead,
)

__all__ = [
    "StreamReading",
    "Framer",
    "READ_HIGH_WATER_BYTES",
    "READ_LOW_WATER_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
]

# Reading pauses once this many received bytes wait unread: the 64 KiB high-water mark
# uvicorn uses (protocols/http/flow_control.py). A slow reader then costs at most this
# much memory; the peer is held back by TCP itself.
READ_HIGH_WATER_BYTES = 64 * 1024
# Reading resumes once the reader has taken the buffer down to a quarter, the same
# high/low ratio asyncio uses for its write buffer.
READ_LOW_WATER_BYTES = READ_HIGH_WATER_BYTES // 4
# readline() refuses longer lines (LineFramer's default maximum too).
DEFAULT_MAX_LINE_BYTES = 64 * 1024

# Which consumer a connection has committed to.
MODE_NONE, MODE_READ, MODE_MESSAGE = 0, 1, 2


class Framer(Protocol):
    """What `Connection.frames` needs: a sans-I/O decoder fed with bytes."""

    def feed(self, data: bytes) -> list[Any]: ...


class StreamReading:
    """Read methods of Connection (see there); needs the attributes Connection defines."""

    if TYPE_CHECKING:
        # Declared for the type checker only: at run time the slots are Connection's.
        _rbuf: bytearray
        _eof: bool
        _waiter: asyncio.Future[None] | None
        _read_paused: bool
        _held: bool
        _mode: int
        _state: str
        _transport: Any
        _loop: asyncio.AbstractEventLoop | None

        def abort(self) -> None: ...
    else:
        __slots__ = ()

    def _enter_read_mode(self) -> None:
        if self._mode == MODE_MESSAGE:
            raise ConnectionModeError(
                "this connection delivers 'message' events; it cannot also be read with "
                "read()/readline()/async for"
            )
        self._mode = MODE_READ

    def _resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            if self._state != "closed" and self._transport is not None and not self._held:
                self._transport.resume_reading()

    async def _wait_for_data(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already reading from this connection")
        if self._transport is None:
            raise ConnectionClosed("connection is not connected")
        # The reader needs more than is buffered: let bytes in even above the high mark.
        self._resume_reading()
        self._waiter = self._loop.create_future()  # type: ignore[union-attr]
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _take(self, n: int) -> bytes:
        buf = self._rbuf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        if self._read_paused and len(buf) <= READ_LOW_WATER_BYTES:
            self._resume_reading()
        return data

    async def read(self, n: int = -1) -> bytes:
        """Read up to n bytes; n < 0 reads until EOF.

        Returns:
            The bytes read; b"" only at EOF (or for n == 0).

        Raises:
            ConnectionModeError: the connection has "message" listeners.
        """
        self._enter_read_mode()
        if n == 0:
            return b""
        if n < 0:
            while not self._eof:
                await self._wait_for_data()
            return self._take(len(self._rbuf))
        if not self._rbuf and not self._eof:
            await self._wait_for_data()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Read exactly n bytes.

        Raises:
            IncompleteRead: EOF came first (a ConnectionClosed and an EOFError, with
                `.partial` and `.expected` like asyncio.IncompleteReadError).
            ConnectionModeError: the connection has "message" listeners.
        """
        self._enter_read_mode()
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._rbuf) < n:
            if self._eof:
                partial = self._take(len(self._rbuf))
                raise IncompleteRead(partial, n)
            await self._wait_for_data()
        return self._take(n)

    async def readline(self, *, max_size: int = DEFAULT_MAX_LINE_BYTES) -> bytes:
        """Read one line, up to and including b"\\n".

        Returns:
            The line; at EOF the remaining bytes without newline, then b"".

        Raises:
            FrameTooLarge: no newline within max_size bytes (they stay buffered).
            ConnectionModeError: the connection has "message" listeners.
        """
        self._enter_read_mode()
        start = 0
        while True:
            idx = self._rbuf.find(b"\n", start)
            if idx >= 0:
                if idx + 1 > max_size:
                    raise FrameTooLarge(f"line longer than {max_size} bytes")
                return self._take(idx + 1)
            if len(self._rbuf) > max_size:
                raise FrameTooLarge(f"line longer than {max_size} bytes")
            if self._eof:
                return self._take(len(self._rbuf))
            start = len(self._rbuf)
            await self._wait_for_data()

    async def _read_chunk(self) -> bytes:
        while not self._rbuf:
            if self._eof:
                return b""
            await self._wait_for_data()
        return self._take(len(self._rbuf))

    def __aiter__(self) -> StreamReading:
        self._enter_read_mode()
        return self

    async def __anext__(self) -> bytes:
        """Each chunk as buffered (whatever arrived since the last one); stops at EOF."""
        chunk = await self._read_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def frames(self, framer: Framer) -> AsyncIterator[Any]:
        """Yield the frames `framer.feed()` makes of the stream, until EOF.

        Raises:
            FramingError: (FrameTooLarge among them) from the framer; the connection is
                closed first, since the stream can no longer be trusted.
            ConnectionModeError: the connection has "message" listeners.
        """
        self._enter_read_mode()
        while True:
            chunk = await self._read_chunk()
            if not chunk:
                return
            try:
                frames = framer.feed(chunk)
            except FramingError:
                self.abort()
                raise
            for frame in frames:
                yield frame
