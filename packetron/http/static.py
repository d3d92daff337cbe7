"""Static files: `send_file` for one response, and routes that serve a directory.

Safety model. A served directory is walked once, when it is registered, and every file
becomes its own exact route. A request path therefore never becomes a file-system path:
`/..%2f..%2fetc/passwd`, `%2e%2e`, double encoding or backslashes simply match no route
(404), in whatever way they are encoded. What is left to guard is the tree itself
changing under a running server, so at registration the file is resolved (symlinks
followed) and must lie inside the directory, and on every request the file opened must
be that same verified inode or it is resolved and checked again; a symlink that points
outside is never served. Dot-files and dot-directories (".env", ".git/") are
skipped unless `include_dotfiles=True` is passed.

The pure helpers (ETag, HTTP dates, preconditions, Range, Content-Disposition, path
containment) take plain values and do no I/O; the rest opens files and writes responses.
"""
from __future__ import annotations

import functools
import os
import stat
import weakref
from collections import OrderedDict
from datetime import datetime
from email.utils import formatdate, mktime_tz, parsedate_tz
from typing import TYPE_CHECKING, Any, Coroutine, Iterable, Iterator, Optional
from urllib.parse import quote

from packetron.errors import ConfigError
from packetron.flags import FileRouterFlags, HandlerFlags, RequestMethod
from packetron.http.mime import content_type_for
from packetron.http.wire import header_line
from packetron.log import server_logger

if TYPE_CHECKING:
    from packetron.http.request import Request
    from packetron.http.response import Response
    from packetron.http.route import Route

__all__ = [
    "SENDFILE_THRESHOLD_IN_BYTES", "INDEX_FILE_NAME", "send_file", "serve_directory",
    "serve_single_file", "unserve_directory", "is_within", "is_hidden", "make_etag",
    "http_date", "parse_http_date", "check_preconditions", "parse_range", "choose_range",
    "content_disposition", "SMALL_FILE_CACHE_BYTES",
]

# Up to this size a file is read with one pread and leaves with its head in one write;
# above it the body goes to response.sendfile (zero-copy where the loop can), so no
# request holds more than this much of a file in memory. 64 KiB is also the transport's
# write high-water mark: a body this small never waits for the socket.
SENDFILE_THRESHOLD_IN_BYTES = 64 * 1024
INDEX_FILE_NAME = "index.html"
# Served files up to SENDFILE_THRESHOLD_IN_BYTES are kept in memory once sent, up to this
# many bytes per process (the least recently cached go first). A cached answer costs one
# stat() to prove the file unchanged instead of open, fstat, pread and close, and no
# header building (bench/static.py, 4 KiB file: 27k -> 72k req/s, 1.05x nginx).
SMALL_FILE_CACHE_BYTES = 32 * 1024 * 1024
# Requests carrying any of these go the full way (preconditions, ranges), never the cache.
_CONDITIONAL_HEADERS = frozenset({b"if-match", b"if-none-match", b"if-modified-since",
                                  b"if-unmodified-since", b"range", b"if-range"})

# O_NONBLOCK: opening a FIFO someone dropped into the tree must not hang the worker;
# on regular files it changes nothing.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

# ---------------------------------------------------------------- pure helpers


def is_within(root: str, path: str) -> bool:
    """True when `path` is `root` itself or lies below it.

    Both must be absolute and already resolved (os.path.realpath); the comparison is on
    whole components, so "/srv/site2" is not inside "/srv/site".
    """
    root = root.rstrip("/") or "/"
    if path == root:
        return True
    return path.startswith(root if root == "/" else root + "/")


def is_hidden(relative_path: str) -> bool:
    """True when any component of a relative path starts with "." (".env", ".git/x")."""
    return any(part.startswith(".") for part in relative_path.replace("\\", "/").split("/"))


def make_etag(size: int, mtime_ns: int) -> str:
    """Strong ETag of a file version: size and modification time in nanoseconds, in hex."""
    return f'"{mtime_ns:x}-{size:x}"'


@functools.lru_cache(maxsize=1024)  # formatdate costs microseconds; files rarely change
def http_date(epoch_seconds: int) -> str:
    """IMF-fixdate (RFC 9110 §5.6.7), e.g. 'Sun, 06 Nov 1994 08:49:37 GMT'."""
    return formatdate(epoch_seconds, usegmt=True)


