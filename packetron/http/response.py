"""The response object handlers receive: one send per request, written in one write."""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Awaitable, BinaryIO, Coroutine

from packetron.errors import ResponseAlreadySent
from packetron.http import wire
from packetron.http.wire import NAME_VALUE_JOIN as _NAME_VALUE_JOIN
from packetron.http.bodies import encode_json, encode_json_fast
from packetron.http.cookies import SameSite, build_set_cookie
from packetron.http.sse import DEFAULT_HEARTBEAT_SECONDS, SSE_HEADERS, EventStream
from packetron.log import server_logger
from packetron.status import reason_phrase

if TYPE_CHECKING:
    from datetime import datetime

    from packetron.http.connection import Connection
    from packetron.http.request import Request

__all__ = ["HeaderBlock", "Response", "NO_BODY_STATUSES"]

CT_JSON = b"content-type: application/json\r\n"
CT_HTML = b"content-type: text/html; charset=utf-8\r\n"
CT_TEXT = b"content-type: text/plain; charset=utf-8\r\n"
CT_OCTET = b"content-type: application/octet-stream\r\n"

# Bound once for the hot path of _send (a module global is one lookup, wire.X two).
_OK_STATUS_LINE = wire.OK_STATUS_LINE
_CONTENT_LENGTH_LINES = wire.CONTENT_LENGTH_LINES
_CONTENT_LENGTH_LINES_COUNT = wire.CONTENT_LENGTH_LINES_COUNT

_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# Header names set_header has seen and accepted, with their lowercase form: most answers
# set the same few names, which are then checked once per process, not once per call.
_CHECKED_NAMES: dict[str, str] = {}
_CHECKED_NAMES_MAX = 1024

# Prebuilt header lines parsed back into (name, value) pairs, by the lines: a handful of
# content types and cached static files, each parsed once instead of once per answer.
_EXPOSED_LINES: dict[bytes, HeaderBlock] = {}
_EXPOSED_LINES_MAX = 4096


def _parse_head_lines(lines: bytes) -> tuple[tuple[str, str], ...]:
    """The (name, value) pairs of prebuilt header lines, framing headers left out."""
    pairs = []
    for line in lines.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower().decode("latin-1") not in _FRAMING_HEADERS:
            pairs.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
    return tuple(pairs)


def _header_text(name: str, value: Any) -> str:
    """`value` as the text of header `name`; ValueError for CR or LF (response splitting)."""
    text = value if type(value) is str else str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(f"invalid header {name!r}")
    return text


def _check_name(name: str) -> str:
    """The lowercase form of a header name a handler may set; remembered when valid.

    Raises:
        ValueError: CR, LF or ":" in the name, or a framing header the server sets itself.
    """
    if "\r" in name or "\n" in name or ":" in name:
        raise ValueError(f"invalid header {name!r}")
    lowered = name.lower()
    if lowered in _FRAMING_HEADERS:
        # The server frames every body itself; a second length or a chunked header
        # over a plain body would make the answer unreadable.
        raise ValueError(f"{name} is set by the server; it cannot be set by hand")
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_MAX:  # bounded: names may come from clients
        _CHECKED_NAMES[name] = lowered
    return lowered


class HeaderBlock:
    """Response headers checked once, when made, for answers that carry the same ones
    again and again (a plugin's fixed headers): `Response.set_headers` and
    `Response.add_missing_headers` add them without checking each name and value anew.

    Raises:
        ValueError: a name or value set_header() would refuse, or a name given twice
            (Set-Cookie aside).
    """

    __slots__ = ("entries", "pairs", "names", "content_type")

    def __init__(self, headers: Iterable[tuple[str, Any]]) -> None:
        entries: list[tuple[str, str, str]] = []
        for name, value in headers:
            text = _header_text(name, value)
            lowered = _check_name(name)
            if lowered != "set-cookie" and any(lowered == seen for _, seen, _ in entries):
                raise ValueError(f"header {name!r} is given twice")
            entries.append((name, lowered, text))
        # (name as given, lowercase name, value)
        self.entries: tuple[tuple[str, str, str], ...] = tuple(entries)
        # For an answer that has none of these names yet (the usual case): one extend.
        self.pairs = tuple((name, text) for name, _, text in entries)
        self.names = frozenset(lowered for _, lowered, _ in entries)
        self.content_type = "content-type" in self.names

    def __repr__(self) -> str:
        return f"HeaderBlock({[(name, value) for name, _, value in self.entries]!r})"


