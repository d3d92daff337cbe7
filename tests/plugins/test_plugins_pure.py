"""The shipped plugins' decisions, without a server: signing, origins, tokens, ids."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import uuid

import pytest

from packetron import Plugin
from packetron.errors import ConfigError
from packetron.plugins import cors, csrf, request_id, security_headers, sessions
from packetron.plugins.crossorigin import CorsPolicy, add_vary, parse_origin
from packetron.plugins.csrftoken import is_token, new_token, tokens_match
from packetron.plugins.requestid import is_valid_request_id, request_id_of
from packetron.plugins.securityheaders import security_header_list
from packetron.plugins.sessioncookie import MAX_COOKIE_SIZE, SessionSigner

NOW = 1_700_000_000.0


# ------------------------------------------------------------ sessions: signing


def test_a_signed_session_loads_back_with_its_timestamp() -> None:
    signer = SessionSigner("s3cret", max_age=3600)
    value = signer.sign({"user": 42, "name": "zoë", "cart": [1, 2]}, NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.\d+\.[A-Za-z0-9_-]{43}", value)
    assert signer.load(value, NOW + 10) == ({"user": 42, "name": "zoë", "cart": [1, 2]},
                                            int(NOW), True)


def test_str_and_bytes_secrets_are_the_same_key() -> None:
    value = SessionSigner("key", None).sign({"a": 1}, NOW)
    assert SessionSigner(b"key", None).load(value, NOW) is not None


def test_a_changed_payload_timestamp_or_signature_is_refused() -> None:
    signer = SessionSigner("s3cret", max_age=3600)
    payload, stamp, signature = signer.sign({"user": 42}, NOW).split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"user": 1}).encode()).rstrip(b"=").decode()
    assert signer.load(f"{forged}.{stamp}.{signature}", NOW) is None
    assert signer.load(f"{payload}.{int(NOW) + 1000}.{signature}", NOW) is None
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert signer.load(f"{payload}.{stamp}.{flipped}", NOW) is None
    assert signer.load(f"{payload}.{stamp}.{signature[:-2]}", NOW) is None


def test_another_secret_or_cookie_name_does_not_verify() -> None:
    value = SessionSigner("one", None).sign({"a": 1}, NOW)
    assert SessionSigner("two", None).load(value, NOW) is None
    other_purpose = SessionSigner("one", None, salt="something else")
    assert other_purpose.load(value, NOW) is None


@pytest.mark.parametrize("garbage", [
    "", ".", "..", "...", "a.b.c", "a.1.c", "a.1", "a.-1.AAAA", "a.1e5.AAAA", "a. 1.AAAA",
    "é.1.AAAA", "a.1.AA=A", "a.1.!!!!", "x" * 5000, "a.1.AAAA.b", "\x00.1.AAAA",
    "a.99999999999999999999.AAAA",
])
def test_garbled_values_are_refused_without_raising(garbage: str) -> None:
    assert SessionSigner("s3cret", max_age=60).load(garbage, NOW) is None


def test_an_oversized_value_is_refused_even_when_signed() -> None:
    signer = SessionSigner("s3cret", None)
    value = signer.sign({"blob": "x" * 4000}, NOW)
    assert len(value) > MAX_COOKIE_SIZE
    assert signer.load(value, NOW) is None


def test_a_signed_payload_that_is_not_a_json_object_is_refused() -> None:
    signer = SessionSigner("s3cret", None)
    # A list signed with the signer's own key: the signature is valid, the shape is not.
    payload = base64.urlsafe_b64encode(b"[1,2]").rstrip(b"=").decode()
    signed = f"{payload}.{int(NOW)}"
    mac = hmac.new(signer._keys[0], signed.encode(), hashlib.sha256).digest()
    value = f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert signer.load(value, NOW) is None


def test_expiry_is_checked_on_the_server_from_the_signed_timestamp() -> None:
    signer = SessionSigner("s3cret", max_age=100)
    value = signer.sign({"a": 1}, NOW)
    assert signer.load(value, NOW + 100) is not None
    assert signer.load(value, NOW + 101) is None
    assert SessionSigner("s3cret", max_age=None).load(value, NOW + 10**9) is not None


def test_rotation_the_first_secret_signs_and_every_one_verifies() -> None:
    old_value = SessionSigner("old", None).sign({"a": 1}, NOW)
    rotated = SessionSigner(["new", "old"], None)
    assert rotated.load(old_value, NOW) == ({"a": 1}, int(NOW), False)
    new_value = rotated.sign({"a": 2}, NOW)
    assert SessionSigner("new", None).load(new_value, NOW) is not None
    assert SessionSigner("old", None).load(new_value, NOW) is None
    assert rotated.load(new_value, NOW) == ({"a": 2}, int(NOW), True)


@pytest.mark.parametrize("bad", [[], "", b"", [""], ["ok", 3], None])
def test_missing_or_empty_secrets_are_config_errors(bad) -> None:
    with pytest.raises(ConfigError):
        SessionSigner(bad, None)


def test_sessions_checks_its_options() -> None:
    assert isinstance(sessions("s3cret"), Plugin)
    with pytest.raises(ConfigError):
        sessions("s3cret", same_site="none")  # SameSite=None needs Secure
    assert isinstance(sessions("s3cret", same_site="none", https_only=True), Plugin)
    with pytest.raises(ConfigError):
        sessions("s3cret", same_site="sometimes")
    with pytest.raises(ConfigError):
        sessions("s3cret", cookie_name="bad name")
    with pytest.raises(ConfigError):
        sessions("s3cret", max_age=0)


# ------------------------------------------------------------ CORS


@pytest.mark.parametrize("value, expected", [
    ("https://example.com", "https://example.com"),
    ("HTTPS://Example.COM", "https://example.com"),
    ("https://example.com:443", "https://example.com"),
    ("http://example.com:80", "http://example.com"),
    ("https://example.com:8443", "https://example.com:8443"),
    ("http://example.com:443", "http://example.com:443"),
    ("https://example.com:0443", "https://example.com"),
    ("http://[::1]:8000", "http://[::1]:8000"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("https://example.com/", None),
    ("https://example.com/path", None),
    ("https://user@example.com", None),
    ("https://example.com:99999", None),
    ("https://example.com:", None),
    ("example.com", None),
    ("null", None),
    ("https://exa mple.com", None),
    ("https://example.com, https://other.com", None),
    ("", None),
])
def test_origins_are_parsed_as_browsers_serialize_them(value: str, expected) -> None:
    assert parse_origin(value) == expected


def test_listed_origins_match_scheme_host_and_port_exactly() -> None:
    policy = CorsPolicy(allow_origins=["https://app.example.com", "http://localhost:3000/"])
    assert policy.allows_origin("https://app.example.com")
    assert policy.allows_origin("https://APP.Example.com")       # hosts are case-insensitive
    assert policy.allows_origin("https://app.example.com:443")   # the default port
    assert policy.allows_origin("http://localhost:3000")         # trailing "/" in the config
    assert not policy.allows_origin("http://app.example.com")    # another scheme
    assert not policy.allows_origin("https://app.example.com:8443")  # another port
    assert not policy.allows_origin("http://localhost:3001")
    assert not policy.allows_origin("https://app.example.com.evil.com")
    assert not policy.allows_origin("https://evilapp.example.com")
    assert not policy.allows_origin("null")
    assert not policy.allows_origin("garbage")


def test_null_is_allowed_only_when_listed() -> None:
    assert not CorsPolicy().allows_origin("null")
    assert not CorsPolicy(allow_origin_regex=r".*").allows_origin("null")
    listed = CorsPolicy(allow_origins=["null"])
    assert listed.allows_origin("null")
    assert listed.simple_headers("null") == [("Access-Control-Allow-Origin", "null")]
    assert CorsPolicy(allow_origins=["*", "null"]).simple_headers("null") == [
        ("Access-Control-Allow-Origin", "null")]


def test_the_wildcard_allows_every_well_formed_origin() -> None:
    policy = CorsPolicy()
    assert policy.simple_headers("https://anything.test:1234") == [
        ("Access-Control-Allow-Origin", "*")]
    assert policy.simple_headers("not an origin") == []


def test_regex_matches_the_whole_normalized_origin() -> None:
    policy = CorsPolicy(allow_origins=(), allow_origin_regex=r"https://[a-z0-9-]+\.example\.com")
    assert policy.allows_origin("https://preview-12.example.com")
    assert policy.allows_origin("https://Preview-12.EXAMPLE.com")
    assert not policy.allows_origin("https://preview.example.com.evil.test")
    assert not policy.allows_origin("http://preview.example.com")


def test_credentials_name_the_origin_instead_of_the_wildcard() -> None:
    policy = CorsPolicy(allow_credentials=True, expose_headers=["X-Total", "ETag"])
    assert policy.simple_headers("https://a.test") == [
        ("Access-Control-Allow-Origin", "https://a.test"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Expose-Headers", "X-Total, ETag")]


def test_a_preflight_reflects_requested_headers_by_default() -> None:
    headers, refusal = CorsPolicy().preflight("https://a.test", "PUT", "X-Token, Content-Type")
    assert refusal is None
    assert dict(headers) == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
        "Access-Control-Allow-Headers": "x-token, content-type",
        "Access-Control-Max-Age": "600"}


def test_a_preflight_with_listed_headers_refuses_others() -> None:
    policy = CorsPolicy(allow_origins=["https://a.test"], allow_methods=["get", "post"],
                        allow_headers=["X-Token"], allow_credentials=True, max_age=None)
    headers, refusal = policy.preflight("https://a.test", "POST", "x-token,content-type")
    assert refusal is None
    assert dict(headers) == {
        "Access-Control-Allow-Origin": "https://a.test",
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "x-token, accept, accept-language, content-language, "
                                        "content-type",
        "Access-Control-Allow-Credentials": "true"}
    assert policy.preflight("https://a.test", "POST", "x-other") == (
        [], "Disallowed CORS headers")
    assert policy.preflight("https://a.test", "DELETE", None) == ([], "Disallowed CORS method")
    assert policy.preflight("https://b.test", "DELETE", "x-other") == (
        [], "Disallowed CORS origin, method, headers")


def test_a_preflight_refuses_header_names_that_are_not_tokens() -> None:
    assert CorsPolicy().preflight("https://a.test", "GET", "x-ok, bad header")[1] == \
        "Disallowed CORS headers"


def test_any_method_answers_with_the_requested_one() -> None:
    headers, _ = CorsPolicy(allow_methods="*").preflight("https://a.test", "PURGE", "")
    assert ("Access-Control-Allow-Methods", "PURGE") in headers
    assert not any(name == "Access-Control-Allow-Headers" for name, _ in headers)


@pytest.mark.parametrize("kwargs", [
    {"allow_origins": ["example.com"]}, {"allow_origins": ["https://a.test/path"]},
    {"allow_origin_regex": "("}, {"allow_methods": ["GET POST"]},
    {"allow_headers": ["x y"]}, {"expose_headers": ["a\r\nb"]}, {"max_age": -1},
])
def test_cors_refuses_bad_configuration(kwargs) -> None:
    with pytest.raises(ConfigError):
        cors(**kwargs)


class FakeResponse:
    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = dict(headers or {})

    def get_header(self, name: str) -> str | None:
        return self.headers.get(name)

    def set_header(self, name: str, value: str) -> None:
        self.headers[name] = value


@pytest.mark.parametrize("before, after", [
    (None, "Origin"), ("Accept-Encoding", "Accept-Encoding, Origin"),
    ("accept-encoding, origin", "accept-encoding, origin"), ("*", "*"),
])
def test_vary_is_appended_once(before, after) -> None:
    response = FakeResponse({"Vary": before} if before else None)
    add_vary(response, "Origin")
    assert response.headers["Vary"] == after


# ------------------------------------------------------------ CSRF


def test_tokens_are_random_urlsafe_and_compared_exactly() -> None:
    token = new_token()
    assert is_token(token) and len(token) == 43 and token != new_token()
    assert tokens_match(token, token)
    assert not tokens_match(token, token[:-1])
    assert not tokens_match(token, token.upper() if token.upper() != token else token + "x")
    assert not tokens_match(None, token)
    assert not tokens_match(token, None)
    assert not tokens_match("", "")
    assert not tokens_match("short", "short")             # not a token at all
    assert not tokens_match(token, token + "é")           # non-ASCII does not raise


def test_csrf_checks_its_names() -> None:
    assert isinstance(csrf(), Plugin)
    with pytest.raises(ConfigError):
        csrf(cookie_name="a b")
    with pytest.raises(ConfigError):
        csrf(header_name="x:y")


# ------------------------------------------------------------ request ids


@pytest.mark.parametrize("value, valid", [
    ("abc-123", True), ("x" * 200, True), ("!~", True), ("a", True),
    ("", False), ("x" * 201, False), ("has space", False), ("tab\there", False),
    ("nl\nx", False), ("nul\x00", False), ("del\x7f", False), ("é", False), (None, False),
])
def test_request_ids_must_be_short_visible_ascii(value, valid: bool) -> None:
    assert is_valid_request_id(value) is valid
    chosen = request_id_of(value)
    if valid:
        assert chosen == value
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", chosen)


def test_new_request_ids_differ() -> None:
    assert request_id_of(None) != request_id_of(None)


def test_new_request_ids_are_version_4_uuids() -> None:
    for _ in range(200):
        parsed = uuid.UUID(hex=request_id_of(None))
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_forked_workers_make_different_request_ids() -> None:
    """Workers are forked from one process: each must draw its own ids."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes one id and leaves at once
        os.write(write_end, request_id_of(None).encode())
        os._exit(0)
    os.close(write_end)
    try:
        child_id = os.read(read_end, 64).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(child_id) == 32 and child_id != request_id_of(None)


