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
Items of different kinds (an executor's tasks: one kind per function, ``Item.kind``) have
a cost model each, so a small function's tasks are not admitted at a big one's cost; a
batch is counted as its first item's kind.
A worker's first batch of a kind also pays its warm-up: the imports, caches and pools it
keeps once that batch is over (a PDF library loaded on the first document). What the first
batch left held is learned apart (the warm-up, a high quantile too) and its cost less that
part as the cost: a warm worker holds its warm-up already (it is in what the worker holds
when its next batch starts), so only a worker not yet warm for the kind is predicted at
cost plus warm-up. Learned together, every later batch on a warm worker would be predicted
at the one-off warm-up, and under a small cap the second worker would never be admitted.
Only batches that finished teach the model: a poison item's death says nothing about the
others, and is the recovery ladder's business. Until a few batches are measured, a batch
is assumed to need ``unknown_share`` of the budget: conservative, then tighter.

Admission. The predicted total is what idle workers hold now, plus for each busy worker
what it held at its batch's start and that batch's predicted cost. A batch is dispatched
while predicted total + its prediction <= ``target`` x budget (and the in-flight count is
under ``max_in_flight`` and the AIMD concurrency limit). One batch may always run when
nothing else does (the recovery ladder handles a batch bigger than the budget).

Beside a runaway. A batch that has grown past its prediction by ``runaway_slack`` of the
budget, and is still growing, is a runaway: maybe a big item, maybe a poison one that will
grow until the kernel kills it. While one runs no batch is admitted the usual way: the
runaway may need all the room, and a batch started beside it would make its death prove
nothing. Two runaways that together pass the target would each die short of the whole
budget: the one holding most goes on; the others are stopped and run again, uncounted,
after it, one at a time (each is admitted at what it reached, so two would fit side by
side and grow into each other before either looked like a runaway again). The supervisor
reads the job's usage fresh each time it looks, and looks every ``watch_interval`` (50 ms)
once it holds ``busy_share`` (a quarter) of the budget: a process fills memory at about
1 GiB/s (:meth:`Admission.watch_timeout`).

The side lane (``side_lane``, on by default): the cores a runaway leaves idle get batches
*held* at a ceiling, whose processes the kernel stalls (not kills) there (v1: the limit with
the OOM killer off; v2: ``memory.high``), only where the batch most likely fits (its median
learned cost: a wrong guess costs a stall, not a kill). Together they hold at most
``side_share`` of the budget, by default half of what a death may fall short of the whole
budget and still count as a death alone (``alone_fraction``), so a runaway killed beside
them is still quarantined at once. A held batch that stalls waits at its ceiling, holding
what it has, and goes on where it stopped once no runaway is left: stopping it would lose
its work and its worker, and the room it would free is too small for much. One known to
need more than the side room waits. One side batch per core the runaways leave free
(:meth:`Admission.side_lanes`); ``max_in_flight`` still caps the total. The mechanism is in
``engine/runaways.py``; the rules are here. Where no cgroup can hold a group (the watchdog
limiter) there is no side lane.

The intake pause. Intake pauses when the job's real usage reaches ``high_water`` x
budget, or PSI ``some avg10`` reaches ``psi_some_avg10``; it resumes only once usage is
back below ``target`` x budget and PSI below the threshold (hysteresis, so it does not
flap).

The numbers a user sets (``target``, ``high_water``, ``psi_threshold``, ``alone_fraction``,
``side_lane``) take their defaults from :class:`~oomguard.engine.config.JobConfig`, their
one home; :meth:`AdmissionConfig.for_job` makes the admission's config from a job's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from oomguard.engine.config import JobConfig
from oomguard.engine.items import Batch
from oomguard.metrics.registry import Registry

MiB = 1024 * 1024


@dataclass(frozen=True)
class AdmissionConfig:
    target: float = JobConfig.target  # predicted in-flight total stays under this share
    high_water: float = JobConfig.high_water  # real usage at this share pauses intake
    psi_some_avg10: float = JobConfig.psi_threshold  # PSI "some avg10" (%) at this: pause
    cost_quantile: float = 0.95  # a high quantile of the learned costs, robust to outliers
    warmup_batches: int = 3  # measured batches before the learned cost is trusted alone
    unknown_share: float = 0.25  # before that, a batch is assumed to need this share of the budget
    enabled: bool = True
    sequential: bool = False  # a per-item function: a batch's items run one at a time
    runaway_slack: float = 0.05  # grown past its prediction by this share of the budget: a runaway
    alone_fraction: float = JobConfig.alone_fraction  # a death at this share of its room: alone
    side_share: float | None = None  # held batches beside a runaway hold at most this share
    # of the budget; None: half of what a death may fall short and still count as alone
    side_lane: bool = JobConfig.side_lane
    side_minimum: int = 16 * MiB  # less side room than this is not worth a held batch
    watch_interval: float = 0.05  # seconds between looks at the workers while memory is busy
    busy_share: float = 0.25  # of the budget: from there, the loop looks every watch_interval
    fastest_growth: int = 2 * 1024 * MiB  # bytes/s: faster than page faults fill memory

    @classmethod
    def for_job(cls, config: JobConfig) -> AdmissionConfig:
        return cls(
            target=config.target,
            high_water=config.high_water,
            psi_some_avg10=config.psi_threshold,
            enabled=config.admission,
            sequential=not config.batched,
            alone_fraction=config.alone_fraction,
            side_lane=config.side_lane,
        )

    @property
    def side_room_share(self) -> float:
        """The share of the budget the side lane may hold in all."""
        if self.side_share is not None:
            return self.side_share
        return (1 - self.alone_fraction) / 2


class CostModel:
    """Learned memory cost per item and per input byte, for one function."""

    def __init__(self, quantile: float) -> None:
        self.quantile = quantile
        self.registry = Registry("2MiB", windows=0)
        self.observed = 0
        self._cached_at = -1
        self._per_item = 0.0
        self._per_byte: float | None = None
        self._typical_item = 0.0
        self._typical_byte: float | None = None
        self.warmups = 0

    def observe_warmup(self, retained: int) -> None:
        """What a worker's first batch of this kind left held at its end (its warm-up)."""
        self.registry.record("warmup", max(0, retained))
        self.warmups += 1

    def warmup(self) -> int:
        """The learned warm-up (the high quantile; 0 before any first batch finished)."""
        if self.warmups == 0:
            return 0
        return int(self.registry.quantile("warmup", self.quantile) or 0)

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
            self._typical_item = self.registry.quantile("per_item", 0.5) or 0.0
            labels = self.registry.labels()
            has_bytes = "per_byte" in labels
            self._per_byte = (
                self.registry.quantile("per_byte", self.quantile) if has_bytes else None
            )
            self._typical_byte = self.registry.quantile("per_byte", 0.5) if has_bytes else None

    def predict(self, items: int, size: int, typical: bool = False) -> int | None:
        """The high-quantile cost; with ``typical``, the median's (what a batch most likely
        needs, for speculative work that is stalled, not killed, when it is wrong)."""
        if self.observed == 0:
            return None
        self._refresh()
        per_item, per_byte = (
            (self._typical_item, self._typical_byte)
            if typical
            else (self._per_item, self._per_byte)
        )
        estimate = per_item * items
        if size > 0 and per_byte is not None:
            estimate = max(estimate, per_byte * size)
        return int(estimate)


class Admission:
    def __init__(self, config: AdmissionConfig, budget: int) -> None:
        self.config = config
        self.budget = budget
        self.costs = CostModel(config.cost_quantile)  # items of no kind (a Job's)
        self._kinds: dict[str, CostModel] = {}
        self.paused = False
        self.pauses = 0
        self.pause_reason = ""  # why intake is paused, for a person ("working set 86% of cap")
        self.paused_since = 0.0  # monotonic

    def sizes(self, batch: Batch, times: int = 1) -> tuple[int, int]:
        """(items, bytes) as the cost model counts a batch (``times`` over): for a sequential
        function one item of the largest item's bytes, however long the batch; else every
        item and the batch's bytes."""
        if self.config.sequential:
            return 1, batch.largest_item_bytes
        return times * len(batch.items), times * batch.size_bytes

    def model(self, batch: Batch) -> CostModel:
        """The cost model of ``batch``'s kind of work (its first item's)."""
        kind = batch.kind
        if not kind:
            return self.costs
        model = self._kinds.get(kind)
        if model is None:
            model = self._kinds[kind] = CostModel(self.config.cost_quantile)
        return model

    @property
    def observed(self) -> int:
        """Batches measured, of every kind."""
        return self.costs.observed + sum(m.observed for m in self._kinds.values())

    def predict_batch(self, batch: Batch, times: int = 1, warm: bool = True) -> int:
        """The batch's predicted cost on a worker warm for its kind, or (``warm`` False) on
        one that is not: that worker pays its warm-up too."""
        model = self.model(batch)
        prediction = self.predict(*self.sizes(batch, times), model=model)
        return prediction if warm else prediction + model.warmup()

    def learn(self, batch: Batch, cost: int, retained: int = 0, first: bool = False) -> None:
        """A batch that finished cost this many bytes over its worker's start and left
        ``retained`` held at its end; ``first``: its worker's first batch of the kind, whose
        retained part is the warm-up."""
        model = self.model(batch)
        if first:
            retained = max(0, min(retained, cost))
            model.observe_warmup(retained)
            cost -= retained
        model.observe(*self.sizes(batch), cost)

    def predict(self, items: int, size: int, model: CostModel | None = None) -> int:
        model = model or self.costs
        learned = model.predict(items, size)
        conservative = int(self.config.unknown_share * self.budget)
        if learned is None:
            return conservative
        if model.observed < self.config.warmup_batches:
            return max(learned, conservative)
        return learned

    @property
    def slack(self) -> int:
        """Bytes past its prediction that make a batch a runaway (if still growing)."""
        return int(self.config.runaway_slack * self.budget)

    def over_prediction(self, now: int, baseline: int, prediction: int) -> bool:
        """Grown past its prediction by the runaway slack (the first half of a runaway);
        ``now`` and ``baseline``: its working set now and when the batch started."""
        return self.config.enabled and now > baseline + prediction + self.slack

    def still_growing(self, growth: int | None) -> bool:
        """``growth``: bytes grown over the last second (None: too young to say, so it
        counts as growing). One that has levelled off is only a big batch, counted at what
        it holds."""
        return growth is None or growth >= self.slack / 4

    def likely_fits_beside(self, batch: Batch, share: int) -> bool:
        """Whether ``batch`` most likely fits ``share`` bytes of side room (the median cost,
        once the model is warm): a held batch that does not is stalled and stopped."""
        model = self.model(batch)
        if model.observed < self.config.warmup_batches:
            return False
        typical = model.predict(*self.sizes(batch), typical=True)
        return typical is not None and typical <= share  # the known cost is checked first

    def crowded(self, predicted_total: int) -> bool:
        """Runaways together past the target: only one of them may go on."""
        return predicted_total >= self.config.target * self.budget

    def side_room(self, held: int) -> int:
        """Bytes a new held batch may have beside a runaway, with ``held`` bytes held already:
        half the side room at most, so that one batch stalled at its ceiling (waiting there
        for the runaway's end) leaves room for another."""
        if not (self.config.enabled and self.config.side_lane):
            return 0
        whole = int(self.config.side_room_share * self.budget)
        room = min(max(0, whole - held), max(whole // 2, self.config.side_minimum))
        return room if room >= self.config.side_minimum else 0

    def side_lanes(self, cpus: int, runaways: int) -> int:
        """Held batches running at most (a stalled one runs nothing): one per core the
        runaways leave idle."""
        return max(1, cpus - runaways)

    def watch_timeout(self, usage: int | None) -> float:
        """How long the loop may sleep with batches in flight: until they could have grown
        to ``busy_share`` of the budget at the fastest a process fills memory, and from
        there (or while intake is paused) ``watch_interval``: runaways are caught, and
        paused intake resumed, by looking often. ``usage``: the job's, read just before."""
        config = self.config
        if self.paused or usage is None:
            return config.watch_interval
        return max(
            config.watch_interval, (config.busy_share * self.budget - usage) / config.fastest_growth
        )

    def admits(self, predicted_total: int, prediction: int, in_flight: int) -> bool:
        if not self.config.enabled or in_flight == 0:
            return True
        return predicted_total + prediction <= self.config.target * self.budget

    def update_pause(self, usage: int, psi_some_avg10: float | None) -> str | None:
        """The intake pause, with hysteresis; returns "pause" or "resume" when it changes.
        ``usage``: the job's working set (page cache the kernel may drop is no reason to
        pause). A pause never stops the last batch: with nothing in flight one batch runs
        whatever the pause says (dispatch), so a pause can slow a run, never stall it."""
        psi_high = psi_some_avg10 is not None and psi_some_avg10 >= self.config.psi_some_avg10
        full = usage >= self.config.high_water * self.budget
        if not self.paused and (full or psi_high):
            self.paused = True
            self.pauses += 1
            self.paused_since = time.monotonic()
            self.pause_reason = (
                f"working set {100 * usage / self.budget:.0f}% of cap"
                if full
                else f"PSI memory some avg10 {psi_some_avg10:.0f}%"
            )
            return "pause"
        if self.paused and usage < self.config.target * self.budget and not psi_high:
            self.paused = False
            self.pause_reason = ""
            return "resume"
        return None

    def pause_shown(self, after: float) -> str | None:
        """The pause's reason once it has lasted ``after`` seconds (for the progress line)."""
        if self.paused and time.monotonic() - self.paused_since >= after:
            return self.pause_reason
        return None
