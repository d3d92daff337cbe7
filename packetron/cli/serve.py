"""`packetron serve MODULE:ATTR`: import an app and run it in the foreground."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys
from typing import Any

from packetron.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    describe_address,
    describe_oserror,
    fail,
    listen_error,
)
from packetron.errors import ConfigError, PacketronError
from packetron.http.lifespan import is_startup_failure

__all__ = ["serve_command", "load_app", "split_target", "server_options", "module_folder"]


def split_target(spec: str) -> tuple[str, str]:
    """'pkg.module:attr' -> ('pkg.module', 'attr').

    Raises:
        UsageError: not of the MODULE:ATTR shape.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR, got {spec!r}")
    return module_name, attr


def _cwd_importable() -> None:
    # Like `python -m`: the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def module_folder(spec: str) -> str:
    """The folder holding the app module of `spec`, found without running the module.

    Raises:
        UsageError: the module cannot be found.
    """
    module_name, _ = split_target(spec)
    _cwd_importable()
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    if found is None or not found.origin or not os.path.exists(found.origin):
        raise UsageError(f"cannot import {module_name!r}: no such module")
    return os.path.dirname(os.path.abspath(found.origin))


def load_app(spec: str) -> Any:
    """Import MODULE and return its ATTR (dots walk attributes), which must have run().

    Raises:
        UsageError: the module cannot be imported, or ATTR is missing or not a server.
    """
    module_name, attr = split_target(spec)
    _cwd_importable()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(getattr(obj, "run", None)):
        raise UsageError(f"{spec} is not a server (it has no run())")
    return obj


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The server options (packetron.options.ServerOptions) the command line sets.

    Raises:
        UsageError: a key without a certificate, or TLS files that do not load.
    """
    options: dict[str, Any] = {}
    if args.access_log:
        options["access_log"] = True
    if args.ssl_keyfile and not args.ssl_certfile:
        raise UsageError("--ssl-keyfile needs --ssl-certfile")
    if args.ssl_certfile:
        from packetron.net import server_context

        try:  # load once here: a bad file is one line now, not a traceback at bind time
            server_context(args.ssl_certfile, args.ssl_keyfile)
        except (ConfigError, OSError) as exc:
            raise UsageError(str(exc)) from None
        options["tls"] = {"cert": args.ssl_certfile, "key": args.ssl_keyfile}
    return options


def _apply_options(app: Any, spec: str, options: dict[str, Any]) -> None:
    """Replace the given options in the app's frozen ServerOptions (`app.config`)."""
    if not options:
        return
    config = getattr(app, "config", None)
    if config is None or not dataclasses.is_dataclass(config) or isinstance(config, type):
        names = ", ".join(sorted(options))
        raise UsageError(f"{spec} has no server options to set ({names})")
    try:
        app.config = dataclasses.replace(config, **options)
    except (ConfigError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def serve_command(args: argparse.Namespace) -> int:
    """Run `packetron serve`; returns the exit status."""
    if args.reload_dir:
        return fail("packetron serve: --reload-dir needs --reload", EXIT_USAGE)
    try:
        options = server_options(args)
        app = load_app(args.app)
        _apply_options(app, args.app, options)
    except UsageError as exc:
        return fail(f"packetron serve: {exc}", EXIT_USAGE)
    # Only what was given on the command line overrides the app's own settings.
    overrides = {k: getattr(args, k) for k in ("host", "port", "workers")
                 if getattr(args, k) is not None}
    try:
        app.run(**overrides)
    except ConfigError as exc:
        return fail(f"packetron serve: {exc}", EXIT_USAGE)
    except OSError as exc:
        host = overrides.get("host", getattr(app, "host", None))
        port = overrides.get("port", getattr(app, "requested_port", None))
        cause = listen_error(exc, port)
        if cause is None:
            raise
        return fail(f"cannot listen on {describe_address(host, port)}: "
                    f"{describe_oserror(cause)}")
    except Exception as exc:
        if not is_startup_failure(exc) and not isinstance(exc, PacketronError):
            raise
        # The hook's traceback is in the log already: one line says why we stop.
        return fail(f"packetron serve: the server did not start: {exc}")
    return EXIT_OK
