"""Reading memory: process trees, the machine, PSI, cgroups (v1 and v2), the budget, GPUs.

This package only reads. Enforcing limits lives in :mod:`oomguard.limits`. Each reading
is one small function so tests (and the engine) can swap it.
"""

from oomguard.memory.budget import BudgetSource, EffectiveBudget, effective_budget
from oomguard.memory.cgroups import (
    CgroupMemory,
    CgroupSetup,
    detect_setup,
    enclosing_limits,
    read_cgroup_memory,
)
from oomguard.memory.gpu import GpuMemory, GpuReport, read_gpus
from oomguard.memory.process import TreeMemory, read_rss, read_tree_memory
from oomguard.memory.system import MemoryPressure, SystemMemory, read_pressure, read_system_memory

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
