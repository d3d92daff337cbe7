"""Sans-I/O framers: fed whole, one byte at a time, and with trailing bytes kept."""
from __future__ import annotations

import time

import pytest

from packetron.errors import ConfigError, FramingError, FrameTooLarge
from packetron.net.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    LengthPrefixedFramer,
    LineFramer,
    RpcFrameFormat,
    RpcFramer,
)


def feed_whole(framer, data):
    return list(framer.feed(data))


def feed_bytewise(framer, data):
    out = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i:i + 1]))
    return out


def feed_in_pairs(framer, data):
    out = []
    for i in range(0, len(data), 2):
        out.extend(framer.feed(memoryview(data)[i:i + 2]))
    return out


FEEDERS = [feed_whole, feed_bytewise, feed_in_pairs]


# ---------------------------------------------------------------- LengthPrefixedFramer


@pytest.mark.parametrize(
    ("header_size", "byte_order", "expected"),
    [
        (1, "big", "03616263"),
        (2, "big", "0003616263"),
        (2, "little", "0300616263"),
        (4, "big", "00000003616263"),
        (4, "little", "03000000616263"),
        (8, "big", "0000000000000003616263"),
        (8, "little", "0300000000000000616263"),
    ],
)
def test_length_prefixed_encode_is_header_then_payload(header_size, byte_order, expected):
    framer = LengthPrefixedFramer(header_size=header_size, byte_order=byte_order)
    assert framer.encode(b"abc").hex() == expected


def test_length_prefixed_encodes_str_as_utf8():
    assert LengthPrefixedFramer().encode("é").hex() == "00000002c3a9"


@pytest.mark.parametrize("feed", FEEDERS)
@pytest.mark.parametrize("header_size", [1, 2, 4, 8])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_length_prefixed_round_trip_across_any_split(feed, header_size, byte_order):
    framer = LengthPrefixedFramer(header_size=header_size, byte_order=byte_order)
    payloads = [b"", b"x", b"hello world", bytes(range(200))]
    wire = b"".join(framer.encode(p) for p in payloads)
    assert feed(framer, wire) == payloads
    assert framer.buffered == 0


@pytest.mark.parametrize("feed", FEEDERS)
def test_length_prefixed_keeps_trailing_bytes_buffered(feed):
    framer = LengthPrefixedFramer()
    wire = framer.encode(b"one") + framer.encode(b"two") + b"\x00\x00\x00\x05ab"
    assert feed(framer, wire) == [b"one", b"two"]
    assert framer.buffered == 6
    assert framer.feed(b"cde") == [b"abcde"]
    assert framer.buffered == 0


def test_length_prefixed_truncated_header_waits_for_the_rest():
    framer = LengthPrefixedFramer()
    assert framer.feed(b"\x00\x00\x00") == []
    assert framer.buffered == 3
    assert framer.feed(b"\x01Z") == [b"Z"]


def test_length_prefixed_header_over_limit_is_refused_before_the_payload():
    framer = LengthPrefixedFramer(max_frame_size=10)
    with pytest.raises(FrameTooLarge, match="announces 11 bytes"):
        framer.feed(b"\x00\x00\x00\x0b")


def test_length_prefixed_exactly_max_frame_size_is_accepted():
    framer = LengthPrefixedFramer(max_frame_size=10)
    assert framer.feed(framer.encode(b"0123456789")) == [b"0123456789"]


def test_length_prefixed_error_is_sticky():
    framer = LengthPrefixedFramer(max_frame_size=1)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\x00\x00\x00\x02")
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\x00\x00\x00\x01a")


def test_length_prefixed_over_limit_after_buffered_bytes():
    framer = LengthPrefixedFramer(max_frame_size=100)
    assert framer.feed(framer.encode(b"ok") + b"\x00\x00") == [b"ok"]
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\x01\x00")


def test_length_prefixed_encode_over_limit_raises():
    with pytest.raises(FrameTooLarge):
        LengthPrefixedFramer(max_frame_size=2).encode(b"abc")


def test_one_byte_header_caps_max_frame_size_at_255():
    framer = LengthPrefixedFramer(header_size=1)
    assert framer.max_frame_size == 255
    with pytest.raises(FrameTooLarge):
        framer.encode(bytes(256))


def test_length_prefixed_default_max_is_10_mib():
    assert LengthPrefixedFramer().max_frame_size == DEFAULT_MAX_FRAME_SIZE == 10 * 1024 * 1024


@pytest.mark.parametrize("kwargs", [{"header_size": 3}, {"byte_order": "middle"},
                                    {"max_frame_size": -1}])
def test_length_prefixed_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        LengthPrefixedFramer(**kwargs)


def test_length_prefixed_encode_rejects_non_bytes():
    with pytest.raises(TypeError):
        LengthPrefixedFramer().encode(12)  # type: ignore[arg-type]


