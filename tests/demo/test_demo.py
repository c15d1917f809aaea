"""The demo pipeline end to end: real PDFs, a real kernel OOM kill of the bomb, a real
SQLite/FTS5 knowledge base, and a plain ProcessPoolExecutor beside it."""

from __future__ import annotations

import collections
import sqlite3
from pathlib import Path

from oomguard.demo.corpus import zeros_deflate
from oomguard.demo.pipeline import chunk
from oomguard.demo.run import run_demo
from oomguard.limits import CgroupLimiter


def test_pdf_ingestion_under_a_cap(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    demo = run_demo(
        tmp_path / "demo", compare=True, cap=512 * 1024**2, log_format="quiet", ordinary=6, large=1
    )
    names = sorted(p.name for p in demo.corpus.directory.iterdir())
    by_index = dict(enumerate(names))

    # every readable document is in the knowledge base exactly once
    db = sqlite3.connect(demo.knowledge_base)
    try:
        paths = [Path(p).name for (p,) in db.execute("SELECT path FROM documents")]
        chunk_paths = collections.Counter(
            Path(p).name for (p,) in db.execute("SELECT path FROM chunks")
        )
    finally:
        db.close()
    assert sorted(paths) == sorted(demo.corpus.survivable)
    assert len(paths) == len(set(paths))
    assert set(chunk_paths) == set(demo.corpus.survivable)

    # the hostile ones are quarantined with the right class
    quarantined = {by_index[q["input_index"]]: q for q in demo.result.quarantined}
    assert set(quarantined) == set(demo.corpus.hostile)
    assert quarantined["bomb.pdf"]["status"] == "oom_killed"
    assert quarantined["bomb.pdf"]["evidence"]["peak_mb"] >= 0.8 * 512
    assert demo.peak_percent <= 91
    assert quarantined["huge-scan.pdf"]["status"] == "oom_killed"
    for broken in ("truncated.pdf", "notes.pdf"):
        assert quarantined[broken]["status"] == "error"
        assert quarantined[broken]["evidence"]["type"].startswith("Pdf")  # pypdf's own exception

    assert demo.answers, "the knowledge base answered nothing"
    assert demo.report is not None and demo.report.exists()

    # the plain pool, same corpus, same cap: it breaks and loses documents
    assert demo.baseline is not None
    assert "BrokenProcessPool" in (demo.baseline["broke"] or "")
    assert demo.baseline["lost"]


def test_zeros_deflate_is_a_valid_zlib_stream() -> None:
    import zlib

    assert zlib.decompress(zeros_deflate(3 << 20)) == bytes(3 << 20)


def test_chunking_overlaps() -> None:
    text = "word " * 500
    chunks = chunk(text, size=100, overlap=10)
    assert all(len(c) <= 100 for c in chunks)
    assert chunks[0][-10:] == chunks[1][:10]
