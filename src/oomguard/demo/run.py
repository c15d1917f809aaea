"""``oomguard demo``: a real PDF ingestion pipeline, under a memory cap.

Generates the corpus, ingests it into a SQLite/FTS5 knowledge base with oomguard, answers
a query from it, writes the report, and with ``--compare`` runs the same corpus through a
plain ProcessPoolExecutor under the same cap, side by side.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oomguard.demo.corpus import Corpus, generate
from oomguard.demo.knowledge_base import KnowledgeBase
from oomguard.engine.config import DEFAULT_MEMORY_FRACTION
from oomguard.engine.job import Job, RunResult
from oomguard.memory.budget import effective_budget
from oomguard.sizes import format_size

DEMO_CAP = 1 << 30
QUERY = "oom killer cgroup"


def demo_cap() -> int:
    """1 GiB, or half the budget on a small machine."""
    return min(DEMO_CAP, effective_budget().bytes // 2)


@dataclass
class DemoResult:
    corpus: Corpus
    result: RunResult
    knowledge_base: Path
    documents: int
    chunks: int
    answers: list[tuple[str, str]]
    report: Path | None
    cap: int
    baseline: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_percent(self) -> float:
        """The job's peak as a share of the demo's cap (not of oomguard's own 90% limit)."""
        return round(100 * float(self.result.summary["peak_cgroup_mb"]) * 2**20 / self.cap, 1)


def ingest(directory: Path, corpus: Corpus, cap: int, log_format: str) -> tuple[RunResult, Path]:
    run_dir = directory / "run"
    knowledge = directory / "knowledge.db"
    for stale in (
        run_dir,
        knowledge,
        knowledge.with_name("knowledge.db-wal"),
        knowledge.with_name("knowledge.db-shm"),
    ):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    result = Job(
        "oomguard.demo.pipeline:extract",
        source=corpus.directory,
        sink=KnowledgeBase(knowledge),
        run_dir=run_dir,
        memory=int(cap * DEFAULT_MEMORY_FRACTION),  # as by default: 90% of what the machine allows
        workers=2,
        batch_size=10,  # the PDF ingestion's flush settings
        max_bytes=5_000_000,
        max_wait_ms=5000,
        log_format=log_format,
    ).run()
    return result, knowledge


def run_baseline(directory: Path, corpus: Corpus, cap: int) -> dict[str, Any]:
    from oomguard.repro.harness import reproduce

    out = directory / "baseline"
    if out.exists():
        shutil.rmtree(out)
    repro = reproduce(
        [sys.executable, "-m", "oomguard.demo.baseline", str(corpus.directory)], cap, output_dir=out
    )
    stdout = (out / "stdout.txt").read_text().strip().splitlines()
    report: dict[str, Any] = (
        json.loads(stdout[-1]) if stdout else {"done": [], "lost": [], "failed": []}
    )
    report["peak_percent_of_cap"] = repro.summary["peak_percent_of_cap"]
    report["oom_killed"] = repro.summary["oom_killed"]
    report["exit_code"] = repro.exit_code
    report["duration_sec"] = repro.summary["duration_sec"]
    return report


def run_demo(
    directory: Path,
    *,
    compare: bool = False,
    cap: int | None = None,
    log_format: str = "auto",
    ordinary: int = 24,
    large: int = 2,
) -> DemoResult:
    from oomguard.report import write_report

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cap = cap or demo_cap()
    corpus_dir = directory / "corpus"
    if corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    corpus = generate(corpus_dir, ordinary=ordinary, large=large)
    result, knowledge = ingest(directory, corpus, cap, log_format)
    report = write_report(result.run_dir)
    kb = KnowledgeBase(knowledge)
    try:
        documents, chunks = kb.counts()
        answers = kb.search(QUERY)
    finally:
        kb.close()
    demo = DemoResult(corpus, result, knowledge, documents, chunks, answers, report, cap)
    if compare:
        demo.baseline = run_baseline(directory, corpus, cap)
    return demo


def render(demo: DemoResult) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    result = demo.result
    summary = result.summary
    console.rule("[bold]oomguard demo: PDF ingestion into a knowledge base")
    console.print(
        f"Ingested [bold]{demo.documents}[/] of {len(demo.corpus.survivable)} readable documents "
        f"({demo.chunks} chunks in {escape(str(demo.knowledge_base))}) under a "
        f"{format_size(demo.cap)} cap (oomguard's own job limit: 90% of it); peak {summary['peak_cgroup_mb']} MiB "
        f"({demo.peak_percent}% of the cap), {summary['cgroup_events']['oom_kill']} OOM kill(s) "
        f"survived, {summary['duration_sec']} s."
    )
    table = Table(title="Quarantined documents", show_lines=False)
    table.add_column("input: document")
    table.add_column("status")
    table.add_column("why", overflow="fold")
    for entry in result.quarantined:
        evidence = entry["evidence"]
        if entry["status"] == "oom_killed":
            why = f"killed at {evidence.get('peak_mb')} MiB of the {evidence.get('job_cap_mb')} MiB cap"
        else:
            why = f"{evidence.get('type', '')}: {evidence.get('message', '')}"
        name = f"{entry['input_index']}: {entry.get('label', '')}"
        table.add_row(escape(name), entry["status"], escape(why))
    console.print(table)
    console.print(f'Query [bold]"{QUERY}"[/] answered from the knowledge base:')
    for path, snippet in demo.answers:
        console.print(f"  {escape(path)}: …{escape(snippet)}…")
    console.print(
        f"Artifacts: {escape(str(result.run_dir))} (memory_log.csv, summary.json, ingest_manifest.json, "
        f"quarantine.jsonl); report: {escape(str(demo.report))}"
    )
    if demo.baseline is not None:
        base = demo.baseline
        compare = Table(title=f"The same corpus, the same {format_size(demo.cap)} cap")
        for column in ("", "oomguard", "ProcessPoolExecutor"):
            compare.add_column(column)
        compare.add_row("documents ingested", str(demo.documents), str(len(base["done"])))
        compare.add_row(
            "documents lost", "0", f"[red]{len(base['lost'])}[/]" if base["lost"] else "0"
        )
        compare.add_row(
            "outcome",
            f"finished; {len(result.quarantined)} hostile documents quarantined with the reason",
            escape(base.get("broke") or "finished") if base.get("broke") else "finished",
        )
        compare.add_row(
            "peak of the cap",
            f"{demo.peak_percent}%",
            f"{base['peak_percent_of_cap']}%",
        )
        compare.add_row("wall time", f"{summary['duration_sec']} s", f"{base['duration_sec']} s")
        console.print(compare)
