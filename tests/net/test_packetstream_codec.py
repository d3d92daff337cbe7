"""packet-stream-codec: bytes captured from Node, the real codec as an oracle, bad input."""
from __future__ import annotations

import json
import pathlib
import random
import shutil
import struct
import subprocess

import pytest

from packetron.errors import ConfigError, FramingError, FrameTooLarge
from packetron.net.packetstream.codec import (
    GOODBYE,
    GOODBYE_BYTES,
    Packet,
    PacketDecoder,
    encode_packet,
    js_number,
    json_dumps,
    json_loads,
)

NODE_DIR = pathlib.Path(__file__).parents[1] / "node"
NODE = shutil.which("node")


def need_node():
    if NODE is None:
        pytest.skip("node is not installed: the codec oracle cannot run")
    if not (NODE_DIR / "node_modules" / "packet-stream-codec").is_dir():
        pytest.skip("tests/node/node_modules is missing: run `bash tests/prepare.sh`")


def run_oracle(items, *args):
    proc = subprocess.run([NODE, str(NODE_DIR / "psc_oracle.js"), *args],
                          input=json.dumps(items).encode(), capture_output=True, timeout=30,
                          check=True)
    return json.loads(proc.stdout)


def h(text: str) -> bytes:
    """Hex with spaces and | separators, as PACKET-STREAM.md prints it."""
    return bytes.fromhex(text.replace("|", " "))


# ---------------------------------------------------------------- captured from Node (§4)

CAPTURED = [
    # (req, value, stream, end, hex)
    (0, "HELLO", False, False, "01 00000005 00000000 | 48454c4c4f"),
    (0, bytes.fromhex("deadbeef"), False, False, "00 00000004 00000000 | deadbeef"),
    (0, {"hello": "json", "n": 1}, False, False,
     "02 00000016 00000000 | " + b'{"hello":"json","n":1}'.hex()),
    (1, {"foo": "bar"}, False, False, "02 0000000d 00000001 | 7b22666f6f223a22626172227d"),
    (-1, {"okay": True}, False, False, "02 0000000d ffffffff | 7b226f6b6179223a747275657d"),
    (-2, {"message": "boom", "name": "Error", "stack": "Error: boom"}, False, True,
     "06 00000037 fffffffe | "
     + b'{"message":"boom","name":"Error","stack":"Error: boom"}'.hex()),
    (3, "one", True, False, "09 00000003 00000003 | 6f6e65"),
    (-3, "one", True, False, "09 00000003 fffffffd | 6f6e65"),
    (3, True, True, True, "0e 00000004 00000003 | 74727565"),
    (4, {"n": 1}, True, False, "0a 00000007 00000004 | " + b'{"n":1}'.hex()),
    (-4, {"n": 1}, True, False, "0a 00000007 fffffffc | " + b'{"n":1}'.hex()),
    (1, "COUNT?", False, False, "01 00000006 00000001 | " + b"COUNT?".hex()),
    (-1, 1, False, False, "02 00000001 ffffffff | 31"),
    (-2, {"okay": True, "echo": {"foo": "bar"}}, False, False,
     "02 00000022 fffffffe | " + b'{"okay":true,"echo":{"foo":"bar"}}'.hex()),
    (4, bytes.fromhex("00ff10"), False, False, "00 00000003 00000004 | 00ff10"),
    (6, b"chunk-3", True, False, "08 00000007 00000006 | " + b"chunk-3".hex()),
    (-5, False, False, False, "02 00000005 fffffffb | 66616c7365"),
]


@pytest.mark.parametrize(("req", "value", "stream", "end", "wire"), CAPTURED)
def test_encoder_matches_bytes_captured_from_node(req, value, stream, end, wire):
    assert encode_packet(req, value, stream=stream, end=end) == h(wire)


def test_goodbye_is_nine_zero_bytes():
    assert GOODBYE_BYTES == h("00 00000000 00000000")


ALL_CAPTURED = b"".join(h(w) for *_, w in CAPTURED)
EXPECTED_PACKETS = [Packet(req, stream, end, value) for req, value, stream, end, _ in CAPTURED]


def feed_whole(dec, data):
    return dec.feed(data)


def feed_bytewise(dec, data):
    out = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i:i + 1]))
    return out


