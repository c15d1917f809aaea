"""``oomguard bundle DIR [--redact]``: one zip to attach to a bug report.

``--redact`` keeps what a maintainer needs (sizes, hashes, memory curves, statuses,
the shape of the kernel's OOM report) and drops what may be private (real customer data,
say): every name, argument, path, payload and message becomes a hash (the rules are in
:mod:`oomguard.repro.redact`); the command's own output and the journal (which names the
input) stay out. Files are read and the zip written never through a symbolic link.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from oomguard.errors import ConfigError
from oomguard.repro.redact import redact, redact_kernel_log
from oomguard.safe_files import check_own_file, read_private

ALWAYS = (
    "summary.json",
    "memory_log.csv",
    "dmesg_excerpt.txt",
    "ingest_manifest.json",
    "quarantine.jsonl",
)
UNREDACTED_ONLY = ("stdout.txt", "stderr.txt", "report.html", "memory.png")


def redacted_file(name: str, data: bytes) -> bytes:
    """A run-directory file as ``--redact`` packs it (rules in repro/redact.py)."""
    text = data.decode("utf-8", errors="replace")
    if name.endswith(".json"):
        return json.dumps(redact(json.loads(text)), indent=2).encode()
    if name.endswith(".jsonl"):
        lines = [json.dumps(redact(json.loads(line))) for line in text.splitlines() if line]
        return ("\n".join(lines) + ("\n" if lines else "")).encode()
    if name == "dmesg_excerpt.txt":
        return redact_kernel_log(text).encode()
    return data  # memory_log.csv: numbers, and the names of its columns


def make_bundle(run_dir: Path, target: Path | None = None, *, redacted: bool = False) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").exists():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no summary.json)")
    target = target or run_dir.with_name(run_dir.name + ("-redacted" if redacted else "") + ".zip")
    manifests = sorted(p.name for p in run_dir.glob("run_manifest_*.json"))
    names = [n for n in (*ALWAYS, *manifests) if (run_dir / n).exists()]
    if not redacted:
        names += [n for n in UNREDACTED_ONLY if (run_dir / n).exists()]
    # never through a link: a planted one would point the zip (or what goes in it) elsewhere
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        check_own_file(target, os.fstat(fd))
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    with (
        os.fdopen(fd, "wb") as handle,
        zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for name in names:
            data = read_private(run_dir / name)
            archive.writestr(name, redacted_file(name, data) if redacted else data)
        archive.writestr(
            "BUNDLE.txt",
            "oomguard bug-report bundle"
            + (
                " (redacted: every name, argument, payload and message replaced by a hash)"
                if redacted
                else ""
            )
            + "\nfiles: "
            + ", ".join(names)
            + "\n",
        )
    os.chmod(target, 0o600)
    return target
