"""Conditional requests and ranges for static files, as pure functions (no I/O).

Validators (a strong ETag from size and mtime, Last-Modified as an HTTP date), the
preconditions of RFC 9110 §13.2.2 (If-Match, If-None-Match, If-Modified-Since,
If-Unmodified-Since → 304 or 412) and a single `Range` (→ 206, 416, or the whole file).
Everything here takes plain values: a stat result's numbers and header strings.
"""
from __future__ import annotations

import functools
from datetime import datetime
from email.utils import formatdate, mktime_tz, parsedate_tz

__all__ = ["make_etag", "http_date", "parse_http_date", "etag_list_matches",
           "check_preconditions", "parse_range", "choose_range", "CODING_ETAG_SUFFIXES"]

# Suffixes the compress plugin gives the strong ETag of a compressed variant ('"abc"' →
# '"abc-gzip"'). A client revalidating that variant sends the suffixed tag back; it names
# the same file version, so If-None-Match matches it too (else every revalidation of a
# compressed answer would cost a full 200). If-Match and If-Range compare strongly and
# never match it: a byte range of the identity file is not one of the compressed variant.
CODING_ETAG_SUFFIXES = ("-gzip", "-br")


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


def _without_coding_suffix(tag: str) -> str:
    # '"abc-gzip"' → '"abc"'; any other tag unchanged.
    for suffix in CODING_ETAG_SUFFIXES:
        if tag.endswith(suffix + '"'):
            return tag[: -len(suffix) - 1] + '"'
    return tag


def etag_list_matches(header: str, etag: str, *, weak: bool) -> bool:
    """If-Match / If-None-Match list comparison (RFC 9110 §8.8.3.2).

    With `weak` (If-None-Match), a tag carrying a content-coding suffix
    (CODING_ETAG_SUFFIXES) also matches: the compressed variant of an unchanged file is
    unchanged too.
    """
    if header.strip() == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            if not weak:
                continue  # strong comparison: a weak validator never matches
            candidate = candidate[2:]
        if candidate == opaque or (weak and _without_coding_suffix(candidate) == opaque):
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
        if not etag_list_matches(if_match, etag, weak=False):
            return 412
    elif if_unmodified_since is not None:
        since = parse_http_date(if_unmodified_since)
        if since is not None and mtime > since:
            return 412
    if if_none_match is not None:
        # When If-None-Match is present, If-Modified-Since is ignored (§13.1.3).
        return 304 if etag_list_matches(if_none_match, etag, weak=True) else 0
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
