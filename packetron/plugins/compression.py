"""compress: gzip, and brotli when installed, for whole answers, chosen by Accept-Encoding.

The plugin works after the handler: its after-hook sees the body of a whole answer
(`send_json`, `send_text_plain`, `send`, the server's own answers, small static files)
just before the head is written and may replace it. Streamed answers and files sent with
sendfile have no body there and are left as they are, except static files with a
precompressed sibling (`app.css.br`, `app.css.gz`), which the static sender picks itself:
the before-hook tells it which codings the client takes (`request.accepts_precompressed`).

What is never compressed: bodies under `min_size`, answers that already carry a
Content-Encoding, 206 and other statuses without a body, HEAD, `Cache-Control:
no-transform`, and types that are compressed already (images other than SVG/BMP/icons,
audio, video, archives, WOFF fonts, PDF, application/octet-stream). A body is sent as it
is when compressing does not make it smaller.

The negotiation helpers below are pure and take plain strings.
"""
from __future__ import annotations

import functools
import importlib
import re
import zlib
from typing import Any

from packetron.errors import ConfigError
from packetron.flags import PluginPriority
from packetron.http.plugins import Plugin

# The optional extra `compress`; imported by name, since it ships no type information.
_brotli: Any
try:
    _brotli = importlib.import_module("brotli")
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None

__all__ = ["compress", "parse_accept_encoding", "negotiate", "is_compressible_type",
           "looks_compressed", "add_vary", "coding_etag", "GZIP_LEVEL", "BROTLI_QUALITY",
           "brotli_available"]

# zlib's default: nearly the ratio of 9 at a fraction of its time.
GZIP_LEVEL = 6
# Brotli's default quality, 11, costs tens of milliseconds per 100 KiB: meant for files
# compressed once (the precompressed .br siblings). 4 is the usual choice on the fly:
# smaller than gzip -6 at about its speed.
BROTLI_QUALITY = 4
# gzip output straight from zlib (wbits 16+15): header, deflate stream, CRC trailer.
_GZIP_WBITS = 31

# Codings this module can produce, best first: br wins a tie in q (smaller output).
_CODINGS_WITH_BROTLI = ("br", "gzip")
_CODINGS_WITHOUT_BROTLI = ("gzip",)
# Codings a precompressed sibling may have, whatever is installed: sending a file needs
# no library.
_PRECOMPRESSED_CODINGS = ("br", "gzip")

# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ).
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Already compressed, or not worth the CPU (compared on the media type, lowercased).
_INCOMPRESSIBLE_TYPES = frozenset({
    "application/octet-stream", "application/zip", "application/x-zip-compressed",
    "application/gzip", "application/x-gzip", "application/x-7z-compressed",
    "application/x-bzip2", "application/x-xz", "application/zstd", "application/x-rar-compressed",
    "application/vnd.rar", "application/java-archive", "application/pdf",
    "application/font-woff", "font/woff", "font/woff2", "text/event-stream",
    "multipart/byteranges",
})
_INCOMPRESSIBLE_PREFIXES = ("image/", "video/", "audio/",
                            "application/vnd.openxmlformats-officedocument.",
                            "application/vnd.oasis.opendocument.")
# Image formats that are not compressed inside: SVG is XML text, BMP and icons raw pixels.
_COMPRESSIBLE_IMAGES = frozenset({"image/svg+xml", "image/bmp", "image/x-icon",
                                  "image/vnd.microsoft.icon"})
# Leading bytes of compressed formats, for bodies whose type the hook cannot see:
# gzip, zip, PNG, JPEG, GIF, 7z, xz, bzip2, zstd, WOFF, WOFF2, Ogg, MP3 (ID3), FLAC, RAR.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"\x89PNG", b"\xff\xd8\xff", b"GIF8",
                     b"7z\xbc\xaf", b"\xfd7zXZ", b"BZh", b"\x28\xb5\x2f\xfd", b"wOFF",
                     b"wOF2", b"OggS", b"ID3", b"fLaC", b"Rar!")

# Statuses whose answer has no body to compress (RFC 9110 §6.4.1), and 206, whose body
# is a byte range of the identity representation.
_SKIPPED_STATUSES = frozenset({204, 206, 304} | set(range(100, 200)))


def brotli_available() -> bool:
    """Whether the `brotli` module imported (the extra `compress`)."""
    return _brotli is not None


