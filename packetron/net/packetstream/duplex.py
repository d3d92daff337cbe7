"""DuplexStream: one packet-stream substream, as the application sees it.

The session (`session.PacketStream`) creates them, feeds what the peer sends through
`_push` / `_finish`, and writes what the application sends; a stream only keeps its
received chunks and its two end flags.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from packetron.errors import ConnectionClosed, RpcError
from packetron.net.packetstream.errorobjects import error_payload

if TYPE_CHECKING:
    from packetron.net.packetstream.session import PacketStream

__all__ = ["DuplexStream"]

_EOF = object()


class DuplexStream:
    """One packet-stream substream: write chunks, end, and read with ``async for``.

    Both directions end on their own: `end()` closes what this side writes, and the
    iteration stops when the peer ends its side. A peer's error end makes the
    iteration raise RemoteError (after the chunks sent before it); a session that
    ends under the stream makes it raise ConnectionClosed. Received chunks are
    buffered without limit (packet-stream has no per-stream flow control).
    """

    __slots__ = ("id", "_ps", "_queue", "_waiter", "_read_end", "_error", "_write_ended")

    def __init__(self, ps: PacketStream, key: int) -> None:
        #: the request number this side writes with (+n: we opened it, -n: the peer did)
        self.id = key
        self._ps = ps
        self._queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._read_end = False
        self._error: BaseException | None = None
        self._write_ended = False

    @property
    def error(self) -> BaseException | None:
        """Why the read side ended abnormally (RemoteError, ConnectionClosed), else None."""
        return self._error

    @property
    def read_ended(self) -> bool:
        """The peer has ended its side (or the session is gone)."""
        return self._read_end

    @property
    def write_ended(self) -> bool:
        """This side has ended (end() was called, or the session is gone)."""
        return self._write_ended

    def write(self, value: Any) -> None:
        """Send one chunk (bytes, str or any JSON value).

        Raises:
            RpcError: end() was already called.
            ConnectionClosed: the session is over.
            BufferFull: the connection's outgoing buffer is over max_buffer_bytes.
        """
        if self._ps._finished:
            raise ConnectionClosed("packet stream is closed")
        if self._write_ended:
            raise RpcError("write after end on a packet-stream substream")
        ps = self._ps
        ps._check_buffer()
        ps._send(ps._machine.send_stream_data(self.id, value))

    def end(self, err: BaseException | dict[str, Any] | None = None) -> None:
        """End this side: cleanly (JSON ``true``), or with an error object.

        Calling it again does nothing.
        """
        if self._write_ended:
            return
        self._write_ended = True
        ps = self._ps
        if err is None:
            data = ps._machine.send_stream_end(self.id, True)
        else:
            data = ps._machine.send_stream_end(
                self.id, error_payload(err, include_stack=ps.include_stack), True)
        ps._send(data)
        ps._stream_maybe_done(self)

    async def read(self) -> Any:
        """The next chunk.

        Raises:
            StopAsyncIteration: the peer ended its side cleanly.
            RemoteError: the peer ended it with an error.
            ConnectionClosed: the session ended first.
        """
        return await self.__anext__()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._queue:
                item = self._queue.popleft()
                if item is _EOF:
                    self._queue.appendleft(_EOF)  # keep ending on later calls too
                    if self._error is not None:
                        raise self._error
                    raise StopAsyncIteration
                return item
            if self._read_end:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            fut = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self._waiter = None

    # -- driver side

    def _push(self, value: Any) -> None:
        self._queue.append(value)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self, error: BaseException | None) -> None:
        if self._read_end:
            return
        self._read_end = True
        self._error = error
        self._push(_EOF)

    def __repr__(self) -> str:
        return (f"<DuplexStream id={self.id} read_ended={self._read_end} "
                f"write_ended={self._write_ended}>")