def parse_http_date(value: str | None) -> int | None:
    """Seconds since the epoch of an HTTP date in any of the three RFC 9110 forms, or None."""
    if not value:
        return None
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        datetime(*parsed[:6])  # the email parser lets "99 Nov" through; a date must exist
        return int(mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


def _etag_list_matches(header: str, etag: str, *, weak: bool) -> bool:
    """If-Match / If-None-Match list comparison (RFC 9110 §8.8.3.2)."""
    if header.strip() == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            if not weak:
                continue  # strong comparison: a weak validator never matches
            candidate = candidate[2:]
        if candidate == opaque:
            return True
    return False


def check_preconditions(
    etag: str,
    mtime: int,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
) -> int:
    """Evaluate conditional GET/HEAD headers in the order of RFC 9110 §13.2.2.

    Args:
        etag: the current ETag of the file.
        mtime: its modification time in whole seconds (HTTP dates have no fractions).
        if_match, if_none_match, if_modified_since, if_unmodified_since: header
            values, or None when absent.

    Returns:
        0 to go on and send the file, 304 (Not Modified) or 412 (Precondition Failed).
    """
    if if_match is not None:
        if not _etag_list_matches(if_match, etag, weak=False):
            return 412
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and mtime > since:
            return 412
    if if_none_match is not None:
        # When If-None-Match is present, If-Modified-Since is ignored (§13.1.3).
        return 304 if _etag_list_matches(if_none_match, etag, weak=True) else 0
    if if_modified_since is not None:
        since = parse_http_date(if_modified_since)
        if since is not None and mtime <= since:
            return 304
    return 0


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Parse a `Range: bytes=...` header (RFC 9110 §14.1.2) against a file size.

    Args:
        header: the header value.
        size: the file size in bytes.

    Returns:
        None when the header is not a valid bytes range set (it is then ignored, as
        §14.2 requires); otherwise the satisfiable ranges as (start, stop) with `stop`
        exclusive, clipped to the file. An empty list means none is satisfiable (416).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    for item in spec.split(","):
        first, dash, last = item.strip().partition("-")
        if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
            return None
        if first == "":
            if last == "":
                return None
            suffix = int(last)  # "-N": the last N bytes
            if suffix > 0 and size > 0:
                ranges.append((max(0, size - suffix), size))
            continue
        start = int(first)
        if last != "" and int(last) < start:
            return None  # "5-3" is invalid, not unsatisfiable
        if start >= size:
            continue
        stop = size if last == "" else min(int(last) + 1, size)
        ranges.append((start, stop))
    return ranges


def choose_range(
    range_header: str | None,
    if_range: str | None,
    etag: str,
    mtime: int,
    size: int,
) -> tuple[int, int, int]:
    """Decide what part of a file a GET answers with.

    One satisfiable range gives 206. Several ranges give 200 and the whole file: the
    server may ignore Range (RFC 9110 §14.2), and multipart/byteranges is rarely used
    and easy to abuse for amplification. No satisfiable range gives 416. A failing
    If-Range (§13.1.5: strong ETag, or the exact Last-Modified date) gives 200.

    Returns:
        (status, start, stop) with `stop` exclusive; for 416, start = stop = 0.
    """
    if range_header is None:
        return 200, 0, size
    if if_range is not None:
        if_range = if_range.strip()
        if if_range.startswith('"') or if_range.startswith("W/"):
            if if_range != etag:
                return 200, 0, size
        elif parse_http_date(if_range) != mtime:
            return 200, 0, size
    ranges = parse_range(range_header, size)
    if ranges is None or len(ranges) > 1:
        return 200, 0, size
    if not ranges:
        return 416, 0, 0
    start, stop = ranges[0]
    return 206, start, stop


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


# ---------------------------------------------------------------- responses
#
# The answer is built synchronously wherever it can be: a static route's handler is then a
# plain function, which the core runs inside its parser callback with no task. Only bodies
# that must wait for the socket (sendfile, or the response send_file() reserved) come back
# as a coroutine for the caller to await.

_Pending = Optional[Coroutine[Any, Any, None]]


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


def _open_regular(path: str) -> tuple[int, os.stat_result] | None:
    """Open a regular file for reading; None for missing, unreadable or not a file."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:  # ENOENT, EACCES, ELOOP, ENOTDIR ...: all mean "nothing to serve"
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


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
    opened = _open_regular(path)
    if opened is None:
        pending = _plain(response, 404, "Not Found")
    else:
        pending = _answer(request, response, opened[0], opened[1], path, attachment_filename,
                          download or attachment_filename is not None)
    if pending is not None:
        await pending


def _answer(request: Request, response: Response, fd: int, info: os.stat_result, path: str,
            attachment_filename: str | None, download: bool,
            cache_for: "_StaticTarget | None" = None) -> _Pending:
    """Answer from an open file; `fd` is closed here or by the returned coroutine.

    With `cache_for`, a small file sent whole is remembered for that target.
    """
    try:
        size = info.st_size
        mtime = int(info.st_mtime)
        etag = make_etag(size, info.st_mtime_ns)
        get = request.headers.get
        headers = [("etag", etag), ("last-modified", http_date(mtime)),
                   ("accept-ranges", "bytes")]
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


# ---------------------------------------------------------------- routes for files


def _file_identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    # Inode and version: a replaced, rewritten or touched file never matches.
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class _CachedFile:
    """A small file's 200 answer: its header lines, prebuilt, and its bytes."""

    __slots__ = ("identity", "head_lines", "body")

    def __init__(self, info: os.stat_result, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        self.identity = _file_identity(info)
        self.head_lines = b"".join(header_line(name, value) for name, value in headers)
        self.body = body


class _SmallFileCache:
    """Which targets hold a cached file, oldest first, within a byte budget."""

    __slots__ = ("limit", "total", "_sizes")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._sizes: OrderedDict[_StaticTarget, int] = OrderedDict()

    def store(self, target: "_StaticTarget", entry: _CachedFile) -> None:
        size = len(entry.body)
        self.forget(target)
        if size > self.limit:
            return
        while self.total + size > self.limit:
            oldest, oldest_size = self._sizes.popitem(last=False)
            oldest.cached = None
            self.total -= oldest_size
        target.cached = entry
        self._sizes[target] = size
        self.total += size

    def forget(self, target: "_StaticTarget") -> None:
        size = self._sizes.pop(target, None)
        if size is not None:
            self.total -= size
        target.cached = None


_small_files = _SmallFileCache(SMALL_FILE_CACHE_BYTES)


class _StaticTarget:
    """One served file: where it sits in the tree and the root it must stay inside."""

    __slots__ = ("path", "root", "verified", "redirect_to_slash", "cached", "__weakref__")

    def __init__(self, path: str, root: str | None, redirect_to_slash: bool = False) -> None:
        self.path = path
        self.root = root  # resolved directory, or None for serve_single_file
        # (st_dev, st_ino) of the file last found inside root: reopening the same inode
        # needs no new resolve, so the common request costs one open and one fstat.
        self.verified: tuple[int, int] | None = None
        self.redirect_to_slash = redirect_to_slash
        # The file's last whole answer, when small (see SMALL_FILE_CACHE_BYTES). Only ever
        # set after _open_target verified that inode, and used only while stat() still
        # reports the same inode and version.
        self.cached: _CachedFile | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_StaticTarget, (self.path, self.root, self.redirect_to_slash))


def _open_target(target: _StaticTarget) -> tuple[int, os.stat_result] | None:
    opened = _open_regular(target.path)
    if opened is None or target.root is None:
        return opened
    fd, info = opened
    identity = (info.st_dev, info.st_ino)
    if identity == target.verified:
        return opened
    real = os.path.realpath(target.path)
    try:
        resolved = os.stat(real)
        same = is_within(target.root, real) and (resolved.st_dev, resolved.st_ino) == identity
    except OSError:
        same = False
    if not same:
        os.close(fd)
        server_logger.warning("static: %s now resolves outside %s; not served",
                              target.path, target.root)
        return None
    target.verified = identity
    return opened


def _serve_target(target: _StaticTarget, request: Request, response: Response) -> _Pending:
    if target.redirect_to_slash:
        # An index served at "/docs" must be fetched as "/docs/", or its relative links
        # would resolve against "/" (nginx answers the same redirect).
        raw_path, sep, query = request.url.partition("?")
        if raw_path.startswith("/") and not raw_path.endswith("/"):
            return _plain(response, 301, "Moved Permanently",
                          [("location", raw_path + "/" + sep + query)])
    cached = target.cached
    if cached is not None and not response._has_content_type and not response.pending \
            and not request._has_any_header(_CONDITIONAL_HEADERS):
        try:
            identity: tuple[int, ...] | None = _file_identity(os.stat(target.path))
        except OSError:
            identity = None
        if identity == cached.identity:
            response._send(200, cached.head_lines, cached.body)
            return None
        _small_files.forget(target)  # changed or gone: the full path decides
    opened = _open_target(target)
    if opened is None:
        return _plain(response, 404, "Not Found")
    return _answer(request, response, opened[0], opened[1], target.path, None, False,
                   cache_for=target)


def _handler_for(target: _StaticTarget) -> Any:
    # A partial of a module-level function: pickle can carry it to worker processes.
    return functools.partial(_serve_target, target)


def _walk(root: str, *, recursive: bool, include_dotfiles: bool) -> Iterator[tuple[str, str]]:
    """Yield (relative posix path, path in tree) of every file to serve, sorted, each
    directory's files before its subdirectories. Entries that resolve outside `root`,
    symlink loops and (by default) dot-entries are skipped."""
    seen_dirs = {root}
    pending: list[tuple[str, str]] = [("", root)]
    while pending:
        rel_dir, abs_dir = pending.pop(0)
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except OSError as exc:
            server_logger.warning("static: cannot list %s: %s", abs_dir, exc)
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            if not include_dotfiles and entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            real = os.path.realpath(entry.path)
            if not is_within(root, real):
                server_logger.warning("static: %s leaves %s; not served", entry.path, root)
                continue
            if os.path.isdir(real):
                if recursive and real not in seen_dirs:
                    seen_dirs.add(real)
                    subdirs.append((rel, entry.path))
            elif os.path.isfile(real):
                yield rel, entry.path
        pending.extend(subdirs)


def _join_route(prefix: str, rel: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


# server -> {(resolved path, normalized prefix): routes}; weak so a dropped server's
# routes go with it.
_REGISTRY: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str], list[Any]]]" = \
    weakref.WeakKeyDictionary()


