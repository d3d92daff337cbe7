"""Static routes: a served directory is walked once and every file becomes its own exact
GET route (HEAD answered too); `unserve` removes what was registered.

Nothing outside the directory is ever served: entries that resolve outside it (symlinks
included) are skipped at the walk, and each request re-checks containment when the file
opened is not the inode verified before (target.py). Dot-files and dot-directories are
skipped unless `include_dotfiles=True`.
"""
from __future__ import annotations

import functools
import os
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from packetron.errors import ConfigError
from packetron.flags import FileRouterFlags, HandlerFlags, RequestMethod
from packetron.http.static.cache import _small_files
from packetron.http.static.sending import SIBLING_SUFFIXES, _serve_target
from packetron.http.static.target import _StaticTarget, is_within
from packetron.log import server_logger

if TYPE_CHECKING:
    from packetron.http.route import Route

__all__ = ["INDEX_FILE_NAME", "serve_directory", "serve_single_file", "unserve_directory"]

INDEX_FILE_NAME = "index.html"


def _handler_for(target: _StaticTarget) -> Any:
    # A partial of a module-level function: pickle can carry it to worker processes.
    return functools.partial(_serve_target, target)


def _walk(root: str, *, recursive: bool, include_dotfiles: bool) -> Iterator[tuple[str, str]]:
    """Yield (relative posix path, path in tree) of every file to serve, sorted, each
    directory's files before its subdirectories. Entries that resolve outside `root`,
    symlink loops and (by default) dot-entries are skipped."""
    seen_dirs = {root}
    pending: list[tuple[str, str]] = [("", root)]
    while pending:
        rel_dir, abs_dir = pending.pop(0)
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except OSError as exc:
            server_logger.warning("static: cannot list %s: %s", abs_dir, exc)
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            if not include_dotfiles and entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            real = os.path.realpath(entry.path)
            if not is_within(root, real):
                server_logger.warning("static: %s leaves %s; not served", entry.path, root)
                continue
            if os.path.isdir(real):
                if recursive and real not in seen_dirs:
                    seen_dirs.add(real)
                    subdirs.append((rel, entry.path))
            elif os.path.isfile(real):
                yield rel, entry.path
        pending.extend(subdirs)


def _siblings(path: str, root: str | None,
              exists: Callable[[str], bool]) -> tuple[tuple[str, _StaticTarget], ...]:
    """The precompressed versions next to a file ("x.css.br", "x.css.gz"), found now;
    the compress plugin has them sent instead of the file to clients that take them."""
    return tuple((coding, _StaticTarget(path + suffix, root))
                 for coding, suffix in SIBLING_SUFFIXES if exists(path + suffix))


def _join_route(prefix: str, rel: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{rel}" if prefix else rel


# server -> {(resolved path, normalized prefix): routes}; weak so a dropped server's
# routes go with it.
_REGISTRY: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str], list[Any]]]" = \
    weakref.WeakKeyDictionary()


def _remember(server: Any, key: tuple[str, str], routes: list[Any]) -> None:
    _REGISTRY.setdefault(server, {}).setdefault(key, []).extend(routes)


def _handler_flags(flags: int) -> HandlerFlags:
    handler_flags = HandlerFlags.DONT_USE_BODY
    if flags & FileRouterFlags.LOCAL_PLUGINS_ONLY:
        handler_flags |= HandlerFlags.LOCAL_PLUGINS_ONLY
    return handler_flags


