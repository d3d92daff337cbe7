"""`packetron serve --reload`: a watcher process that restarts the real server on change.

The watcher never imports the application. It runs `python -m packetron serve ...`
(the same command line without --reload) as a child, watches the .py files under the
reload folders, and on a change stops the child (SIGTERM, then SIGKILL after a grace
period) and starts a new one. A changed file that does not compile is reported and the
running child is kept until the file is fixed: a typo never takes the server down.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from types import FrameType

from packetron.cli.common import EXIT_OK, EXIT_USAGE, UsageError, fail
from packetron.cli.serve import module_folder, server_options

__all__ = ["reload_command", "child_command", "syntax_error", "Reloader"]

_log = logging.getLogger("packetron.reload")
# watchfiles logs every batch at INFO; our own line says what changed.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# watchfiles groups the changes of this many milliseconds into one batch: an editor that
# writes a file in several steps causes one restart, not several.
DEBOUNCE_MS = 200
# How often the watcher wakes up without a change, to notice a child that exited.
IDLE_CHECK_MS = 500
# A child that does not stop this long after SIGTERM is killed (the server's own graceful
# timeout is 10 s by default).
CHILD_STOP_TIMEOUT = 15.0


def child_command(args: argparse.Namespace) -> list[str]:
    """The `python -m packetron serve ...` line of the real server (without --reload)."""
    argv = [sys.executable, "-m", "packetron", "serve", args.app, "--log-level", args.log_level]
    for name in ("host", "port", "workers", "ssl_certfile", "ssl_keyfile"):
        value = getattr(args, name)
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    if args.access_log:
        argv.append("--access-log")
    return argv


def syntax_error(path: str) -> str | None:
    """A one-line description of why `path` does not compile, or None when it does."""
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError:
        return None  # deleted or unreadable: the new child reports what it means
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{exc.filename or path}:{exc.lineno}: {exc.msg}"
    except ValueError as exc:  # null bytes in the source
        return f"{path}: {exc}"
    return None


class Reloader:
    """Runs the server as a child process and replaces it when the code changes."""

    def __init__(self, command: list[str], folders: Iterable[str]) -> None:
        self.command = command
        self.folders = [os.path.abspath(folder) for folder in folders]
        self.stop_event = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None
        self._exit_reported = False
        self._broken: dict[str, str] = {}  # path -> why it does not compile

    # ------------------------------------------------------------ the child

    def start_child(self) -> None:
        self.child = subprocess.Popen(self.command)
        self._exit_reported = False

    def stop_child(self) -> None:
        child, self.child = self.child, None
        if child is None:
            return
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(CHILD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _log.warning("the server did not stop within %.0f s: killing it",
                             CHILD_STOP_TIMEOUT)
                child.kill()
                child.wait()

    def _check_child(self) -> None:
        child = self.child
        if child is not None and not self._exit_reported and child.poll() is not None:
            self._exit_reported = True
            _log.error("the server exited with status %d; waiting for a change to restart it",
                       child.returncode)

    # ------------------------------------------------------------ changes

    def on_changes(self, paths: set[str]) -> None:
        """Restart the child for these changed files, unless some file does not compile."""
        for path in sorted(paths | set(self._broken)):
            error = syntax_error(path) if path.endswith(".py") else None
            if error is None:
                if self._broken.pop(path, None) is not None:
                    _log.info("%s compiles again", os.path.relpath(path))
            elif self._broken.get(path) != error:
                self._broken[path] = error
                _log.error("syntax error, still serving the previous version: %s", error)
        if self._broken:
            return
        names = ", ".join(sorted(os.path.relpath(path) for path in paths))
        _log.info("%s changed: restarting the server", names)
        self.stop_child()
        self.start_child()

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM; returns the exit status."""
        import watchfiles

        previous = {signum: signal.signal(signum, self._handle_signal)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
        _log.info("watching %s for changes to .py files", ", ".join(self.folders))
        try:
            self.start_child()
            for changes in watchfiles.watch(
                    *self.folders, watch_filter=watchfiles.PythonFilter(),
                    debounce=DEBOUNCE_MS, step=50, stop_event=self.stop_event,
                    rust_timeout=IDLE_CHECK_MS, yield_on_timeout=True,
                    raise_interrupt=False):
                if changes:
                    self.on_changes({path for _, path in changes})
                self._check_child()
        finally:
            self.stop_child()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return EXIT_OK


def reload_command(args: argparse.Namespace) -> int:
    """Run `packetron serve --reload`; returns the exit status."""
    try:
        import watchfiles  # noqa: F401  (checked before anything starts)
    except ImportError:
        return fail("packetron serve: --reload needs watchfiles (pip install watchfiles)",
                    EXIT_USAGE)
    try:
        server_options(args)  # bad TLS files: one line here, not one per restart
        folders = args.reload_dir or [module_folder(args.app)]
    except UsageError as exc:
        return fail(f"packetron serve: {exc}", EXIT_USAGE)
    missing = [folder for folder in folders if not os.path.isdir(folder)]
    if missing:
        return fail(f"packetron serve: --reload-dir {missing[0]!r} is not a folder", EXIT_USAGE)
    return Reloader(child_command(args), folders).run()
