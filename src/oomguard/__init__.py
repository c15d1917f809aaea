"""oomguard: run long Python batch jobs to the end under memory pressure.

The public API is what ``__all__`` lists; everything else may change.
"""

__version__ = "0.1.0"

from oomguard.errors import (
    CgroupError,
    CgroupPermissionError,
    ConfigError,
    LimiterUnavailable,
    OomguardError,
    SizeError,
)
from oomguard.limits import Limiter, MemoryGroup, OomEvent, open_limiter
from oomguard.memory import EffectiveBudget, effective_budget
from oomguard.sizes import format_size, parse_size

__all__ = [
    "CgroupError",
    "CgroupPermissionError",
    "ConfigError",
    "EffectiveBudget",
    "Limiter",
    "LimiterUnavailable",
    "MemoryGroup",
    "OomEvent",
    "OomguardError",
    "SizeError",
    "__version__",
    "effective_budget",
    "format_size",
    "open_limiter",
    "parse_size",
]
