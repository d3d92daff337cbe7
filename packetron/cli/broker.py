"""`packetron broker DIR`: serve a folder of TCP/UDP handler files until a signal."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

from packetron.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    describe_address,
    describe_oserror,
    fail,
    listen_error,
)
from packetron.errors import ConfigError

__all__ = ["broker_command", "declared_ports"]

_log = logging.getLogger("packetron.net")
# The logger the Broker reports per-file failures on (a port it could not open among them).
_BROKER_LOGGER = "packetron.net.broker"


def declared_ports(directory: str) -> list[tuple[str, int]]:
    """(protocol, port) of every entry file in `directory`, sorted; bad names are skipped."""
    from packetron.net.handlerfiles import parse_entry_name

    found = set()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        try:
            entry = parse_entry_name(name)
        except ConfigError:
            continue
        if entry is not None and os.path.isfile(os.path.join(directory, name)):
            found.add(entry.key)
    return sorted(found)


def _bind_failure(host: str, protocol: str, port: int) -> OSError | None:
    """Why (protocol, port) cannot be bound now, or None when it can."""
    from packetron.net.listener import bind_tcp_socket, bind_udp_socket

    try:
        sock = bind_tcp_socket(host, port) if protocol == "tcp" else bind_udp_socket(host, port)
    except OSError as exc:
        return listen_error(exc, port)
    sock.close()
    return None


class _HeldRecords(logging.Filter):
    """Holds a logger's records back until we know whether they are worth showing."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def broker_command(args: argparse.Namespace) -> int:
    """Run `packetron broker`; returns the exit status."""
    from packetron.net.broker import POLL_INTERVAL_SECONDS, Broker

    try:
        broker = Broker(
            args.directory,
            manifest=args.manifest,
            host=args.host,
            shared=args.shared,
            poll_interval=args.poll_interval or POLL_INTERVAL_SECONDS,
        )
    except ConfigError as exc:
        return fail(f"packetron broker: {exc}", EXIT_USAGE)
    try:
        return _run(_serve_until_signalled(broker, args.host))
    except ConfigError as exc:
        return fail(f"packetron broker: {exc}", EXIT_USAGE)


async def _start(broker: Any, host: str) -> int | None:
    """Start the broker; an exit status when it could open none of its declared ports.

    While it starts, the broker's own failure records are held back: when nothing could
    be opened because the ports are taken, one line says so instead of one per file.
    """
    held = _HeldRecords()
    logger = logging.getLogger(_BROKER_LOGGER)
    logger.addFilter(held)
    try:
        await broker.start()
    except BaseException:
        _release(logger, held)
        raise
    logger.removeFilter(held)
    declared = declared_ports(broker.directory)
    failures: list[str] = []
    if declared and not broker.ports:
        for protocol, port in declared:
            error = _bind_failure(host, protocol, port)
            if error is not None:
                failures.append(f"cannot listen on {describe_address(host, port)}"
                                f"{'' if protocol == 'tcp' else ' (udp)'}: "
                                f"{describe_oserror(error)}")
    if failures:
        return fail("; ".join(failures))
    _release(logger, held)  # started: show what happened, in order
    return None


def _release(logger: logging.Logger, held: _HeldRecords) -> None:
    logger.removeFilter(held)
    for record in held.records:
        logger.handle(record)


async def _serve_until_signalled(broker: Any, host: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        status = await _start(broker, host)
        if status is not None:
            return status
        ports = sorted(broker.ports.items())
        _log.info(
            "broker serving %s: %s",
            broker.directory,
            ", ".join(f"{name} {proto}/{port}" for (proto, port), name in ports)
            or "no handlers yet",
        )
        await stop.wait()
        _log.info("signal received: stopping the broker")
    finally:
        await broker.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return EXIT_OK


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run with uvloop when it is installed, asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

