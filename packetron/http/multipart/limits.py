"""multipart_options: the limits of one route's multipart bodies, checked at registration.

Pure: the defaults, where their numbers come from, and the validation that turns the
dict a route was given into a frozen MultipartOptions. No I/O.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from packetron.errors import ConfigError

__all__ = [
    "MultipartOptions", "validate_multipart_options", "DEFAULT_MAX_FILE_SIZE_IN_BYTES",
    "DEFAULT_MAX_FILES", "DEFAULT_MAX_FIELDS", "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_FIELD_SIZE_IN_BYTES", "DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES",
    "DEFAULT_MAX_HEADER_PAIRS", "MAX_PART_HEADER_LINE_SIZE_IN_BYTES", "OPTION_KEYS",
]

# Defaults of multipart_options, and where the numbers come from.
DEFAULT_MAX_FILE_SIZE_IN_BYTES: int | None = None  # unlimited, as busboy's fileSize; the
#                                                     route's max_request_size_in_bytes caps it
DEFAULT_MAX_FILES = 1000  # Starlette's max_files
DEFAULT_MAX_FIELDS = 1000  # Starlette's max_fields, PHP's max_input_vars
DEFAULT_MAX_PARTS = 1000  # no real form has more; stops "thousands of tiny parts" early
DEFAULT_MAX_FIELD_SIZE_IN_BYTES = 1024 * 1024  # busboy's fieldSize, Starlette's max_part_size
DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES = 100  # busboy's fieldNameSize
DEFAULT_MAX_HEADER_PAIRS = 8  # multipart's max_header_count; RFC 7578 §4.8 defines only 3
# One part header line, name and value: multipart's own default (4 KiB + 128).
MAX_PART_HEADER_LINE_SIZE_IN_BYTES = 4096 + 128

OPTION_KEYS = ("max_file_size", "max_files", "max_fields", "max_field_size",
               "max_field_name_size", "max_parts", "max_header_pairs",
               "file_storage_directory", "on_file", "on_limit")


@dataclass(frozen=True, slots=True)
class MultipartOptions:
    """Validated multipart_options; None in a limit means "no limit"."""

    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE_IN_BYTES
    max_files: int | None = DEFAULT_MAX_FILES
    max_fields: int | None = DEFAULT_MAX_FIELDS
    max_field_size: int | None = DEFAULT_MAX_FIELD_SIZE_IN_BYTES
    max_field_name_size: int | None = DEFAULT_MAX_FIELD_NAME_SIZE_IN_BYTES
    max_parts: int | None = DEFAULT_MAX_PARTS
    max_header_pairs: int | None = DEFAULT_MAX_HEADER_PAIRS
    file_storage_directory: str | None = None  # None: storage.default_storage_directory()
    on_file: Callable[..., Any] | None = None
    on_limit: Callable[..., Any] | None = None


def validate_multipart_options(options: dict[str, Any] | None) -> MultipartOptions:
    """Check a route's multipart_options dict and fill in the defaults.

    Args:
        options: the dict given to `server.handle(..., multipart_options=...)`, or None.

    Returns:
        A frozen MultipartOptions.

    Raises:
        ConfigError: an unknown key, a limit that is not a non-negative int (or None),
            a storage directory that is not a path, or a callback that is not callable.
    """
    if options is None:
        return MultipartOptions()
    if not isinstance(options, dict):
        raise ConfigError(f"multipart_options must be a dict, not {type(options).__name__}")
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(f"unknown multipart_options {unknown}; known: {', '.join(OPTION_KEYS)}")
    for key in OPTION_KEYS[:7]:
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise ConfigError(f"multipart_options[{key!r}] must be an int >= 0 or None, "
                              f"not {value!r}")
    directory = options.get("file_storage_directory")
    if directory is not None:
        if not isinstance(directory, (str, os.PathLike)):
            raise ConfigError("multipart_options['file_storage_directory'] must be a path")
        directory = os.fspath(directory)
    for key in ("on_file", "on_limit"):
        if options.get(key) is not None and not callable(options[key]):
            raise ConfigError(f"multipart_options[{key!r}] must be callable")
    values = {k: options[k] for k in OPTION_KEYS if k in options}
    values["file_storage_directory"] = directory
    return MultipartOptions(**values)
