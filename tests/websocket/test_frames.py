"""The frame codec (packetron.http.websocket.frames), sans-I/O: a client's frames in, fed
whole, byte by byte and split at every boundary; the server's frames out, read back by
wsproto as an independent client."""
from __future__ import annotations

import ast
import os
import pathlib
import random
import tracemalloc
import zlib
from typing import Any, Iterable

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from rawws import frame as raw_frame
from rawws import mask_bytes
from wshelp import Recorder

from packetron.http.websocket import frames
from packetron.http.websocket.extensions import (DeflateParams, Deflater, Inflater,
                                                 negotiate_deflate)
from packetron.http.websocket.frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING,
                                             OP_PONG, OP_TEXT, FrameReader, binary_frame,
                                             encode_close, encode_frame, text_frame, unmask)

KEY = b"\x37\xfa\x21\x3d"
MiB = 1024 * 1024


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
                 mask: bool = True, key: bytes = KEY, length: int | None = None) -> bytes:
    """One client frame, exactly as given (invalid ones included), masked with `key`."""
    return raw_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length=length, key=key)


def read(data: bytes | Iterable[bytes], max_message_size: int = MiB,
         inflater: Inflater | None = None) -> tuple[list[tuple[str, Any]], FrameReader]:
    recorder = Recorder()
    reader = FrameReader(recorder, max_message_size, inflater)
    for piece in ([data] if isinstance(data, bytes) else data):
        reader.feed(piece)
    return recorder.heard, reader


def heard(data: bytes, **kwargs: Any) -> list[tuple[str, Any]]:
    """What `data` makes the reader report, the same fed whole and one byte at a time."""
    whole, _ = read(data, **kwargs)
    bytewise, _ = read([data[i:i + 1] for i in range(len(data))], **kwargs)
    assert bytewise == whole
    return whole


def violation(data: bytes, **kwargs: Any) -> int:
    events = heard(data, **kwargs)
    assert events[-1][0] == "violation", events
    return int(events[-1][1])


# ------------------------------------------------------------------ unmasking

@pytest.mark.parametrize("size", [*range(0, 140), 255, 256, 1000, 2047, 2048, 16383, 16384,
                                  65536 + 3])
def test_unmask_matches_the_reference(size: int) -> None:
    rng = random.Random(size)
    payload = rng.randbytes(size)
    key = rng.randbytes(4)
    assert unmask(payload, key) == mask_bytes(payload, key)
    assert unmask(unmask(payload, key), key) == payload


def test_unmask_a_mebibyte() -> None:
    payload = os.urandom(MiB)
    key = b"\x00\xff\x80\x01"
    assert unmask(payload, key) == mask_bytes(payload, key)


# ------------------------------------------------------------------ messages

def test_text_and_binary_messages() -> None:
    data = client_frame(OP_TEXT, "héllo ✓".encode()) + client_frame(OP_BINARY, b"\x00\xff") \
        + client_frame(OP_TEXT) + client_frame(OP_BINARY)
    assert heard(data) == [("message", "héllo ✓"), ("message", b"\x00\xff"),
                           ("message", ""), ("message", b"")]


