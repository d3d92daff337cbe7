"""Errors the test client raises (all of them are PacketronErrors)."""
from __future__ import annotations

from packetron.errors import ConnectionClosed, PacketronError

__all__ = ["TestClientError", "ResponseTimeout", "InvalidResponse", "TooManyRedirects",
           "ConnectionClosed", "IncompleteResponse"]


class TestClientError(PacketronError):
    """Something went wrong on the client side of an in-memory exchange."""

    __test__ = False  # not a pytest test class, whatever its name


class ResponseTimeout(TestClientError, TimeoutError):
    """The application did not finish its answer within the client's timeout."""


class InvalidResponse(TestClientError):
    """The server's bytes are not valid HTTP/1.1 (h11, the independent parser, refused them).

    This is a server bug: the message says what h11 objected to.
    """


class IncompleteResponse(TestClientError, ConnectionClosed):
    """The server closed the connection in the middle of an answer's body (a handler
    that failed after its response had started, say)."""


class TooManyRedirects(TestClientError):
    """follow_redirects went round more times than max_redirects allows."""
