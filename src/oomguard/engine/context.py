"""What user code may ask of oomguard from inside a worker: the memory pressure right now.

    from oomguard import worker_context

    def answer(request):
        if worker_context().pressure.level != "normal":
            request = trim_history(request)   # trim the LLM context under pressure
        ...

The supervisor sends the pressure with every batch: ``normal``, ``elevated`` or
``critical``, and why (system RAM low, GPU memory high, the backend restarting after OOM).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Level = Literal["normal", "elevated", "critical"]


# named tuples, not dataclasses: this module is imported by every worker's fork server,
# and the dataclasses module alone costs milliseconds of each run's start
class Pressure(NamedTuple):
    level: Level = "normal"
    reason: str = ""


class WorkerContext(NamedTuple):
    pressure: Pressure = Pressure()
    batch_id: int | None = None
    attempt: int = 0


_current = WorkerContext()


def worker_context() -> WorkerContext:
    """The context of the batch this worker is running (a default one outside oomguard)."""
    return _current


def set_context(context: WorkerContext) -> None:
    global _current  # noqa: PLW0603 - one context per worker process, by design
    _current = context
