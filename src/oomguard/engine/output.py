"""An output file belongs to one run: never its own input, never data it did not write.

A sink recovers by cutting its file back to the journal's last committed position, which
is nothing for a new run: pointed at a file that already holds data, a new run would
empty it. So:

- a new run refuses an output that holds data, unless told to replace it
  (``overwrite=True``, ``--overwrite``);
- the output is never the input, by any path or hard link (same device and inode), nor
  a file inside an input directory (it would become an item);
- a run claims its output with an exclusive ``flock`` on the file (a Parquet output: its
  directory), held for the run's life and dropped by the kernel when the holder dies: a
  second run writing there is refused, so one run never truncates another's results;
- the journal records the output's device and inode; a resume works only on that very
  file (not one put in its place, nor another file a changed journal names) unless
  forced (``--force``: the same data, restored from a backup, say), and refuses to
  start over a file that vanished while results were committed to it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError

DIRECTORY_SUFFIXES = (".parquet", ".pq")  # a Parquet output is a directory of part files
RUN_DIR_FILES = ("quarantine.jsonl",)  # the run's own files that an output name could hit


@dataclass
class OutputClaim:
    """The held lock on an output; :meth:`release` when the run is over."""

    path: Path
    fd: int
    identity: dict[str, int]

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock


FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode's generation number


def identity_of(fd: int) -> dict[str, int]:
    """Which file ``fd`` is: device and inode, and the inode's generation where the file
    system keeps one (ext4, XFS, btrfs): a file deleted and written again often gets the
    same inode number at once, but never the same generation."""
    info = os.fstat(fd)
    identity = {"dev": info.st_dev, "ino": info.st_ino}
    try:
        generation = fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8))
    except OSError:
        return identity  # not kept here (tmpfs, overlay): device and inode only
    identity["generation"] = struct.unpack("I", generation[:4])[0]
    return identity


def same_file(identity: dict[str, int], recorded: dict[str, Any]) -> bool:
    """Whether ``identity`` is the file the journal recorded (generations compared where
    both are known: a journal of an older oomguard has none)."""
    if (identity["dev"], identity["ino"]) != (recorded.get("dev"), recorded.get("ino")):
        return False
    generation = recorded.get("generation")
    return generation is None or identity.get("generation", generation) == generation


def claim_output(
    path: Path,
    *,
    source: Path | None,
    run_dir: Path,
    new_run: bool,
    overwrite: bool,
    recorded: dict[str, Any] | None,
    committed: int,
    force: bool = False,
) -> OutputClaim:
    """Check that this run may write ``path`` and lock it (see the module's rules).

    ``recorded``: the output's identity from the journal (a resume); ``committed``: how
    many results the journal has committed to it; ``force``: resume onto an output the
    journal does not recognise (the user says it holds the run's results)."""
    check_not_input(path, source)
    if path.parent == run_dir.resolve() and path.name in RUN_DIR_FILES:
        raise ConfigError(f"output {str(path)!r} is the run directory's own {path.name}")
    if not new_run:
        check_same_output(path, recorded, committed, force)
    fd = open_output(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"output {str(path)!r} is being written by another run; an output belongs to "
                "one run at a time: wait for that run, or give this one another --output"
            ) from None
        info = os.fstat(fd)
        if new_run and not overwrite:
            held = holds_data(fd, info)
            if held:
                raise ConfigError(
                    f"output {str(path)!r} already holds {held} and this is a new run: refusing "
                    "to replace it; give another --output, resume the run that wrote it "
                    "(oomguard resume RUN_DIR), or pass --overwrite to replace it"
                )
    except BaseException:
        os.close(fd)
        raise
    return OutputClaim(path, fd, identity_of(fd))


def check_not_input(path: Path, source: Path | None) -> None:
    if source is None or not source.exists():
        return
    try:
        same = os.path.samefile(path, source)  # st_dev and st_ino: any path, any hard link
    except FileNotFoundError:
        same = False
    if same:
        raise ConfigError(
            f"output {str(path)!r} is the input {str(source)!r} (the same file): writing "
            "results there would destroy the input; give another --output"
        )
    if source.is_dir() and path.resolve().is_relative_to(source.resolve()):
        raise ConfigError(
            f"output {str(path)!r} is inside the input directory {str(source)!r}: it would be "
            "read as an item; give an --output outside it"
        )


def check_same_output(
    path: Path, recorded: dict[str, Any] | None, committed: int, force: bool
) -> None:
    """A resume writes only to the file its journal recorded, as it recorded it."""
    try:
        os.stat(path)
    except FileNotFoundError:
        if committed:
            raise ConfigError(
                f"output {str(path)!r} is gone, but the journal has {committed} results "
                "committed to it: restore it to resume, or start a new run"
            ) from None
        return
    if force:
        return
    if recorded is None:
        raise ConfigError(
            f"cannot tell whether output {str(path)!r} is this run's own: its journal does not "
            "record it (an older oomguard, or an edited journal); refusing to cut it back to "
            "the journal's position; use --force if it holds this run's results"
        )
    if not same_file(current_identity(path), recorded):
        raise ConfigError(
            f"output {str(path)!r} is not the file this run wrote (it was replaced, or the "
            "journal names another file): refusing to cut it back to the journal's position; "
            "restore the run's own output (--force if a restored copy is in its place), or "
            "start a new run"
        )


def current_identity(path: Path) -> dict[str, int]:
    """The identity of what is at ``path`` now (never through a symlink)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    if path.is_dir():
        flags |= os.O_DIRECTORY
    fd = os.open(path, flags)
    try:
        return identity_of(fd)
    finally:
        os.close(fd)


def open_output(path: Path) -> int:
    """A descriptor on the output (created if it does not exist), never through a symlink
    (its path is resolved already: a link there now was put there since)."""
    try:
        if path.suffix.lower() in DIRECTORY_SUFFIXES:
            path.mkdir(mode=0o700, exist_ok=True)
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        why = "it is a symbolic link" if err.errno == errno.ELOOP else err.strerror or str(err)
        raise ConfigError(f"cannot open output {str(path)!r}: {why}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"output {str(path)!r} is not a regular file")
    return fd


def holds_data(fd: int, info: os.stat_result) -> str | None:
    """What the output holds already, in words (None: nothing)."""
    if stat.S_ISDIR(info.st_mode):
        entries = len(os.listdir(fd))
        return f"{entries} files" if entries else None
    return f"{info.st_size} bytes" if info.st_size else None
