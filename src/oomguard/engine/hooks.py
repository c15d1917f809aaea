"""What an embedding of the engine hears beyond its sink: a batch about to go, an item given up.

The sink hears of results; a run that lives inside someone else's process (the executor,
:mod:`oomguard.executor`) needs two more moments: a batch is about to be sent to a worker
(its futures start running then, and a future cancelled meanwhile must not run), and an
item has left the ladder quarantined (its future fails then, not at the next checkpoint).
"""

from __future__ import annotations

from typing import Any, Protocol

from oomguard.classify import Status
from oomguard.engine.items import Batch, Item


class RunHooks(Protocol):
    def sending(self, batch: Batch) -> Batch | None:
        """``batch`` is about to go to a worker: returns what to send (fewer items, say),
        or None to send nothing (the worker stays idle for the next batch)."""

    def quarantined(self, item: Item, status: Status, evidence: dict[str, Any]) -> None:
        """The ladder gave ``item`` up with ``status``; ``evidence`` as quarantine.jsonl has it."""
