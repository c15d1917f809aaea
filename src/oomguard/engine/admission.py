"""Memory-aware admission: dispatch a batch only if its predicted peak fits the budget.

The one home of that policy. Every number is in :class:`AdmissionConfig`, with its default
and the reason for it.

Cost model. Each finished batch's worker peak (its own cgroup's peak, reset per batch)
minus the worker's usage when the batch started is that batch's cost. Costs are learned
online per function, per item and per input byte, in quantile sketches; the prediction
for a batch is the larger of (high quantile of cost per item) x items and (high quantile
of cost per byte) x bytes. A high quantile, not a mean, so one giant is not averaged away.
A per-item function runs a batch's items one at a time (``sequential``), so a batch needs
what its biggest item needs, not the sum: there a batch's cost is learned as the cost of
one item (and per byte of its largest item), and a batch of any length is predicted at
that cost (by its largest item's bytes).
Only batches that finished teach the model: a poison item's death says nothing about the
others, and is the recovery ladder's business. Until a few batches are measured, a batch
is assumed to need ``unknown_share`` of the budget: conservative, then tighter.

Admission. The predicted total is what idle workers hold now, plus for each busy worker
what it held at its batch's start and that batch's predicted cost. A batch is dispatched
while predicted total + its prediction <= ``target`` x budget (and the in-flight count is
under ``max_in_flight`` and the AIMD concurrency limit). One batch may always run when
nothing else does (the recovery ladder handles a batch bigger than the budget).

Pressure. Intake pauses when the job's real usage reaches ``high_water`` x budget, or
PSI ``some avg10`` reaches ``psi_some_avg10``; it resumes only once usage is back below
``target`` x budget and PSI below the threshold (hysteresis, so it does not flap).
"""

from __future__ import annotations

from dataclasses import dataclass

from oomguard.engine.items import Batch
from oomguard.metrics.registry import Registry


@dataclass(frozen=True)
class AdmissionConfig:
    target: float = 0.80  # predicted in-flight total stays under this share of the job budget
    high_water: float = 0.85  # real usage at this share pauses intake
    psi_some_avg10: float = 40.0  # % of time some task stalled on memory (10 s average): pause
    cost_quantile: float = 0.95  # a high quantile of the learned costs, robust to outliers
    warmup_batches: int = 3  # measured batches before the learned cost is trusted alone
    unknown_share: float = 0.25  # before that, a batch is assumed to need this share of the budget
    enabled: bool = True
    sequential: bool = False  # a per-item function: a batch's items run one at a time


class CostModel:
    """Learned memory cost per item and per input byte, for one function."""

    def __init__(self, quantile: float) -> None:
        self.quantile = quantile
        self.registry = Registry("2MiB", windows=0)
        self.observed = 0
        self._cached_at = -1
        self._per_item = 0.0
        self._per_byte: float | None = None

    def observe(self, items: int, size: int, cost: int) -> None:
        if items <= 0 or cost < 0:
            return
        self.registry.record("per_item", cost / items)
        if size > 0:
            self.registry.record("per_byte", cost / size)
        self.observed += 1

    def per_item(self) -> float | None:
        """The learned cost of one item (the high quantile), or None before any batch."""
        if self.observed == 0:
            return None
        self._refresh()
        return self._per_item

    def _refresh(self) -> None:
        # quantiles are recomputed every 8 observations once warm (the dispatch hot path)
        if self._cached_at < 0 or self.observed < 16 or self.observed - self._cached_at >= 8:
            self._cached_at = self.observed
            self._per_item = self.registry.quantile("per_item", self.quantile) or 0.0
            labels = self.registry.labels()
            self._per_byte = (
                self.registry.quantile("per_byte", self.quantile) if "per_byte" in labels else None
            )

    def predict(self, items: int, size: int) -> int | None:
        if self.observed == 0:
            return None
        self._refresh()
        estimate = self._per_item * items
        if size > 0 and self._per_byte is not None:
            estimate = max(estimate, self._per_byte * size)
        return int(estimate)


class Admission:
    def __init__(self, config: AdmissionConfig, budget: int) -> None:
        self.config = config
        self.budget = budget
        self.costs = CostModel(config.cost_quantile)
        self.paused = False
        self.pauses = 0

    def sizes(self, batch: Batch, times: int = 1) -> tuple[int, int]:
        """(items, bytes) as the cost model counts a batch (``times`` over): for a sequential
        function one item of the largest item's bytes, however long the batch; else every
        item and the batch's bytes."""
        if self.config.sequential:
            return 1, batch.largest_item_bytes
        return times * len(batch.items), times * batch.size_bytes

    def predict_batch(self, batch: Batch, times: int = 1) -> int:
        return self.predict(*self.sizes(batch, times))

    def learn(self, batch: Batch, cost: int) -> None:
        """A batch that finished cost this many bytes over its worker's start."""
        self.costs.observe(*self.sizes(batch), cost)

    def predict(self, items: int, size: int) -> int:
        learned = self.costs.predict(items, size)
        conservative = int(self.config.unknown_share * self.budget)
        if learned is None:
            return conservative
        if self.costs.observed < self.config.warmup_batches:
            return max(learned, conservative)
        return learned

    def admits(self, predicted_total: int, prediction: int, in_flight: int) -> bool:
        if not self.config.enabled or in_flight == 0:
            return True
        return predicted_total + prediction <= self.config.target * self.budget

    def update_pressure(self, usage: int, psi_some_avg10: float | None) -> str | None:
        """Pause/resume with hysteresis; returns "pause" or "resume" when the state changes."""
        psi_high = psi_some_avg10 is not None and psi_some_avg10 >= self.config.psi_some_avg10
        if not self.paused and (usage >= self.config.high_water * self.budget or psi_high):
            self.paused = True
            self.pauses += 1
            return "pause"
        if self.paused and usage < self.config.target * self.budget and not psi_high:
            self.paused = False
            return "resume"
        return None
