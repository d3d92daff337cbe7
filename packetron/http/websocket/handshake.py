"""The WebSocket opening handshake (RFC 6455 §4), sans-I/O: headers in, decisions and bytes out.

`upgrade_refusal` decides whether a request to a WebSocket route may be upgraded (and the
HTTP error it gets otherwise); `parse_upgrade` reads what the client offers (key,
subprotocols, extensions); `switching_head` builds the 101 answer.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from packetron.errors import BadRequest, HttpError

__all__ = ["UpgradeOffer", "upgrade_refusal", "parse_upgrade", "accept_token",
           "switching_head", "header_tokens", "split_extension_offers", "WEBSOCKET_VERSION"]

# RFC 6455 §1.3: appended to the client's key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBSOCKET_VERSION = "13"
# RFC 7230 tchar: what a subprotocol name (a token) may contain.
_TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class UpgradeOffer:
    """What a valid upgrade request offers."""

    key: bytes                        # Sec-WebSocket-Key as sent (base64 of 16 bytes)
    subprotocols: tuple[str, ...]     # Sec-WebSocket-Protocol, in the client's order
    extensions: tuple[str, ...]       # each Sec-WebSocket-Extensions offer, e.g.
                                      # "permessage-deflate; client_max_window_bits"


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value.strip(b" \t") for key, value in headers if key.lower() == name]


def header_tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated tokens of every `name` header, lower-cased, empty ones dropped."""
    tokens = []
    for value in _values(headers, name):
        for token in value.split(b","):
            token = token.strip(b" \t")
            if token:
                tokens.append(token.decode("latin-1").lower())
    return tokens


def _upgrade_required(message: str) -> HttpError:
    # RFC 9110 §15.5.22: a 426 names the protocol to switch to in an Upgrade header.
    return HttpError(message, status_code=426,
                     headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                              ("Sec-WebSocket-Version", WEBSOCKET_VERSION)])


def upgrade_refusal(method: str, http_version: str, headers: list[tuple[bytes, bytes]],
                    has_body: bool) -> HttpError | None:
    """Why a request to a WebSocket route cannot be upgraded, or None when it can.

    A request that does not ask for a WebSocket at all (no `Upgrade: websocket`) gets
    426 Upgrade Required, as does a Sec-WebSocket-Version other than 13 (RFC 6455
    §4.2.2: with `Sec-WebSocket-Version: 13`); a malformed upgrade gets 400.
    """
    if "websocket" not in header_tokens(headers, b"upgrade"):
        return _upgrade_required("Upgrade Required: this route serves WebSockets only")
    if method != "GET":
        return BadRequest("Bad Request: a WebSocket upgrade must be a GET request")
    if http_version != "1.1":
        return BadRequest("Bad Request: a WebSocket upgrade needs HTTP/1.1")
    if "upgrade" not in header_tokens(headers, b"connection"):
        return BadRequest("Bad Request: a WebSocket upgrade needs 'Connection: Upgrade'")
    versions = _values(headers, b"sec-websocket-version")
    if not versions:
        return BadRequest("Bad Request: missing Sec-WebSocket-Version")
    if versions != [WEBSOCKET_VERSION.encode("ascii")]:
        return _upgrade_required("Upgrade Required: unsupported Sec-WebSocket-Version")
    keys = _values(headers, b"sec-websocket-key")
    if len(keys) != 1 or not _valid_key(keys[0]):
        return BadRequest("Bad Request: Sec-WebSocket-Key must be one base64-encoded "
                          "16-byte value")
    if has_body:
        return BadRequest("Bad Request: a WebSocket upgrade has no body")
    return None


def _valid_key(key: bytes) -> bool:
    if len(key) != 24:  # base64 of 16 bytes, padding included
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def split_extension_offers(values: list[bytes]) -> tuple[str, ...]:
    """Each extension offer of the Sec-WebSocket-Extensions headers, in order.

    Commas separate offers (RFC 6455 §9.1); a quoted parameter value cannot hold one in
    any extension this server knows, so a plain split is exact for what it negotiates.
    """
    offers = []
    for value in values:
        for offer in value.decode("latin-1").split(","):
            offer = offer.strip(" \t")
            if offer:
                offers.append(offer)
    return tuple(offers)


def parse_upgrade(headers: list[tuple[bytes, bytes]]) -> UpgradeOffer:
    """The key, subprotocols and extension offers of a request upgrade_refusal accepted."""
    subprotocols = []
    for value in _values(headers, b"sec-websocket-protocol"):
        for token in value.split(b","):
            token = token.strip(b" \t")
            if token and all(byte in _TCHARS for byte in token):
                subprotocols.append(token.decode("ascii"))
    return UpgradeOffer(
        key=_values(headers, b"sec-websocket-key")[0],
        subprotocols=tuple(subprotocols),
        extensions=split_extension_offers(_values(headers, b"sec-websocket-extensions")))


def accept_token(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a client's key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def switching_head(key: bytes, *, subprotocol: str | None = None,
                   extensions: str | None = None,
                   headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
                   date_header: bytes = b"") -> bytes:
    """The whole `101 Switching Protocols` answer.

    Raises:
        ValueError: a header name or value holds CR or LF, or the subprotocol is not a
            token.
    """
    lines = [b"HTTP/1.1 101 Switching Protocols\r\n", date_header,
             b"upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
             accept_token(key), b"\r\n"]
    if subprotocol is not None:
        raw = subprotocol.encode("ascii", "replace")
        if not raw or not all(byte in _TCHARS for byte in raw):
            raise ValueError(f"invalid subprotocol {subprotocol!r}")
        lines += [b"sec-websocket-protocol: ", raw, b"\r\n"]
    if extensions:
        lines += [b"sec-websocket-extensions: ", extensions.encode("latin-1"), b"\r\n"]
    for name, value in headers:
        text = str(value)
        if "\r" in name or "\n" in name or ":" in name or "\r" in text or "\n" in text:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {text}\r\n".encode("latin-1"))
    lines.append(b"\r\n")
    return b"".join(lines)
