"""Kill -9 the supervisor (and its workers) at seeded random moments; resume each time.

At the end the sink holds every survivable item exactly once, and the journal agrees.
The moments are random on purpose (that is the test); OOMGUARD_TORTURE_SEED and
OOMGUARD_TORTURE_KILLS change the seed and the count (benchmarks/ has a longer run).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from oomguard.journal import Journal

ROOT = Path(__file__).parents[2]
SEED = int(os.environ.get("OOMGUARD_TORTURE_SEED", "20261122"))
KILLS = int(os.environ.get("OOMGUARD_TORTURE_KILLS", "22"))
ITEMS = 2000
POISON = {137, 1024, 1999}  # raise in user code: quarantined, never in the sink


def make_source(path: Path) -> Path:
    with open(path, "w") as handle:
        for index in range(ITEMS):
            item = (
                {"kind": "raise", "value": index}
                if index in POISON
                else {"kind": "slow", "seconds": 0.01}
            )
            handle.write(json.dumps(item) + "\n")
    return path


def start(run_dir: Path, source: Path, sink: Path, stderr: Any = subprocess.DEVNULL) -> Any:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.journal.torture_child", str(run_dir), str(source), str(sink)],
        cwd=ROOT,
        start_new_session=True,  # its own process group: supervisor and workers die together
        stderr=stderr,
    )


def output_indices(sink: Path) -> list[int]:
    if sink.suffix == ".jsonl":
        return [json.loads(line)["input_index"] for line in sink.read_text().splitlines()]
    if sink.suffix == ".parquet":
        return (
            pq.read_table(sink).column("input_index").to_pylist()
            if any(sink.glob("part-*"))
            else []
        )
    db = sqlite3.connect(sink)
    try:
        return [i for (i,) in db.execute("SELECT input_index FROM results WHERE pending = 0")]
    finally:
        db.close()


@pytest.mark.parametrize(("suffix", "kills"), [(".jsonl", KILLS), (".parquet", 8), (".db", 8)])
def test_supervisor_killed_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, suffix: str, kills: int
) -> None:
    rng = random.Random(f"{SEED}{suffix}")
    source = make_source(tmp_path / "items.jsonl")
    sink = tmp_path / f"out{suffix}"
    run_dir = tmp_path / "run"
    landed = 0
    for _ in range(kills):
        proc = start(run_dir, source, sink)
        time.sleep(rng.uniform(0.25, 0.75))  # the random moment of death, not a synchronisation
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            landed += 1
        proc.wait()
    final = start(run_dir, source, sink, stderr=subprocess.PIPE)
    _, errors = final.communicate(timeout=300)
    assert final.returncode == 3, errors.decode()[-3000:]  # finished, poison quarantined

    counts = collections.Counter(output_indices(sink))
    assert set(counts) == set(range(ITEMS)) - POISON
    duplicates = {index: n for index, n in counts.items() if n > 1}
    assert not duplicates
    journal = Journal.open(run_dir)
    try:
        assert len(journal.committed_set()) == ITEMS - len(POISON)
        assert {q["input_index"] for q in journal.quarantined()} == POISON
        sessions = journal.sessions()
        assert len(sessions) <= kills + 1  # a kill during start-up may come before the session
        assert sessions[-1]["status"] == "finished"
        assert all(s["status"] == "running" for s in sessions[:-1])  # killed: never ended
    finally:
        journal.close()
    assert landed >= kills * 0.8, f"only {landed} of {kills} kills landed mid-run"
    quarantine_lines = (run_dir / "quarantine.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["input_index"] for line in quarantine_lines) == sorted(POISON)
