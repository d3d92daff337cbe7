"""How an error becomes an answer: which renderer, which status, which body.

Pure decisions, used by the request owner's one error boundary (packetron.http.protocol).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from packetron.errors import HttpError
from packetron.status import reason_phrase

__all__ = ["find_error_handler", "status_of", "reason_of", "default_error_body"]

ErrorHandler = Callable[[Any, Any, BaseException], Any]


def status_of(exc: BaseException) -> int:
    """The status an exception is answered with: an HttpError's own, else 500."""
    return exc.status_code if isinstance(exc, HttpError) else 500


def reason_of(exc: BaseException) -> str:
    """The reason text: an HttpError's message (or its status's phrase), else the phrase of
    500 — an unexpected exception's text is never shown to the client."""
    if isinstance(exc, HttpError):
        return str(exc) or reason_phrase(exc.status_code)
    return reason_phrase(500)


def find_error_handler(handlers: dict[Any, ErrorHandler],
                       exc: BaseException) -> ErrorHandler | None:
    """The renderer registered for `exc`: its own class or a subclass-specific ancestor
    first, then its status, then the general classes (HttpError, Exception ...)."""
    if not handlers:
        return None
    mro = type(exc).__mro__
    general_from = mro.index(HttpError) if HttpError in mro else len(mro)
    for cls in mro[:general_from]:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    handler = handlers.get(status_of(exc))
    if handler is not None:
        return handler
    for cls in mro[general_from:]:
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


def default_error_body(status: int, reason: str, error_format: str) -> tuple[bytes, bytes]:
    """(content-type header line, body) of the server's plain answer for an error."""
    if error_format == "json":
        return (b"content-type: application/json\r\n",
                json.dumps({"error": reason, "status": status},
                           separators=(",", ":")).encode("utf-8"))
    return b"content-type: text/plain; charset=utf-8\r\n", reason.encode("utf-8")
