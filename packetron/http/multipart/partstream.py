"""PartStream: the body of one file part, as an async iterator for `on_file`."""
from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["PartStream", "ON_FILE_HIGH_WATER_IN_BYTES"]

# on_file streams: the parser waits while this much is queued and not yet consumed.
ON_FILE_HIGH_WATER_IN_BYTES = 64 * 1024


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
