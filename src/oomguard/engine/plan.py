"""``oomguard plan``: measure a sample, then say what fits — the table a chemistry pipeline had to guess.

A short calibration runs the first ``sample`` items one at a time in one capped worker and
measures, per item, the memory it cost (its batch's peak over the worker's memory at the
batch's start) and the time it took, plus the worker's own baseline. From those it
predicts, for each number of workers and batch size, the job's peak (workers x (baseline +
batch size x a high quantile of the cost per item)) and the throughput (as many parallel
items as cores allow), and picks the fastest configuration whose predicted peak stays under
the admission target. Measured, not guessed; the prediction is the admission model's own.
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

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "target": self.target,
            "sample": self.sample,
            "baseline": self.baseline,
            "cost_per_item": {"p50": self.cost_p50, "p95": self.cost_p95, "max": self.cost_max},
            "seconds_per_item": self.seconds_per_item,
            "rows": [row.__dict__ for row in self.rows],
            "chosen": self.chosen.__dict__ if self.chosen else None,
        }


def _quantile(values: list[int], q: float) -> int:
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
) -> Plan:
    items = []
    for item in open_source(source):
        if item.error is None:
            items.append(item.value)
        if len(items) >= sample:
            break
    if not items:
        raise ConfigError("the input has no readable item to calibrate on")
    with tempfile.TemporaryDirectory(prefix="oomguard-plan-") as tmp:
        job = Job(
            function,
            source=items,
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
    costs = [int(max(0.0, a["peak_mb"] - a.get("start_mb", 0.0)) * MiB) for a in done]
    baseline = int(min(a.get("start_mb", 0.0) for a in done) * MiB)
    seconds = statistics.median(a["duration_sec"] for a in done)
    p95 = _quantile(costs, 0.95)
    cores = os.cpu_count() or 1
    rows = []
    for workers, batch in itertools.product(WORKER_CHOICES, BATCH_CHOICES):
        peak = workers * (baseline + batch * p95)
        rate = min(workers, cores) / max(seconds, 1e-6)
        rows.append(PlanRow(workers, batch, peak, rate, peak <= target * budget))
    fitting = [row for row in rows if row.fits]
    chosen = max(
        fitting, key=lambda r: (round(r.items_per_sec, 6), -r.predicted_peak), default=None
    )
    return Plan(
        budget,
        target,
        len(done),
        baseline,
        _quantile(costs, 0.5),
        p95,
        max(costs),
        seconds,
        rows,
        chosen,
    )


def render(plan: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"Calibrated on {plan.sample} items: cost per item p50 {format_size(plan.cost_p50)}, "
        f"p95 {format_size(plan.cost_p95)}, max {format_size(plan.cost_max)}; worker baseline "
        f"{format_size(plan.baseline)}; {plan.seconds_per_item:.3f} s per item."
    )
    table = Table(
        title=f"Predicted peak vs workers and batch size (budget {format_size(plan.budget)}, "
        f"target {plan.target:.0%})"
    )
    table.add_column("workers", justify="right")
    for batch in BATCH_CHOICES:
        table.add_column(f"batch {batch}", justify="right")
    for workers in WORKER_CHOICES:
        cells = []
        for batch in BATCH_CHOICES:
            row = next(r for r in plan.rows if r.workers == workers and r.batch_size == batch)
            text = format_size(row.predicted_peak)
            if plan.chosen is row:
                text = f"[bold green]{text} *[/]"
            elif not row.fits:
                text = f"[red]{text}[/]"
            cells.append(text)
        table.add_row(str(workers), *cells)
    console.print(table)
    if plan.chosen is None:
        console.print(
            "[red]Nothing fits: even one worker with one item exceeds the target; raise --memory.[/]"
        )
    else:
        chosen = plan.chosen
        console.print(
            f"Chosen: --workers {chosen.workers} --batch-size {chosen.batch_size} "
            f"(predicted peak {format_size(chosen.predicted_peak)}, ~{chosen.items_per_sec:.1f} items/s); "
            "admission keeps the job under its target whatever you choose."
        )
