"""Sending a file range on an asyncio transport: zero-copy os.sendfile where possible.

uvloop's loop.sendfile is not implemented, so the socket is written directly, but only
while the transport's own buffer is empty (so bytes never overtake it); TLS transports,
and sockets that would block, fall back to copying with backpressure.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, BinaryIO, Callable, Coroutine

from packetron.errors import ConnectionClosed

__all__ = ["send_file_range", "SENDFILE_COPY_CHUNK"]

# send() flag asking the kernel to hold a response head for the file that follows (Linux);
# elsewhere the head simply leaves on its own.
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
# Piece size when a file must be copied through user space (TLS, a full socket buffer).
SENDFILE_COPY_CHUNK = 256 * 1024


async def send_file_range(transport: asyncio.Transport, write: Callable[[bytes], None],
                          drain: Callable[[], Coroutine[Any, Any, None]],
                          file: BinaryIO | int, offset: int, count: int,
                          head: bytes = b"") -> None:
    """Write `head`, then `count` bytes of a file from `offset`: zero-copy os.sendfile
    when possible.

    uvloop's loop.sendfile is not implemented, so the socket is written directly, but
    only while the transport's own buffer is empty (so bytes never overtake it); TLS
    transports, and sockets that would block, fall back to copying with backpressure.
    On the zero-copy path `head` is sent with MSG_MORE, so the kernel joins it to the
    file's first bytes.

    Raises:
        ConnectionClosed: the client left, or the file is shorter than announced.
    """
    in_fd = file if isinstance(file, int) else file.fileno()
    sock = transport.get_extra_info("socket")
    zero_copy = sock is not None and transport.get_extra_info("sslcontext") is None
    if head:
        sent = 0
        if zero_copy and not transport.is_closing() and transport.get_write_buffer_size() == 0:
            # The transport's socket object offers no send(); borrow its descriptor.
            raw = socket.socket(sock.family, sock.type, 0, sock.fileno())
            if raw.gettimeout() is not None:  # socket.setdefaulttimeout() was used
                raw.setblocking(False)  # never wait inside the event loop
            try:
                sent = raw.send(head, _MSG_MORE)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                raise ConnectionClosed(f"send failed: {exc}") from exc
            finally:
                raw.detach()  # the descriptor stays the transport's
        if sent < len(head):
            write(head[sent:])  # then the file follows through the buffer, in order
    end = offset + count
    low, high = transport.get_write_buffer_limits()
    if zero_copy:
        # With a high-water mark of 0, drain() returns only once the buffer is empty
        # again, which is when os.sendfile may take over from the copies.
        transport.set_write_buffer_limits(high=0)
    try:
        while offset < end:
            if transport.is_closing():
                raise ConnectionClosed("the client closed the connection")
            if zero_copy and transport.get_write_buffer_size() == 0:
                try:
                    sent = os.sendfile(sock.fileno(), in_fd, offset, end - offset)
                except BlockingIOError:
                    sent = -1
                except OSError as exc:
                    raise ConnectionClosed(f"sendfile failed: {exc}") from exc
                if sent == 0:
                    raise ConnectionClosed("file ended before the announced length")
                if sent > 0:
                    offset += sent
                    continue
            chunk = os.pread(in_fd, min(end - offset, SENDFILE_COPY_CHUNK), offset)
            if not chunk:
                raise ConnectionClosed("file ended before the announced length")
            write(chunk)
            offset += len(chunk)
            await drain()
    finally:
        if zero_copy and not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)
