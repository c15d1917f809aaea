"""The batch engine: sources, batching, supervised workers, recovery, sinks, artifacts."""

from typing import TYPE_CHECKING

from oomguard._lazy import lazy_exports

_EXPORTS = {
    "Job": "oomguard.engine.job",
    "JobConfig": "oomguard.engine.config",
    "RunResult": "oomguard.engine.job",
    "Status": "oomguard.classify",
    "add_memory_pattern": "oomguard.classify",
    "mentions_out_of_memory": "oomguard.classify",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "Job",
    "JobConfig",
    "RunResult",
    "Status",
    "add_memory_pattern",
    "mentions_out_of_memory",
]

if TYPE_CHECKING:
    from oomguard.classify import (
        Status,
        add_memory_pattern,
        mentions_out_of_memory,
    )
    from oomguard.engine.config import (
        JobConfig,
    )
    from oomguard.engine.job import (
        Job,
        RunResult,
    )
