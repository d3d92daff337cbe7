"""Content types of static files, chosen by file extension.

Pure: a fixed table, no I/O. It does not consult the platform's `mimetypes` database
(`/etc/mime.types`, the Windows registry) on purpose: a served file must get the same
Content-Type on every machine, and a registry entry mapping `.js` to `text/plain` has
broken real sites. The table covers what web pages and downloads use; anything else is
`application/octet-stream`, which browsers download rather than render (the safe choice
for an unknown type).
"""
from __future__ import annotations

__all__ = ["DEFAULT_MIME_TYPE", "MIME_TYPES", "guess_mime_type", "content_type_for"]

DEFAULT_MIME_TYPE = "application/octet-stream"

# Lower-case extension (without the dot) -> media type. Text types get "; charset=utf-8"
# added by content_type_for(), so that a browser never sniffs an encoding.
MIME_TYPES: dict[str, str] = {
    # pages, styles, scripts
    "html": "text/html",
    "htm": "text/html",
    "xhtml": "application/xhtml+xml",
    "css": "text/css",
    "js": "text/javascript",  # RFC 9239 made text/javascript the one registered type
    "mjs": "text/javascript",
    "cjs": "text/javascript",
    "map": "application/json",
    "json": "application/json",
    "jsonld": "application/ld+json",
    "webmanifest": "application/manifest+json",
    "wasm": "application/wasm",
    # text
    "txt": "text/plain",
    "text": "text/plain",
    "log": "text/plain",
    "md": "text/markdown",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "xml": "application/xml",
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "yaml": "application/yaml",
    "yml": "application/yaml",
    "ics": "text/calendar",
    "vtt": "text/vtt",
    # images
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "svg": "image/svg+xml",
    "ico": "image/vnd.microsoft.icon",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    # fonts
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    # audio and video
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "opus": "audio/opus",
    "mp4": "video/mp4",
    "m4v": "video/mp4",
    "webm": "video/webm",
    "ogv": "video/ogg",
    "mov": "video/quicktime",
    # documents and archives
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gz": "application/gzip",
    "tgz": "application/gzip",
    "tar": "application/x-tar",
    "bz2": "application/x-bzip2",
    "xz": "application/x-xz",
    "zst": "application/zstd",
    "7z": "application/x-7z-compressed",
    "rtf": "application/rtf",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "epub": "application/epub+zip",
}

# Types that are text although not under text/: they get a charset parameter too.
_TEXT_LIKE = frozenset({
    "application/json", "application/ld+json", "application/manifest+json",
    "application/xml", "application/xhtml+xml", "application/rss+xml",
    "application/atom+xml", "application/yaml", "image/svg+xml",
})


def guess_mime_type(path: str) -> str:
    """Media type of a file from its extension (case-insensitive).

    Args:
        path: a file name or path; only the part after the last "." of the last
            component counts. A name that starts with its only dot (".bashrc") has no
            extension.

    Returns:
        The media type without parameters, `DEFAULT_MIME_TYPE` when unknown.
    """
    slash = max(path.rfind("/"), path.rfind("\\"))
    name = path[slash + 1:]
    dot = name.rfind(".")
    if dot <= 0:
        return DEFAULT_MIME_TYPE
    return MIME_TYPES.get(name[dot + 1:].lower(), DEFAULT_MIME_TYPE)


def content_type_for(path: str) -> str:
    """Content-Type header value for a file: the media type, plus `charset=utf-8` for text.

    Args:
        path: a file name or path.

    Returns:
        e.g. "text/html; charset=utf-8", "image/png", "application/octet-stream".
    """
    media_type = guess_mime_type(path)
    if media_type.startswith("text/") or media_type in _TEXT_LIKE:
        return media_type + "; charset=utf-8"
    return media_type
