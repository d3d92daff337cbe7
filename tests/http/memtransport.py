"""The one in-memory transport the protocol unit tests drive HttpProtocol with.

It records what the protocol writes, tells it to pause writing above `high` buffered bytes
(as asyncio and uvloop transports do) until the test's client "reads", remembers whether
reading is paused, and never touches a socket or the clock: timeouts are driven by the
test calling `state.tick(now)` / `protocol.check_timeouts(now)` with the time it chooses.
"""
from __future__ import annotations

import asyncio
from typing import Any

DEFAULT_HIGH = 64 * 1024


class MemoryTransport(asyncio.Transport):
    """Args:
        protocol: told pause_writing()/resume_writing(); None for a transport that never
            pauses (high is then ignored).
        high: the write buffer's high-water mark; None: never pause.
    """

    def __init__(self, protocol: asyncio.Protocol | None = None,
                 high: int | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.high = high
        self.buffered = bytearray()   # written, not yet read by the client
        self.delivered = bytearray()  # read by the client
        self.write_paused = False
        self.reading = True
        self.closed = False
        self.eof_written = False

    @property
    def out(self) -> bytes:
        """Everything the protocol wrote, read or not."""
        return bytes(self.delivered + self.buffered)

    def write(self, data: Any) -> None:
        self.buffered += data
        if (self.protocol is not None and self.high is not None and not self.write_paused
                and len(self.buffered) > self.high):
            self.write_paused = True
            self.protocol.pause_writing()

    def client_reads(self) -> None:
        """The client takes everything buffered; a paused protocol may write again."""
        self.delivered += self.buffered
        self.buffered.clear()
        if self.write_paused and self.protocol is not None:
            self.write_paused = False
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return len(self.buffered)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        high = self.high if self.high is not None else DEFAULT_HIGH
        return high // 4, high