def feed_in_thirds(dec, data):
    out = []
    step = max(1, len(data) // 3)
    for i in range(0, len(data), step):
        out.extend(dec.feed(bytearray(data[i:i + step])))
    return out


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise, feed_in_thirds])
def test_decoder_reads_captured_bytes_across_any_split(feed):
    dec = PacketDecoder()
    assert feed(dec, ALL_CAPTURED) == EXPECTED_PACKETS
    assert dec.buffered == 0


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_decoder_keeps_trailing_partial_frame(feed):
    dec = PacketDecoder()
    partial = h("01 00000005 00000000 | 4845")
    assert feed(dec, h(CAPTURED[0][4]) + partial) == [EXPECTED_PACKETS[0]]
    assert dec.buffered == len(partial)
    assert dec.feed(b"LLO") == [EXPECTED_PACKETS[0]]


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise])
def test_goodbye_ends_decoding_and_later_bytes_are_ignored(feed):
    dec = PacketDecoder()
    wire = h(CAPTURED[0][4]) + GOODBYE_BYTES + h(CAPTURED[1][4])
    assert feed(dec, wire) == [EXPECTED_PACKETS[0], GOODBYE]
    assert dec.ended
    assert dec.feed(b"more") == []
    assert dec.buffered == 0


@pytest.mark.parametrize("header", ["01 00000000 00000000", "0f 00000000 7fffffff",
                                    "03 00000000 00000001"])
def test_any_zero_length_header_is_goodbye(header):
    # Node reads `B.message('')` (01 00000000 00000000) as the end of the session.
    assert PacketDecoder().feed(h(header)) == [GOODBYE]


def test_top_four_flag_bits_are_ignored():
    assert PacketDecoder().feed(h("f1 00000002 00000000 | 6869")) == [Packet(0, False, False, "hi")]


def test_type_3_is_refused_as_malformed():
    dec = PacketDecoder()
    with pytest.raises(FramingError, match="unknown message type 3"):
        dec.feed(h("03 00000002 00000000"))
    with pytest.raises(FramingError):  # sticky
        dec.feed(h(CAPTURED[0][4]))


def test_header_over_max_body_size_is_refused_before_the_body():
    dec = PacketDecoder(max_body_size=16)
    with pytest.raises(FrameTooLarge, match="announces 17 bytes"):
        dec.feed(h("00 00000011 00000000"))


def test_four_gib_header_is_refused_by_default():
    with pytest.raises(FrameTooLarge):
        PacketDecoder().feed(h("00 ffffffff 00000001"))


def test_max_body_size_must_be_positive():
    with pytest.raises(ConfigError):
        PacketDecoder(max_body_size=0)


def test_truncated_header_waits():
    dec = PacketDecoder()
    assert dec.feed(h("01 000000")) == []
    assert dec.buffered == 4


@pytest.mark.parametrize("body", [b"{", b"[1,]", b"NaN", b"Infinity", b"1 2", b"\x00"])
def test_invalid_json_body_is_a_framing_error(body):
    frame = bytes([2]) + len(body).to_bytes(4, "big") + bytes(4) + body
    with pytest.raises(FramingError, match="not valid JSON"):
        PacketDecoder().feed(frame)


def test_json_body_may_have_surrounding_whitespace():
    assert json_loads(b' \n{"a": [1, 2.5]}\t') == {"a": [1, 2.5]}


def test_invalid_utf8_in_string_body_becomes_replacement_character():
    [pkt] = PacketDecoder().feed(h("01 00000003 00000000 | 61ff62"))
    assert pkt.value == "a\ufffdb"


# ---------------------------------------------------------------- encoder choices


def test_empty_string_goes_out_as_json_empty_string():
    wire = encode_packet(0, "")
    assert wire == h("02 00000002 00000000 | 2222")
    assert PacketDecoder().feed(wire) == [Packet(0, False, False, "")]


def test_empty_bytes_cannot_be_sent():
    with pytest.raises(FramingError, match="GOODBYE"):
        encode_packet(0, b"")


def test_none_is_json_null_and_tuples_are_arrays():
    assert encode_packet(1, None) == h("02 00000004 00000001 | 6e756c6c")
    assert encode_packet(1, (1, "a")) == h("02 00000007 00000001") + b'[1,"a"]'