def test_request_id_checks_its_header_name() -> None:
    assert isinstance(request_id(), Plugin)
    with pytest.raises(ConfigError):
        request_id(header="x id")


# ------------------------------------------------------------ security headers


def test_security_headers_defaults_and_switches() -> None:
    assert security_header_list() == [
        ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "strict-origin-when-cross-origin")]
    assert security_header_list(hsts=None, content_type_options=False, frame_options=False,
                                referrer_policy=None, csp="default-src 'self'") == [
        ("Content-Security-Policy", "default-src 'self'")]
    with pytest.raises(ConfigError):
        security_headers(csp="default-src 'self'\r\nX-Evil: 1")
    with pytest.raises(ConfigError):
        security_headers(frame_options=3)  # type: ignore[arg-type]


def test_cors_remembers_its_answer_per_origin_within_a_bound() -> None:
    from packetron.plugins import crossorigin

    policy = CorsPolicy(allow_origins=["https://app.example"], allow_credentials=True,
                        expose_headers=["X-Total"])
    for _ in range(2):  # the second time from memory: the same headers
        block = policy.simple_block("https://APP.example:443")
        assert block is not None and list(block.pairs) == [
            ("Access-Control-Allow-Origin", "https://APP.example:443"),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", "X-Total")]
        assert policy.simple_block("https://evil.example") is None
        assert policy.simple_block("null") is None
    for number in range(crossorigin._SIMPLE_BLOCKS_MAX * 3):
        assert policy.simple_block(f"https://h{number}.example") is None
        assert len(policy._simple_blocks) <= crossorigin._SIMPLE_BLOCKS_MAX
    assert policy.simple_block("https://app.example") is not None


@pytest.mark.parametrize("method, origin", [
    ("GET", "https://app.example"), ("GET", "https://evil.example"), ("GET", None),
    ("OPTIONS", "https://app.example"),  # not a preflight: no Access-Control-Request-Method
])
@pytest.mark.parametrize("preset", [
    [], [("Vary", "Accept")], [("Vary", "origin")], [("Access-Control-Allow-Origin", "x")],
    [("Vary", "Accept"), ("Access-Control-Allow-Origin", "x"), ("X-Other", "1")],
])
def test_cors_headers_are_those_of_vary_then_the_origins_block(method, origin,
                                                                preset) -> None:
    """Vary: Origin and the origin's headers set at once (when no Vary is set) end as
    adding Vary, then setting the origin's headers one by one, would."""
    from packetron.http.headers import Headers
    from packetron.http.response import Response
    from packetron.plugins.crossorigin import _VARY_ORIGIN

    class Request:
        def __init__(self) -> None:
            self.method = method
            raw = [(b"Origin", origin.encode())] if origin is not None else []
            self.headers = Headers(raw)

    policy = CorsPolicy(allow_origins=["https://app.example"], allow_credentials=True,
                        expose_headers=["X-Total"])
    plugin = cors(allow_origins=["https://app.example"], allow_credentials=True,
                  expose_headers=["X-Total"])
    by_plugin = Response(None, None)  # type: ignore[arg-type]
    expected = Response(None, None)  # type: ignore[arg-type]
    for response in (by_plugin, expected):
        for name, value in preset:
            response.set_header(name, value)
    plugin.after(Request(), by_plugin)  # type: ignore[misc]
    if expected.get_header("Vary") is None:
        expected.add_missing_headers(_VARY_ORIGIN)
    else:
        add_vary(expected, "Origin")
    block = policy.simple_block(origin) if origin is not None else None
    if block is not None:
        expected.set_headers(block)
    assert by_plugin._headers == expected._headers
