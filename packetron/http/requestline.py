"""What the request line's first word is, when llhttp refused it (pure).

llhttp knows a fixed list of methods and stops at any other with HPE_INVALID_METHOD,
before any callback; the protocol then asks `method_token_at_failure` whether the bytes
were a well-formed method nobody serves (501) or not a request at all (400).
"""
from __future__ import annotations

__all__ = ["method_token_at_failure", "TCHAR", "LLHTTP_METHODS"]

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def method_token_at_failure(data: bytes) -> bool:
    """Whether the request llhttp refused for its method starts with a valid method token.

    The failing request is the first one in `data` whose first word is not a method llhttp
    knows (it stops there); requests before it in the same chunk end with an empty line.
    A token is followed by a space, or runs to the end of what has arrived.
    """
    start = 0
    while True:
        line = data[start:].lstrip(b"\r\n")  # llhttp skips empty lines between requests
        word, space, _ = line.partition(b" ")
        if not space or word not in LLHTTP_METHODS:
            return bool(word) and all(byte in TCHAR for byte in word) \
                and (bool(space) or len(word) == len(line))
        end = data.find(b"\r\n\r\n", start)
        if end < 0:
            return False
        start = end + 4


# Methods llhttp parses (llhttp.h, HTTP_METHOD_MAP and RTSP_METHOD_MAP).
LLHTTP_METHODS = frozenset(b"""DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL
    MOVE PROPFIND PROPPATCH SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT
    MERGE M-SEARCH NOTIFY SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE
    PRI DESCRIBE ANNOUNCE SETUP PLAY PAUSE TEARDOWN GET_PARAMETER SET_PARAMETER REDIRECT
    RECORD FLUSH QUERY""".split())
