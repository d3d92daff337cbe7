"""The SQLite store's folder and files: private to this user, and never planted by another.

The default store lives in the temp directory, which every user of the machine shares.
Its folder is made 0700 and its files (the database, and the `-wal` and `-shm` SQLite
keeps next to it) 0600, whoever created them first and whatever the umask. There, a
symlink, or a folder or file owned by another user, is refused
(`UnsafeGlobalDataPath`): it could hand our data to that user or feed us theirs.

Each check works on an open descriptor (`O_NOFOLLOW`, then `fstat` / `fchmod`), so
nothing can be swapped between the check and the change.
"""
from __future__ import annotations

import errno
import os
import stat

from packetron.errors import ConfigError, GlobalDataUnavailable, UnsafeGlobalDataPath
from packetron.globaldata.outage import UNAVAILABLE_ERRNOS

__all__ = [
    "prepare_private_directory",
    "secure_database_files",
    "PRIVATE_DIRECTORY_MODE",
    "PRIVATE_FILE_MODE",
    "SIDE_FILE_SUFFIXES",
]

PRIVATE_DIRECTORY_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# The files SQLite keeps next to the database in WAL mode (it gives new ones the
# database file's mode, so a 0600 database gets 0600 companions).
SIDE_FILE_SUFFIXES = ("-wal", "-shm")

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# Absent on Windows, whose %TEMP% is per user anyway.
_geteuid = getattr(os, "geteuid", None)
_fchmod = getattr(os, "fchmod", None)

_ADVICE = "remove it, or pass an explicit global data path"


def prepare_private_directory(directory: str) -> None:
    """Create `directory` with mode 0700, or check that an existing one is ours and make it 0700.

    Raises:
        UnsafeGlobalDataPath: it is a symlink or not a directory, or belongs to another
            user.
        GlobalDataUnavailable: no room or no file descriptor to create or open it.
        ConfigError: it cannot be created or opened for another reason.
    """
    try:
        os.mkdir(directory, PRIVATE_DIRECTORY_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        _raise_if_unavailable(exc, directory)
        raise ConfigError(f"cannot create the global data directory {directory!r}: {exc}") from None
    try:
        fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symlink" if os.path.islink(directory) else "a file"
            raise UnsafeGlobalDataPath(
                f"refusing {directory!r} for global data: it is not a directory but {kind} "
                f"(in the shared temp directory, another user may have put it there); {_ADVICE}"
            ) from None
        _raise_if_unavailable(exc, directory)
        raise ConfigError(f"cannot open the global data directory {directory!r}: {exc}") from None
    try:
        _check_and_restrict(fd, directory, PRIVATE_DIRECTORY_MODE, "directory")
    finally:
        os.close(fd)


def secure_database_files(path: str, *, shared_location: bool) -> None:
    """Make the database file and its `-wal` / `-shm` 0600 before SQLite opens them.

    A missing database file is created empty with mode 0600, so that SQLite does not
    create it with the umask's mode (and gives its `-wal` / `-shm` the same 0600).
    Existing files of ours get 0600, whatever created them.

    Args:
        path: The database file.
        shared_location: The file is in the shared temp directory (the default store):
            symlinks and other users' files are refused there. Elsewhere the path is the
            user's choice: symlinks are followed and other users' files left as they are.

    Raises:
        UnsafeGlobalDataPath: (shared_location) one of the files is a symlink, not a
            regular file, or belongs to another user.
        GlobalDataUnavailable: no room or no file descriptor to create or open one.
    """
    for suffix in ("", *SIDE_FILE_SUFFIXES):
        name = path + suffix
        flags = os.O_RDWR | _O_CLOEXEC
        if shared_location:
            flags |= _O_NOFOLLOW
        if not suffix:
            flags |= os.O_CREAT
        try:
            fd = os.open(name, flags, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue  # a companion SQLite has not created (yet)
        except OSError as exc:
            if shared_location and exc.errno == errno.ELOOP:
                raise UnsafeGlobalDataPath(
                    f"refusing {name!r} for global data: it is a symlink (in the shared temp "
                    f"directory, another user may have put it there); {_ADVICE}"
                ) from None
            _raise_if_unavailable(exc, name)
            if shared_location:
                raise ConfigError(f"cannot open the global data file {name!r}: {exc}") from None
            continue  # the user's own path: SQLite reports what it cannot open
        try:
            if shared_location:
                _check_and_restrict(fd, name, PRIVATE_FILE_MODE, "file")
            else:
                _restrict_if_ours(fd, PRIVATE_FILE_MODE)
        finally:
            os.close(fd)


def _raise_if_unavailable(exc: OSError, name: str) -> None:
    """A full disk or no file descriptor left is an outage to wait out, not a wrong
    setting: GlobalDataUnavailable rather than ConfigError."""
    if exc.errno in UNAVAILABLE_ERRNOS:
        raise GlobalDataUnavailable(
            f"global data (SQLite) is unavailable: cannot create or open {name!r}: "
            f"{exc.strerror or exc}") from exc


def _check_and_restrict(fd: int, name: str, mode: int, kind: str) -> None:
    st = os.fstat(fd)
    is_right_kind = stat.S_ISDIR(st.st_mode) if kind == "directory" else stat.S_ISREG(st.st_mode)
    if not is_right_kind:
        raise UnsafeGlobalDataPath(f"refusing {name!r} for global data: it is not a regular "
                                   f"{kind}; {_ADVICE}")
    if _geteuid is not None and st.st_uid != _geteuid():
        raise UnsafeGlobalDataPath(
            f"refusing {name!r} for global data: the {kind} belongs to another user "
            f"(uid {st.st_uid}); {_ADVICE}"
        )
    _restrict_if_ours(fd, mode, st)


def _restrict_if_ours(fd: int, mode: int, st: os.stat_result | None = None) -> None:
    if st is None:
        st = os.fstat(fd)
    if _fchmod is None or stat.S_IMODE(st.st_mode) == mode:
        return
    if _geteuid is not None and st.st_uid != _geteuid():
        return  # not ours to change (only reached for a path the user chose)
    _fchmod(fd, mode)