def serve_directory(server: Any, directory: str, path_prefix: str = "", flags: int = 0,
                    plugins: Iterable[Any] = (), max_requests_per_second: int | None = None,
                    max_request_size_in_bytes: int | None = None, *,
                    include_dotfiles: bool = False,
                    rate_limit_scope: str = "worker") -> list[Route]:
    """Serve every file of `directory` as its own exact GET route (HEAD answered too).

    `dir/a/b.txt` is served at `<path_prefix>/a/b.txt`. An `index.html` is served at
    its own path and also at its directory's path (`<path_prefix>/a/`, and
    `<path_prefix>/` for the top one); a request for the directory without the final
    "/" is redirected to it so relative links work. The directory is walked once, now:
    files added later are not served until it is served again, files deleted later
    give 404.

    Args:
        server: the Packetron server whose `handle()` registers the routes.
        directory: the directory to serve.
        path_prefix: URL path under which it appears ("" = the root).
        flags: FileRouterFlags. NON_RECURSIVE: top-level files only.
            NO_DIRECTORY_STRUCTURE: every file at `<path_prefix>/<name>` (on a name
            clash the shallower, then alphabetically first, file wins; the others are
            logged and skipped). USER_SPECIFIED_FILE: `directory` is one file, served at
            `path_prefix` (see serve_single_file). LOCAL_PLUGINS_ONLY: global plugins
            are skipped for these routes.
        plugins: route plugins run before each file is sent.
        max_requests_per_second, max_request_size_in_bytes: per-route limits.
        include_dotfiles: also serve names starting with "." (off by default: ".env",
            ".git/" and editor files are the classic leaks).

    Returns:
        The registered Routes.

    Raises:
        ConfigError: `directory` is not a directory.
    """
    if flags & FileRouterFlags.USER_SPECIFIED_FILE:
        route_path = path_prefix.strip("/") or os.path.basename(directory)
        return [serve_single_file(server, route_path, directory, flags, plugins,
                                  max_requests_per_second, max_request_size_in_bytes,
                                  rate_limit_scope=rate_limit_scope)]
    root = os.path.realpath(directory)
    if not os.path.isdir(root):
        raise ConfigError(f"serve(): {directory!r} is not a directory")
    flat = bool(flags & FileRouterFlags.NO_DIRECTORY_STRUCTURE)
    taken: set[str] = set()
    routes: list[Route] = []

    def add(route_path: str, target: _StaticTarget) -> None:
        if "?" in route_path:
            # Route paths stop at "?" (the query string): such a name cannot be routed.
            server_logger.warning("static: %s has '?' in its name; not served", target.path)
            return
        if route_path in taken:
            server_logger.warning("static: %s already serves a file; %s skipped",
                                  route_path or "/", target.path)
            return
        taken.add(route_path)
        routes.append(server.handle(
            RequestMethod.GET, route_path, _handler_for(target), plugins=plugins,
            flags=_handler_flags(flags), max_requests_per_second=max_requests_per_second,
            max_request_size_in_bytes=max_request_size_in_bytes,
            rate_limit_scope=rate_limit_scope))

    found = list(_walk(root, recursive=not flags & FileRouterFlags.NON_RECURSIVE,
                       include_dotfiles=include_dotfiles))
    tree_paths = {tree_path for _, tree_path in found}
    for rel, tree_path in found:
        name = rel.rsplit("/", 1)[-1]
        siblings = _siblings(tree_path, root, tree_paths.__contains__)
        add(_join_route(path_prefix, name if flat else rel),
            _StaticTarget(tree_path, root, siblings=siblings))
        if name == INDEX_FILE_NAME and (flat or "/" not in rel):
            dir_route = path_prefix.strip("/")
        elif name == INDEX_FILE_NAME:
            dir_route = _join_route(path_prefix, rel.rsplit("/", 1)[0])
        else:
            continue
        if dir_route not in taken:
            add(dir_route, _StaticTarget(tree_path, root, redirect_to_slash=dir_route != "",
                                         siblings=siblings))
    _remember(server, (root, path_prefix.strip("/")), routes)
    return routes


def serve_single_file(server: Any, route_path: str, file_path: str, flags: int = 0,
                      plugins: Iterable[Any] = (), max_requests_per_second: int | None = None,
                      max_request_size_in_bytes: int | None = None, *,
                      rate_limit_scope: str = "worker") -> Route:
    """Serve one file at `route_path` (GET and HEAD).

    The path is kept as given: if it is a symlink, its target is served, whatever it
    points to (the caller named this file on purpose). A file deleted later gives 404.

    Args:
        server: the Packetron server.
        route_path: the URL path.
        file_path: the file.
        flags: FileRouterFlags; LOCAL_PLUGINS_ONLY applies, the others do not.
        plugins, max_requests_per_second, max_request_size_in_bytes: as for a route.

    Returns:
        The registered Route.

    Raises:
        ConfigError: `file_path` is not a regular file.
    """
    if not os.path.isfile(file_path):
        raise ConfigError(f"serve_file(): {file_path!r} is not a file")
    path = os.path.abspath(file_path)
    route: Route = server.handle(
        RequestMethod.GET, route_path,
        _handler_for(_StaticTarget(path, None, siblings=_siblings(path, None, os.path.isfile))),
        plugins=plugins, flags=_handler_flags(flags),
        max_requests_per_second=max_requests_per_second,
        max_request_size_in_bytes=max_request_size_in_bytes,
        rate_limit_scope=rate_limit_scope)
    _remember(server, (os.path.realpath(path), route_path.strip("/")), [route])
    return route


def unserve_directory(server: Any, directory: str, path_prefix: str = "") -> int:
    """Remove the routes that serve_directory (or serve_single_file) registered.

    Args:
        server: the Packetron server.
        directory: the directory (or file) given when it was served.
        path_prefix: the prefix (or route path) it was served under.

    Returns:
        The number of routes removed (0 when nothing was served that way).
    """
    served = _REGISTRY.get(server)
    if not served:
        return 0
    routes = served.pop((os.path.realpath(directory), path_prefix.strip("/")), [])
    for route in routes:
        route.remove()
        target = getattr(route.handler, "args", (None,))[0]
        if isinstance(target, _StaticTarget):
            _small_files.forget(target)  # its memory goes with the route
    return len(routes)
