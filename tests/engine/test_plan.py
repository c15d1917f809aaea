"""``oomguard plan``: a real calibration on a small sample, and its printed table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oomguard.engine.plan import Measured, calibrate, plan_from, recommended_batch
from oomguard.limits import CgroupLimiter
from tests.engine.conftest import write_jsonl
from tests.helpers.cli import run_cli

MiB = 1024**2


def test_calibration_measures_the_cost_and_picks_what_fits(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    source = write_jsonl(
        tmp_path / "items.jsonl", [{"kind": "hold", "mb": 50, "seconds": 0.01} for _ in range(30)]
    )
    plan = calibrate("tests.engine.workloads:work", source, memory="600m", sample=8)
    assert plan.sample == 8
    assert 45 * MiB <= plan.cost_p95 <= 70 * MiB  # each item touches 50 MiB
    assert plan.chosen is not None and plan.chosen.fits
    assert plan.chosen.predicted_peak <= 0.8 * 600 * MiB
    too_big = [r for r in plan.rows if r.workers == 16 and r.batch_size == 50]
    assert too_big and not too_big[0].fits


def test_plan_cli(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "items.jsonl", [{"kind": "hold", "mb": 20, "seconds": 0.01} for _ in range(10)]
    )
    args = ("plan", "tests.engine.workloads:work", "-i", str(source), "--memory", "400m")
    result = run_cli(*args, "--sample", "5", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["chosen"]["fits"] and report["sample"] == 5
    screen = run_cli(*args, "--sample", "5", timeout=120)
    assert "Chosen: --workers" in screen.stdout and "Predicted peak" in screen.stdout
    assert "one item at a time" in screen.stdout


def _measured(cost_mb: list[int], seconds: float, sizes: list[int] | None = None) -> Measured:
    return Measured(
        costs=[mb * MiB for mb in cost_mb],
        sizes=sizes or [100] * len(cost_mb),
        seconds=[seconds] * len(cost_mb),
        baseline=30 * MiB,
    )


def test_a_per_item_function_is_predicted_by_its_biggest_item_whatever_the_batch() -> None:
    """One item at a time: the peak of a worker is its baseline and its biggest item, as
    admission predicts it, not the batch's sum."""
    costs = [10] * 19 + [60]  # the biggest file needs 60 MiB
    plan = plan_from(_measured(costs, 0.003, [1000] * 19 + [9000]), 1024 * MiB, 0.8, batched=False)
    assert plan.item_cost == 60 * MiB
    for workers in (1, 4):
        peaks = {r.predicted_peak for r in plan.rows if r.workers == workers}
        assert peaks == {workers * (30 + 60) * MiB}
    batched = plan_from(_measured(costs, 0.003), 1024 * MiB, 0.8, batched=True)
    one, fifty = (
        next(r for r in batched.rows if r.workers == 1 and r.batch_size == n) for n in (1, 50)
    )
    assert fifty.predicted_peak - one.predicted_peak == 49 * batched.item_cost


@pytest.mark.parametrize(("seconds", "batch"), [(0.003, 25), (0.001, 75), (0.06, 1), (2.0, 1)])
def test_the_batch_size_comes_from_the_measured_item_time(seconds: float, batch: int) -> None:
    """About 75 ms of work per batch: each batch costs a round trip to the supervisor."""
    assert recommended_batch(seconds) == batch
    plan = plan_from(_measured([5] * 10, seconds), 4096 * MiB, 0.8, batched=False)
    assert plan.chosen is not None and plan.chosen.batch_size == batch
    assert plan.recommended_batch == batch


def test_a_batched_function_gets_the_biggest_batch_that_fits_up_to_the_recommended() -> None:
    plan = plan_from(_measured([20] * 10, 0.001), 1024 * MiB, 0.8, batched=True)
    assert plan.recommended_batch == 75
    chosen = plan.chosen
    assert chosen is not None and chosen.fits and 1 < chosen.batch_size < 75
    bigger = [
        r for r in plan.rows if r.workers == chosen.workers and r.batch_size > chosen.batch_size
    ]
    assert all(not r.fits or r.batch_size > 75 for r in bigger)


def test_fast_items_are_planned_with_batches_of_more_than_one(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    """Items of well under a millisecond: the plan's batch holds more than one of them (tens
    here; a few in the v2 lane, where software emulation makes each item slower)."""
    source = write_jsonl(tmp_path / "items.jsonl", [{"kind": "ok", "value": n} for n in range(30)])
    args = ("plan", "tests.engine.workloads:work", "-i", str(source), "--memory", "400m")
    result = run_cli(*args, "--sample", "20", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["recommended_batch_size"] > 1
    assert report["chosen"]["batch_size"] == report["recommended_batch_size"]
