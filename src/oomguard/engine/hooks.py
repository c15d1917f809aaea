"""What an embedding of the engine hears beyond its sink: an item given up.

The sink hears of results; a run that lives inside someone else's process (the executor,
:mod:`oomguard.executor`) needs one more moment: an item has left the ladder quarantined
(its future fails then, not at the next checkpoint).
"""

from __future__ import annotations

from typing import Any, Protocol

from oomguard.classify import Status
from oomguard.engine.items import Item


class RunHooks(Protocol):
    def quarantined(self, item: Item, status: Status, evidence: dict[str, Any]) -> None:
        """The ladder gave ``item`` up with ``status``; ``evidence`` as quarantine.jsonl has it."""