def _remember(server: Any, key: tuple[str, str], routes: list[Any]) -> None:
    _REGISTRY.setdefault(server, {}).setdefault(key, []).extend(routes)


def _handler_flags(flags: int) -> HandlerFlags:
    handler_flags = HandlerFlags.DONT_USE_BODY
    if flags & FileRouterFlags.LOCAL_PLUGINS_ONLY:
        handler_flags |= HandlerFlags.LOCAL_PLUGINS_ONLY
    return handler_flags


def serve_directory(server: Any, directory: str, path_prefix: str = "", flags: int = 0,
                    plugins: Iterable[Any] = (), max_requests_per_second: int | None = None,
                    max_request_size_in_bytes: int | None = None, *,
                    include_dotfiles: bool = False) -> list[Route]:
    """Serve every file of `directory` as its own exact GET route (HEAD answered too).

    `dir/a/b.txt` is served at `<path_prefix>/a/b.txt`. An `index.html` is served at
    its own path and also at its directory's path (`<path_prefix>/a/`, and
    `<path_prefix>/` for the top one); a request for the directory without the final
    "/" is redirected to it so relative links work. The directory is walked once, now:
    files added later are not served until it is served again, files deleted later
    give 404.

    Args:
        server: the Packetron server whose `handle()` registers the routes.
        directory: the directory to serve.
        path_prefix: URL path under which it appears ("" = the root).
        flags: FileRouterFlags. NON_RECURSIVE: top-level files only.
            NO_DIRECTORY_STRUCTURE: every file at `<path_prefix>/<name>` (on a name
            clash the shallower, then alphabetically first, file wins; the others are
            logged and skipped). USER_SPECIFIED_FILE: `directory` is one file, served at
            `path_prefix` (see serve_single_file). LOCAL_PLUGINS_ONLY: global plugins
            are skipped for these routes.
        plugins: route plugins run before each file is sent.
        max_requests_per_second, max_request_size_in_bytes: per-route limits.
        include_dotfiles: also serve names starting with "." (off by default: ".env",
            ".git/" and editor files are the classic leaks).

    Returns:
        The registered Routes.

    Raises:
        ConfigError: `directory` is not a directory.
    """
    if flags & FileRouterFlags.USER_SPECIFIED_FILE:
        route_path = path_prefix.strip("/") or os.path.basename(directory)
        return [serve_single_file(server, route_path, directory, flags, plugins,
                                  max_requests_per_second, max_request_size_in_bytes)]
    root = os.path.realpath(directory)
    if not os.path.isdir(root):
        raise ConfigError(f"serve(): {directory!r} is not a directory")
    flat = bool(flags & FileRouterFlags.NO_DIRECTORY_STRUCTURE)
    taken: set[str] = set()
    routes: list[Route] = []

    def add(route_path: str, target: _StaticTarget) -> None:
        if "?" in route_path:
            # Route paths stop at "?" (the query string): such a name cannot be routed.
            server_logger.warning("static: %s has '?' in its name; not served", target.path)
            return
        if route_path in taken:
            server_logger.warning("static: %s already serves a file; %s skipped",
                                  route_path or "/", target.path)
            return
        taken.add(route_path)
        routes.append(server.handle(
            RequestMethod.GET, route_path, _handler_for(target), plugins=plugins,
            flags=_handler_flags(flags), max_requests_per_second=max_requests_per_second,
            max_request_size_in_bytes=max_request_size_in_bytes))

    for rel, tree_path in _walk(root, recursive=not flags & FileRouterFlags.NON_RECURSIVE,
                                include_dotfiles=include_dotfiles):
        name = rel.rsplit("/", 1)[-1]
        add(_join_route(path_prefix, name if flat else rel), _StaticTarget(tree_path, root))
        if name == INDEX_FILE_NAME and (flat or "/" not in rel):
            dir_route = path_prefix.strip("/")
        elif name == INDEX_FILE_NAME:
            dir_route = _join_route(path_prefix, rel.rsplit("/", 1)[0])
        else:
            continue
        if dir_route not in taken:
            add(dir_route, _StaticTarget(tree_path, root, redirect_to_slash=dir_route != ""))
    _remember(server, (root, path_prefix.strip("/")), routes)
    return routes


