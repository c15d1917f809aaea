"""Reading memory: process trees, the machine, PSI, cgroups (v1 and v2), the budget, GPUs.

This package only reads. Enforcing limits lives in :mod:`oomguard.limits`. Each reading
is one small function so tests (and the engine) can swap it.
"""

from typing import TYPE_CHECKING

from oomguard._lazy import lazy_exports

_EXPORTS = {
    "BudgetSource": "oomguard.memory.budget",
    "CgroupMemory": "oomguard.memory.cgroups",
    "CgroupSetup": "oomguard.memory.cgroups",
    "EffectiveBudget": "oomguard.memory.budget",
    "GpuMemory": "oomguard.memory.gpu",
    "GpuReport": "oomguard.memory.gpu",
    "MemoryPressure": "oomguard.memory.system",
    "SystemMemory": "oomguard.memory.system",
    "TreeMemory": "oomguard.memory.process",
    "detect_setup": "oomguard.memory.cgroups",
    "effective_budget": "oomguard.memory.budget",
    "enclosing_limits": "oomguard.memory.cgroups",
    "read_cgroup_memory": "oomguard.memory.cgroups",
    "read_gpus": "oomguard.memory.gpu",
    "read_pressure": "oomguard.memory.system",
    "read_rss": "oomguard.memory.process",
    "read_system_memory": "oomguard.memory.system",
    "read_tree_memory": "oomguard.memory.process",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "BudgetSource",
    "CgroupMemory",
    "CgroupSetup",
    "EffectiveBudget",
    "GpuMemory",
    "GpuReport",
    "MemoryPressure",
    "SystemMemory",
    "TreeMemory",
    "detect_setup",
    "effective_budget",
    "enclosing_limits",
    "read_cgroup_memory",
    "read_gpus",
    "read_pressure",
    "read_rss",
    "read_system_memory",
    "read_tree_memory",
]

if TYPE_CHECKING:
    from oomguard.memory.budget import (
        BudgetSource,
        EffectiveBudget,
        effective_budget,
    )
    from oomguard.memory.cgroups import (
        CgroupMemory,
        CgroupSetup,
        detect_setup,
        enclosing_limits,
        read_cgroup_memory,
    )
    from oomguard.memory.gpu import (
        GpuMemory,
        GpuReport,
        read_gpus,
    )
    from oomguard.memory.process import (
        TreeMemory,
        read_rss,
        read_tree_memory,
    )
    from oomguard.memory.system import (
        MemoryPressure,
        SystemMemory,
        read_pressure,
        read_system_memory,
    )
