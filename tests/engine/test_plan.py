"""``oomguard plan``: a real calibration on a small sample, and its printed table."""

from __future__ import annotations

import json
from pathlib import Path

from oomguard.engine.plan import calibrate
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
