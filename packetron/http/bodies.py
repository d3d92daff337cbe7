"""Body decoders (sans-I/O). The route's HandlerFlags pick one; Content-Type never does.

Each takes the complete body as bytes and returns the value `request.get_body()` gives.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable
from urllib.parse import parse_qsl
from xml.parsers.expat import ExpatError

import xmltodict

from packetron.errors import BadRequest, PayloadTooLarge

__all__ = ["decode_json", "decode_form", "decode_xml", "decode_text", "charset_of",
           "add_repeated", "MAX_FORM_FIELDS", "encode_json"]

# The same bound PHP's max_input_vars and Django's DATA_UPLOAD_MAX_NUMBER_FIELDS use: a
# body of a million tiny fields would otherwise cost far more memory than its size.
MAX_FORM_FIELDS = 1000

def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are Python extensions; JSON (and JSON.parse) has no such values.
    raise ValueError(f"{name} is not JSON")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_json_decode = _STRICT_DECODER.decode


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_json_encoder() -> Callable[[Any], bytes]:
    """The fastest stdlib JSON encoder: compact, raw non-ASCII, like JSON.stringify.

    JSONEncoder.encode builds a new C encoder on every call; building it once and calling
    it directly halves the cost of encoding a small response body.
    """
    from json import encoder as stdlib_encoder

    make = getattr(stdlib_encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        slow = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                                check_circular=False).encode
        return lambda value: slow(value).encode("utf-8")
    c_encoder = make(None, _not_serializable, stdlib_encoder.encode_basestring, None,
                     ":", ",", False, False, False)  # NaN/Infinity are not JSON: refuse
    join = "".join

    def encode_json(value: Any) -> bytes:
        """Compact JSON as UTF-8, written like JSON.stringify (no spaces, raw non-ASCII).

        Raises:
            TypeError: a value JSON cannot represent.
            ValueError: NaN or Infinity.
        """
        return join(c_encoder(value, 0)).encode("utf-8")

    return encode_json


_stdlib_encode_json = _make_json_encoder()


def _make_orjson_codec() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]] | None:
    """orjson's encoder and decoder, when the optional `fast` extra is installed.

    Measured in bench/protocol_cost.py: encoding is about 8x and decoding 3x faster than
    the standard library. Whatever orjson refuses (integers beyond 64 bits) goes to the
    standard library instead, so both backends accept the same values. One difference
    stays, and it is JSON.stringify's behaviour: NaN and Infinity are written as null.
    """
    if os.environ.get("PACKETRON_JSON") == "stdlib":  # lets benchmarks compare backends
        return None
    try:
        import orjson
    except ImportError:
        return None
    dumps, loads, option = orjson.dumps, orjson.loads, orjson.OPT_NON_STR_KEYS
    decode_error = orjson.JSONDecodeError

    def encode_json(value: Any) -> bytes:
        try:
            return dumps(value, option=option)  # type: ignore[no-any-return]
        except TypeError:
            return _stdlib_encode_json(value)

    def decode_json(body: bytes) -> Any:
        if not body:
            return None
        try:
            return loads(body)
        except decode_error:
            return None

    return encode_json, decode_json


_orjson_codec = _make_orjson_codec()
JSON_BACKEND = "orjson" if _orjson_codec is not None else "stdlib"
encode_json = _orjson_codec[0] if _orjson_codec is not None else _stdlib_encode_json
# The hot path's encoder: orjson.dumps itself, with no Python frame and no keyword (a
# partial carrying option= costs 0.24 us against 0.10 us for a small body). It raises
# TypeError for what it leaves to encode_json (non-string keys, integers beyond 64 bits);
# callers then use encode_json, which gives those the standard library's treatment.
if _orjson_codec is not None:
    import orjson

    encode_json_fast: Callable[[Any], bytes] = orjson.dumps
else:
    encode_json_fast = _stdlib_encode_json


def _make_json_scanner() -> Callable[[str, int], tuple[Any, int]]:
    # JSONDecoder.decode runs two regexes around the C scanner; calling the scanner
    # directly and checking the ends ourselves saves about a third of a small decode.
    from json import scanner

    return scanner.make_scanner(_STRICT_DECODER)  # type: ignore[no-any-return, arg-type]


_scan_json = _make_json_scanner()
_JSON_WHITESPACE = " \t\n\r"


def _stdlib_decode_json(body: bytes) -> Any:
    """Parsed JSON, or None when the body is empty or not valid JSON (the contract's choice)."""
    if not body:
        return None
    try:
        text = body.decode("utf-8")
        if text[0] in _JSON_WHITESPACE or text[-1] in _JSON_WHITESPACE:
            return _json_decode(text)
        value, end = _scan_json(text, 0)
    except (ValueError, UnicodeDecodeError, StopIteration, RecursionError):
        return None
    return value if end == len(text) else None


def add_repeated(target: dict[str, Any], name: str, value: Any) -> None:
    """Store a field; a repeated name turns its value into a list, in arrival order."""
    if name in target:
        current = target[name]
        if isinstance(current, list):
            current.append(value)
        else:
            target[name] = [current, value]
    else:
        target[name] = value


def decode_form(body: bytes, charset: str = "utf-8") -> dict[str, Any]:
    """Fields of an application/x-www-form-urlencoded body; repeated names become lists.

    Raises:
        BadRequest: the body is not text in `charset`.
        PayloadTooLarge: more than MAX_FORM_FIELDS fields.
    """
    try:
        text = body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadRequest(f"form body is not valid {charset}") from exc
    if text.count("&") >= MAX_FORM_FIELDS:
        raise PayloadTooLarge(f"form body has more than {MAX_FORM_FIELDS} fields")
    fields: dict[str, Any] = {}
    for name, value in parse_qsl(text, keep_blank_values=True, encoding=charset):
        add_repeated(fields, name, value)
    return fields


def decode_xml(body: bytes) -> Any:
    """xmltodict's dict of an XML body. Entity declarations are refused.

    `disable_entities=True` makes any <!ENTITY> raise at once, so "billion laughs" costs
    nothing whatever the linked expat version (older ones have no amplification limit).

    Raises:
        BadRequest: malformed XML, or an entity declaration.
    """
    if not body.strip():
        raise BadRequest("XML body is empty")
    try:
        return xmltodict.parse(body, disable_entities=True)
    except ExpatError as exc:
        raise BadRequest(f"malformed XML body: {exc}") from exc
    except ValueError as exc:  # xmltodict's "entities are disabled"
        raise BadRequest(f"XML body refused: {exc}") from exc


def decode_text(body: bytes, charset: str = "utf-8") -> str:
    """A text body as str in the declared charset (UTF-8 when none is declared).

    Raises:
        BadRequest: the bytes are not valid in that charset.
    """
    try:
        return body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadRequest(f"text body is not valid {charset}") from exc


def charset_of(content_type: str | None, default: str = "utf-8") -> str:
    """The charset parameter of a Content-Type value, lower-cased, or `default`."""
    if not content_type:
        return default
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "charset" and value:
            return value.strip().strip('"').lower()
    return default


decode_json = _orjson_codec[1] if _orjson_codec is not None else _stdlib_decode_json