def parse_accept_encoding(header: str) -> dict[str, float]:
    """Map each coding of an Accept-Encoding value (lowercased) to its q-value.

    A missing q is 1. A q-value that is not valid (`q=abc`, `q=2`, `q=-1`, `q=0.5555`) makes
    that coding unacceptable (0), never an error. `x-gzip` counts as `gzip` (RFC 9110
    §8.4.1.3). When a coding is listed twice, its first entry counts.
    """
    prefs: dict[str, float] = {}
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding or not _TOKEN.fullmatch(coding):
            continue
        if coding == "x-gzip":
            coding = "gzip"
        q = 1.0
        for param in params.split(";"):
            name, eq, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if eq and _QVALUE.fullmatch(value) else 0.0
                break
        prefs.setdefault(coding, q)
    return prefs


@functools.lru_cache(maxsize=512)  # a few distinct headers, sent by every client again
def negotiate(header: str | None, with_brotli: bool) -> tuple[str | None, tuple[str, ...]]:
    """Choose content codings for an Accept-Encoding value (RFC 9110 §12.5.3).

    Args:
        header: the request's Accept-Encoding, or None when absent.
        with_brotli: whether br may be produced on the fly.

    Returns:
        (coding to compress a body with, or None for identity; codings a precompressed
        file may be sent in, best first). No header means identity: a client that says
        nothing gets what it surely understands. `*` stands for every coding the header
        does not name, identity included. A coding is chosen only when its q is above 0
        and not below identity's (when the header ranks identity, by name or through
        `*`); at equal q br comes before gzip. When nothing is
        acceptable, not even identity, the answer is identity anyway (406 helps nobody).
    """
    if header is None:
        return None, ()
    prefs = parse_accept_encoding(header)
    star = prefs.get("*")
    # Identity competes only when the header ranks it (by name or through "*"); unranked
    # it is the fallback, below every coding the client listed.
    identity_q = prefs.get("identity", 0.0 if star is None else star)

    def q_of(coding: str) -> float:
        return prefs.get(coding, 0.0 if star is None else star)

    def ranked(codings: tuple[str, ...]) -> tuple[str, ...]:
        acceptable = [c for c in codings if q_of(c) > 0 and q_of(c) >= identity_q]
        return tuple(sorted(acceptable, key=lambda c: -q_of(c)))  # stable: br first at a tie

    on_the_fly = ranked(_CODINGS_WITH_BROTLI if with_brotli else _CODINGS_WITHOUT_BROTLI)
    return (on_the_fly[0] if on_the_fly else None), ranked(_PRECOMPRESSED_CODINGS)


def is_compressible_type(content_type: str) -> bool:
    """Whether a Content-Type is worth compressing (not compressed already)."""
    media = content_type.partition(";")[0].strip().lower()
    if media in _INCOMPRESSIBLE_TYPES or media.endswith("+zip"):
        return False
    if media.startswith(_INCOMPRESSIBLE_PREFIXES):
        return media in _COMPRESSIBLE_IMAGES
    return True


def looks_compressed(body: bytes) -> bool:
    """Whether a body starts like a compressed format (gzip, zip, PNG, JPEG, WebP, MP4...)."""
    return body.startswith(_COMPRESSED_MAGIC) or (
        len(body) >= 12 and (body[8:12] == b"WEBP" or body[4:8] == b"ftyp"))


def add_vary(current: str | None, name: str = "Accept-Encoding") -> str | None:
    """The Vary value with `name` added; None when it is there already (or Vary is "*")."""
    if current is None or not current.strip():
        return name
    tokens = {token.strip().lower() for token in current.split(",")}
    if "*" in tokens or name.lower() in tokens:
        return None
    return f"{current}, {name}"


def coding_etag(etag: str, coding: str) -> str:
    """The ETag of a compressed variant: a strong tag gets the coding as a suffix
    ('"abc"' → '"abc-gzip"'), so it differs from the identity one; a weak tag stays (a
    weak validator already allows a different encoding of the same content)."""
    if etag.startswith("W/") or len(etag) < 2 or not etag.endswith('"'):
        return etag
    return f"{etag[:-1]}-{coding}\""


def _encode(body: bytes, coding: str, gzip_level: int, brotli_quality: int) -> bytes:
    if coding == "br":
        assert _brotli is not None
        return bytes(_brotli.compress(body, quality=brotli_quality))
    return zlib.compress(body, gzip_level, wbits=_GZIP_WBITS)


