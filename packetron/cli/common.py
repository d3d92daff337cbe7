"""What the subcommands share: exit statuses and the one-line report of a port that
could not be opened."""
from __future__ import annotations

import errno
import os
import sys

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "UsageError", "listen_error",
           "describe_address", "describe_oserror", "fail"]

# 0 clean stop, 1 runtime failure (a port that cannot be opened ...), 2 bad usage or
# configuration (argparse uses 2 as well).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad command line or configuration: reported in one line, exit status 2."""


# What bind() reports for a port that cannot be had; EACCES/EPERM only count for the
# privileged ports, where they are about the port and not about some file.
_BIND_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})
_PRIVILEGED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
PRIVILEGED_PORTS = 1024


def listen_error(exc: BaseException, port: int | None) -> OSError | None:
    """The OSError of a failed bind in `exc` or its causes, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            if current.errno in _BIND_ERRNOS:
                return current
            if (current.errno in _PRIVILEGED_ERRNOS and port is not None
                    and 0 < port < PRIVILEGED_PORTS):
                return current
        current = current.__cause__ or current.__context__
    return None


def describe_address(host: str | None, port: int | None) -> str:
    """HOST:PORT as a user writes it ([::1]:80 for IPv6)."""
    host = host or "0.0.0.0"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def describe_oserror(exc: OSError) -> str:
    """'address already in use' rather than '[Errno 98] Address already in use'."""
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


def fail(message: str, status: int = EXIT_FAILURE) -> int:
    """Print one line to stderr and return `status`."""
    print(message, file=sys.stderr, flush=True)
    return status
