"""``oomguard simulate-pressure``: does memory go back to the OS after a big allocation?

Allocates the target (Python objects, or native memory with ``--native``), frees it, runs
``gc.collect()`` and ``malloc_trim(0)``, and checks that RSS comes back to within a
tolerance of the baseline (as the OOM repro toolkit of PDF-ingestion users puts it: "if this fails, native allocations may not be
releasing memory"). The allocating process runs in a capped cgroup, so it cannot hurt
the host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import sys
from typing import Any

from oomguard.memory.own import own_rss

MiB = 1 << 20


def rss() -> int:
    return own_rss()


def malloc_trim() -> bool:
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def allocate_python(target_mb: int) -> list[bytes]:
    # many small-ish objects, like parsed documents: 64 KiB strings, each touched
    return [bytes([i % 251]) * (64 * 1024) for i in range(target_mb * 16)]


def allocate_native(target_mb: int) -> list[int]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    blocks = []
    for _ in range(target_mb):
        pointer = libc.malloc(MiB)
        if not pointer:
            raise MemoryError("malloc failed")
        ctypes.memset(pointer, 1, MiB)
        blocks.append(pointer)
    return blocks


def free_native(blocks: list[int]) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.free.argtypes = [ctypes.c_void_p]
    for pointer in blocks:
        libc.free(pointer)


def measure(target_mb: int, native: bool, retain_mb: int, tolerance_mb: float) -> dict[str, Any]:
    gc.collect()
    baseline = rss()
    if native:
        blocks = allocate_native(target_mb)
        peak = rss()
        kept = blocks[:retain_mb]
        free_native(blocks[retain_mb:])
        del blocks
    else:
        objects = allocate_python(target_mb)
        peak = rss()
        kept_objects = objects[: retain_mb * 16]
        del objects
    gc.collect()
    trimmed = malloc_trim()
    after = rss()
    stayed = after - baseline
    result = {
        "target_mb": target_mb,
        "native": native,
        "baseline_mb": round(baseline / MiB, 1),
        "peak_mb": round(peak / MiB, 1),
        "after_mb": round(after / MiB, 1),
        "stayed_mb": round(stayed / MiB, 1),
        "tolerance_mb": tolerance_mb,
        "malloc_trim": trimmed,
        "reclaimed": stayed <= tolerance_mb * MiB,
    }
    if native:
        free_native(kept)
    else:
        del kept_objects
    return result


if __name__ == "__main__":
    target, native, retain, tolerance = sys.argv[1:5]
    print(json.dumps(measure(int(target), native == "1", int(retain), float(tolerance))))


def simulate_pressure(
    target_mb: int,
    *,
    native: bool = False,
    retain_mb: int = 0,
    tolerance_mb: float | None = None,
    output_dir: Any = None,
) -> dict[str, Any]:
    """Run :func:`measure` in a capped child; ``retain_mb`` keeps that much (checks the check)."""
    import tempfile
    from pathlib import Path

    from oomguard.errors import OomguardError
    from oomguard.repro.harness import reproduce

    tolerance = tolerance_mb if tolerance_mb is not None else max(32.0, 0.05 * target_mb)
    cap = (target_mb + 256) * MiB + target_mb * MiB // 4  # room for the target, never the host
    argv = [
        sys.executable,
        "-m",
        "oomguard.repro.simulate_pressure",
        str(target_mb),
        "1" if native else "0",
        str(retain_mb),
        str(tolerance),
    ]
    with tempfile.TemporaryDirectory(prefix="oomguard-pressure-") as tmp:
        directory = Path(output_dir) if output_dir is not None else Path(tmp)
        result = reproduce(argv, cap, output_dir=directory, interval=0.2)
        stdout = (directory / "stdout.txt").read_text().strip()
        stderr = (directory / "stderr.txt").read_text().strip()
    if result.exit_code != 0 or not stdout:
        raise OomguardError(f"the pressure child failed ({result.verdict}): {stderr[-500:]}")
    report: dict[str, Any] = json.loads(stdout.splitlines()[-1])
    report["cap_mb"] = round(cap / MiB, 1)
    return report
