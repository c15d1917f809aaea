"""The report tells the truth at a glance: outcome colours, the failed item, labels, the
figures explained, and a report for a run that was interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from oomguard import Job
from oomguard.limits import CgroupLimiter
from oomguard.limits.cgroup import group_base, sweep_stale_groups
from oomguard.memory.cgroups import detect_setup
from oomguard.report import write_report
from oomguard.report.render import FIGURES, WORKER_LINES
from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import cli_env, oomguard_argv
from tests.helpers.gates import Gate


def run(tmp_path: Path, items: list[dict[str, Any]], **options: Any) -> Path:
    source = write_jsonl(tmp_path / "items.jsonl", items)
    options = {"workers": 2, "log_format": "quiet", **options}
    Job(WORK, source=source, sink=tmp_path / "o.jsonl", run_dir=tmp_path / "run", **options).run()
    return tmp_path / "run"


def banner(page: Path) -> str:
    text = page.read_text()
    return text.split('<div class="verdict ', 1)[1].split('"', 1)[0]


def test_all_done_is_green_and_the_figures_are_explained(tmp_path: Path) -> None:
    page = write_report(run(tmp_path, [{"kind": "ok", "value": i} for i in range(20)]))
    assert banner(page) == "good"
    text = page.read_text()
    assert FIGURES in text and WORKER_LINES in text
    assert "working set" in FIGURES and "charged" in FIGURES and "RSS" in FIGURES


def test_errors_only_are_amber_and_the_failed_item_is_shown_not_its_batch(
    tmp_path: Path,
) -> None:
    items = [{"kind": "ok", "value": i} for i in range(20)]
    items[14] = {"kind": "raise", "value": 99}
    page = write_report(run(tmp_path, items, workers=1, batch_size=10))
    assert banner(page) == "warn"
    failed = page.read_text().split("<h2>Failed attempts</h2>", 1)[1].split("</table>", 1)[0]
    row = failed.split("<tr>")[2]  # the header, then the first failure
    assert row.startswith("<td>14</td>"), row
    assert "in batch" in row and "(10…19)" in row
    assert "10, 11, 12" not in failed


def test_an_oom_kill_is_red(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    items = [{"kind": "grow", "mb": 10} for _ in range(6)]
    items[3] = {"kind": "grow", "mb": 2000}
    page = write_report(run(tmp_path, items, memory="300m"))
    assert banner(page) == "bad"
    assert "oom_killed" in page.read_text()


def test_labels_are_shown_where_records_carry_them(tmp_path: Path) -> None:
    items = [{"kind": "ok", "value": i} for i in range(5)] + [{"kind": "raise", "value": 7}]
    run_dir = run(tmp_path, items)
    quarantine = run_dir / "quarantine.jsonl"
    entry = json.loads(quarantine.read_text())
    quarantine.write_text(json.dumps({**entry, "label": "docs/broken.pdf"}) + "\n")
    manifest = json.loads((run_dir / "ingest_manifest.json").read_text())
    for attempt in manifest:
        for failure in attempt.get("items_failed", []):
            failure["label"] = "docs/broken.pdf"
    (run_dir / "ingest_manifest.json").write_text(json.dumps(manifest))
    text = write_report(run_dir).read_text()
    quarantined = text.split("<h2>Quarantined items</h2>", 1)[1]
    assert '5 <span class="label">docs/broken.pdf</span>' in quarantined
    failed = text.split("<h2>Failed attempts</h2>", 1)[1].split("</table>", 1)[0]
    assert '5 <span class="label">docs/broken.pdf</span>' in failed


def stopped_run(tmp_path: Path, how: signal.Signals) -> Path:
    """A CLI run stopped by ``how`` while its third item runs (two are done before it)."""
    gate = Gate(tmp_path)
    items = [{"kind": "ok", "value": 0}, {"kind": "ok", "value": 1}, gate.item()]
    items += [{"kind": "ok", "value": i} for i in range(3, 10)]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    argv = oomguard_argv(
        *("run", WORK, "-i", str(source), "-o", str(tmp_path / "o.jsonl")),
        *("--run-dir", str(tmp_path / "run"), "--workers", "1", "--batch-size", "1"),
        *("--log-format", "quiet"),
    )
    proc = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        gate.wait_running(proc)
        proc.send_signal(how)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return tmp_path / "run"


def test_a_run_stopped_by_sigint_gets_a_report(tmp_path: Path) -> None:
    page = write_report(stopped_run(tmp_path, signal.SIGINT))
    assert banner(page) == "warn"
    assert "Interrupted" in page.read_text()


def test_a_killed_supervisor_without_a_summary_gets_a_report(tmp_path: Path) -> None:
    run_dir = stopped_run(tmp_path, signal.SIGKILL)
    setup = detect_setup()
    if setup.memory_dir is not None:  # what a later start does: the dead supervisor's groups go
        sweep_stale_groups(group_base(setup.memory_dir))
    assert not (run_dir / "summary.json").exists()
    page = write_report(run_dir)
    text = page.read_text()
    assert banner(page) == "warn"
    assert "Interrupted" in text and "summary.json is missing" in text
    assert "tests.engine.workloads:work" in text  # the function, from the journal
    assert "data:image/png;base64," in text
