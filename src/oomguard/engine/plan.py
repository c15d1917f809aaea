"""``oomguard plan``: measure a sample, then say what fits — the table a chemistry pipeline had to guess.

A short calibration runs the first ``sample`` items one at a time in one capped worker and
measures, per item, the memory it cost (its batch's peak over the worker's memory at the
batch's start) and the time it took, plus the worker's own baseline. From those it
predicts, for each number of workers and batch size, the job's peak as admission does: a
per-item function holds one item at a time, so a worker needs its baseline and what its
biggest item needs (the high quantile of the cost per item, or per byte times the biggest
item's bytes), whatever the batch size; a batched function holds the batch, so there it
is the batch's sum. It recommends the batch size from the measured item time (about
``BATCH_WORK_SECONDS`` of work per batch: each batch costs a round trip to the
supervisor), and picks the fastest configuration whose predicted peak stays under the
admission target. Measured, not guessed.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oomguard.engine.job import Job
from oomguard.engine.sources import open_source
from oomguard.errors import ConfigError
from oomguard.sizes import format_size

MiB = 1024 * 1024
WORKER_CHOICES = (1, 2, 4, 8, 16)
BATCH_CHOICES = (1, 5, 10, 20, 50)
# the work a recommended batch holds: each batch costs a round trip to the supervisor
# (about a millisecond), so 50-100 ms of work makes it a few percent at most, while a
# batch stays short enough to spread over the workers and to lose little when it dies
BATCH_WORK_SECONDS = 0.075
MAX_RECOMMENDED_BATCH = 1000  # the largest fixed batch a plan recommends


@dataclass(frozen=True)
class PlanRow:
    workers: int
    batch_size: int
    predicted_peak: int
    items_per_sec: float
    fits: bool


@dataclass(frozen=True)
class Plan:
    budget: int
    target: float
    sample: int
    baseline: int
    cost_p50: int
    cost_p95: int
    cost_max: int
    seconds_per_item: float
    rows: list[PlanRow]
    chosen: PlanRow | None
    batched: bool = False
    item_cost: int = 0  # what one item is predicted to need: the biggest sampled item's
    recommended_batch: int = 1  # from the measured item time (BATCH_WORK_SECONDS per batch)

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "target": self.target,
            "sample": self.sample,
            "batched": self.batched,
            "baseline": self.baseline,
            "cost_per_item": {"p50": self.cost_p50, "p95": self.cost_p95, "max": self.cost_max},
            "item_cost": self.item_cost,
            "seconds_per_item": self.seconds_per_item,
            "recommended_batch_size": self.recommended_batch,
            "rows": [row.__dict__ for row in self.rows],
            "chosen": self.chosen.__dict__ if self.chosen else None,
        }


@dataclass(frozen=True)
class Measured:
    """What the calibration run measured: per successful item, its cost (bytes over the
    worker's memory at its start), its size in bytes and its seconds; the worker's baseline."""

    costs: list[int]
    sizes: list[int]
    seconds: list[float]
    baseline: int


def _quantile(values: list[int] | list[float], q: float) -> Any:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def calibrate(
    function: str,
    source: Any,
    *,
    memory: str | int | None = None,
    sample: int = 20,
    batched: bool = False,
    target: float = 0.80,
    glob: str | None = None,
) -> Plan:
    """Run ``sample`` items one at a time in one capped worker and plan from what they
    cost (see the module's docstring)."""
    items = _sample(source, sample, glob)
    budget, measured = _measure(function, items, memory, batched)
    return plan_from(measured, budget, target, batched=batched)


def _sample(source: Any, sample: int, glob: str | None) -> list[tuple[Any, int]]:
    """The first ``sample`` readable items: (value, size in bytes)."""
    items = []
    for item in open_source(source, glob=glob):
        if item.error is None:
            items.append((item.value, item.size))
        if len(items) >= sample:
            break
    if not items:
        raise ConfigError("the input has no readable item to calibrate on")
    return items


def _measure(
    function: str, items: list[tuple[Any, int]], memory: str | int | None, batched: bool
) -> tuple[int, Measured]:
    """The budget, and what the sample measured in a run of its own."""
    with tempfile.TemporaryDirectory(prefix="oomguard-plan-") as tmp:
        job = Job(
            function,
            source=[value for value, _ in items],
            sink=lambda records: None,
            run_dir=Path(tmp) / "run",
            memory=memory,
            workers=1,
            batch_size=1,
            batched=batched,
            admission=False,
            log_format="quiet",
        )
        budget = job.resolve_memory()
        result = job.run()
        attempts = json.loads((result.run_dir / "ingest_manifest.json").read_text())
    done = [a for a in attempts if a.get("status") == "success" and a.get("peak_mb") is not None]
    if not done:
        raise ConfigError(
            "no sample item finished: nothing to plan from (see the quarantine of a plain run)"
        )
    return budget, Measured(
        costs=[int(max(0.0, a["peak_mb"] - a.get("start_mb", 0.0)) * MiB) for a in done],
        sizes=[items[a["input_indices"][0]][1] for a in done],
        seconds=[float(a["duration_sec"]) for a in done],
        baseline=int(min(a.get("start_mb", 0.0) for a in done) * MiB),
    )


def item_cost(measured: Measured) -> int:
    """What one item is predicted to need: the high quantile of the cost per item (as
    admission learns it), or what the biggest sampled item (by bytes) needed, if more."""
    biggest = max(range(len(measured.sizes)), key=measured.sizes.__getitem__)
    return int(max(_quantile(measured.costs, 0.95), measured.costs[biggest]))


def recommended_batch(seconds_per_item: float) -> int:
    """Items per batch for ``BATCH_WORK_SECONDS`` of work: 1 for 60 ms items, 25 for 3 ms."""
    if seconds_per_item <= 0:
        return MAX_RECOMMENDED_BATCH
    return max(1, min(MAX_RECOMMENDED_BATCH, round(BATCH_WORK_SECONDS / seconds_per_item)))


def plan_from(measured: Measured, budget: int, target: float, *, batched: bool) -> Plan:
    """The table and the choice: a per-item function holds one item at a time, so its
    peak does not grow with the batch (predicted by its biggest item); a batched one holds
    the whole batch."""
    cost = item_cost(measured)
    seconds = statistics.median(measured.seconds)
    batch = recommended_batch(seconds)
    cores = os.cpu_count() or 1
    rows = []
    for workers, size in itertools.product(WORKER_CHOICES, sorted({*BATCH_CHOICES, batch})):
        peak = workers * (measured.baseline + (size if batched else 1) * cost)
        rate = min(workers, cores) / max(seconds, 1e-6)
        rows.append(PlanRow(workers, size, peak, rate, peak <= target * budget))
    fitting = [row for row in rows if row.fits and row.batch_size <= batch]
    # the fastest (workers up to the cores), then the biggest batch up to the recommended
    chosen = max(
        fitting,
        key=lambda r: (round(r.items_per_sec, 6), -r.workers, r.batch_size),
        default=None,
    )
    costs = measured.costs
    return Plan(
        budget, target, len(costs), measured.baseline, int(_quantile(costs, 0.5)),
        int(_quantile(costs, 0.95)), max(costs), seconds, rows, chosen,
        batched=batched, item_cost=cost, recommended_batch=batch,
    )  # fmt: skip


def render(plan: Plan) -> None:
    from rich.console import Console

    console = Console()
    console.print(
        f"Calibrated on {plan.sample} items: cost per item p50 {format_size(plan.cost_p50)}, "
        f"p95 {format_size(plan.cost_p95)}, max {format_size(plan.cost_max)}; the biggest item "
        f"is predicted at {format_size(plan.item_cost)}; worker baseline "
        f"{format_size(plan.baseline)}; {1000 * plan.seconds_per_item:.1f} ms per item."
    )
    console.print(_table(plan))
    if not plan.batched:
        console.print(
            "A per-item function holds one item at a time: its peak is its biggest item's, "
            "whatever the batch size."
        )
    if plan.chosen is None:
        console.print(
            "[red]Nothing fits: even one worker with one item exceeds the target; raise --memory.[/]"
        )
        return
    chosen = plan.chosen
    work = chosen.batch_size * plan.seconds_per_item * 1000
    console.print(
        f"Chosen: --workers {chosen.workers} --batch-size {chosen.batch_size} "
        f"(predicted peak {format_size(chosen.predicted_peak)}, ~{chosen.items_per_sec:.1f} "
        f"items/s): a batch of {chosen.batch_size} holds ~{work:.0f} ms of work, and each "
        "batch costs a round trip to the supervisor; admission keeps the job under its target "
        "whatever you choose."
    )


def _table(plan: Plan) -> Any:
    """Predicted peaks: per number of workers (and per batch size, for a batched function,
    whose peak grows with the batch)."""
    from rich.table import Table

    sizes = sorted({row.batch_size for row in plan.rows}) if plan.batched else [1]
    table = Table(
        title=f"Predicted peak vs workers{' and batch size' if plan.batched else ''} (budget "
        f"{format_size(plan.budget)}, target {plan.target:.0%})"
    )
    table.add_column("workers", justify="right")
    for size in sizes:
        table.add_column(f"batch {size}" if plan.batched else "predicted peak", justify="right")
    chosen = plan.chosen
    for workers in WORKER_CHOICES:
        cells = []
        for size in sizes:
            row = next(r for r in plan.rows if r.workers == workers and r.batch_size == size)
            text = format_size(row.predicted_peak)
            if (
                chosen is not None
                and chosen.workers == workers
                and (chosen.batch_size == size or not plan.batched)
            ):
                text = f"[bold green]{text} *[/]"
            elif not row.fits:
                text = f"[red]{text}[/]"
            cells.append(text)
        table.add_row(str(workers), *cells)
    return table
