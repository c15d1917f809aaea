"""The effective memory budget of a process: the least of every limit that applies to it.

min(physical RAM, every enclosing cgroup's limit up to the root, RLIMIT_AS), together with
which of them is the binding one, so a user can see *why* oomguard thinks it has 6 GiB.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Literal

from oomguard.memory.cgroups import CgroupSetup, detect_setup, enclosing_limits
from oomguard.memory.system import read_system_memory

SourceKind = Literal["physical", "cgroup-v1", "cgroup-v2", "rlimit_as"]


@dataclass(frozen=True)
class BudgetSource:
    kind: SourceKind
    bytes: int
    detail: str  # e.g. the cgroup directory whose limit this is


@dataclass(frozen=True)
class EffectiveBudget:
    """``bytes`` is the binding limit; ``candidates`` every limit that was found."""

    bytes: int
    source: BudgetSource
    candidates: tuple[BudgetSource, ...]


def read_rlimit_as() -> int | None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def effective_budget(setup: CgroupSetup | None = None) -> EffectiveBudget:
    """The memory this process can really use, and where that number comes from."""
    setup = setup if setup is not None else detect_setup()
    candidates = [BudgetSource("physical", read_system_memory().total, "MemTotal in /proc/meminfo")]
    kind: SourceKind = "cgroup-v1" if setup.memory_version == "v1" else "cgroup-v2"
    for path, limit in enclosing_limits(setup):
        candidates.append(BudgetSource(kind, limit, str(path)))
    rlimit = read_rlimit_as()
    if rlimit is not None:
        candidates.append(
            BudgetSource("rlimit_as", rlimit, "RLIMIT_AS (ulimit -v) of this process")
        )
    binding = min(candidates, key=lambda source: source.bytes)
    return EffectiveBudget(binding.bytes, binding, tuple(candidates))
