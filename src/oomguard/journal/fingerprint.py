"""A source's fingerprint: refuse to resume over input that changed under the journal."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

EDGE = 1 << 20  # hash the first and the last MiB: cheap for any size, catches edits and appends


def fingerprint(path: Path) -> dict[str, Any]:
    """size, mtime and a hash of the first and last MiB (a directory: its file list)."""
    stat = path.stat()
    digest = hashlib.sha256()
    if path.is_dir():
        for entry in sorted(path.iterdir()):
            if entry.is_file():
                entry_stat = entry.stat()
                digest.update(
                    f"{entry.name}\0{entry_stat.st_size}\0{entry_stat.st_mtime_ns}\n".encode()
                )
        return {
            "kind": "directory",
            "mtime_ns": stat.st_mtime_ns,
            "sha256_listing": digest.hexdigest(),
        }
    with open(path, "rb") as handle:
        digest.update(handle.read(EDGE))
        if stat.st_size > EDGE:
            handle.seek(max(EDGE, stat.st_size - EDGE))
            digest.update(handle.read(EDGE))
    return {
        "kind": "file",
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256_edges": digest.hexdigest(),
    }


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """``None`` if unchanged, else what changed, in words."""
    changed = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if not changed:
        return None
    return ", ".join(f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in changed)


def path_of(spec: Any) -> Path | None:
    if isinstance(spec, str | os.PathLike):
        return Path(spec)
    return None
