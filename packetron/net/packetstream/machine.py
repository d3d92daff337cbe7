"""The packet-stream protocol state of one session, sans-I/O.

`PacketStreamMachine` knows request numbering, which requests and substreams are open,
half-closed stream ends, closing and GOODBYE, following packet-stream 2.0.6 (see
PACKET-STREAM.md §3). Bytes go in through `receive_data`, which reports each packet
through callbacks (no event objects on the hot path, as httptools does); every
`send_*` method returns the bytes to write. No loop, socket or clock: the async
driver is `packetstream.session.PacketStream`; the bytes are `packetstream.codec`'s.
"""
from __future__ import annotations

from typing import Any, Protocol

from packetron.errors import ConnectionClosed, RpcError
from packetron.net.packetstream.codec import (
    DEFAULT_MAX_BODY_SIZE,
    GOODBYE,
    GOODBYE_BYTES,
    MAX_REQ,
    PacketDecoder,
    encode_packet,
)

__all__ = ["PacketStreamMachine", "MachineHandler"]


class MachineHandler(Protocol):
    """Callbacks a PacketStreamMachine reports to; all are called from receive_data."""

    def on_message(self, value: Any) -> None: ...
    def on_request(self, req: int, value: Any) -> None: ...
    def on_response(self, req: int, value: Any, is_error: bool) -> None: ...
    def on_stream_open(self, key: int) -> None: ...
    def on_stream_data(self, key: int, value: Any) -> None: ...
    def on_stream_end(self, key: int, value: Any, is_error: bool) -> None: ...
    def on_goodbye(self) -> None: ...


# Substream state bits.
_READ_END = 1
_WRITE_END = 2


