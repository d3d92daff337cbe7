"""Body decoders as pure functions."""
from __future__ import annotations

import time

import pytest

from packetron.errors import BadRequest, PayloadTooLarge
from packetron.http import bodies
from packetron.http.cookies import build_set_cookie, parse_cookie_header


CODECS = {"stdlib": (bodies._stdlib_encode_json, bodies._stdlib_decode_json)}
if bodies._orjson_codec is not None:
    CODECS["orjson"] = bodies._orjson_codec


@pytest.fixture(params=sorted(CODECS))
def codec(request):
    """Each JSON backend in turn: the standard library, and orjson when installed."""
    return CODECS[request.param]


def test_active_backend_is_reported() -> None:
    assert bodies.JSON_BACKEND in CODECS
    assert bodies.encode_json is CODECS[bodies.JSON_BACKEND][0]


@pytest.mark.parametrize("raw, expected", [
    (b'{"a": [1, "\xc3\xa9"]}', {"a": [1, "é"]}),
    (b' {"a":1} ', {"a": 1}),
    (b'"s"', "s"),
    (b"5", 5),
    (b"[1.5, true, null]", [1.5, True, None]),
])
def test_json_valid(codec, raw: bytes, expected) -> None:
    assert codec[1](raw) == expected


@pytest.mark.parametrize("raw", [b"{nope", b"", b"\xff\xfe", b'{"a":1}x', b"[1,2", b"1 2",
                                 b'{"a":NaN}', b"[Infinity]", b"[" * 100_000])
def test_json_invalid_is_none(codec, raw: bytes) -> None:
    assert codec[1](raw) is None


def test_json_encoding_is_compact_utf8(codec) -> None:
    assert codec[0]({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    assert codec[0]("x\"y") == b'"x\\"y"'


def test_json_encoding_accepts_what_the_stdlib_accepts(codec) -> None:
    assert codec[0]({1: 2 ** 70}) == b'{"1":1180591620717411303424}'


def test_json_encoding_refuses_non_json(codec) -> None:
    with pytest.raises(TypeError):
        codec[0]({"a": {1, 2}})


def test_form_repeated_names_become_lists() -> None:
    assert bodies.decode_form(b"a=1&b=x+y&a=2&c=") == {"a": ["1", "2"], "b": "x y", "c": ""}


def test_form_with_too_many_fields_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        bodies.decode_form(b"&".join(b"f=1" for _ in range(bodies.MAX_FORM_FIELDS + 1)))


def test_xml_parses_with_xmltodict_shape() -> None:
    body = b'<root a="1"><item>x</item><item>y</item><n/></root>'
    assert bodies.decode_xml(body) == {"root": {"@a": "1", "item": ["x", "y"], "n": None}}


def test_xml_billion_laughs_refused_fast() -> None:
    lol = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
           + b"".join(b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10 if i > 1 else b"&lol;" * 10)
                      for i in range(1, 10))
           + b']><lolz>&lol9;</lolz>')
    started = time.perf_counter()
    with pytest.raises(BadRequest):
        bodies.decode_xml(lol)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("body", [b"<a>", b"", b"not xml", b"<a></b>"])
def test_malformed_xml_is_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        bodies.decode_xml(body)


def test_text_charset() -> None:
    assert bodies.decode_text("é".encode("latin-1"), "latin-1") == "é"
    assert bodies.charset_of('text/plain; charset="ISO-8859-1"') == "iso-8859-1"
    assert bodies.charset_of("text/plain") == "utf-8"
    with pytest.raises(BadRequest):
        bodies.decode_text(b"\xff", "utf-8")


def test_cookie_header_parsing() -> None:
    assert parse_cookie_header('a=1; b="two"; c=x%20y; a=ignored; bad') == {
        "a": "1", "b": "two", "c": "x y"}


def test_set_cookie_attributes_exactly_as_set() -> None:
    value = build_set_cookie("sid", "abc", max_age=60, path="/app", domain="example.com",
                             http_only=True, secure=True, same_site="Strict",
                             expires=0)
    assert value == ("sid=abc; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app; "
                     "Domain=example.com; Secure; HttpOnly; SameSite=Strict")


@pytest.mark.parametrize("name, value", [("a b", "1"), ("a", "x;y"), ("a", "x\r\n")])
def test_set_cookie_refuses_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        build_set_cookie(name, value)