def test_bytearray_and_memoryview_are_buffers():
    assert encode_packet(0, bytearray(b"\x01")) == h("00 00000001 00000000 | 01")
    assert encode_packet(0, memoryview(b"\x02")) == h("00 00000001 00000000 | 02")


def test_request_number_must_fit_signed_32_bits():
    with pytest.raises(FramingError):
        encode_packet(2**31, "x")
    assert encode_packet(-(2**31), "x")[5:9] == h("80000000")


def test_unserializable_value_is_a_type_error():
    with pytest.raises(TypeError):
        encode_packet(0, {1, 2})


def test_lone_surrogate_in_string_becomes_replacement_character_like_buffer_from():
    assert encode_packet(0, "a\ud800b")[9:] == "a\ufffdb".encode()
    # A surrogate pair written as two code points is one character, as in JS.
    assert encode_packet(0, "\ud83d\ude00")[9:] == "😀".encode()


def test_lone_surrogate_in_json_is_escaped_like_json_stringify():
    assert encode_packet(0, ["\ud800", "\ud83d\ude00"])[9:] == '["\\ud800","😀"]'.encode()


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, "1"), (-0.0, "0"), (1.5e-7, "1.5e-7"), (1e21, "1e+21"),
        (1.2345678901234568e20, "123456789012345680000"), (0.1, "0.1"),
        (1e-6, "0.000001"), (1e-7, "1e-7"), (123.456, "123.456"), (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"), (2.0**53, "9007199254740992"),
        (1e16, "10000000000000000"), (-2.5e-5, "-0.000025"), (float("nan"), "null"),
        (float("inf"), "null"),
    ],
)
def test_js_number_formats_like_javascript(number, text):
    assert js_number(number) == text


def test_json_dumps_writes_floats_the_js_way_inside_structures():
    value = {"a": 1.0, "b": [1.5e-7, 2, "x"], "c": {"d": -0.0, "e": float("nan")}, "f": 0.5}
    assert json_dumps(value) == '{"a":1,"b":[1.5e-7,2,"x"],"c":{"d":0,"e":null},"f":0.5}'


def test_json_dumps_keeps_non_ascii_raw_and_no_spaces():
    assert json_dumps({"s": "héllo ☃", "k": [1, True, None]}) == '{"s":"héllo ☃","k":[1,true,null]}'


# ---------------------------------------------------------------- the real codec as oracle


def _shown(value):
    return {"buffer": value.hex()} if isinstance(value, bytes) else value


ORACLE_MESSAGES = [
    (0, "plain"), (1, {"foo": "bar", "list": [1, 2, {"deep": None}]}), (-7, b"\x00\x01\xff"),
    (2**31 - 1, "max id"), (-(2**31), "min id"), (5, "héllo ☃ 😀"), (9, [1, "two", False]),
    (11, 1.5), (12, -3), (13, None), (14, True), (15, {"k": "v" * 300}),
    (16, {"nested": {"a": {"b": {"c": [1e-7, 2.5, 1e21]}}}}),
]


def test_encoder_matches_node_packet_stream_codec_byte_for_byte():
    need_node()
    items, ours = [], []
    for stream in (False, True):
        for end in (False, True):
            for req, value in ORACLE_MESSAGES:
                items.append({"req": req, "stream": stream, "end": end, "value": _shown(value)})
                ours.append(encode_packet(req, value, stream=stream, end=end).hex())
    items.append({"goodbye": True})
    ours.append(GOODBYE_BYTES.hex())
    assert run_oracle(items) == ours


def test_float_formatting_matches_json_stringify_on_random_doubles():
    need_node()
    rng = random.Random(20240601)
    numbers = [1.0, -0.0, 0.1 + 0.2, 2.0**53 + 2, 2.0**70, 1e21, 9.999999999999999e20, 1e-6,
               9.999999999999999e-7, 123e-20, 1 / 3]
    for _ in range(300):
        numbers.append(rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30))
    for _ in range(100):
        numbers.append(float(rng.randint(-(2**60), 2**60)))
    for _ in range(100):  # any bit pattern that is a finite double
        x = rng.getrandbits(64).to_bytes(8, "big")
        value = struct.unpack(">d", x)[0]
        if value == value and abs(value) != float("inf"):
            numbers.append(value)
    expected = run_oracle([repr(x) for x in numbers], "stringify")
    assert [js_number(x) for x in numbers] == expected