class PacketStreamMachine:
    """Protocol state of one packet-stream session (sans-I/O).

    Substreams are identified by their *key*: the request number this side writes
    with, so a stream we opened has key +n and one the peer opened has key -n.

    Args:
        handler: receives the callbacks (see MachineHandler).
        max_body_size: largest packet body accepted (see PacketDecoder).
    """

    __slots__ = ("_handler", "_decoder", "_next_id", "pending", "streams", "unanswered",
                 "closing", "goodbye_sent", "goodbye_received", "destroyed")

    def __init__(self, handler: MachineHandler, max_body_size: int = DEFAULT_MAX_BODY_SIZE
                 ) -> None:
        self._handler = handler
        self._decoder = PacketDecoder(max_body_size)
        self._decoder._raw = True
        self._next_id = 1
        #: our request numbers still waiting for an answer
        self.pending: set[int] = set()
        #: open substreams: key -> _READ_END / _WRITE_END bits already set
        self.streams: dict[int, int] = {}
        #: the peer's request numbers we have not answered yet -> how many times asked
        self.unanswered: dict[int, int] = {}
        self.closing = False
        self.goodbye_sent = False
        self.goodbye_received = False
        #: destroy() ran: nothing more is dispatched
        self.destroyed = False

    # ------------------------------------------------------------ state

    @property
    def idle(self) -> bool:
        """No request, answer or substream is in flight."""
        return not (self.pending or self.streams or self.unanswered)

    @property
    def goodbye_due(self) -> bool:
        """close() was asked for, everything finished, and GOODBYE is still unsent."""
        return self.closing and not self.goodbye_sent and self.idle

    def _take_id(self) -> int:
        rid = self._next_id
        nxt = rid + 1
        if nxt > MAX_REQ:
            nxt = 1
        # After a wrap, skip numbers still in use (never two live calls with one id).
        while nxt in self.pending or nxt in self.streams:
            nxt = nxt + 1 if nxt < MAX_REQ else 1
        self._next_id = nxt
        return rid

    # ------------------------------------------------------------ outgoing

    def send_message(self, value: Any) -> bytes:
        """Bytes of a one-way message (req 0)."""
        return encode_packet(0, value)

    def send_request(self, value: Any) -> tuple[int, bytes]:
        """Number and bytes of a new request.

        Raises:
            ConnectionClosed: close() was called or the session has ended.
        """
        if self.closing or self.goodbye_sent or self.goodbye_received:
            raise ConnectionClosed("parent stream is closing")
        rid = self._take_id()
        data = encode_packet(rid, value)  # may raise TypeError: nothing registered yet
        self.pending.add(rid)
        return rid, data

    def forget_request(self, rid: int) -> None:
        """Stop waiting for request rid (timed out); a late answer is then dropped."""
        self.pending.discard(rid)

    def send_response(self, req: int, value: Any, is_error: bool = False) -> bytes:
        """Bytes of the answer to the peer's request req (b"" once the session is over)."""
        count = self.unanswered.get(req)
        if count is not None:
            if count > 1:
                self.unanswered[req] = count - 1
            else:
                del self.unanswered[req]
        if self.goodbye_sent or self.goodbye_received:
            return b""
        return encode_packet(-req, value, end=is_error)

    def open_stream(self) -> int:
        """Key of a new substream; nothing is sent until its first write.

        Raises:
            ConnectionClosed: close() was called or the session has ended.
        """
        if self.closing or self.goodbye_sent or self.goodbye_received:
            raise ConnectionClosed("parent stream is closing")
        rid = self._take_id()
        self.streams[rid] = 0
        return rid

    def send_stream_data(self, key: int, value: Any) -> bytes:
        """Bytes of one chunk on substream key.

        Raises:
            RpcError: this side already ended the stream.
            ConnectionClosed: the stream or session is gone.
        """
        state = self.streams.get(key)
        if state is None:
            raise ConnectionClosed("stream is closed")
        if state & _WRITE_END:
            raise RpcError("write after end on a packet-stream substream")
        return encode_packet(key, value, stream=True)

    def send_stream_end(self, key: int, value: Any = True, is_error: bool = False) -> bytes:
        """Bytes that end this side of substream key (value True is a clean end).

        Returns b"" if this side had already ended it or the stream is gone.
        """
        state = self.streams.get(key)
        if state is None or state & _WRITE_END:
            return b""
        state |= _WRITE_END
        if state & _READ_END:
            del self.streams[key]
        else:
            self.streams[key] = state
        return encode_packet(key, value, stream=True, end=True)

    def send_goodbye(self) -> bytes:
        """GOODBYE (nine zero bytes) the first time, b"" after."""
        if self.goodbye_sent:
            return b""
        self.goodbye_sent = True
        self.closing = True
        return GOODBYE_BYTES

    def start_close(self) -> None:
        """No new requests or streams; GOODBYE is due once idle (see goodbye_due)."""
        self.closing = True

    def destroy(self) -> tuple[list[int], list[int]]:
        """End the session under everything still open.

        Returns:
            (pending request numbers, open substream keys), now forgotten.
        """
        self.closing = True
        self.destroyed = True
        pending = list(self.pending)
        keys = list(self.streams)
        self.pending.clear()
        self.streams.clear()
        self.unanswered.clear()
        return pending, keys

    # ------------------------------------------------------------ incoming

    def receive_data(self, data: bytes) -> None:
        """Decode bytes and report each packet to the handler.

        Raises:
            FramingError: the peer broke the codec (FrameTooLarge, type 3, bad JSON).
        """
        h = self._handler
        for pkt in self._decoder.feed(data):
            if pkt is GOODBYE:
                self.goodbye_received = True
                self.closing = True
                h.on_goodbye()
                return
            if self.goodbye_sent or self.destroyed:
                continue  # the session is over for us; only the peer's GOODBYE matters
            req, stream, end, value = pkt  # type: ignore[misc]
            if req == 0:
                h.on_message(value)
            elif not stream:
                if req > 0:
                    self.unanswered[req] = self.unanswered.get(req, 0) + 1
                    h.on_request(req, value)
                elif -req in self.pending:
                    self.pending.discard(-req)
                    h.on_response(-req, value, bool(end))
                # else: an answer nobody waits for (timed out, or never asked): dropped.
            else:
                self._on_stream_packet(req, bool(end), value)

    def _on_stream_packet(self, req: int, end: bool, value: Any) -> None:
        h = self._handler
        key = -req  # the number we write with on this stream
        state = self.streams.get(key)
        if state is None:
            if req < 0:
                return  # data for a stream of ours that is gone: dropped (Node logs it)
            state = self.streams[key] = 0
            h.on_stream_open(key)
            if key not in self.streams:
                return  # the handler ended/destroyed it already
            state = self.streams[key]
        if not end:
            if not state & _READ_END:
                h.on_stream_data(key, value)
            return
        if state & _READ_END:
            return
        state |= _READ_END
        if state & _WRITE_END:
            del self.streams[key]
        else:
            self.streams[key] = state
        h.on_stream_end(key, value, value is not True)