def compress(min_size: int = 1024, *, gzip_level: int = GZIP_LEVEL,
             brotli_quality: int = BROTLI_QUALITY) -> Plugin:
    """Compress whole answers with gzip, or brotli when the `brotli` module is installed
    (`pip install packetron[compress]`), as the client's Accept-Encoding prefers.

    Answers that could be compressed get `Vary: Accept-Encoding` (added to any Vary set
    before), whichever coding was chosen. A compressed answer has `Content-Encoding`, its
    Content-Length counts the compressed bytes, a strong ETag gets a suffix ("-gzip",
    "-br"), and Accept-Ranges is dropped. Static files with a precompressed `.br` / `.gz`
    sibling next to them are sent as that file, zero-copy, when the client takes it.

    The plugin has the lowest priority, EXTREMELY_LOW: after-hooks run higher priority
    first, so it runs after the other plugins' after-hooks and compresses the final body
    with the final headers (a Cache-Control: no-transform set by another plugin counts).
    An after-hook that changes the body must have a higher priority than this one.

    Args:
        min_size: bodies shorter than this many bytes are sent as they are (compressing
            them saves less than the Content-Encoding header and the CPU cost).
        gzip_level: zlib level, 1 (fast) to 9 (small).
        brotli_quality: brotli quality, 0 (fast) to 11 (small).

    Returns:
        The Plugin; attach it globally (`Packetron(plugins=[compress()])`) or to routes.

    Raises:
        ConfigError: a negative min_size, or a level out of range.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ConfigError(f"compress: min_size must be an int >= 0, not {min_size!r}")
    if isinstance(gzip_level, bool) or gzip_level not in range(1, 10):
        raise ConfigError(f"compress: gzip_level must be 1..9, not {gzip_level!r}")
    if isinstance(brotli_quality, bool) or brotli_quality not in range(0, 12):
        raise ConfigError(f"compress: brotli_quality must be 0..11, not {brotli_quality!r}")
    with_brotli = _brotli is not None

    def mark(request: Any, response: Any) -> bool:
        # For the static sender: which precompressed siblings this client takes.
        request.accepts_precompressed = negotiate(
            request.headers.get("accept-encoding"), with_brotli)[1]
        return False

    def after(request: Any, response: Any) -> None:
        body = response.body
        if body is None:
            return  # streamed, sendfile, or a precompressed file: nothing to do here
        status = response.status
        if len(body) < min_size or status in _SKIPPED_STATUSES:
            if status == 304:
                _revalidated(request, response, with_brotli)
            return
        if response.get_header("content-encoding") is not None:
            return
        cache_control = response.get_header("cache-control")
        if cache_control is not None and "no-transform" in cache_control.lower():
            return
        content_type = response.get_header("content-type")
        if content_type is None:
            # send_json / send_text_plain / send(...) name their type in the head only:
            # what is already compressed is recognised by its first bytes.
            if looks_compressed(body):
                return
        elif not is_compressible_type(content_type):
            return
        vary = add_vary(response.get_header("vary"))
        if vary is not None:
            response.set_header("Vary", vary)
        if request.method == "HEAD":
            return  # nothing is sent; compressing would only cost CPU
        coding = negotiate(request.headers.get("accept-encoding"), with_brotli)[0]
        if coding is None:
            return
        encoded = _encode(body, coding, gzip_level, brotli_quality)
        if len(encoded) >= len(body):
            return  # incompressible after all: the identity body is the smaller answer
        response.body = encoded
        response.set_header("Content-Encoding", coding)
        etag = response.get_header("etag")
        if etag is not None:
            response.set_header("ETag", coding_etag(etag, coding))
        if response.get_header("accept-ranges") is not None:
            response.remove_header("Accept-Ranges")  # ranges are served on identity only

    return Plugin.create(PluginPriority.EXTREMELY_LOW, handler=mark, after=after)


def _revalidated(request: Any, response: Any, with_brotli: bool) -> None:
    """A 304 for a compressed variant carries that variant's ETag and Vary (RFC 9110
    §15.4.5), as the 200 it revalidates did."""
    etag = response.get_header("etag")
    if_none_match = request.headers.get("if-none-match")
    if etag is None or if_none_match is None or etag.startswith("W/"):
        return
    coding = negotiate(request.headers.get("accept-encoding"), with_brotli)[0]
    if coding is None:
        return
    tagged = coding_etag(etag, coding)
    if tagged in (tag.strip() for tag in if_none_match.split(",")):
        response.set_header("ETag", tagged)
        vary = add_vary(response.get_header("vary"))
        if vary is not None:
            response.set_header("Vary", vary)