def test_length_prefixed_large_frame_in_small_pieces_is_linear():
    framer = LengthPrefixedFramer()
    payload = bytes(8 * 1024 * 1024)
    wire = framer.encode(payload)
    start = time.perf_counter()
    frames = []
    for i in range(0, len(wire), 1024):
        frames.extend(framer.feed(wire[i:i + 1024]))
    # ~8200 feeds; a quadratic buffer would copy ~34 GB and take minutes.
    assert time.perf_counter() - start < 5
    assert frames == [payload]


# ---------------------------------------------------------------- LineFramer


@pytest.mark.parametrize("feed", FEEDERS)
@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"\r\n\r\n", b"<END>"])
def test_line_framer_round_trip_across_any_split(feed, delimiter):
    framer = LineFramer(delimiter=delimiter)
    lines = ["first", "", "héllo ☃", "last one"]
    wire = b"".join(framer.encode(line) for line in lines)
    assert feed(framer, wire) == lines
    assert framer.buffered == 0


@pytest.mark.parametrize("feed", FEEDERS)
def test_line_framer_keeps_partial_line_and_partial_delimiter(feed):
    framer = LineFramer(delimiter=b"\r\n")
    assert feed(framer, b"a\r\nb\r\ncd\r") == ["a", "b"]
    assert framer.buffered == 3
    assert framer.feed(b"\nef") == ["cd"]
    assert framer.buffered == 2


def test_line_framer_delimiter_split_over_three_feeds():
    framer = LineFramer(delimiter=b"END")
    assert framer.feed(b"abcE") == []
    assert framer.feed(b"N") == []
    assert framer.feed(b"Dxyz") == ["abc"]
    assert framer.feed(b"END") == ["xyz"]


def test_line_framer_bytes_mode():
    framer = LineFramer(encoding=None)
    assert framer.feed(b"\xff\xfe\nok\n") == [b"\xff\xfe", b"ok"]
    assert framer.encode(b"raw") == b"raw\n"


def test_line_framer_line_growing_over_max_fails_before_delimiter():
    framer = LineFramer(max_line_size=8)
    assert framer.feed(b"12345678") == []
    with pytest.raises(FrameTooLarge, match="before its delimiter"):
        framer.feed(b"9")


def test_line_framer_exact_max_with_partial_multibyte_delimiter_is_fine():
    framer = LineFramer(delimiter=b"\r\n", max_line_size=4)
    assert framer.feed(b"abcd\r") == []
    assert framer.feed(b"\n") == ["abcd"]


def test_line_framer_exact_max_then_non_delimiter_fails():
    framer = LineFramer(delimiter=b"\r\n", max_line_size=4)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"abcd\rx")


def test_line_framer_complete_line_over_max_fails():
    framer = LineFramer(max_line_size=3)
    with pytest.raises(FrameTooLarge, match="4 bytes"):
        framer.feed(b"ab\nabcd\n")


def test_line_framer_error_is_sticky():
    framer = LineFramer(max_line_size=1)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"abc")
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\n")


def test_line_framer_invalid_utf8_is_a_framing_error():
    with pytest.raises(FramingError, match="not valid utf-8"):
        LineFramer().feed(b"\xff\n")


def test_line_framer_encode_refuses_embedded_delimiter():
    with pytest.raises(FramingError, match="delimiter"):
        LineFramer().encode("two\nlines")


def test_line_framer_encode_refuses_long_line():
    with pytest.raises(FrameTooLarge):
        LineFramer(max_line_size=2).encode("abc")


def test_line_framer_default_max_is_64_kib():
    assert LineFramer().max_line_size == DEFAULT_MAX_LINE_SIZE == 64 * 1024


@pytest.mark.parametrize("kwargs", [{"delimiter": b""}, {"delimiter": "\n"},
                                    {"max_line_size": -5}, {"encoding": "no-such-codec"}])
def test_line_framer_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        LineFramer(**kwargs)


def test_line_framer_unknown_encoding_is_a_config_error_naming_it():
    with pytest.raises(ConfigError) as raised:
        LineFramer(encoding="no-such-codec")
    assert type(raised.value) is ConfigError
    assert str(raised.value) == "unknown encoding 'no-such-codec'"
    assert not isinstance(raised.value, LookupError)
    with pytest.raises(ConfigError) as raised:
        LineFramer(encoding=7)  # type: ignore[arg-type]
    assert str(raised.value) == "unknown encoding 7"


@pytest.mark.parametrize("codec", ["base64", "rot13", "hex"])
def test_line_framer_refuses_a_codec_that_is_not_a_text_encoding(codec):
    # codecs.lookup() knows them, but bytes.decode() refuses them: caught at construction.
    with pytest.raises(ConfigError) as raised:
        LineFramer(encoding=codec)
    assert type(raised.value) is ConfigError
    assert str(raised.value) == f"encoding {codec!r} is not a text encoding"


