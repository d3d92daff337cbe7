"""packet-stream's error objects: `{"message", "name", "stack"}` to and from exceptions.

Sans-I/O: what a request handler's exception becomes on the wire, and what a peer's
error value becomes here (RemoteError).
"""
from __future__ import annotations

import traceback
from typing import Any

from packetron.errors import RemoteError

__all__ = ["error_payload", "remote_error", "NO_REQUEST_HANDLER", "NO_STREAM_HANDLER",
           "UNEXPECTED_END"]

#: Node's answer to a request when no request handler exists (byte-identical).
NO_REQUEST_HANDLER = {"message": "Unable to handle requests", "name": "NO_REQUEST_HANDLER",
                      "stack": None}
#: Our answer to a stream when no stream handler exists (same shape).
NO_STREAM_HANDLER = {"message": "Unable to handle streams", "name": "NO_STREAM_HANDLER",
                     "stack": None}
#: The message Node gives pending calls when the session ends under them.
UNEXPECTED_END = "unexpected end of parent stream"


def error_payload(err: BaseException | dict[str, Any], *, include_stack: bool = True
                  ) -> dict[str, Any]:
    """packet-stream's ``flat(err)``: ``{"message", "name", "stack"}`` in that order.

    A RemoteError carrying a dict payload is passed on unchanged, so forwarding a
    peer's error keeps its original name and stack.

    Args:
        err: an exception, or a ready payload dict (returned as is).
        include_stack: False replaces the traceback with "Name: message".
    """
    if isinstance(err, dict):
        return err
    if isinstance(err, RemoteError) and isinstance(err.payload, dict):
        return err.payload
    name = type(err).__name__
    message = str(err)
    if include_stack and err.__traceback__ is not None:
        stack = "".join(traceback.format_exception(err)).rstrip("\n")
    else:
        stack = f"{name}: {message}" if message else name
    return {"message": message, "name": name, "stack": stack}


def remote_error(value: Any) -> RemoteError:
    """Turn a peer's error value (usually ``{"message", "name", "stack"}``) into RemoteError."""
    if isinstance(value, dict):
        message = value.get("message")
        name = value.get("name")
        return RemoteError(str(message) if message is not None else repr(value), value,
                           name=str(name) if name is not None else None)
    return RemoteError(str(value), value)