@pytest.mark.parametrize("size", [125, 126, 127, 65535, 65536, 70000])
def test_7_16_and_64_bit_lengths(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    data = client_frame(OP_BINARY, payload)
    expected_head = 6 if size < 126 else 8 if size < 65536 else 14
    assert len(data) == expected_head + size
    assert read(data)[0] == [("message", payload)]
    assert heard(client_frame(OP_TEXT, b"a" * size)) == [("message", "a" * size)]


def test_a_mebibyte_message_whole_in_pieces_and_in_fragments() -> None:
    payload = os.urandom(MiB)
    single = client_frame(OP_BINARY, payload)
    assert read(single)[0] == [("message", payload)]
    pieces = [single[i:i + 65536] for i in range(0, len(single), 65536)]
    assert read(pieces)[0] == [("message", payload)]
    quarter = MiB // 4
    fragments = b"".join(client_frame(OP_BINARY if i == 0 else OP_CONTINUATION,
                                      payload[i * quarter:(i + 1) * quarter], fin=i == 3)
                         for i in range(4))
    assert read([fragments[i:i + 4096] for i in range(0, len(fragments), 4096)])[0] \
        == [("message", payload)]
    text = "ü" * (MiB // 2)  # 1 MiB of UTF-8
    assert read(client_frame(OP_TEXT, text.encode()))[0] == [("message", text)]


def test_a_message_dribbled_a_byte_at_a_time_costs_about_its_size() -> None:
    size = 64 * 1024
    data = client_frame(OP_TEXT, b"x" * size, fin=False) + client_frame(OP_CONTINUATION)
    recorder = Recorder()
    reader = FrameReader(recorder, MiB)
    tracemalloc.start()
    try:
        for index in range(len(data)):
            reader.feed(data[index:index + 1])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert recorder.heard == [("message", "x" * size)]
    assert peak < 4 * size, peak


def test_fragments_are_joined_and_control_frames_come_between() -> None:
    data = (client_frame(OP_TEXT, b"frag", fin=False)
            + client_frame(OP_PING, b"between")
            + client_frame(OP_CONTINUATION, b"ment", fin=False)
            + client_frame(OP_CONTINUATION, b"", fin=False)
            + client_frame(OP_PONG, b"p")
            + client_frame(OP_CONTINUATION, "ed ✓".encode())
            + client_frame(OP_BINARY, b"\x01", fin=False)
            + client_frame(OP_CONTINUATION, b"\x02"))
    assert heard(data) == [("ping", b"between"), ("pong", b"p"),
                           ("message", "fragmented ✓"), ("message", b"\x01\x02")]


def test_a_character_split_across_fragments() -> None:
    encoded = "€".encode()  # 3 bytes
    data = client_frame(OP_TEXT, encoded[:1], fin=False) \
        + client_frame(OP_CONTINUATION, encoded[1:2], fin=False) \
        + client_frame(OP_CONTINUATION, encoded[2:])
    assert heard(data) == [("message", "€")]


STREAM = (client_frame(OP_TEXT, "one ✓".encode())
          + client_frame(OP_BINARY, b"\x00" * 200, fin=False)
          + client_frame(OP_PING, b"ping")
          + client_frame(OP_CONTINUATION, b"\x01" * 70000)
          + client_frame(OP_TEXT, "€uro".encode(), fin=False)
          + client_frame(OP_CONTINUATION, b"", key=b"\x00\x01\x02\x03")
          + client_frame(OP_PONG)
          + client_frame(OP_CLOSE, b"\x03\xe8bye"))
STREAM_EVENTS = [("message", "one ✓"), ("ping", b"ping"),
                 ("message", b"\x00" * 200 + b"\x01" * 70000), ("message", "€uro"),
                 ("pong", b""), ("close", (1000, "bye"))]


def test_a_stream_split_at_every_byte_boundary() -> None:
    head = len(client_frame(OP_TEXT, "one ✓".encode())) + 300  # frames 1-3 and a bit
    cuts = [*range(head), *range(len(STREAM) - 200, len(STREAM) + 1)]
    for cut in cuts:
        assert read([STREAM[:cut], STREAM[cut:]])[0] == STREAM_EVENTS, cut


def test_a_stream_fed_byte_by_byte_and_in_odd_pieces() -> None:
    assert heard(STREAM) == STREAM_EVENTS
    rng = random.Random(7)
    for _ in range(20):
        pieces, pos = [], 0
        while pos < len(STREAM):
            size = rng.randint(1, 3000)
            pieces.append(STREAM[pos:pos + size])
            pos += size
        assert read(pieces)[0] == STREAM_EVENTS


def test_trailing_bytes_wait_for_the_rest_of_their_frame() -> None:
    message = client_frame(OP_TEXT, b"first")
    following = client_frame(OP_BINARY, b"x" * 300)
    for extra in range(1, len(following)):
        recorder = Recorder()
        reader = FrameReader(recorder, MiB)
        reader.feed(message + following[:extra])
        assert recorder.heard == [("message", "first")], extra
        reader.feed(following[extra:])
        assert recorder.heard == [("message", "first"), ("message", b"x" * 300)], extra


def test_exactly_the_cap_is_taken() -> None:
    assert heard(client_frame(OP_BINARY, b"x" * 100), max_message_size=100) \
        == [("message", b"x" * 100)]
    fragments = client_frame(OP_TEXT, b"y" * 60, fin=False) \
        + client_frame(OP_CONTINUATION, b"y" * 40)
    assert heard(fragments, max_message_size=100) == [("message", "y" * 100)]


# ------------------------------------------------------------------ control frames

def test_ping_pong_and_close_payloads() -> None:
    data = client_frame(OP_PING, b"p" * 125) + client_frame(OP_PONG, b"\x00\xff") \
        + client_frame(OP_CLOSE, (4999).to_bytes(2, "big") + "ok ✓".encode())
    assert heard(data) == [("ping", b"p" * 125), ("pong", b"\x00\xff"),
                           ("close", (4999, "ok ✓"))]


def test_an_empty_close_reports_1005() -> None:
    assert heard(client_frame(OP_CLOSE)) == [("close", (1005, ""))]


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_valid_close_codes(code: int) -> None:
    assert heard(client_frame(OP_CLOSE, code.to_bytes(2, "big"))) == [("close", (code, ""))]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999,
                                  5000, 65535])
