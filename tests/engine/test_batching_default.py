"""The batching default: adaptive unless a batch size is named, which then is exact."""

from __future__ import annotations

import json
from pathlib import Path

from oomguard import Job
from oomguard.engine.config import JobConfig
from tests.engine.conftest import manifest
from tests.helpers.cli import run_cli

WORK = "tests.engine.workloads:work"


def test_a_job_adapts_its_batch_size_unless_one_is_named(tmp_path: Path) -> None:
    def config(**options: object) -> JobConfig:
        return Job(WORK, source=[1], sink=tmp_path / "o.jsonl", **options).config

    assert config().adaptive_batch is True
    assert config(batch_size=10).adaptive_batch is False
    assert config(batch_size=10, adaptive_batch=True).adaptive_batch is True
    assert config(adaptive_batch=False).adaptive_batch is False
    assert config(adaptive_batch=None).adaptive_batch is True


def test_the_batch_duration_aimed_at_is_longer_on_a_cluster_unless_named(tmp_path: Path) -> None:
    from oomguard.engine.config import BATCH_SECONDS, CLUSTER_BATCH_SECONDS

    def aim(**options: object) -> float:
        return Job(
            WORK, source=[1], sink=tmp_path / "o.jsonl", **options
        ).config.aimed_batch_seconds()

    assert aim() == BATCH_SECONDS < CLUSTER_BATCH_SECONDS == aim(cluster="local:2")
    assert aim(cluster="tcp://127.0.0.1:8786") == CLUSTER_BATCH_SECONDS
    assert aim(batch_seconds=0.2, cluster="local:2") == 0.2 == aim(batch_seconds=0.2)


def test_a_named_batch_size_holds_every_batch_to_it(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(500)]
    named, _ = run_job(items, batch_size=7)
    sizes = [len(entry["input_indices"]) for entry in manifest(named.run_dir)]
    assert sorted(sizes)[1:] == [7] * (len(sizes) - 1) and sum(sizes) == 500
    default, lines = run_job(items, name="default")
    assert sorted(line["input_index"] for line in lines) == list(range(500))
    growth = [e for e in default.summary["events"] if e["event"] == "batch_size"]
    assert growth  # the default adapts: fast items make the batches grow


def test_a_batch_size_in_the_config_file_is_fixed_and_the_flag_wins(tmp_path: Path) -> None:
    (tmp_path / "oomguard.toml").write_text("batch_size = 5\n")
    (tmp_path / "in.jsonl").write_text(
        "".join(f'{{"kind": "ok", "value": {i}}}\n' for i in range(60))
    )
    for name, flags in (("fixed", []), ("flag", ["--adaptive-batch"])):
        result = run_cli(
            "run",
            WORK,
            "-i",
            str(tmp_path / "in.jsonl"),
            "-o",
            str(tmp_path / f"{name}.jsonl"),
            "--run-dir",
            str(tmp_path / name),
            "--config",
            str(tmp_path / "oomguard.toml"),
            "--log-format",
            "quiet",
            *flags,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["adaptive_batch"] is (name == "flag"), summary
