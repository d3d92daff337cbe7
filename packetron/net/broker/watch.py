"""What the broker watches besides its entry files: the manifest file and supporting code.

The folder itself is scanned by `handlerfiles.scan_folder` and compared with
`diff_scans`; this module keeps the manifest file's fingerprint to notice a new
version, and forgets imported supporting modules so that a reload imports them anew.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Collection, Iterable

from packetron.errors import ConfigError
from packetron.net.broker.runtime import broker_log
from packetron.net.handlerfiles import Fingerprint, fingerprint
from packetron.net.manifest import Manifest, load_manifest

__all__ = ["ManifestWatch", "purge_support_modules"]


class ManifestWatch:
    """A manifest file and the fingerprint (mtime, size, inode) of the version in use.

    Args:
        path: the TOML file.

    Raises:
        ConfigError: the file cannot be read or is not a valid manifest.
    """

    __slots__ = ("path", "_fingerprint", "manifest")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fingerprint: Fingerprint | None = None
        # Stat before reading: an edit in between shows up as a change at the next look.
        try:
            self._fingerprint = fingerprint(os.stat(path))
        except OSError:
            pass  # load_manifest() reports it
        self.manifest: Manifest = load_manifest(path)

    def changed(self) -> Manifest | None:
        """The file's new version, or None when unchanged or unusable.

        A version that does not parse, or a deleted file, is logged once (not at every
        look) and None is returned: the current policies stay.
        """
        path = self.path
        try:
            fp: Fingerprint | None = fingerprint(os.stat(path))
        except FileNotFoundError:
            fp = None
        except OSError as exc:
            broker_log.error("cannot stat manifest %s: %s; the current policies stay", path, exc)
            return None
        if fp == self._fingerprint:
            return None
        self._fingerprint = fp  # a bad version is reported once, not at every scan
        if fp is None:
            broker_log.error("manifest %s was deleted; the current policies stay", path)
            return None
        try:
            manifest = load_manifest(path)
        except ConfigError as exc:
            # load_manifest's messages name the file already.
            broker_log.error("manifest not applied, the current policies stay: %s", exc)
            return None
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8
            broker_log.error("manifest %s not applied, the current policies stay: %s", path, exc)
            return None
        broker_log.info("manifest %s reloaded", path)
        self.manifest = manifest
        return manifest


def purge_support_modules(directory: str, keep: Collection[str], changed: Iterable[str]) -> None:
    """Forget imported supporting code of `directory` so the next imports read the new files.

    Args:
        directory: the broker's folder (absolute).
        keep: module names not to forget (the loaded entry versions).
        changed: paths, relative to `directory`, of supporting files that changed.
    """
    prefix = directory + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and os.path.abspath(path).startswith(prefix) and name not in keep:
            del sys.modules[name]
    # A .pyc is validated by whole-second mtime and size: drop those of changed files.
    for rel in changed:
        try:
            os.remove(importlib.util.cache_from_source(os.path.join(directory, rel)))
        except (OSError, ValueError, NotImplementedError):
            pass
    importlib.invalidate_caches()