def test_invalid_close_codes_are_1002(code: int) -> None:
    assert violation(client_frame(OP_CLOSE, code.to_bytes(2, "big") + b"why")) == 1002


def test_a_one_byte_close_payload_is_1002() -> None:
    assert violation(client_frame(OP_CLOSE, b"\x03")) == 1002


def test_an_invalid_utf8_close_reason_is_1007() -> None:
    assert violation(client_frame(OP_CLOSE, b"\x03\xe8ok\xff")) == 1007


def test_nothing_is_read_after_a_close_or_a_violation() -> None:
    after = client_frame(OP_TEXT, b"late") + client_frame(OP_PING)
    events, reader = read([client_frame(OP_CLOSE, b"\x03\xe8"), after])
    assert events == [("close", (1000, ""))] and reader.stopped
    events, reader = read([client_frame(OP_TEXT, b"\xff") + after, after])
    assert events == [("violation", 1007)] and reader.stopped


def test_garbage_and_damaged_streams_never_raise() -> None:
    """Whatever arrives, the reader reports; it never raises, and after a close or a
    violation it reports nothing more."""
    rng = random.Random(2024)
    inputs = [rng.randbytes(rng.randint(0, 400)) for _ in range(300)]
    for _ in range(300):
        damaged = bytearray(STREAM[:600])
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        inputs.append(bytes(damaged))
    for data in inputs:
        inflater = Inflater(DeflateParams()) if rng.random() < 0.5 else None
        recorder = Recorder()
        reader = FrameReader(recorder, 1000, inflater)
        pos = 0
        while pos < len(data):
            size = rng.randint(1, 50)
            reader.feed(data[pos:pos + size])
            pos += size
        endings = [index for index, (kind, _) in enumerate(recorder.heard)
                   if kind in ("close", "violation")]
        assert endings in ([], [len(recorder.heard) - 1]), recorder.heard
        assert reader.stopped == bool(endings)


# ------------------------------------------------------------------ violations

