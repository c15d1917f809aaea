"""The batch engine: sources, batching, supervised workers, recovery, sinks, artifacts."""

from oomguard.engine.classify import Status, add_memory_pattern, mentions_out_of_memory
from oomguard.engine.config import JobConfig
from oomguard.engine.job import Job, RunResult

__all__ = [
    "Job",
    "JobConfig",
    "RunResult",
    "Status",
    "add_memory_pattern",
    "mentions_out_of_memory",
]
