"""Functions the benchmarks run in workers (importable as ``benchmarks.workloads``)."""

from __future__ import annotations

from typing import Any


def double(x: Any) -> Any:
    return x * 2 if isinstance(x, int) else x


def spin(item: Any) -> Any:
    """Burn ``item["ms"]`` milliseconds of CPU (the overhead benchmark's unit of work)."""
    import time

    end = time.thread_time() + item["ms"] / 1000
    while time.thread_time() < end:
        pass
    return item["i"]


def die_once(item: dict[str, Any]) -> Any:
    """OOM on the first attempt (past the worker's own cap, not the job's), succeed on the retry."""
    from oomguard import worker_context

    if worker_context().attempt == 1:
        block = bytearray(item.get("mb", 400) * 1024**2)
        block[::4096] = b"\x01" * len(block[::4096])
    return item["i"]


def features(item: dict[str, Any]) -> dict[str, Any]:
    """A chemistry pipeline's result shape without the chemistry: a 2048-bit fingerprint as
    hex text and ten float descriptors (the supervisor-memory benchmark's Parquet rows)."""
    seed = hash(item["smiles"]) & 0xFF
    result: dict[str, Any] = {"smiles": item["smiles"], "fp": f"{seed:02x}" * 256}
    result.update({f"d{k}": float(seed * k) for k in range(10)})
    return result
