"""Building a request from the client's keyword arguments: target, headers and body.

Sans-I/O: plain values in, the pieces of an h11.Request out.
"""
from __future__ import annotations

import json as json_module
import mimetypes
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Union
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["PreparedRequest", "prepare_request", "encode_multipart", "build_target",
           "Params", "HeaderInput", "FileInput"]

Params = Union[Mapping[str, Any], Iterable[tuple[str, Any]], str, bytes, None]
HeaderInput = Union[Mapping[str, Any], Iterable[tuple[str, Any]], None]
FileInput = Union[Mapping[str, Any], Iterable[tuple[str, Any]], None]

# Characters left as they are in a path: RFC 3986 pchar and "/", plus "%" so that a path
# the caller already escaped is not escaped twice.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
# Methods whose requests announce an empty body (Content-Length: 0) when none is given, as
# browsers and requests do: some servers insist on a length for them.
_LENGTH_REQUIRED = frozenset({"POST", "PUT", "PATCH"})


class PreparedRequest:
    """A request ready for the wire: method, target, headers and body pieces."""

    __slots__ = ("method", "url", "target", "headers", "body")

    def __init__(self, method: str, url: str, target: str,
                 headers: list[tuple[str, str]], body: list[bytes]) -> None:
        self.method = method
        self.url = url          # absolute, for redirects and response.url
        self.target = target    # origin-form: path and query
        self.headers = headers
        self.body = body        # one piece, or several with Transfer-Encoding: chunked

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


def _pairs(items: Any, repeat: tuple[type, ...] = (list, tuple)) -> list[tuple[str, Any]]:
    """(name, value) pairs of a mapping or an iterable of pairs; a list value repeats
    (and a tuple, unless `repeat` says otherwise: a file's tuple is one file)."""
    if items is None:
        return []
    source: Iterable[tuple[Any, Any]] = items.items() if isinstance(items, Mapping) else items
    pairs: list[tuple[str, Any]] = []
    for name, value in source:
        if isinstance(value, repeat):
            pairs.extend((str(name), item) for item in value)  # type: ignore[attr-defined]
        else:
            pairs.append((str(name), value))
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    return "" if value is None else str(value)


def build_target(path: str, params: Params) -> str:
    """Origin-form target: the path (escaped where it must be) and the merged query."""
    if not path.startswith("/"):
        path = "/" + path
    path = quote(path, safe=_QUERY_SAFE + "#")
    path = path.split("#", 1)[0]  # a fragment never leaves the client
    if params is None or params == "" or params == b"":
        return path
    if isinstance(params, (str, bytes)):
        query = params.decode("ascii") if isinstance(params, bytes) else params
    else:
        query = urlencode([(name, _text(value)) for name, value in _pairs(params)])
    if not query:
        return path
    return f"{path}&{query}" if "?" in path else f"{path}?{query}"


