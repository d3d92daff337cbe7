"""Bit flags and enumerations of the public API.

Bit values match the Node.js Packetron so that options written as integers there
mean the same here.
"""
from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = ["ServerFlags", "HandlerFlags", "FileRouterFlags", "RequestMethod", "PluginPriority"]


class ServerFlags(IntFlag):
    NONE = 0
    START_IMMEDIATELY = 1 << 0
    STOP_ON_ERROR = 1 << 1
    TRY_NEXT_PORT = 1 << 2
    SILENCE_INTERNAL_LOGS = 1 << 3
    NO_GLOBAL_DATA = 1 << 4
    RAISE_PROCESS_PRIORITY = 1 << 5


class HandlerFlags(IntFlag):
    NONE = 0
    JSON_BODY = 1 << 0
    DONT_USE_BODY = 1 << 1
    FILE_UPLOAD = 1 << 2
    LOCAL_PLUGINS_ONLY = 1 << 3
    FORM_DATA = 1 << 4
    XML_BODY = 1 << 5
    PLAIN_TEXT_BODY = 1 << 6
    MULTIPART_FORM_DATA = 1 << 7
    AUTO_BODY = 1 << 8      # the parser is chosen by the request's Content-Type
    STREAM_BODY = 1 << 9    # nothing buffered: `async for chunk in request.stream()`


class FileRouterFlags(IntFlag):
    NONE = 0
    NON_RECURSIVE = 1 << 0
    NO_DIRECTORY_STRUCTURE = 1 << 1
    USER_SPECIFIED_FILE = 1 << 2
    LOCAL_PLUGINS_ONLY = 1 << 3


class RequestMethod(IntEnum):
    """HTTP methods as small integers: a route keeps its handlers in a list indexed by these."""

    GET = 0
    POST = 1
    PUT = 2
    DELETE = 3
    HEAD = 4
    PATCH = 5
    OPTIONS = 6


class PluginPriority(IntEnum):
    EXTREMELY_LOW = 0
    VERY_LOW = 1
    LOW = 2
    LOWER = 3
    MEDIUM = 4
    HIGHER = 5
    HIGH = 6
    VERY_HIGH = 7
    EXTREMELY_HIGH = 8
    # Spellings of the original API, kept so ported code runs unchanged.
    EXTEMELY_LOW = 0
    EXTEMELY_HIGH = 8
