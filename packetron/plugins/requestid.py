"""Request ids: `request.id`, taken from the client when well-formed, echoed in the answer."""
from __future__ import annotations

import re
from random import getrandbits
from typing import Any

from packetron.errors import ConfigError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin

__all__ = ["request_id", "is_valid_request_id", "request_id_of"]

MAX_LENGTH = 200
# Visible ASCII only: no spaces, no control characters, nothing a log line could be forged
# with.
_VALID = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_LENGTH)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def is_valid_request_id(value: str | None) -> bool:
    """Whether a client's id may be kept: 1 to 200 visible ASCII characters."""
    return value is not None and _VALID.fullmatch(value) is not None


# The version (4) and variant (RFC 9562) bits of a random UUID.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random UUID (version 4) as 32 hex digits.

    An id must be unique, not secret: the random module (reseeded in every forked worker)
    makes one in a fraction of what uuid.uuid4()'s os.urandom call costs per request.
    """
    return "%032x" % (getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)


def request_id_of(value: str | None) -> str:
    """The client's id when valid, else a new one (uuid4, 32 hex digits)."""
    return value if value is not None and is_valid_request_id(value) else new_request_id()


def request_id(header: str = "x-request-id") -> Plugin:
    """Give every request an id: `request.id` is the client's `header` value when it is 1
    to 200 visible ASCII characters, else a new uuid4 hex string. The answer carries it in
    the same header, errors and the server's own answers (404, 405, ...) included.
    """
    if not _HEADER_NAME.fullmatch(header):
        raise ConfigError(f"request_id: {header!r} is not a header name")

    def assign(request: Any, response: Any) -> bool:
        value = request.headers.get(header)
        # Most clients send no id: a new one without request_id_of's call.
        request.id = new_request_id() if value is None else request_id_of(value)
        return False

    def echo(request: Any, response: Any) -> None:
        rid = getattr(request, "id", None)
        if not isinstance(rid, str):
            # No handler ran (the server answered itself): the id is decided now.
            rid = request.id = request_id_of(request.headers.get(header))
        response.set_header(header, rid)

    # EXTREMELY_HIGH: other plugins (logging, auth) see request.id.
    return Plugin.create(PluginPriority.EXTREMELY_HIGH, handler=assign, after=echo)
