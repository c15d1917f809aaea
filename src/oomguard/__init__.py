"""oomguard: run long Python batch jobs to the end under memory pressure.

The public API is what ``__all__`` lists; everything else may change.
"""

from typing import TYPE_CHECKING

from oomguard._lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {
    "CgroupError": "oomguard.errors",
    "CgroupPermissionError": "oomguard.errors",
    "ConfigError": "oomguard.errors",
    "EffectiveBudget": "oomguard.memory",
    "Executor": "oomguard.executor",
    "ExecutorBroken": "oomguard.errors",
    "OomKilled": "oomguard.errors",
    "TaskFailed": "oomguard.errors",
    "TaskTimeout": "oomguard.errors",
    "WorkerCrashed": "oomguard.errors",
    "Job": "oomguard.engine.job",
    "JobConfig": "oomguard.engine.config",
    "RunResult": "oomguard.engine.job",
    "Status": "oomguard.classify",
    "BackendConfig": "oomguard.backends.config",
    "worker_context": "oomguard.engine.context",
    "Limiter": "oomguard.limits",
    "LimiterUnavailable": "oomguard.errors",
    "MemoryGroup": "oomguard.limits",
    "OomEvent": "oomguard.limits",
    "OomguardError": "oomguard.errors",
    "SizeError": "oomguard.errors",
    "effective_budget": "oomguard.memory",
    "format_size": "oomguard.sizes",
    "open_limiter": "oomguard.limits",
    "parse_size": "oomguard.sizes",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "BackendConfig",
    "CgroupError",
    "CgroupPermissionError",
    "ConfigError",
    "EffectiveBudget",
    "Executor",
    "ExecutorBroken",
    "Job",
    "JobConfig",
    "Limiter",
    "LimiterUnavailable",
    "MemoryGroup",
    "OomEvent",
    "OomKilled",
    "OomguardError",
    "RunResult",
    "SizeError",
    "Status",
    "TaskFailed",
    "TaskTimeout",
    "WorkerCrashed",
    "__version__",
    "effective_budget",
    "format_size",
    "open_limiter",
    "parse_size",
    "worker_context",
]

if TYPE_CHECKING:
    from oomguard.backends.config import BackendConfig
    from oomguard.classify import Status
    from oomguard.engine.config import JobConfig
    from oomguard.engine.context import worker_context
    from oomguard.engine.job import Job, RunResult
    from oomguard.errors import (
        CgroupError,
        CgroupPermissionError,
        ConfigError,
        ExecutorBroken,
        LimiterUnavailable,
        OomguardError,
        OomKilled,
        SizeError,
        TaskFailed,
        TaskTimeout,
        WorkerCrashed,
    )
    from oomguard.executor import Executor
    from oomguard.limits import (
        Limiter,
        MemoryGroup,
        OomEvent,
        open_limiter,
    )
    from oomguard.memory import (
        EffectiveBudget,
        effective_budget,
    )
    from oomguard.sizes import (
        format_size,
        parse_size,
    )
