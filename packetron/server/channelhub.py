"""The channels hub of a worker pool: `server.channels` across worker processes.

Workers share no memory, so a message published in one reaches the others through their
pool process (see packetron.server.supervisor for the process tree). Before forking a
worker the pool makes a UNIX socket pair: the worker keeps one end (its link, driven by
packetron.server.channellink on its event loop), the hub the other. The hub is
synchronous and never blocks: the pool's poll loop hands it readable and writable links.

Each link says which channels its worker has subscribers for; a published message goes
to the other links subscribed to its channel only (the publisher delivers to its own
subscribers itself). A worker that does not read its link fast enough does not slow the
others: past LINK_BUFFER_BYTES queued for it, its oldest messages are dropped with a
logged warning.

Frames on a link (length-prefixed, a 4-byte big-endian length, then one kind byte):
``S name`` subscribe, ``U name`` unsubscribe, ``A name`` the hub has the subscription
(answer to S), ``P len(name):2 name message`` a message (worker to hub, hub to worker).
A hub serves one generation of workers: during a rolling reload the old and the new
generation do not see each other's messages.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from collections import deque

from packetron.errors import FramingError
from packetron.http.channels.codec import MAX_MESSAGE_BYTES, MAX_NAME_BYTES
from packetron.log import worker_logger
from packetron.net.framing import LengthPrefixedFramer
from packetron.server.processes import close_private_fd, register_private_fds

__all__ = ["ChannelHub", "LINK_BUFFER_BYTES", "MAX_LINK_FRAME", "new_framer",
           "publish_frame", "parse_publish", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "PUBLISH"]

SUBSCRIBE, UNSUBSCRIBE, ACK, PUBLISH = b"S", b"U", b"A", b"P"
# The largest frame: a whole message, its channel name and the framing around them.
MAX_LINK_FRAME = MAX_MESSAGE_BYTES + MAX_NAME_BYTES + 16
# Bytes the hub queues for one worker before dropping that worker's oldest messages.
LINK_BUFFER_BYTES = 32 * 1024 * 1024
# Bytes read from one link per poll round, so one busy worker cannot starve the others.
_READ_BUDGET = 1024 * 1024
_READ_SIZE = 256 * 1024
_NAME_LENGTH = struct.Struct(">H")


def new_framer() -> LengthPrefixedFramer:
    return LengthPrefixedFramer(header_size=4, max_frame_size=MAX_LINK_FRAME)


def publish_frame(framer: LengthPrefixedFramer, raw_name: bytes, wire: bytes) -> bytes:
    """A whole ``P`` frame, length prefix included."""
    return framer.encode(b"".join((PUBLISH, _NAME_LENGTH.pack(len(raw_name)), raw_name, wire)))


def parse_publish(frame: bytes) -> tuple[bytes, bytes]:
    """The channel name and message of a ``P`` frame (without its length prefix).

    Raises:
        ValueError: the frame is cut short.
    """
    if len(frame) < 3:
        raise ValueError("short publish frame")
    (length,) = _NAME_LENGTH.unpack_from(frame, 1)
    if len(frame) < 3 + length:
        raise ValueError("short publish frame")
    return frame[3:3 + length], frame[3 + length:]


class _Link:
    __slots__ = ("pid", "fd", "framer", "names", "out", "offset", "queued", "dropped",
                 "warned")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.framer = new_framer()
        self.names: set[bytes] = set()
        self.out: deque[bytes] = deque()
        self.offset = 0   # bytes of out[0] already written
        self.queued = 0   # bytes in out, minus offset
        self.dropped = 0
        self.warned = False


class ChannelHub:
    """Fans channel messages out between the worker links of one pool process."""

    def __init__(self, link_buffer_bytes: int = LINK_BUFFER_BYTES) -> None:
        self._links: dict[int, _Link] = {}       # by fd
        self._by_pid: dict[int, _Link] = {}
        self._by_name: dict[bytes, set[_Link]] = {}
        self._link_buffer_bytes = link_buffer_bytes

    # ------------------------------------------------------------ links

    def open_link(self) -> tuple[int, int]:
        """A socket pair for the next worker (call it just before the fork).

        Returns:
            (hub end, worker end). The hub end is registered as private, so workers
            forked later close it; give the worker end to the child, then close it here
            and `attach` the hub end.
        """
        hub_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        hub_fd, worker_fd = hub_sock.detach(), worker_sock.detach()
        os.set_blocking(hub_fd, False)
        register_private_fds(hub_fd)
        return hub_fd, worker_fd

    def attach(self, pid: int, hub_fd: int) -> None:
        link = _Link(pid, hub_fd)
        self._links[hub_fd] = link
        self._by_pid[pid] = link

    def detach(self, pid: int) -> None:
        """Forget a worker that exited (its link may still hold unread bytes: dropped)."""
        link = self._by_pid.get(pid)
        if link is not None:
            self._drop(link)

    def _drop(self, link: _Link) -> None:
        self._links.pop(link.fd, None)
        self._by_pid.pop(link.pid, None)
        for name in link.names:
            links = self._by_name.get(name)
            if links is not None:
                links.discard(link)
                if not links:
                    del self._by_name[name]
        link.names.clear()
        link.out.clear()
        close_private_fd(link.fd)

    def close(self) -> None:
        for link in list(self._links.values()):
            self._drop(link)

    # ------------------------------------------------------------ polling

    def owns(self, fd: int) -> bool:
        return fd in self._links

    def read_fds(self) -> list[int]:
        return list(self._links)

    def write_fds(self) -> list[int]:
        """Links with bytes waiting to be written."""
        return [fd for fd, link in self._links.items() if link.out]

    def on_readable(self, fd: int) -> None:
        link = self._links.get(fd)
        if link is None:
            return
        budget = _READ_BUDGET
        while budget > 0:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET, errno.EBADF):
                    worker_logger.warning("channels: link of worker %d failed: %s",
                                          link.pid, exc)
                self._drop(link)
                return
            if not data:  # the worker closed its end (it exits)
                self._drop(link)
                return
            budget -= len(data)
            try:
                frames = link.framer.feed(data)
            except FramingError as exc:
                worker_logger.error("channels: worker %d sent a bad frame (%s); "
                                    "dropping its link", link.pid, exc)
                self._drop(link)
                return
            for frame in frames:
                self._on_frame(link, frame)
                if link.fd not in self._links:
                    return

    def on_writable(self, fd: int) -> None:
        link = self._links.get(fd)
        if link is not None:
            self._flush(link)

    # ------------------------------------------------------------ frames

    def _on_frame(self, link: _Link, frame: bytes) -> None:
        kind = frame[:1]
        if kind == PUBLISH:
            try:
                raw_name, _ = parse_publish(frame)
            except ValueError:
                return
            receivers = self._by_name.get(raw_name)
            if not receivers:
                return
            # The frame is forwarded as it came: the same bytes, prefix added once.
            data = link.framer.encode(frame)
            for other in receivers:
                if other is not link:
                    self._send(other, data)
        elif kind == SUBSCRIBE:
            raw_name = frame[1:]
            link.names.add(raw_name)
            self._by_name.setdefault(raw_name, set()).add(link)
            self._send(link, link.framer.encode(ACK + raw_name))
        elif kind == UNSUBSCRIBE:
            raw_name = frame[1:]
            link.names.discard(raw_name)
            links = self._by_name.get(raw_name)
            if links is not None:
                links.discard(link)
                if not links:
                    del self._by_name[raw_name]

    def _send(self, link: _Link, data: bytes) -> None:
        link.out.append(data)
        link.queued += len(data)
        if link.queued > self._link_buffer_bytes:
            self._shed(link)
        if len(link.out) == 1:
            self._flush(link)  # nothing was pending: write now, no poll round needed

    def _shed(self, link: _Link) -> None:
        """Drop the oldest whole messages queued for a link until it is under its cap
        (never the one being written, nor the newest)."""
        out = link.out
        while link.queued > self._link_buffer_bytes and len(out) > 2:
            head = out.popleft()
            dropped = out.popleft()
            out.appendleft(head)
            link.queued -= len(dropped)
            link.dropped += 1
        if not link.warned:
            link.warned = True
            worker_logger.warning("channels: worker %d is not reading its messages; "
                                  "dropping the oldest (over %d bytes queued)", link.pid,
                                  self._link_buffer_bytes)

    def _flush(self, link: _Link) -> None:
        out = link.out
        while out:
            first = out[0]
            try:
                written = os.write(link.fd, memoryview(first)[link.offset:])
            except BlockingIOError:
                return
            except OSError:
                self._drop(link)
                return
            link.queued -= written
            link.offset += written
            if link.offset < len(first):
                return
            out.popleft()
            link.offset = 0
        link.warned = False  # caught up: warn again at the next backlog
