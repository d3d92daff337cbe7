"""The `packetron` command line (also `python -m packetron`).

    packetron serve MODULE:ATTR [--host H] [--port P] [--workers N]
    packetron broker DIR [--manifest FILE] [--host H] [--shared URL]

Only this module configures logging handlers; the library itself just logs.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

__all__ = ["main", "build_parser"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Exit statuses: 0 clean stop, 1 runtime failure (port in use ...), 2 bad usage/config
# (argparse uses 2 as well).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with its subcommands (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="packetron",
        description="Serve a packetron HTTP app, or a folder of TCP/UDP handlers.",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="logging level (default: info)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve a Packetron app: MODULE:ATTR")
    serve.add_argument("app", metavar="MODULE:ATTR", help="e.g. myapp:server")
    serve.add_argument("--host", help="address to bind (default: the app's)")
    serve.add_argument("--port", type=int, help="port to bind (default: the app's)")
    serve.add_argument("--workers", type=int, help="worker processes (default: the app's)")
    serve.set_defaults(func=_cmd_serve)

    broker = sub.add_parser("broker", help="serve a folder of <name>.<tcp|udp>.<port>.port.py")
    broker.add_argument("directory", metavar="DIR", help="the folder of handler files")
    broker.add_argument("--manifest", metavar="FILE", help="TOML manifest of handler limits")
    broker.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0)")
    broker.add_argument(
        "--shared", metavar="URL", help="ctx.shared backend: redis://... (default: in memory)"
    )
    broker.add_argument(
        "--poll-interval", type=float, metavar="SECONDS",
        help="seconds between folder scans (default: 1.0)",
    )
    broker.set_defaults(func=_cmd_broker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default: sys.argv[1:]).

    Returns:
        The exit status (0 after a clean SIGINT/SIGTERM stop).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format=LOG_FORMAT)
    return int(args.func(args))


# ---------------------------------------------------------------- serve


def _cmd_serve(args: argparse.Namespace) -> int:
    module_name, _, attr = args.app.partition(":")
    if not module_name or not attr:
        print(f"packetron serve: expected MODULE:ATTR, got {args.app!r}", file=sys.stderr)
        return EXIT_USAGE
    # Like `python -m`: the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"packetron serve: cannot import {module_name!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            print(f"packetron serve: {module_name!r} has no attribute {attr!r}", file=sys.stderr)
            return EXIT_USAGE
    if not callable(getattr(obj, "run", None)):
        print(f"packetron serve: {args.app} is not a server (it has no run())", file=sys.stderr)
        return EXIT_USAGE
    # Only what was given on the command line overrides the app's own settings.
    overrides = {
        k: getattr(args, k) for k in ("host", "port", "workers") if getattr(args, k) is not None
    }
    obj.run(**overrides)
    return EXIT_OK


# ---------------------------------------------------------------- broker


def _cmd_broker(args: argparse.Namespace) -> int:
    from packetron.errors import ConfigError
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
        print(f"packetron broker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(_serve_until_signalled(broker))
    except ConfigError as exc:
        print(f"packetron broker: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _serve_until_signalled(broker: Any) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await broker.start()
        ports = sorted(broker.ports.items())
        logging.getLogger("packetron.net").info(
            "broker serving %s: %s",
            broker.directory,
            ", ".join(f"{name} {proto}/{port}" for (proto, port), name in ports)
            or "no handlers yet",
        )
        await stop.wait()
        logging.getLogger("packetron.net").info("signal received: stopping the broker")
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