@pytest.mark.parametrize("data", [
    pytest.param(client_frame(OP_TEXT, b"unmasked", mask=False), id="unmasked-text"),
    pytest.param(client_frame(OP_PING, mask=False), id="unmasked-empty-ping"),
    *(pytest.param(client_frame(opcode, b"x"), id=f"reserved-opcode-{opcode}")
      for opcode in (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)),
    *(pytest.param(client_frame(OP_TEXT, b"x", rsv=rsv), id=f"rsv-{rsv:03b}")
      for rsv in range(1, 8)),
    pytest.param(client_frame(OP_PING, b"p" * 126), id="control-over-125"),
    pytest.param(client_frame(OP_CLOSE, b"\x03\xe8" + b"r" * 124), id="close-over-125"),
    pytest.param(client_frame(OP_PING, b"p", fin=False), id="fragmented-ping"),
    pytest.param(client_frame(OP_CLOSE, b"", fin=False), id="fragmented-close"),
    pytest.param(client_frame(OP_CONTINUATION, b"orphan"), id="continuation-first"),
    pytest.param(client_frame(OP_TEXT, b"a") + client_frame(OP_CONTINUATION, b"b"),
                 id="continuation-after-a-whole-message"),
    pytest.param(client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"),
                 id="text-inside-a-fragmented-message"),
    pytest.param(client_frame(OP_BINARY, b"a", fin=False) + client_frame(OP_BINARY, b"b"),
                 id="binary-inside-a-fragmented-message"),
    pytest.param(client_frame(OP_BINARY, b"", length=1 << 63), id="length-msb-set"),
])
def test_protocol_errors_are_1002(data: bytes) -> None:
    assert violation(data) == 1002


def test_a_violation_is_reported_from_the_first_two_bytes() -> None:
    # No mask key, no payload yet: the reader does not wait for what cannot help.
    for data in (b"\x81\x05", b"\x83\x80", b"\xc1\x80", b"\x09\x80", b"\x89\xfe",
                 b"\x80\x80"):
        events, _ = read(data)
        assert events == [("violation", 1002)], data


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"ok\xc3", b"\xed\xa0\x80",  # surrogate
                                     b"\xf4\x90\x80\x80", b"\xc0\xaf"])  # > U+10FFFF, overlong
def test_invalid_utf8_text_is_1007(payload: bytes) -> None:
    assert violation(client_frame(OP_TEXT, payload)) == 1007
    fragmented = client_frame(OP_TEXT, b"fine ", fin=False) \
        + client_frame(OP_CONTINUATION, payload)
    assert violation(fragmented) == 1007


def test_invalid_utf8_fails_fast_in_a_fragmented_message() -> None:
    events, reader = read(client_frame(OP_TEXT, b"ok", fin=False)
                          + client_frame(OP_CONTINUATION, b"\xff", fin=False))
    assert events == [("violation", 1007)] and reader.stopped


def test_text_cut_inside_a_character_at_the_end_is_1007() -> None:
    data = client_frame(OP_TEXT, b"abc\xe2\x82", fin=False) + client_frame(OP_CONTINUATION)
    assert violation(data) == 1007


def test_an_oversized_frame_is_refused_on_its_head() -> None:
    head = client_frame(OP_BINARY, b"", length=1 << 30)  # announces 1 GiB, sends nothing
    assert read(head, max_message_size=1024)[0] == [("violation", 1009)]
    head16 = client_frame(OP_TEXT, b"", length=1025)
    assert read(head16, max_message_size=1024)[0] == [("violation", 1009)]


def test_fragments_over_the_cap_are_refused_at_the_head_that_passes_it() -> None:
    first = client_frame(OP_BINARY, b"x" * 600, fin=False)
    passing = client_frame(OP_CONTINUATION, b"", length=401)  # its head only
    events, _ = read([first, passing], max_message_size=1000)
    assert events == [("violation", 1009)]


def test_control_frames_do_not_count_towards_the_cap() -> None:
    data = client_frame(OP_BINARY, b"x" * 10, fin=False) + client_frame(OP_PING, b"p" * 100) \
        + client_frame(OP_CONTINUATION, b"y" * 10)
    assert heard(data, max_message_size=20) == [("ping", b"p" * 100),
                                                ("message", b"x" * 10 + b"y" * 10)]


# ------------------------------------------------------------------ permessage-deflate

def deflate_client(answer: str) -> Connection:
    extension = PerMessageDeflate()
    extension.finalize(answer)
    return Connection(ConnectionType.CLIENT, extensions=[extension])


def negotiated(offer: str = "permessage-deflate") -> tuple[DeflateParams, str]:
    result = negotiate_deflate((offer,))
    assert result is not None
    return result


