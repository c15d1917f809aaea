"""Run-directory files: private, never opened through a symlink, never one someone planted.

oomguard often runs as root, and a run directory may be an old one, or one made by
someone else (``/tmp/run`` created in advance). So a run directory must be owned by the
user running oomguard and writable by nobody else (an empty one is made private first);
every file in it is opened with ``O_NOFOLLOW``, new files with ``O_EXCL`` (a stale one is
unlinked first: unlinking a planted symlink removes the link, not its target), and a
file opened to append or to be handed to SQLite must be a regular file of ours with one
link (a hard link to a file elsewhere would otherwise be written through).

Only these helpers open run-directory files; the rest of oomguard calls them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Any

from oomguard.errors import ConfigError

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def make_private_dir(path: Path, what: str = "run directory") -> Path:
    """Create ``path`` (0700), or accept an existing one that is safe to write into."""
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        check_private_dir(path, what)
    except OSError as err:
        raise ConfigError(f"cannot create the {what} {str(path)!r}: {err.strerror or err}") from err
    else:
        os.chmod(path, 0o700)  # mkdir's mode passes through the umask
    return path


def check_private_dir(path: Path, what: str = "run directory") -> None:
    """Refuse a directory owned by someone else, or one others could have written into;
    an empty one of ours that is open to others is made private (nothing was planted)."""
    try:
        link = os.lstat(path)
        if stat.S_ISLNK(link.st_mode) and link.st_uid != os.geteuid():
            raise ConfigError(
                f"refusing the {what} {str(path)!r}: a symbolic link owned by uid "
                f"{link.st_uid}, not by you"
            )
        info = os.stat(path)
    except OSError as err:
        raise ConfigError(f"cannot use the {what} {str(path)!r}: {err.strerror}") from err
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"the {what} {str(path)!r} exists and is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"refusing the {what} {str(path)!r}: it is owned by uid {info.st_uid}, not by you "
            f"(uid {os.geteuid()}); files planted in it could redirect what oomguard writes"
        )
    if info.st_mode & _OTHERS_WRITE:
        if any(os.scandir(path)):
            raise ConfigError(
                f"refusing the {what} {str(path)!r}: others may write into it (mode "
                f"{stat.S_IMODE(info.st_mode):o}) and it is not empty; use a directory only you "
                "can write, or chmod 700 it after checking its contents"
            )
        os.chmod(path, 0o700)
        if any(os.scandir(path)):  # something came in before the chmod: trust none of it
            raise ConfigError(f"refusing the {what} {str(path)!r}: files appeared in it")
    else:
        os.chmod(path, 0o700)


def check_own_file(path: Path, info: os.stat_result | None = None) -> None:
    """``path`` (or the file ``info`` describes) is a regular file of ours with one link."""
    if info is None:
        info = os.lstat(path)
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "it is a symbolic link"
    elif not stat.S_ISREG(info.st_mode):
        problem = "it is not a regular file"
    elif info.st_uid != os.geteuid():
        problem = f"it is owned by uid {info.st_uid}, not by you"
    elif info.st_nlink != 1:
        problem = f"it has {info.st_nlink} hard links"
    if problem is not None:
        raise ConfigError(f"refusing to write {str(path)!r}: {problem}")


def open_fd(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` without following a symlink; an existing file must be :func:`check_own_file`."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:  # the last component is a symbolic link
            raise ConfigError(f"refusing to write {str(path)!r}: it is a symbolic link") from err
        raise
    try:
        check_own_file(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_fd(path: Path) -> int:
    """A new, empty file at ``path`` (whatever was there, a planted link included, is unlinked)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise ConfigError(f"cannot write {str(path)!r}: it is a directory")
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)


def open_private(path: Path, mode: str = "w") -> IO[Any]:
    """A private file in a run directory: ``w``/``wb`` make it afresh, ``a`` appends to ours."""
    appending = "a" in mode
    fd = open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if appending else create_fd(path)
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8", newline="" if path.suffix == ".csv" else None)


def read_private(path: Path) -> bytes:
    """A run-directory file's bytes, never through a symbolic link (a bundle must not pack
    whatever file a planted link points at)."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"refusing to read {str(path)!r}: it is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
