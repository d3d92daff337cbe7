"""Response serialization (sans-I/O): objects in, bytes out.

Status lines come prebuilt from packetron.status; a head is gathered in a list and joined
once so a response costs one transport write.
"""
from __future__ import annotations

from email.utils import formatdate

from packetron.status import STATUS_LINES

__all__ = ["format_date_header", "build_head", "header_line", "CONTINUE_RESPONSE",
           "simple_response", "KEEP_ALIVE_HEADER", "CLOSE_HEADER", "CHUNKED_HEADER",
           "encode_chunk", "LAST_CHUNK", "OK_STATUS_LINE", "CONTENT_LENGTH_LINES",
           "CONTENT_LENGTH_LINES_COUNT"]

CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"
# HTTP/1.1 is persistent by default, so only 1.0 clients are told "keep-alive".
KEEP_ALIVE_HEADER = b"connection: keep-alive\r\n"
CLOSE_HEADER = b"connection: close\r\n"
CHUNKED_HEADER = b"transfer-encoding: chunked\r\n"
LAST_CHUNK = b"0\r\n\r\n"
OK_STATUS_LINE = STATUS_LINES[200]
# The last header line of a response with a small body, by body length, prebuilt: formatting
# the number with b"%d" costs more than the rest of joining the head (0.17 against 0.12 us
# for a whole 200 response).
CONTENT_LENGTH_LINES_COUNT = 2048
CONTENT_LENGTH_LINES = tuple(b"content-length: %d\r\n\r\n" % length
                             for length in range(CONTENT_LENGTH_LINES_COUNT))


def format_date_header(epoch_seconds: float) -> bytes:
    """`date: <IMF-fixdate>\\r\\n` for the given time (RFC 9110 §5.6.7)."""
    return b"date: " + formatdate(epoch_seconds, usegmt=True).encode("ascii") + b"\r\n"


def header_line(name: str, value: str) -> bytes:
    """`name: value\\r\\n` as bytes.

    Raises:
        ValueError: the name or value contains CR or LF.
    """
    # CR/LF in a header would let a handler's data split the response (response splitting).
    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
        raise ValueError(f"header {name!r} contains a line break")
    return f"{name}: {value}\r\n".encode("latin-1")


# ("name", "value") -> "name: value", in C: formats checked headers (build_head and the
# response's hot path).
NAME_VALUE_JOIN = ": ".join


def build_head(
    status: int,
    date_header: bytes,
    content_type: bytes | None,
    content_length: int | None,
    extra_headers: list[tuple[str, str]] | None,
    connection: bytes,
    omit_length: bool = False,
    checked: bool = False,
) -> bytes:
    """The status line and header block of a response, ending with the blank line.

    Args:
        status: HTTP status code (100-599).
        date_header: a prebuilt `date:` line (see format_date_header).
        content_type: the full `content-type: ...\\r\\n` line, or None.
        content_length: body length; None means a chunked body.
        extra_headers: (name, value) pairs set by the handler, in order.
        connection: b"", CLOSE_HEADER or KEEP_ALIVE_HEADER.
        omit_length: write neither Content-Length nor Transfer-Encoding (1xx, 204, 304,
            and the head of a bodiless HEAD answer).
        checked: `extra_headers` were checked for line breaks already (Response.set_header
            does), so they are joined and encoded at once.

    Raises:
        ValueError: a header contains CR or LF.
    """
    parts = [STATUS_LINES[status], date_header]
    if content_type is not None:
        parts.append(content_type)
    if omit_length:
        pass
    elif content_length is None:
        parts.append(CHUNKED_HEADER)
    else:
        parts.append(b"content-length: %d\r\n" % content_length)
    if not extra_headers:
        pass
    elif checked:
        # ": ".join over each (name, value) pair: the whole block is formatted in C.
        parts.append(("\r\n".join(map(NAME_VALUE_JOIN, extra_headers)) + "\r\n")
                     .encode("latin-1"))
    else:
        for name, value in extra_headers:
            parts.append(header_line(name, value))
    if connection:
        parts.append(connection)
    parts.append(b"\r\n")
    return b"".join(parts)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def simple_response(status: int, date_header: bytes, body: bytes, *, close: bool,
                    extra_headers: list[tuple[str, str]] | None = None,
                    head: bool = False) -> bytes:
    """A complete text/plain response, used for errors the protocol answers itself.

    `head`: the request was HEAD, so the response has no content (RFC 9110 §9.3.2); its
    Content-Length still says what a GET would have received.
    """
    head_bytes = build_head(status, date_header, b"content-type: text/plain; charset=utf-8\r\n",
                            len(body), extra_headers, CLOSE_HEADER if close else b"")
    return head_bytes if head else head_bytes + body
