"""Answering with a file: validators and preconditions, one Range, HEAD, and the body
from one pread (small files, then cached) or zero-copy sendfile (large ones).

The answer is built synchronously wherever it can be: a static route's handler is then a
plain function, which the core runs inside its parser callback with no task. Only bodies
that must wait for the socket (sendfile, or the response send_file() reserved) come back
as a coroutine for the caller to await.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Coroutine, Iterable, Optional
from urllib.parse import quote

from packetron.http.mime import content_type_for
from packetron.http.static.cache import _CachedFile, _file_identity, _small_files
from packetron.http.static.conditional import check_preconditions, choose_range, http_date, make_etag
from packetron.http.static.target import _open_regular, _open_target, _StaticTarget

if TYPE_CHECKING:
    from packetron.http.request import Request
    from packetron.http.response import Response

__all__ = ["SENDFILE_THRESHOLD_IN_BYTES", "SIBLING_SUFFIXES", "send_file", "content_disposition"]

# Up to this size a file is read with one pread and leaves with its head in one write;
# above it the body goes to response.sendfile (zero-copy where the loop can), so no
# request holds more than this much of a file in memory. 64 KiB is also the transport's
# write high-water mark: a body this small never waits for the socket.
SENDFILE_THRESHOLD_IN_BYTES = 64 * 1024
# Requests carrying any of these go the full way (preconditions, ranges), never the cache.
_CONDITIONAL_HEADERS = frozenset({b"if-match", b"if-none-match", b"if-modified-since",
                                  b"if-unmodified-since", b"range", b"if-range"})

_Pending = Optional[Coroutine[Any, Any, None]]

# Precompressed siblings of a file, by content coding: "app.css.br", "app.css.gz".
SIBLING_SUFFIXES = (("br", ".br"), ("gzip", ".gz"))
_SUFFIX_OF = dict(SIBLING_SUFFIXES)


def content_disposition(filename: str, *, attachment: bool = True) -> str:
    """Content-Disposition value with an ASCII fallback and a UTF-8 `filename*`.

    RFC 6266 §4.3 and RFC 8187: `filename` carries an ASCII approximation for old
    clients, `filename*` the exact name percent-encoded. Control characters, quotes,
    backslashes and path separators never reach the header.
    """
    name = "".join(ch for ch in filename if ch >= " " and ch != "\x7f")
    name = name.replace("/", "_").replace("\\", "_") or "download"
    fallback = "".join(ch if " " <= ch < "\x7f" and ch not in '"%' else "_" for ch in name)
    kind = "attachment" if attachment else "inline"
    value = f'{kind}; filename="{fallback}"'
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe="!#$&+-.^_`|~")
    return value


def _whole(response: Response, status: int, headers: list[tuple[str, str]],
           body: bytes) -> _Pending:
    if response.pending:
        # send_file() from a handler: the response is reserved for that task, so the
        # body is streamed after the head.
        return _streamed_whole(response, status, headers, body)
    # set_header + send: head and body leave in one write (one syscall), and headers a
    # plugin set earlier are kept.
    for name, value in headers:
        response.set_header(name, value)
    response.send(body, status)
    return None


async def _streamed_whole(response: Response, status: int, headers: list[tuple[str, str]],
                          body: bytes) -> None:
    response.start(status, headers, len(body))
    await response.write(body)
    response.end()


def _plain(response: Response, status: int, text: str,
           headers: Iterable[tuple[str, str]] = ()) -> _Pending:
    return _whole(response, status, [*headers, ("content-type", "text/plain; charset=utf-8")],
                  text.encode("utf-8"))


async def _sendfile_body(response: Response, fd: int, status: int,
                         headers: list[tuple[str, str]], start: int, count: int) -> None:
    try:
        # The head is written here, not before returning: a core that sees a started
        # response after a plain handler returns takes it as answered.
        await response._send_file_part(status, headers, fd, start, count)
    finally:
        os.close(fd)


async def send_file(request: Request, response: Response, path: str, *,
                    attachment_filename: str | None = None, download: bool = False) -> None:
    """Answer a request with a file: conditional GET, a single Range, HEAD, sendfile.

    Args:
        request: the request being answered (its method and conditional/Range headers).
        response: its response; started and ended here.
        path: the file. A missing, unreadable or non-regular file gives 404.
        attachment_filename: the name offered for saving (implies `download`);
            defaults to the file's own name.
        download: send `Content-Disposition: attachment` so browsers save the file.

    Returns:
        None, once the response is complete.

    Raises:
        ConnectionClosed: from the response when the client goes away mid-body.
    """
    download = download or attachment_filename is not None
    accepted = _accepted_codings(request)
    if accepted is not None:
        found = _path_sibling(path, accepted, response)
        if found is not None:
            coding, fd, info = found
            pending = _answer(request, response, fd, info, path, attachment_filename, download,
                              coding=coding)
            if pending is not None:
                await pending
            return
    opened = _open_regular(path)
    if opened is None:
        pending = _plain(response, 404, "Not Found")
    else:
        pending = _answer(request, response, opened[0], opened[1], path, attachment_filename,
                          download)
    if pending is not None:
        await pending


def _accepted_codings(request: Request) -> tuple[str, ...] | None:
    """The codings of precompressed files this request takes, best first; None when no
    compress plugin looked at it (then siblings are never sent)."""
    accepted: tuple[str, ...] | None = getattr(request, "accepts_precompressed", None)
    if accepted is not None and request.headers.get("range") is not None:
        # A range is a range of the identity file: siblings are sent whole only.
        return ()
    return accepted


def _add_vary(response: Response) -> None:
    # The answer depends on Accept-Encoding: caches must key on it.
    current = response.get_header("vary")
    if current is None:
        response.set_header("Vary", "Accept-Encoding")
    elif "accept-encoding" not in {t.strip().lower() for t in current.split(",")} \
            and current.strip() != "*":
        response.set_header("Vary", f"{current}, Accept-Encoding")


def _fresh(info: os.stat_result, original_path: str) -> bool:
    # A sibling older than its file was not made from this version of it: never send it.
    try:
        return info.st_mtime_ns >= os.stat(original_path).st_mtime_ns
    except OSError:
        return False  # the file itself is gone: its route answers 404


def _path_sibling(path: str, accepted: tuple[str, ...],
                  response: Response) -> tuple[str, int, os.stat_result] | None:
    """send_file's precompressed sibling: the first of `accepted` that exists, is a
    regular file and is fresh. Adds Vary when any sibling exists."""
    exists = False
    for coding in accepted:
        suffix = _SUFFIX_OF.get(coding)
        if suffix is None:
            continue
        opened = _open_regular(path + suffix)
        if opened is None:
            continue
        exists = True
        if _fresh(opened[1], path):
            _add_vary(response)
            return coding, opened[0], opened[1]
        os.close(opened[0])
    if not exists:
        exists = any(os.path.isfile(path + suffix) for coding, suffix in SIBLING_SUFFIXES
                     if coding not in accepted)
    if exists:
        _add_vary(response)
    return None


def _target_sibling(target: _StaticTarget,
                    accepted: tuple[str, ...]) -> tuple[str, int, os.stat_result] | None:
    """A static route's precompressed sibling: the first of `accepted` found at
    registration that still opens inside the root and is fresh."""
    for coding in accepted:
        for sibling_coding, sibling in target.siblings:
            if sibling_coding != coding:
                continue
            opened = _open_target(sibling)
            if opened is None:
                continue
            if _fresh(opened[1], target.path):
                return coding, opened[0], opened[1]
            os.close(opened[0])
    return None


def _answer(request: Request, response: Response, fd: int, info: os.stat_result, path: str,
            attachment_filename: str | None, download: bool,
            cache_for: _StaticTarget | None = None, coding: str | None = None) -> _Pending:
    """Answer from an open file; `fd` is closed here or by the returned coroutine.

    With `cache_for`, a small file sent whole is remembered for that target. With
    `coding`, `fd` is the precompressed sibling of `path` (which names the type): it is
    sent as it is, with that Content-Encoding, and without Accept-Ranges (ranges are
    served on the identity file only).
    """
    try:
        size = info.st_size
        mtime = int(info.st_mtime)
        etag = make_etag(size, info.st_mtime_ns)
        get = request.headers.get
        headers = [("etag", etag), ("last-modified", http_date(mtime))]
        if coding is None:
            headers.append(("accept-ranges", "bytes"))
        verdict = check_preconditions(etag, mtime, get("if-match"), get("if-none-match"),
                                      get("if-modified-since"), get("if-unmodified-since"))
        if verdict == 304:
            # RFC 9110 §15.4.5: a 304 carries the validators and no body.
            return _whole(response, 304, headers, b"")
        if verdict == 412:
            return _plain(response, 412, "Precondition Failed", headers)
        status, start, stop = choose_range(get("range"), get("if-range"), etag, mtime, size)
        if status == 416:
            return _plain(response, 416, "Range Not Satisfiable",
                          [*headers, ("content-range", f"bytes */{size}")])
        headers.append(("content-type", content_type_for(attachment_filename or path)))
        if coding is not None:
            headers.append(("content-encoding", coding))
        if download:
            name = attachment_filename or os.path.basename(path)
            headers.append(("content-disposition", content_disposition(name)))
        count = stop - start
        if request.method == "HEAD" or count == 0:
            if status == 206:
                headers.append(("content-range", f"bytes {start}-{stop - 1}/{size}"))
            response.start(status, headers, count)
            response.end()
            return None
        if count <= SENDFILE_THRESHOLD_IN_BYTES:
            data = os.pread(fd, count, start)
            # The file may have shrunk since fstat: never announce bytes we do not have.
            if status == 206:
                headers.append(("content-range", f"bytes {start}-{start + len(data) - 1}/{size}"))
            elif cache_for is not None and len(data) == size:
                _small_files.store(cache_for, _CachedFile(info, headers, data))
            return _whole(response, status, headers, data)
        if status == 206:
            headers.append(("content-range", f"bytes {start}-{stop - 1}/{size}"))
        pending = _sendfile_body(response, fd, status, headers, start, count)
        fd = -1  # the coroutine owns it now
        return pending
    finally:
        if fd >= 0:
            os.close(fd)


def _serve_target(target: _StaticTarget, request: Request, response: Response) -> _Pending:
    """The handler of a static route (bound to its target with functools.partial)."""
    if target.redirect_to_slash:
        # An index served at "/docs" must be fetched as "/docs/", or its relative links
        # would resolve against "/" (nginx answers the same redirect).
        raw_path, sep, query = request.url.partition("?")
        if raw_path.startswith("/") and not raw_path.endswith("/"):
            return _plain(response, 301, "Moved Permanently",
                          [("location", raw_path + "/" + sep + query)])
    if target.siblings:
        accepted = _accepted_codings(request)
        if accepted is not None:  # a compress plugin applies: the answer varies
            _add_vary(response)
            found = _target_sibling(target, accepted) if accepted else None
            if found is not None:
                coding, fd, info = found
                return _answer(request, response, fd, info, target.path, None, False,
                               coding=coding)
    cached = target.cached
    if cached is not None and not response._has_content_type and not response.pending \
            and not request._has_any_header(_CONDITIONAL_HEADERS):
        try:
            identity: tuple[int, ...] | None = _file_identity(os.stat(target.path))
        except OSError:
            identity = None
        if identity == cached.identity:
            if response._afters:
                # After-hooks read and change headers (compress needs the type and the
                # ETag): they must see them as headers, not as prebuilt lines.
                return _whole(response, 200, list(cached.headers), cached.body)
            response._send(200, cached.head_lines, cached.body)
            return None
        _small_files.forget(target)  # changed or gone: the full path decides
    opened = _open_target(target)
    if opened is None:
        return _plain(response, 404, "Not Found")
    return _answer(request, response, opened[0], opened[1], target.path, None, False,
                   cache_for=target)
