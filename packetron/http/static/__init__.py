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

Modules: `conditional` (pure: ETag, HTTP dates, preconditions, Range), `target` (path
containment, opening a file that must stay in its tree), `cache` (small files kept in
memory), `sending` (the answer: 304/412/206/416, HEAD, pread or sendfile) and `routes`
(the directory walk and route registration).
"""
from __future__ import annotations

from packetron.http.static.cache import SMALL_FILE_CACHE_BYTES
from packetron.http.static.cache import _small_files as _small_files  # the per-process cache
from packetron.http.static.conditional import (
    check_preconditions,
    choose_range,
    http_date,
    make_etag,
    parse_http_date,
    parse_range,
)
from packetron.http.static.routes import (
    INDEX_FILE_NAME,
    serve_directory,
    serve_single_file,
    unserve_directory,
)
from packetron.http.static.sending import SENDFILE_THRESHOLD_IN_BYTES, content_disposition, send_file
from packetron.http.static.target import is_hidden, is_within

__all__ = [
    "SENDFILE_THRESHOLD_IN_BYTES", "INDEX_FILE_NAME", "send_file", "serve_directory",
    "serve_single_file", "unserve_directory", "is_within", "is_hidden", "make_etag",
    "http_date", "parse_http_date", "check_preconditions", "parse_range", "choose_range",
    "content_disposition", "SMALL_FILE_CACHE_BYTES",
]
