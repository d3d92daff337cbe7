"""The writing half of Connection: write, send, drain, half-close, and the buffer limits.

`StreamWriting` is a mixin, like `reading.StreamReading`: Connection supplies the
transport, the state and the drain waiters; this module holds the methods that queue
outgoing bytes and the outbound flow control. The transport calls
`pause_writing()` / `resume_writing()` (Connection's protocol methods) at the marks set
here: `warn_buffer_bytes` high, a quarter of it low. Both limits may change while the
connection is open; the transport gets the new marks at once.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from packetron.errors import BufferFull, ConfigError, ConnectionClosed

__all__ = [
    "StreamWriting",
    "ConnectionState",
    "check_buffer_limits",
    "DEFAULT_WARN_BUFFER_BYTES",
    "DEFAULT_MAX_BUFFER_BYTES",
]

# Outgoing buffer: the same defaults as FramingSocket, so a Connection handed to the RPC
# layer behaves the same way.
DEFAULT_WARN_BUFFER_BYTES = 512 * 1024
DEFAULT_MAX_BUFFER_BYTES = 1024 * 1024

ConnectionState = Literal["open", "closing", "closed"]

# Compared with `is` on the per-write path: every module uses these very objects.
OPEN: ConnectionState = "open"
CLOSING: ConnectionState = "closing"
CLOSED: ConnectionState = "closed"


def check_buffer_limits(warn_buffer_bytes: int, max_buffer_bytes: int | None) -> None:
    """Validate a pair of outgoing buffer limits (see Connection).

    Raises:
        ConfigError: warn is not a positive int, or max is neither None nor an int
            >= warn.
    """
    if isinstance(warn_buffer_bytes, bool) or not isinstance(warn_buffer_bytes, int) \
            or warn_buffer_bytes <= 0:
        raise ConfigError(
            f"warn_buffer_bytes must be a positive int, got {warn_buffer_bytes!r}"
        )
    if max_buffer_bytes is not None and (
        isinstance(max_buffer_bytes, bool) or not isinstance(max_buffer_bytes, int)
        or max_buffer_bytes < warn_buffer_bytes
    ):
        raise ConfigError(
            f"max_buffer_bytes must be None or an int >= warn_buffer_bytes "
            f"({warn_buffer_bytes}), got {max_buffer_bytes!r}"
        )


class StreamWriting:
    """Write methods of Connection (see there); needs the attributes Connection defines."""

    if TYPE_CHECKING:
        # Declared for the type checker only: at run time the slots are Connection's.
        _warn_buffer_bytes: int
        _max_buffer_bytes: int | None
        _transport: Any
        _loop: asyncio.AbstractEventLoop | None
        _state: ConnectionState
        _eof: bool
        _wrote_eof: bool
        _write_paused: bool
        _drain_waiters: list[asyncio.Future[None]] | None
        _idle_handle: asyncio.TimerHandle | None
        _last_activity: float

        def close(self) -> None: ...
        def _is_tls(self) -> bool: ...
    else:
        __slots__ = ()

    # ------------------------------------------------------------ limits

    @property
    def warn_buffer_bytes(self) -> int:
        """High watermark of the outgoing buffer: "pause" above it, `send()` False.

        Setting it applies at once: the transport gets the new marks (this value, and a
        quarter of it for "resume"), and a buffer already above the new mark pauses now.

        Raises:
            ConfigError (on set): not a positive int, or above max_buffer_bytes (raise
                that first, or use set_buffer_limits()).
        """
        return self._warn_buffer_bytes

    @warn_buffer_bytes.setter
    def warn_buffer_bytes(self, value: int) -> None:
        self.set_buffer_limits(value, self._max_buffer_bytes)

    @property
    def max_buffer_bytes(self) -> int | None:
        """Above this many buffered bytes `write()`/`send()` raise BufferFull; None: no limit.

        Setting it applies to the next write.

        Raises:
            ConfigError (on set): neither None nor an int >= warn_buffer_bytes.
        """
        return self._max_buffer_bytes

    @max_buffer_bytes.setter
    def max_buffer_bytes(self, value: int | None) -> None:
        self.set_buffer_limits(self._warn_buffer_bytes, value)

    def set_buffer_limits(self, warn_buffer_bytes: int, max_buffer_bytes: int | None) -> None:
        """Change both outgoing buffer limits at once (see the two properties).

        Raises:
            ConfigError: as the constructor for the same values; nothing changes.
        """
        check_buffer_limits(warn_buffer_bytes, max_buffer_bytes)
        self._warn_buffer_bytes = int(warn_buffer_bytes)
        self._max_buffer_bytes = None if max_buffer_bytes is None else int(max_buffer_bytes)
        t = self._transport
        if t is not None and self._state is not CLOSED:
            # The transport compares its buffer with these marks after every write and
            # calls pause_writing() at once if it is already above the new high one.
            warn = self._warn_buffer_bytes
            t.set_write_buffer_limits(warn, warn // 4)

    # ------------------------------------------------------------ writing

    @property
    def buffered_amount(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        t = self._transport
        if t is None or self._state is CLOSED:
            return 0
        return t.get_write_buffer_size()  # type: ignore[no-any-return]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for sending.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            BufferFull: more than max_buffer_bytes are already waiting to be sent.
        """
        t = self._transport
        if self._state is not OPEN or t is None:
            raise ConnectionClosed(f"cannot write: connection is {self._state}")
        limit = self._max_buffer_bytes
        if limit is not None and t.get_write_buffer_size() > limit:
            raise BufferFull(
                f"{t.get_write_buffer_size()} bytes already buffered (max_buffer_bytes={limit})"
            )
        if self._idle_handle is not None:
            self._last_activity = self._loop.time()  # type: ignore[union-attr]
        t.write(data)

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        """Queue bytes for sending, Node style.

        Returns:
            True while the outgoing buffer is below warn_buffer_bytes; False once it went
            above (a "drain" event follows when it has emptied down to a quarter).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            BufferFull: more than max_buffer_bytes are already waiting to be sent.
        """
        self.write(data)
        return not self._write_paused

    def writelines(self, chunks: list[bytes]) -> None:
        """write() each chunk (one buffer check, one transport call)."""
        self.write(b"".join(chunks))

    def write_eof(self) -> None:
        """Half-close: send EOF after the buffered bytes; reading goes on.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        t = self._transport
        if self._state is not OPEN or t is None:
            raise ConnectionClosed(f"cannot write_eof: connection is {self._state}")
        if self._wrote_eof:
            return
        self._wrote_eof = True
        if self._is_tls() or not t.can_write_eof():
            self.close()
        elif self._eof:
            self.close()  # the peer is done too: a full close
        else:
            t.write_eof()

    async def drain(self) -> None:
        """Wait until the outgoing buffer is below the low watermark.

        Raises:
            ConnectionClosed: the connection closed before (or while) draining.
        """
        if self._state is CLOSED:
            raise ConnectionClosed("cannot drain: connection is closed")
        if not self._write_paused:
            return
        fut = self._loop.create_future()  # type: ignore[union-attr]
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(fut)
        try:
            await fut
        finally:
            if self._drain_waiters is not None and fut in self._drain_waiters:
                self._drain_waiters.remove(fut)

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        if not waiters:
            return
        for fut in waiters:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