def encode_multipart(fields: list[tuple[str, Any]], files: list[tuple[str, Any]],
                     boundary: str | None = None) -> tuple[bytes, str]:
    """multipart/form-data body and its Content-Type.

    A file value is bytes/str/a file object (the field name is then the filename), or a
    tuple (filename, content[, content_type[, headers]]); filename None makes it a
    plain field part.
    """
    boundary = boundary or secrets.token_hex(16)
    delimiter = f"--{boundary}\r\n".encode("ascii")
    out: list[bytes] = []
    for name, value in fields:
        out += [delimiter, _disposition(name, None), b"\r\n",
                bytes(value) if isinstance(value, (bytes, bytearray)) else _text(value).encode("utf-8"),
                b"\r\n"]
    for name, value in files:
        filename, content, content_type, extra = _file_parts(name, value)
        head = [delimiter, _disposition(name, filename)]
        if content_type is None and filename is not None:
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type is not None:
            head.append(f"Content-Type: {content_type}\r\n".encode("latin-1"))
        for key, header_value in (extra or {}).items():
            head.append(f"{key}: {header_value}\r\n".encode("latin-1"))
        out += head + [b"\r\n", content, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def _quote_param(value: str) -> str:
    # As browsers do (HTML's multipart/form-data encoding): a quote or a line break
    # would otherwise end the parameter or the header.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D") \
        .replace("\n", "%0A")


def _disposition(name: str, filename: str | None) -> bytes:
    text = f'Content-Disposition: form-data; name="{_quote_param(name)}"'
    if filename is not None:
        text += f'; filename="{_quote_param(filename)}"'
    return (text + "\r\n").encode("utf-8")


def _read(content: Any) -> bytes:
    if hasattr(content, "read"):
        content = content.read()
    if isinstance(content, str):
        return content.encode("utf-8")
    return bytes(content)


def _file_parts(name: str, value: Any) -> tuple[str | None, bytes, str | None,
                                                Mapping[str, str] | None]:
    if isinstance(value, tuple):
        filename = value[0]
        content = _read(value[1]) if len(value) > 1 else b""
        content_type = value[2] if len(value) > 2 else None
        extra = value[3] if len(value) > 3 else None
        return filename, content, content_type, extra
    filename = name
    file_name = getattr(value, "name", None)
    if isinstance(file_name, str) and file_name and not file_name.startswith("<"):
        filename = os.path.basename(file_name)  # a real file: its own name, as requests does
    return filename, _read(value), None, None


def prepare_request(method: str, url: str, host: str, *, params: Params = None,
                    json: Any = None, data: Any = None, files: FileInput = None,
                    headers: list[tuple[str, str]]) -> PreparedRequest:
    """Encode the body (json, data, files) and complete the headers.

    `headers` are the final user headers (client defaults merged with the request's);
    they win over what this function would set, except Content-Length, which must match.

    Raises:
        ValueError: json together with data or files.
        TypeError: a value that cannot be encoded.
    """
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    target = build_target(path, params)
    body: list[bytes] = []
    content_type: str | None = None
    chunked = False
    if json is not None and (data is not None or files is not None):
        raise ValueError("json= cannot be combined with data= or files=")
    if json is not None:
        body = [json_module.dumps(json, separators=(",", ":"), ensure_ascii=False)
                .encode("utf-8")]
        content_type = "application/json"
    elif files is not None:
        fields = [] if data is None else _pairs(data)
        encoded, content_type = encode_multipart(fields, _pairs(files, repeat=(list,)))
        body = [encoded]
    elif data is not None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = [bytes(data)]
        elif isinstance(data, str):
            body = [data.encode("utf-8")]
        elif hasattr(data, "read"):
            body = [_read(data)]
        elif isinstance(data, Mapping) or (isinstance(data, (list, tuple))
                                           and all(isinstance(p, tuple) for p in data)):
            body = [urlencode([(name, _text(value)) for name, value in _pairs(data)])
                    .encode("ascii")]
            content_type = "application/x-www-form-urlencoded"
        elif isinstance(data, Iterable):
            # A generator of pieces: sent with Transfer-Encoding: chunked, one chunk each.
            body = [_read(piece) for piece in data]
            chunked = True
        else:
            raise TypeError(f"data= takes a dict, bytes, str, a file or an iterable of bytes, "
                            f"not {type(data).__name__}")
    final: list[tuple[str, str]] = [("Host", host)]
    names = {name.lower() for name, _ in headers}
    if "host" in names:
        final = []
    if content_type is not None and "content-type" not in names:
        final.append(("Content-Type", content_type))
    final += [(name, value) for name, value in headers
              if name.lower() not in ("content-length", "transfer-encoding")]
    if chunked:
        final.append(("Transfer-Encoding", "chunked"))
    elif body and len(body[0]) or method in _LENGTH_REQUIRED:
        final.append(("Content-Length", str(sum(map(len, body)))))
    return PreparedRequest(method, f"{parts.scheme}://{parts.netloc}{target}", target,
                           final, body)
