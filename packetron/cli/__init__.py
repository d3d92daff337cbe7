"""The `packetron` command line (also `python -m packetron`).

    packetron serve MODULE:ATTR [--host H] [--port P] [--workers N] [--reload]
                    [--reload-dir DIR] [--log-level L] [--access-log]
                    [--ssl-certfile F --ssl-keyfile F]
    packetron broker DIR [--manifest FILE] [--host H] [--shared URL]
    packetron --version

Every option may be written before or after the subcommand. Only this package configures
logging handlers; the library itself just logs.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from packetron import __version__
from packetron.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
SERVE, BROKER = "serve", "broker"


@dataclass(frozen=True)
class _Option:
    """One option, the subcommands it belongs to, and its default there."""

    flag: str
    commands: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # per command; else None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


# One table so that the top-level parser and the subcommands cannot drift apart.
OPTIONS: tuple[_Option, ...] = (
    _Option("--log-level", (SERVE, BROKER),
            {"choices": LOG_LEVELS, "type": str.lower, "help": "logging level (default: info)"},
            {SERVE: "info", BROKER: "info"}),
    _Option("--host", (SERVE, BROKER),
            {"help": "address to bind (serve: the app's; broker: 0.0.0.0)"},
            {BROKER: "0.0.0.0"}),
    _Option("--port", (SERVE,), {"type": _port, "help": "port to bind (default: the app's)"}),
    _Option("--workers", (SERVE,),
            {"type": _positive_int, "help": "worker processes (default: the app's)"}),
    _Option("--reload", (SERVE,),
            {"action": "store_true", "help": "restart the server when a watched .py file changes"},
            {SERVE: False}),
    _Option("--reload-dir", (SERVE,),
            {"action": "append", "metavar": "DIR",
             "help": "folder to watch with --reload (repeatable; default: the app module's)"}),
    _Option("--access-log", (SERVE,),
            {"action": "store_true", "help": "log one line per answer (packetron.access)"},
            {SERVE: False}),
    _Option("--ssl-certfile", (SERVE,), {"metavar": "FILE", "help": "PEM certificate: serve HTTPS"}),
    _Option("--ssl-keyfile", (SERVE,),
            {"metavar": "FILE", "help": "PEM private key (default: inside --ssl-certfile)"}),
    _Option("--manifest", (BROKER,), {"metavar": "FILE", "help": "TOML manifest of handler limits"}),
    _Option("--shared", (BROKER,),
            {"metavar": "URL", "help": "ctx.shared backend: redis://... (default: in memory)"}),
    _Option("--poll-interval", (BROKER,),
            {"type": float, "metavar": "SECONDS", "help": "seconds between folder scans (default: 1.0)"}),
)


def _add_options(parser: argparse.ArgumentParser, command: str | None) -> None:
    """Add the options of `command` (all of them for the top level), without defaults.

    SUPPRESS as default: an option absent from one side does not overwrite the value given
    on the other side of the subcommand; real defaults are filled in after parsing.
    """
    for option in OPTIONS:
        if command is None or command in option.commands:
            parser.add_argument(option.flag, default=argparse.SUPPRESS, **option.kwargs)
    parser.add_argument("--version", action="version", version=f"packetron {__version__}",
                        help="print the version and exit")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with its subcommands (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="packetron",
        description="Serve a packetron HTTP app, or a folder of TCP/UDP handlers. "
                    "Options may come before or after the command.",
        allow_abbrev=False,
    )
    _add_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(SERVE, help="serve a Packetron app: MODULE:ATTR", allow_abbrev=False)
    serve.add_argument("app", metavar="MODULE:ATTR", help="e.g. myapp:server")
    _add_options(serve, SERVE)

    broker = sub.add_parser(BROKER, help="serve a folder of <name>.<tcp|udp>.<port>.port.py",
                            allow_abbrev=False)
    broker.add_argument("directory", metavar="DIR", help="the folder of handler files")
    _add_options(broker, BROKER)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, refuse options of the other subcommand, and fill in the defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in OPTIONS:
        if args.command not in option.commands:
            if hasattr(args, option.dest):
                parser.error(f"{option.flag} is not an option of {args.command}")
            continue
        if not hasattr(args, option.dest):
            setattr(args, option.dest, option.defaults.get(args.command))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default: sys.argv[1:]).

    Returns:
        The exit status: 0 after a clean SIGINT/SIGTERM stop, 1 when a port cannot be
        opened, 2 for bad usage or configuration.
    """
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format=LOG_FORMAT)
    if args.command == SERVE and args.reload:
        # A watcher that runs `serve` (without --reload) in a child and restarts it.
        from packetron.cli.reload import reload_command

        return reload_command(args)
    if args.command == SERVE:
        from packetron.cli.serve import serve_command

        return serve_command(args)
    from packetron.cli.broker import broker_command

    return broker_command(args)