def serve_single_file(server: Any, route_path: str, file_path: str, flags: int = 0,
                      plugins: Iterable[Any] = (), max_requests_per_second: int | None = None,
                      max_request_size_in_bytes: int | None = None) -> Route:
    """Serve one file at `route_path` (GET and HEAD).

    The path is kept as given: if it is a symlink, its target is served, whatever it
    points to (the caller named this file on purpose). A file deleted later gives 404.

    Args:
        server: the Packetron server.
        route_path: the URL path.
        file_path: the file.
        flags: FileRouterFlags; LOCAL_PLUGINS_ONLY applies, the others do not.
        plugins, max_requests_per_second, max_request_size_in_bytes: as for a route.

    Returns:
        The registered Route.

    Raises:
        ConfigError: `file_path` is not a regular file.
    """
    if not os.path.isfile(file_path):
        raise ConfigError(f"serve_file(): {file_path!r} is not a file")
    path = os.path.abspath(file_path)
    route: Route = server.handle(
        RequestMethod.GET, route_path, _handler_for(_StaticTarget(path, None)),
        plugins=plugins, flags=_handler_flags(flags),
        max_requests_per_second=max_requests_per_second,
        max_request_size_in_bytes=max_request_size_in_bytes)
    _remember(server, (os.path.realpath(path), route_path.strip("/")), [route])
    return route


def unserve_directory(server: Any, directory: str, path_prefix: str = "") -> int:
    """Remove the routes that serve_directory (or serve_single_file) registered.

    Args:
        server: the Packetron server.
        directory: the directory (or file) given when it was served.
        path_prefix: the prefix (or route path) it was served under.

    Returns:
        The number of routes removed (0 when nothing was served that way).
    """
    served = _REGISTRY.get(server)
    if not served:
        return 0
    routes = served.pop((os.path.realpath(directory), path_prefix.strip("/")), [])
    for route in routes:
        route.remove()
        target = getattr(route.handler, "args", (None,))[0]
        if isinstance(target, _StaticTarget):
            _small_files.forget(target)  # its memory goes with the route
    return len(routes)
