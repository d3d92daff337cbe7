"""The one exception hierarchy: everything packetron raises derives from PacketronError."""
from __future__ import annotations

__all__ = [
    "PacketronError",
    "ConfigError",
    "ProtocolError",
    "HttpError",
    "BadRequest",
    "NotFound",
    "MethodNotAllowed",
    "RequestTimeout",
    "PayloadTooLarge",
    "UriTooLong",
    "UnsupportedMediaType",
    "RangeNotSatisfiable",
    "TooManyRequests",
    "HeadersTooLarge",
    "ResponseAlreadySent",
    "GlobalDataDisabled",
    "WebSocketClosed",
    "NetError",
    "FramingError",
    "FrameTooLarge",
    "BufferFull",
    "ConnectionClosed",
    "IncompleteRead",
    "ConnectionModeError",
    "ConnectFailed",
    "RpcError",
    "RpcTimeout",
    "RemoteError",
    "HandlerLoadError",
]


class PacketronError(Exception):
    """Root of every error packetron raises on purpose."""


class ConfigError(PacketronError, ValueError):
    """An option has an invalid value; raised at construction, never per request."""


# ---------------------------------------------------------------- HTTP


class HttpError(PacketronError):
    """An error that maps onto an HTTP status.

    Raised from a handler or plugin, it is answered with `status_code`, the message as
    the reason text (the status's reason phrase when empty) and `headers` added.
    Subclasses set `status_code` as a class attribute.
    """

    status_code: int = 500

    def __init__(self, message: str = "", *, status_code: int | None = None,
                 headers: "dict[str, str] | list[tuple[str, str]] | None" = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.headers: list[tuple[str, str]] = (
            list(headers.items()) if isinstance(headers, dict) else list(headers or ()))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProtocolError(HttpError):
    """The peer broke HTTP/1.1 framing; the connection is answered and then closed."""

    status_code = 400


class BadRequest(ProtocolError):
    status_code = 400


class RequestTimeout(ProtocolError):
    status_code = 408


class UriTooLong(ProtocolError):
    status_code = 414


class HeadersTooLarge(ProtocolError):
    status_code = 431


class NotFound(HttpError):
    status_code = 404


class MethodNotAllowed(HttpError):
    status_code = 405


class PayloadTooLarge(HttpError):
    status_code = 413


class UnsupportedMediaType(HttpError):
    status_code = 415


class RangeNotSatisfiable(HttpError):
    status_code = 416


class TooManyRequests(HttpError):
    status_code = 429


class ResponseAlreadySent(PacketronError):
    """A handler tried to send a second response for one request."""


class GlobalDataDisabled(PacketronError):
    """Global data was used on a server started with ServerFlags.NO_GLOBAL_DATA."""


class WebSocketClosed(PacketronError):
    """The WebSocket peer closed the connection (or it was lost): `code` and `reason`."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


# ---------------------------------------------------------------- net


class NetError(PacketronError):
    """Errors of the broker / TCP layer."""


class FramingError(NetError):
    """Bytes on the wire do not form a valid frame (bad header, bad type)."""


class FrameTooLarge(FramingError):
    """A frame header announced (or a line grew) beyond the configured maximum."""


class BufferFull(NetError):
    """send() was called while the outgoing buffer is above max_buffer_bytes."""


class ConnectionClosed(NetError):
    """The connection ended while an operation was waiting on it."""


class IncompleteRead(ConnectionClosed, EOFError):
    """The stream ended before `readexactly(n)` got its n bytes.

    Shaped like `asyncio.IncompleteReadError` (an EOFError with `partial` and `expected`), so
    code ported from asyncio streams keeps working with `except EOFError`.
    """

    def __init__(self, partial: bytes, expected: int | None) -> None:
        super().__init__(f"{len(partial)} bytes read on a total of {expected!r} expected bytes")
        self.partial = partial
        self.expected = expected


class ConnectionModeError(NetError, RuntimeError):
    """A Connection was used both by reading and through "message" listeners.

    The two styles consume the same bytes, so one connection takes one of them.
    """


class ConnectFailed(NetError):
    """A client gave up connecting (after its last retry)."""


class RpcError(NetError):
    """Base of request-response errors."""


class RpcTimeout(RpcError):
    """No response arrived within the request timeout."""


class RemoteError(RpcError):
    """The peer answered a request with an error.

    `payload` is what the peer sent (for packet-stream, the `{"message", "name", "stack"}`
    object); `str(err)` is its message.
    """

    def __init__(self, message: str, payload: object = None, name: str | None = None) -> None:
        super().__init__(message)
        self.payload = payload
        self.name = name


class HandlerLoadError(NetError):
    """A broker handler file failed to import or does not define the required function."""


# ---------------------------------------------------------------- HTTP, appended


class HttpNotImplemented(HttpError):
    """501: the request needs something this server does not implement."""

    status_code = 501


class MethodNotImplemented(HttpNotImplemented):
    """501: a syntactically valid method that no route can serve (RFC 9110 §9.1)."""


class TransferCodingNotImplemented(HttpNotImplemented):
    """501: a transfer coding other than a lone `chunked` (RFC 9112 §6.1)."""


__all__ += ["HttpNotImplemented", "MethodNotImplemented", "TransferCodingNotImplemented"]


# ---------------------------------------------------------------- added for globaldata and the broker

__all__ += ["UnsafeGlobalDataPath", "NoPortOpened"]


class UnsafeGlobalDataPath(ConfigError):
    """The global data store refused a folder or file in the shared temp directory.

    A symlink there, or a folder or file owned by another user, could hand our data to
    someone else or plant theirs: it is refused rather than used. Remove it, or pass an
    explicit global data path.
    """


class NoPortOpened(NetError):
    """A Broker could open none of the ports its handler files declare.

    `failures` lists `(protocol, port, error)` for each port that could not be opened.
    """

    def __init__(self, message: str,
                 failures: "list[tuple[str, int, BaseException]] | None" = None) -> None:
        super().__init__(message)
        self.failures: list[tuple[str, int, BaseException]] = list(failures or ())


# ---------------------------------------------------------------- faults from outside

__all__ += ["ServiceUnavailable", "InsufficientStorage", "GlobalDataUnavailable",
            "ChannelsUnavailable", "SharedStoreUnavailable"]


class ServiceUnavailable(HttpError):
    """503: the server cannot answer this now, but may shortly (a resource such as file
    descriptors ran out, or a backend is down). Nothing is wrong with the request."""

    status_code = 503


class InsufficientStorage(HttpError):
    """507: what the request sends cannot be stored: the disk is full, or the user's
    quota is spent (RFC 4918 §11.5). Raised while an upload is written to disk; the
    partial file is removed and the connection closed (the rest of the body is unread)."""

    status_code = 507


class GlobalDataUnavailable(ServiceUnavailable):
    """The global data store cannot be used right now.

    Redis is unreachable or did not answer within its timeout, or the SQLite file could
    not be written (its disk is full, or failing). The store's own error is `__cause__`.
    Nothing has to be restarted: calls work again once the store is back. Not caught in
    a handler, it is answered 503; its message names the backend and what failed, never
    an address or a password.
    """


class ChannelsUnavailable(ServiceUnavailable):
    """`server.channels` cannot reach Redis, or Redis did not answer within its timeout.

    Raised by publish (a publish that timed out may still be delivered once Redis
    answers) and by subscribe; existing subscriptions resubscribe by themselves when Redis
    is back. Not caught in a handler, it is answered 503.
    """


class SharedStoreUnavailable(NetError):
    """`ctx.shared` (a RedisStore) cannot reach Redis, or Redis did not answer in time.

    Raised by get/set/delete/incr/publish while Redis is away; the store reconnects by
    itself on a later call, and subscriptions resubscribe (messages published while they
    were away are lost, as with any Redis subscriber). The redis error is `__cause__`.
    """
