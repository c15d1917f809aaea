"""Functions the benchmarks run in workers (importable as ``benchmarks.workloads``)."""

from __future__ import annotations

from typing import Any


def double(x: Any) -> Any:
    return x * 2 if isinstance(x, int) else x