def compressed_frames(client: Connection, *messages: Any) -> bytes:
    data = b""
    for message in messages:
        if isinstance(message, list):  # fragments
            for index, part in enumerate(message):
                finished = index == len(message) - 1
                event: Any = TextMessage(data=part, message_finished=finished) \
                    if isinstance(part, str) else BytesMessage(data=part,
                                                                message_finished=finished)
                data += client.send(event)
        else:
            data += client.send(TextMessage(data=message) if isinstance(message, str)
                                else BytesMessage(data=message))
    return data


@pytest.mark.parametrize("offer", ["permessage-deflate",
                                   "permessage-deflate; client_no_context_takeover",
                                   "permessage-deflate; client_max_window_bits=9"])
def test_compressed_messages_are_inflated(offer: str) -> None:
    params, answer = negotiated(offer)
    client = deflate_client(answer)
    data = compressed_frames(client, "a" * 5000, "a" * 5000, b"\x00" * 300_000,
                             ["frag", "ment", "ed ✓"], [b"\x01" * 1000, b"\x02"], "")
    expected = [("message", "a" * 5000), ("message", "a" * 5000),
                ("message", b"\x00" * 300_000), ("message", "fragmented ✓"),
                ("message", b"\x01" * 1000 + b"\x02"), ("message", "")]
    assert read(data, inflater=Inflater(params))[0] == expected
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]
    assert read(pieces, inflater=Inflater(params))[0] == expected


def test_an_uncompressed_message_may_follow_a_compressed_one() -> None:
    params, answer = negotiated()
    data = compressed_frames(deflate_client(answer), "zip") + client_frame(OP_TEXT, b"plain")
    assert read(data, inflater=Inflater(params))[0] == [("message", "zip"),
                                                        ("message", "plain")]


def test_a_deflate_bomb_stops_at_the_cap() -> None:
    params, answer = negotiated()
    data = compressed_frames(deflate_client(answer), b"\x00" * (8 * MiB))
    assert len(data) < 20_000
    assert read(data, max_message_size=64 * 1024, inflater=Inflater(params))[0] \
        == [("violation", 1009)]
    exact = compressed_frames(deflate_client(answer), b"\x00" * (64 * 1024))
    assert read(exact, max_message_size=64 * 1024, inflater=Inflater(params))[0] \
        == [("message", b"\x00" * (64 * 1024))]


@pytest.mark.parametrize("data", [
    pytest.param(client_frame(OP_TEXT, b"x", fin=False)
                 + client_frame(OP_CONTINUATION, b"y", rsv=0b100), id="rsv1-on-continuation"),
    pytest.param(client_frame(OP_PING, b"", rsv=0b100), id="rsv1-on-ping"),
    pytest.param(client_frame(OP_TEXT, b"x", rsv=0b010), id="rsv2"),
    pytest.param(client_frame(OP_TEXT, b"x", rsv=0b101), id="rsv1-and-rsv3"),
])
def test_rsv_misuse_with_deflate_is_1002(data: bytes) -> None:
    params, _ = negotiated()
    assert violation(data, inflater=Inflater(params)) == 1002


def test_invalid_compressed_data_is_1007() -> None:
    params, _ = negotiated()
    assert violation(client_frame(OP_BINARY, b"\xff\xff\xff\xff", rsv=0b100),
                     inflater=Inflater(params)) == 1007


def test_compressed_invalid_utf8_is_1007() -> None:
    params, _ = negotiated()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (compressor.compress(b"ok\xff") + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert violation(client_frame(OP_TEXT, payload, rsv=0b100),
                     inflater=Inflater(params)) == 1007


@pytest.mark.parametrize("offer", ["permessage-deflate",
                                   "permessage-deflate; server_no_context_takeover",
                                   "permessage-deflate; server_max_window_bits=9"])
def test_deflater_output_is_read_by_an_independent_client(offer: str) -> None:
    params, answer = negotiated(offer)
    deflater = Deflater(params)
    client = deflate_client(answer)
    messages: list[str | bytes] = ["hello " * 100, "hello " * 100, b"\x00" * 100_000, ""]
    for message in messages:
        payload = message.encode() if isinstance(message, str) else message
        opcode = OP_TEXT if isinstance(message, str) else OP_BINARY
        client.receive_data(encode_frame(opcode, deflater.compress(payload), rsv1=True))
        [event] = client.events()
        assert isinstance(event, (TextMessage, BytesMessage)) and event.data == message


# ------------------------------------------------------------------ the server's frames

def server_events(data: bytes) -> list[Any]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return list(client.events())


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, MiB])
def test_server_frames_of_every_length_read_back(size: int) -> None:
    payload = b"\xab" * size
    [binary] = server_events(binary_frame(payload))
    assert isinstance(binary, BytesMessage) and binary.data == payload
    [text] = server_events(text_frame(b"t" * size))
    assert isinstance(text, TextMessage) and text.data == "t" * size
    assert encode_frame(OP_BINARY, payload) == binary_frame(payload)
    assert encode_frame(OP_TEXT, b"t" * size) == text_frame(b"t" * size)


