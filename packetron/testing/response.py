"""What the test client returns: status, headers, body — read whole or as a stream."""
from __future__ import annotations

import codecs
import json as json_module
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from packetron.testing.errors import TestClientError

__all__ = ["ResponseHeaders", "TestResponse"]


class ResponseHeaders(Mapping[str, str]):
    """Case-insensitive response headers.

    `headers[name]` joins repeated fields with ", " (RFC 9110 §5.3); `get_list(name)` keeps
    each on its own, which Set-Cookie needs. `multi_items()` gives every (name, value) in
    the order received.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, raw: list[tuple[bytes, bytes]] | list[tuple[str, str]]) -> None:
        items: list[tuple[str, str]] = []
        merged: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1") if isinstance(name, bytes) else name
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            items.append((key, text))
            lowered = key.lower()
            merged[lowered] = f"{merged[lowered]}, {text}" if lowered in merged else text
        self._items = items
        self._map = merged

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def get_list(self, name: str) -> list[str]:
        """Every value of `name`, one per field line, in order."""
        lowered = name.lower()
        return [value for key, value in self._items if key.lower() == lowered]

    get_all = get_list  # the name packetron's request Headers use

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        return f"ResponseHeaders({self._items!r})"


class TestResponse:
    """One answer. `content`, `text` and `json()` need the whole body: a response from
    `client.stream(...)` gives them once `read()` (or `aread()`) has run; until then its
    body is read piece by piece with `iter_bytes()` / `iter_lines()` (or the `aiter_`
    variants with AsyncTestClient).
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, *, status_code: int, reason: str, http_version: str,
                 headers: ResponseHeaders, method: str, url: str,
                 content: bytes | None,
                 next_chunk: Callable[[], Awaitable[bytes | None]] | None = None,
                 run: Callable[[Awaitable[Any]], Any] | None = None,
                 release: Callable[[], None] | None = None) -> None:
        self.status_code = status_code
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.method = method
        self.url = url
        self.history: list[TestResponse] = []  # the redirects followed to get here
        self._content = content
        self._next_chunk = next_chunk  # None once the body has been read whole
        self._run = run                # runs a coroutine to completion (sync clients)
        self._release = release
        self._consumed = False         # some of the streamed body was iterated away

    # ------------------------------------------------------------ the whole body

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise TestClientError("the body of a streamed response has not been read: "
                                  "call read() (or await aread()) first")
        return self._content

    @property
    def encoding(self) -> str:
        """The charset of Content-Type, else UTF-8."""
        content_type = self.headers.get("content-type", "")
        for parameter in content_type.split(";")[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip('"')
        return "utf-8"

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:  # an unknown charset
            return self.content.decode("utf-8", errors="replace")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON.

        Raises:
            json.JSONDecodeError (a ValueError): the body is not JSON.
        """
        return json_module.loads(self.content, **kwargs)

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies this response set (name -> value; deletions give "")."""
        cookies: dict[str, str] = {}
        for header in self.headers.get_list("set-cookie"):
            name, _, value = header.split(";", 1)[0].partition("=")
            cookies[name.strip()] = value.strip()
        return cookies

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    ok = is_success

    @property
    def is_redirect(self) -> bool:
        return self.status_code in (301, 302, 303, 307, 308) and "location" in self.headers

    def raise_for_status(self) -> "TestResponse":
        """Raise TestClientError for a 4xx or 5xx answer; returns the response otherwise."""
        if self.status_code >= 400:
            raise TestClientError(f"{self.status_code} {self.reason} for {self.method} {self.url}")
        return self

    # ------------------------------------------------------------ streamed bodies

    def _streaming(self) -> Callable[[], Awaitable[bytes | None]] | None:
        if self._next_chunk is None and self._content is None:
            raise TestClientError("this response's body was already consumed")
        return self._next_chunk

    def iter_bytes(self) -> Iterator[bytes]:
        """The body piece by piece as the application writes it (chunked framing removed)."""
        next_chunk = self._streaming()
        if next_chunk is None:
            if self._content:
                yield self._content
            return
        if self._run is None:
            raise TestClientError("use `async for ... in response.aiter_bytes()` with "
                                  "AsyncTestClient")
        self._consumed = True
        while True:
            chunk = self._run(next_chunk())
            if chunk is None:
                self._done()
                return
            yield chunk

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        next_chunk = self._streaming()
        if next_chunk is None:
            if self._content:
                yield self._content
            return
        self._consumed = True
        while True:
            chunk = await next_chunk()
            if chunk is None:
                self._done()
                return
            yield chunk

    def iter_lines(self) -> Iterator[str]:
        """Decoded lines, without their line ends (server-sent events read well this way)."""
        yield from _lines(self.iter_bytes(), self.encoding)

    async def aiter_lines(self) -> AsyncIterator[str]:
        splitter = _LineSplitter(self.encoding)
        async for chunk in self.aiter_bytes():
            for line in splitter.feed(chunk):
                yield line
        for line in splitter.end():
            yield line

    def read(self) -> bytes:
        """Read the rest of a streamed body; `content` is then available."""
        if self._content is None:
            if self._consumed:
                raise TestClientError("read() after iterating: the body was already consumed")
            self._content = b"".join(self.iter_bytes())
        return self._content

    async def aread(self) -> bytes:
        if self._content is None:
            if self._consumed:
                raise TestClientError("aread() after iterating: the body was already consumed")
            self._content = b"".join([chunk async for chunk in self.aiter_bytes()])
        return self._content

    def _done(self) -> None:
        self._next_chunk = None
        self.close()

    def close(self) -> None:
        """Give the connection back (or hang up on a body not read to its end)."""
        release = self._release
        if release is not None:
            self._release = None
            release()

    def __repr__(self) -> str:
        return f"<TestResponse [{self.status_code}] {self.method} {self.url}>"


class _LineSplitter:
    """Bytes in, complete lines out; a character split between chunks is kept whole."""

    def __init__(self, encoding: str) -> None:
        try:
            self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        except LookupError:
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self._pending = (self._pending + self._decoder.decode(chunk)).split("\n")
        return [line.removesuffix("\r") for line in lines]

    def end(self) -> list[str]:
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return [rest.removesuffix("\r")] if rest else []


def _lines(chunks: Iterator[bytes], encoding: str) -> Iterator[str]:
    splitter = _LineSplitter(encoding)
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.end()
