"""What a driver's batch task runs on its Dask worker: one attempt on the node engine.

Kept apart and small: Dask pickles a reference to this function for every batch."""

from __future__ import annotations

from typing import Any

from oomguard.dask.node import NodeResult
from oomguard.dask.plugin import node_engine


def run_batch(
    spec: dict[str, Any],
    batch_id: int,
    items: list[tuple[int, Any]],
    alone: bool,
    attempt: int,
    timeout: float | None,
) -> NodeResult:
    return node_engine().run(spec, batch_id, items, alone=alone, attempt=attempt, timeout=timeout)