def test_server_frames_are_unmasked_and_final() -> None:
    frame = text_frame(b"hi")
    assert frame == b"\x81\x02hi"
    assert encode_frame(OP_BINARY, b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert encode_frame(OP_TEXT, b"z", rsv1=True)[0] == 0xC1


def test_server_control_frames_read_back() -> None:
    events = server_events(encode_frame(OP_PING, b"p") + encode_frame(OP_PONG, b"q")
                           + encode_close(4000, "as you wish ✓"))
    assert isinstance(events[0], Ping) and events[0].payload == b"p"
    assert isinstance(events[1], Pong) and events[1].payload == b"q"
    assert isinstance(events[2], CloseConnection)
    assert (events[2].code, events[2].reason) == (4000, "as you wish ✓")


def test_a_close_without_a_code_is_empty() -> None:
    assert encode_close(1005) == b"\x88\x00"
    assert encode_close(1000) == b"\x88\x02\x03\xe8"


def test_server_frames_read_back_through_our_own_reader_once_masked() -> None:
    # The reader and writer agree on layout: mask a server frame as a client would.
    for frame in (text_frame("ü".encode() * 40_000), binary_frame(b"\x00" * 10),
                  encode_close(1001, "going away")):
        first, second = frame[0], frame[1]
        size = second & 0x7F
        head = 2 + (2 if size == 126 else 8 if size == 127 else 0)
        masked = bytes((first, second | 0x80)) + frame[2:head] + KEY \
            + mask_bytes(frame[head:], KEY)
        assert len(heard(masked)) == 1


# ------------------------------------------------------------------ the module

def test_the_codec_does_no_io() -> None:
    """frames.py and extensions.py stay sans-I/O: no asyncio, socket, ssl, time."""
    for module in (frames.__file__, negotiate_deflate.__code__.co_filename):
        tree = ast.parse(pathlib.Path(module).read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in node.names} | {
                     (node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not names & {"asyncio", "socket", "ssl", "time", "selectors"}, module


def test_a_read_of_exactly_one_small_frame_keeps_every_rule() -> None:
    # The reader's shortcut for a read holding one whole small frame must refuse what
    # the general path refuses: each case is fed as one read.
    assert read(client_frame(OP_TEXT, b"x" * 100), max_message_size=99)[0] == [
        ("violation", 1009)]
    assert read(client_frame(OP_TEXT, b"x" * 99), max_message_size=99)[0] == [
        ("message", "x" * 99)]
    assert read(client_frame(OP_TEXT, b"abcdef", mask=False))[0] == [("violation", 1002)]
    assert read(client_frame(OP_BINARY, b"abcd", rsv=4))[0] == [("violation", 1002)]
    events, _ = read([client_frame(OP_TEXT, b"open", fin=False), client_frame(OP_TEXT, b"new")])
    assert events == [("violation", 1002)]  # a new message inside a fragmented one
    events, _ = read([client_frame(OP_TEXT, b"ab", fin=False),
                      client_frame(OP_CONTINUATION, b"cd")])
    assert events == [("message", "abcd")]
    assert read(client_frame(OP_BINARY, b""))[0] == [("message", b"")]
    assert read(client_frame(OP_TEXT, b"\xff"))[0] == [("violation", 1007)]