@pytest.mark.parametrize(("data", "cause", "message"), [
    # idna raises a bare UnicodeError for a malformed punycode label...
    (b"ok\nxn--zz\n", UnicodeError,
     "line is not valid idna: decoding with 'idna' codec failed (UnicodeError: decoding "
     "with 'punycode' codec failed (UnicodeError: incomplete punicode string))"),
    # ...and a UnicodeDecodeError (a subclass) for a byte over 127.
    (b"ok\n\xff\n", UnicodeDecodeError,
     "line is not valid idna: ordinal not in range(128) at byte 0"),
])
def test_line_framer_idna_decoding_failure_is_a_sticky_framing_error(data, cause, message):
    framer = LineFramer(encoding="idna")
    assert framer.feed(b"example.com\n") == ["example.com"]
    with pytest.raises(FramingError) as raised:
        framer.feed(data)
    assert type(raised.value) is FramingError
    assert str(raised.value) == message
    assert type(raised.value.__context__) is cause  # the codec's own error, for the log
    # Sticky: the stream position is lost, so even a valid line fails the same way.
    for later in (b"example.org\n", b""):
        with pytest.raises(FramingError) as again:
            framer.feed(later)
        assert type(again.value) is FramingError
        assert str(again.value) == message


def test_line_framer_invalid_utf8_is_sticky_with_its_position():
    framer = LineFramer()
    with pytest.raises(FramingError) as raised:
        framer.feed(b"caf\xc3\n")
    assert type(raised.value) is FramingError
    message = "line is not valid utf-8: unexpected end of data at byte 3"
    assert str(raised.value) == message
    with pytest.raises(FramingError) as again:
        framer.feed(b"fine\n")
    assert type(again.value) is FramingError and str(again.value) == message


def test_line_framer_decoding_error_of_any_codec_is_a_framing_error():
    # A codec may raise any ValueError for bytes it cannot decode (utf-16: odd length).
    framer = LineFramer(delimiter=b"\n\x00", encoding="utf-16-le")
    with pytest.raises(FramingError) as raised:
        framer.feed(b"a\x00b\n\x00")
    assert type(raised.value) is FramingError
    assert str(raised.value) == "line is not valid utf-16-le: truncated data at byte 2"
    with pytest.raises(FramingError):
        framer.feed(b"a\x00\n\x00")


def test_line_framer_long_line_byte_by_byte_is_linear():
    framer = LineFramer(delimiter=b"\r\n", max_line_size=100_000)
    line = b"x" * 60_000
    start = time.perf_counter()
    out = []
    for i in range(len(line)):
        out.extend(framer.feed(line[i:i + 1]))
    out.extend(framer.feed(b"\r\n"))
    # 60k feeds; rescanning the buffer each time would be ~1.8e9 byte comparisons.
    assert time.perf_counter() - start < 5
    assert out == ["x" * 60_000]


# ---------------------------------------------------------------- RpcFramer


def test_rpc_frame_layout_is_length_then_id_then_payload():
    framer = RpcFramer()
    # length 6 = 4 (rpc id) + 2 (payload); rpc id -1 as signed big-endian.
    assert framer.encode(-1, b"hi").hex() == "00000006" "ffffffff" "6869"
    assert framer.encode(7, "").hex() == "00000004" "00000007"


@pytest.mark.parametrize("feed", FEEDERS)
def test_rpc_framer_round_trip_across_any_split(feed):
    framer = RpcFramer()
    frames = [(1, b"a"), (-5, b""), (2**31 - 1, b"xyz" * 10)]
    wire = b"".join(framer.encode(i, p) for i, p in frames) + b"\x00\x00\x00"
    assert feed(framer, wire) == frames
    assert framer.buffered == 3


@pytest.mark.parametrize("feed", FEEDERS)
def test_rpc_framer_custom_readers_and_writers(feed):
    fmt = RpcFrameFormat(
        frame_length_size=2,
        frame_length_reader=lambda b: int.from_bytes(b, "little"),
        frame_length_writer=lambda n: n.to_bytes(2, "little"),
        rpc_id_size=3,
        rpc_id_reader=lambda b: int.from_bytes(b, "little"),
        rpc_id_writer=lambda n: n.to_bytes(3, "little"),
    )
    framer = RpcFramer(fmt)
    assert framer.encode(0x010203, b"Z").hex() == "0400" "030201" "5a"
    wire = framer.encode(5, b"abc") + framer.encode(6, b"")
    assert feed(framer, wire) == [(5, b"abc"), (6, b"")]


def test_rpc_framer_header_over_limit_fails_at_once():
    framer = RpcFramer(RpcFrameFormat(max_frame_size=4))
    with pytest.raises(FrameTooLarge):
        framer.feed(b"\x00\x00\x00\x09")  # 4 id bytes + 5 payload bytes


def test_rpc_framer_length_shorter_than_id_is_malformed():
    with pytest.raises(FramingError, match="cannot hold"):
        RpcFramer().feed(b"\x00\x00\x00\x02\x00\x00")


def test_rpc_framer_rpc_id_too_big_for_field():
    with pytest.raises(FramingError):
        RpcFramer().encode(2**31, b"x")


@pytest.mark.parametrize("kwargs", [{"frame_length_size": 0}, {"rpc_id_size": 9},
                                    {"max_frame_size": -1}])
def test_rpc_frame_format_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        RpcFrameFormat(**kwargs)
