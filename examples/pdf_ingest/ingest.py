"""Ingest a directory of PDFs into an FTS5 knowledge base under oomguard.

python examples/pdf_ingest/ingest.py --corpus ./pdfs --memory 1g --run-dir runs/kb
"""

from __future__ import annotations

import argparse
from pathlib import Path

from oomguard import Job
from oomguard.demo.knowledge_base import KnowledgeBase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a directory of PDF files")
    parser.add_argument("--memory", default="1g")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/kb"))
    parser.add_argument("--knowledge-base", type=Path, default=Path("knowledge.db"))
    parser.add_argument("--query", default=None, help="search the knowledge base afterwards")
    args = parser.parse_args()
    kb = KnowledgeBase(args.knowledge_base)
    result = Job(
        "oomguard.demo.pipeline:extract",
        source=args.corpus,
        sink=kb,
        run_dir=args.run_dir,
        memory=args.memory,
        batch_size=10,
        max_bytes=5_000_000,
        max_wait_ms=5000,
    ).run()
    print(
        f"{result.succeeded} documents ingested, {len(result.quarantined)} quarantined; {result.run_dir}"
    )
    if args.query:
        searcher = KnowledgeBase(args.knowledge_base)
        for path, snippet in searcher.search(args.query):
            print(f"{path}: {snippet}")
        searcher.close()
    raise SystemExit(result.exit_code)


if __name__ == "__main__":
    main()