# RFC 9110 §6.4.1: these never carry content (and 1xx/204 no Content-Length either).
NO_BODY_STATUSES = frozenset({204, 304} | set(range(100, 200)))


class Response:
    """Builds and writes the response of one request.

    The `send_*` methods write status, headers and body at once; a second send raises
    ResponseAlreadySent and writes nothing. `start` / `write` / `sendfile` / `end` stream
    a body instead.
    """

    # As in Request: the fields every response writes are slots, the rest class-level
    # defaults that only unusual responses override (in a lazily created __dict__).
    __slots__ = ("_protocol", "_request", "sent", "finished", "status", "bytes_sent",
                 "__dict__", "__weakref__")

    _headers: list[tuple[str, str]] | None = None
    # Lowercase names present in _headers: set/get/remove skip the scan for names that
    # are not there (the common case when plugins add their headers).
    _header_names: set[str] | None = None
    _has_content_type = False
    pending = False        # an asynchronous send (send_file, streaming) is under way
    _chunked = False
    _body_allowed = True
    # After-hooks of the plugins that apply (set by the exchange only when there are any):
    # they run once, just before the head is written.
    _afters: tuple[Any, ...] = ()
    # The body of a whole response while its after-hooks run (None otherwise); a hook may
    # replace it, e.g. with a compressed one (then it sets Content-Encoding too).
    body: bytes | None = None

    def __init__(self, protocol: "Connection", request: "Request") -> None:
        self._protocol = protocol
        self._request = request
        self.sent = False          # the head has been written
        self.finished = False      # the whole response has been written
        self.status = 0
        self.bytes_sent = 0        # body bytes written (for the access log)

    # ------------------------------------------------------------ headers

    def set_header(self, name: str, value: Any) -> None:
        """Set a response header, replacing an earlier one of the same name.

        Raises:
            ResponseAlreadySent: the head has been written already.
            ValueError: CR or LF in the name or value.
        """
        if self.sent:
            raise ResponseAlreadySent("headers cannot change after the response was sent")
        text = _header_text(name, value)
        lowered = _CHECKED_NAMES.get(name)
        if lowered is None:
            lowered = _check_name(name)
        headers = self._headers
        names = self._header_names
        if headers is None or names is None:
            headers = self._headers = []
            names = self._header_names = set()
        elif lowered in names and lowered != "set-cookie":
            headers[:] = [(n, v) for n, v in headers if n.lower() != lowered]
        headers.append((name, text))
        names.add(lowered)
        if lowered == "content-type":
            self._has_content_type = True

    def set_headers(self, block: HeaderBlock) -> None:
        """set_header() for every header of `block`, each replacing one of its name.

        Raises:
            ResponseAlreadySent: the head has been written already.
        """
        if self.sent:
            raise ResponseAlreadySent("headers cannot change after the response was sent")
        headers = self._headers
        names = self._header_names
        if headers is None or names is None:
            # The first headers of the answer (after-hooks expose the content type so).
            self._headers = list(block.pairs)
            self._header_names = set(block.names)
        elif names.isdisjoint(block.names):
            # None of them set yet, the usual case: no name to replace, one extend.
            headers.extend(block.pairs)
            names.update(block.names)
        else:
            for name, _, text in block.entries:
                self.set_header(name, text)
            return
        if block.content_type:
            self._has_content_type = True

    def add_missing_headers(self, block: HeaderBlock) -> None:
        """Set each header of `block` whose name is not set yet: defaults that never
        override what the handler (or another plugin) set.

        Raises:
            ResponseAlreadySent: the head has been written already.
        """
        names = self._header_names
        if names is None or names.isdisjoint(block.names):
            self.set_headers(block)  # none of them set: setting them all is the same
            return
        if self.sent:
            raise ResponseAlreadySent("headers cannot change after the response was sent")
        for name, lowered, text in block.entries:
            if lowered not in names:
                self.set_header(name, text)

    def reset_headers(self, headers: Any = ()) -> None:
        """Drop every header set so far and set `headers` (name, value pairs) instead: an
        error answer keeps only its own (Allow, Retry-After ...)."""
        if self.sent:
            raise ResponseAlreadySent("headers cannot change after the response was sent")
        self._headers = None
        self._header_names = None
        self._has_content_type = False
        for name, value in headers:
            self.set_header(name, value)

    def get_header(self, name: str) -> str | None:
        """The value of a response header set so far (the last one of that name)."""
        lowered = name.lower()
        names = self._header_names
        if names is None or lowered not in names:
            return None
        for header, value in reversed(self._headers or ()):
            if header.lower() == lowered:
                return value
        return None

    def remove_header(self, name: str) -> None:
        """Remove every response header of this name (no-op when there is none).

        Raises:
            ResponseAlreadySent: the head has been written already.
        """
        if self.sent:
            raise ResponseAlreadySent("headers cannot change after the response was sent")
        headers = self._headers
        names = self._header_names
        lowered = name.lower()
        if headers and names is not None and lowered in names:
            headers[:] = [(n, v) for n, v in headers if n.lower() != lowered]
            names.discard(lowered)
            if lowered == "content-type":
                self._has_content_type = False

    # ------------------------------------------------------------ after-hooks

    def use_after_hooks(self, afters: tuple[Any, ...]) -> None:
        """The after-hooks this answer runs just before its head (set by the exchange)."""
        self._afters = afters

    def _expose_head_lines(self, lines: bytes) -> None:
        """Turn prebuilt header lines (`content-type: ...\r\n`) into headers an
        after-hook can read and change; the server's framing lines stay its own."""
        block = _EXPOSED_LINES.get(lines)
        if block is None:
            pairs = _parse_head_lines(lines)
            try:
                block = HeaderBlock(pairs)
            except ValueError:  # a name twice: set one by one, as set_header() would
                for name, value in pairs:
                    self.set_header(name, value)
                return
            if len(_EXPOSED_LINES) < _EXPOSED_LINES_MAX:
                _EXPOSED_LINES[lines] = block
        self.set_headers(block)

    def _run_afters(self, status: int) -> Coroutine[Any, Any, None] | None:
        """Run the after-hooks once, by priority, with `status` visible. Returns None when
        all were synchronous, else an awaitable that runs the first async one and every
        hook after it, in order. A hook that raises is logged and skipped."""
        self.status = status
        hooks = iter(self._afters)
        self._afters = ()
        request = self._request
        for plugin in hooks:
            # _call_after written out: one call fewer per hook on every answer.
            try:
                result = plugin.after(request, self)
            except Exception as exc:
                _log_after_failure(request, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                # What the iterator has not given yet: the hooks after this one.
                return self._finish_afters(result, tuple(hooks))
        return None

    def _call_after(self, plugin: Any) -> Awaitable[None] | None:
        request = self._request
        try:
            result = plugin.after(request, self)
        except Exception as exc:
            _log_after_failure(request, exc)
            return None
        return result if result is not None and inspect.isawaitable(result) else None

    async def _finish_afters(self, first: Awaitable[None], rest: tuple[Any, ...]) -> None:
        await _log_failure(self._request, first)
        for plugin in rest:
            result = self._call_after(plugin)
            if result is not None:
                await _log_failure(self._request, result)

    async def _send_after(self, waiting: Awaitable[None], status: int,
                          content_type: bytes | None) -> None:
        await waiting
        self.pending = False
        self._send(status, content_type, self.body or b"")

    def set_cookie(self, name: str, value: str, *, max_age: int | None = None,
                   expires: "datetime | str | int | float | None" = None, path: str = "/",
                   domain: str | None = None, http_only: bool = False, secure: bool = False,
                   same_site: SameSite | None = None) -> None:
        """Add a Set-Cookie header with exactly the attributes given."""
        header = build_set_cookie(name, value, max_age=max_age, expires=expires, path=path,
                                  domain=domain, http_only=http_only, secure=secure,
                                  same_site=same_site)
        self.set_header("Set-Cookie", header)

    def clear_cookie(self, name: str, *, path: str = "/", domain: str | None = None) -> None:
        """Tell the browser to drop a cookie (empty value, expired, Max-Age=0)."""
        self.set_header("Set-Cookie", build_set_cookie(
            name, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path=path,
            domain=domain))

    # ------------------------------------------------------------ whole responses

    def _send(self, status: int, content_type: bytes | None, body: bytes) -> None:
        """Write the whole response: head and body in one write.

        `content_type` is the prebuilt `content-type: ...\r\n` line, or several prebuilt
        header lines that include it (a cached static file), or None.
        """
        if self.sent or self.pending:
            raise ResponseAlreadySent("a response was already sent for this request")
        if self._afters:
            if content_type is not None and not self._has_content_type:
                self._expose_head_lines(content_type)  # after-hooks see every header
                content_type = None
            self.body = body  # after-hooks may replace it (compress does)
            waiting = self._run_afters(status)
            if waiting:
                # An async after-hook: the answer leaves once every hook has finished.
                self.pending = True
                self._protocol.spawn(self._request,
                                     self._send_after(waiting, status, content_type))
                return
            body = self.body or b""
        protocol = self._protocol
        request = self._request
        if (status == 200 and request.keep_alive and protocol.reuse
                and not request.is_head and request.http_version == "1.1"):
            # The hot path: a 200 on a persistent connection, one join, one write (the
            # head as build_head() would make it).
            self.sent = True
            self.status = 200
            length = self.bytes_sent = len(body)
            if self._headers is None:
                data = b"".join((
                    _OK_STATUS_LINE, protocol.state.date_header, content_type,  # type: ignore[arg-type]
                    _CONTENT_LENGTH_LINES[length] if length < _CONTENT_LENGTH_LINES_COUNT
                    else b"content-length: %d\r\n\r\n" % length,
                    body))
            else:
                data = b"".join((
                    _OK_STATUS_LINE, protocol.state.date_header,
                    b"" if content_type is None or self._has_content_type else content_type,
                    b"content-length: %d\r\n" % length,
                    ("\r\n".join(map(_NAME_VALUE_JOIN, self._headers)) + "\r\n\r\n")
                    .encode("latin-1"),
                    body))
            self.finished = True
            protocol.write_whole(request, data)
            # Request and Response point at each other; cutting the link lets reference
            # counting free both at once instead of leaving them to the cyclic GC.
            self._request = None  # type: ignore[assignment]
            return
        if not 100 <= status <= 599:
            raise ValueError(f"status must be 100..599, got {status}")
        connection = protocol.connection_header(request)
        if self._has_content_type:
            content_type = None
        if status in NO_BODY_STATUSES:
            head = wire.build_head(status, protocol.state.date_header, None, None,
                                   self._headers, connection, omit_length=True, checked=True)
            body = b""
        else:
            head = wire.build_head(status, protocol.state.date_header, content_type,
                                   len(body), self._headers, connection, checked=True)
        self.sent = True
        self.status = status
        if not request.is_head:
            self.bytes_sent = len(body)
        protocol.write(head if request.is_head or not body else head + body)
        self.finished = True
        protocol.response_finished(request)
        self._request = None  # type: ignore[assignment]  # see the hot path above

    def send_json(self, obj: Any, status: int = 200) -> None:
        """Send `obj` as compact UTF-8 JSON.

        Raises:
            TypeError: `obj` holds something JSON cannot represent.
        """
        try:
            body = encode_json_fast(obj)
        except TypeError:
            body = encode_json(obj)
        self._send(status, CT_JSON, body)

    def send_html(self, text: str, status: int = 200) -> None:
        self._send(status, CT_HTML, text.encode("utf-8"))

    def send_text_plain(self, text: str, status: int = 200) -> None:
        self._send(status, CT_TEXT, text.encode("utf-8"))

    def send(self, payload: Any = b"", status: int = 200) -> None:
        """dict/list → JSON, str → text/plain, bytes → application/octet-stream."""
        if isinstance(payload, (bytes, bytearray, memoryview)):
            self._send(status, CT_OCTET, bytes(payload))
        elif isinstance(payload, str):
            self._send(status, CT_TEXT, payload.encode("utf-8"))
        else:
            self._send(status, CT_JSON, encode_json(payload))

    def send_ok(self) -> None:
        """200 with the body "OK"."""
        self._send(200, CT_TEXT, b"OK")

    def send_status_code(self, code: int) -> None:
        """A response of just this status; the body is its reason phrase."""
        self._send(code, CT_TEXT, reason_phrase(code).encode("ascii"))

    # ------------------------------------------------------------ files

    def send_file(self, path: str) -> "asyncio.Task[None]":
        """Send a file (MIME by extension, ETag/304, Range/206, HEAD).

        Works from sync and async handlers; await the returned task to wait for the end.
        """
        return self._file_task(path, None, download=False)

    def download_file(self, path: str, filename: str | None = None) -> "asyncio.Task[None]":
        """Send a file as an attachment (Content-Disposition), named `filename` if given."""
        return self._file_task(path, filename, download=True)

    def _file_task(self, path: str, filename: str | None, *, download: bool) -> "asyncio.Task[None]":
        if self.sent or self.pending:
            raise ResponseAlreadySent("a response was already sent for this request")
        from packetron.http import static  # static serving costs nothing unless used

        self.pending = True
        coro = static.send_file(self._request, self, path, attachment_filename=filename,
                                download=download)
        return self._protocol.spawn(self._request, coro)

    # ------------------------------------------------------------ streaming

    def start(self, status: int, headers: list[tuple[str, str]] | None = None,
              content_length: int | None = None) -> None:
        """Write the head of a streamed response; `content_length=None` means chunked.

        Raises:
            ResponseAlreadySent: the head was written already.
        """
        self._protocol.write(self._begin(status, headers, content_length))

    def _begin(self, status: int, headers: list[tuple[str, str]] | None,
               content_length: int | None) -> bytes:
        """Mark a streamed response started; returns its head, for the caller to write."""
        if self.sent:
            raise ResponseAlreadySent("a response was already sent for this request")
        if headers:
            for name, value in headers:
                self.set_header(name, value)  # after-hooks see (and may change) them all
        if self._afters:
            waiting = self._run_afters(status)
            if waiting is not None:
                # A streamed head cannot wait: async after-hooks run beside the body here.
                self._protocol.spawn(self._request, waiting)
        protocol = self._protocol
        no_body = status in NO_BODY_STATUSES
        request = self._request
        self._body_allowed = not no_body and not request.is_head
        self._chunked = content_length is None and self._body_allowed
        if self._chunked and request.http_version == "1.0":
            # HTTP/1.0 has no chunked coding (RFC 9112 §7.1): the body runs until the
            # connection closes, which end() then does.
            self._chunked = False
            request.keep_alive = False
        head = wire.build_head(status, protocol.state.date_header, None, content_length,
                               self._headers, protocol.connection_header(request),
                               omit_length=no_body or (content_length is None and not self._chunked),
                               checked=True)
        self.sent = True
        self.pending = True
        self.status = status
        return head

    async def _send_file_part(self, status: int, headers: list[tuple[str, str]],
                              file: BinaryIO | int, offset: int, count: int) -> None:
        """start(), sendfile() and end() in one: the head leaves in the same TCP segment
        as the first bytes of the file instead of a packet of its own (which halved the
        throughput of 1 MiB files; nginx's tcp_nopush does the same)."""
        head = self._begin(status, headers, count)
        if self._body_allowed and count > 0:
            self.bytes_sent += count
            await self._protocol.sendfile(file, offset, count, head=head)
        else:
            self._protocol.write(head)
        self.end()

    async def event_stream(self, heartbeat: float | None = DEFAULT_HEARTBEAT_SECONDS,
                           status: int = 200) -> EventStream:
        """Start a server-sent events answer and return its stream (see packetron.http.sse).

        `heartbeat`: seconds between comment lines that keep the connection open (None: no
        heartbeat).
        """
        self.start(status, list(SSE_HEADERS))
        return EventStream(self, self._protocol.loop, heartbeat)

    def write_now(self, data: bytes) -> bool:
        """Write a piece of a streamed body without waiting; False once the client is gone."""
        protocol = self._protocol
        if protocol.transport.is_closing() or self.finished:
            return False
        protocol.write(wire.encode_chunk(data) if self._chunked else data)
        return True

    async def write(self, data: bytes) -> None:
        """Write a piece of a streamed body, waiting while the client is slow to read."""
        if not self._body_allowed or not data:
            return
        protocol = self._protocol
        protocol.write(wire.encode_chunk(data) if self._chunked else data)
        self.bytes_sent += len(data)
        await protocol.drain()

    async def sendfile(self, file: BinaryIO | int, offset: int, count: int) -> None:
        """Write `count` bytes of `file` (a file object or descriptor) from `offset`,
        zero-copy where the loop can."""
        if not self._body_allowed or count <= 0:
            return
        if self._chunked:
            raise RuntimeError("sendfile needs a known content_length")
        await self._protocol.sendfile(file, offset, count)

    def end(self) -> None:
        """Finish a streamed response."""
        if self.finished:
            return
        if self._chunked:
            self._protocol.write(wire.LAST_CHUNK)
        self.finished = True
        self.pending = False
        self._protocol.response_finished(self._request)
        self._request = None  # type: ignore[assignment]


def _log_after_failure(request: "Request", exc: Exception) -> None:
    server_logger.error("%s %s: an after-hook raised", request.method, request.path,
                        exc_info=exc)


async def _log_failure(request: "Request", awaitable: Awaitable[Any]) -> None:
    """Await an async after-hook; its failure is logged, never the answer's."""
    try:
        await awaitable
    except Exception as exc:
        _log_after_failure(request, exc)
