"""Random and broken input, seeded: decoders and the HTTP protocol fail only in the ways
they document (a PacketronError, or an HTTP error status), never with a stray exception.

The seeds are fixed, so a failure here is reproducible; the streams mix well-formed pieces
with random bytes so that the parsers get past their first checks.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, Callable

import pytest

from packetron import HandlerFlags, Packetron
from packetron.errors import PacketronError
from packetron.http import bodies
from packetron.http.protocol import HttpProtocol
from tests.http.memtransport import MemoryTransport
from packetron.net.framing import LengthPrefixedFramer, LineFramer, RpcFramer
from packetron.net.packetstream.codec import PacketDecoder

ROUNDS = 400

FRAME_PIECES = [
    b"\x00\x00\x00\x05hello", b"\x01\x00\x00\x00\x03\x00\x00\x00\x01abc", b"\xff\xff\xff\xff",
    b"abc\ndef\r\n", b"\x0a\x00\x00\x00\x02\x00\x00\x00\x01{}",
    b"\x02\x00\x00\x00\x01\xff\xff\xff\xff\x22", b"\x00" * 9,
]


def random_bytes(rng: random.Random, pieces: list[bytes]) -> bytes:
    if rng.random() < 0.5:
        return rng.choice(pieces)
    return bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 5, 9, 13, 64])))


@pytest.mark.parametrize("make", [
    lambda: LengthPrefixedFramer(max_frame_size=1000),
    lambda: LineFramer(encoding=None, max_line_size=100),
    lambda: LineFramer(encoding="utf-8", max_line_size=100),
    RpcFramer,
    PacketDecoder,
], ids=["length-prefixed", "line-bytes", "line-text", "rpc", "packet-stream"])
def test_frame_decoders_raise_only_their_own_errors(make: Callable[[], Any]) -> None:
    rng = random.Random(1234)
    failures = 0
    for _ in range(ROUNDS):
        decoder = make()
        try:
            for _ in range(rng.randint(1, 6)):
                decoder.feed(random_bytes(rng, FRAME_PIECES))
        except PacketronError:
            failures += 1
    assert failures > 0  # the input did reach the error paths


@pytest.mark.parametrize("decode", [bodies.decode_json, bodies.decode_form, bodies.decode_xml,
                                    bodies.decode_text], ids=["json", "form", "xml", "text"])
def test_body_decoders_raise_only_their_own_errors(decode: Callable[[bytes], Any]) -> None:
    rng = random.Random(99)
    pieces = [b'{"a":[1,2,{"b":null}]}', b"a=1&b=%zz&c", b"<a><b>x</b></a>", b"\xff\xfe",
              b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", b"[" * 50]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(ROUNDS):
        try:
            value = decode(random_bytes(rng, pieces))
        except PacketronError:
            outcomes["refused"] += 1
        else:
            # JSON_BODY's contract: invalid JSON reads as None rather than raising.
            outcomes["refused" if value is None else "decoded"] += 1
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0, outcomes


HTTP_PIECES = [
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
    b'POST /j HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n{"a":1}',
    b"POST /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na=b\r\n0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n<a/>x", b"\r\n", b"GET ", b"/a?",
    b"%zz", b"Host: \xff\r\n", b"Content-Length: 99999999999\r\n", b"Expect: 100-continue\r\n",
    b"Connection: upgrade\r\nUpgrade: h2c\r\n", b"HTTP/1.0\r\n", b"\x00\xff\x16\x03",
    b"Transfer-Encoding: chunked\r\n",
]


def test_http_protocol_answers_any_byte_stream_with_http(caplog: pytest.LogCaptureFixture) -> None:
    server = Packetron(port=0, workers=1)
    server.get("a", lambda q, s: s.send_json({"ok": 1}))
    server.post("j", lambda q, s: s.send_json(q.body), flags=HandlerFlags.JSON_BODY)
    server.post("f", lambda q, s: s.send(q.body), flags=HandlerFlags.FORM_DATA)
    server.post("x", lambda q, s: s.send(q.body), flags=HandlerFlags.XML_BODY)
    loop = asyncio.new_event_loop()
    rng = random.Random(7)
    statuses: set[bytes] = set()
    try:
        state = server.serving_state()
        with caplog.at_level(logging.CRITICAL, logger="packetron"):
            for _ in range(ROUNDS):
                protocol = HttpProtocol(state, loop)
                transport = MemoryTransport()
                protocol.connection_made(transport)
                stream = b"".join(
                    rng.choice(HTTP_PIECES) if rng.random() < 0.8
                    else bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20)))
                    for _ in range(rng.randint(1, 8)))
                cuts = sorted(rng.sample(range(1, len(stream)), min(3, len(stream) - 1)))
                for start, end in zip([0, *cuts], [*cuts, len(stream)]):
                    protocol.data_received(stream[start:end])  # must never raise
                loop.run_until_complete(asyncio.sleep(0))  # let handler tasks run
                protocol.connection_lost(None)
                loop.run_until_complete(asyncio.sleep(0))
                out = transport.out
                # Whatever came back is HTTP/1.1 responses, each with a status line.
                assert not out or out.startswith(b"HTTP/1.1 ")
                statuses.update(line[9:12] for line in out.split(b"\r\n")
                                if line.startswith(b"HTTP/1.1 "))
        # The streams reached both the answers and the refusals.
        assert {b"200", b"400"} <= statuses
    finally:
        loop.close()
