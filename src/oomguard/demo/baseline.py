"""The same corpus through a plain ``concurrent.futures.ProcessPoolExecutor`` (for --compare).

    python -m oomguard.demo.baseline CORPUS_DIR

Prints one JSON line: what got done before the pool broke, and what was lost.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from oomguard.demo.pipeline import extract


def main(corpus: Path) -> None:
    files = sorted(p for p in corpus.iterdir() if p.is_file())
    start = time.monotonic()
    done, failed, lost, broke = [], [], [], None
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [
            (path, pool.submit(extract, {"path": str(path), "size": path.stat().st_size}))
            for path in files
        ]
        for path, future in futures:
            try:
                future.result()
                done.append(path.name)
            except BrokenProcessPool as err:
                broke = broke or f"{type(err).__name__}: {err}"
                lost.append(path.name)
            except Exception as err:
                failed.append(f"{path.name}: {type(err).__name__}")
    print(
        json.dumps(
            {
                "done": done,
                "failed": failed,
                "lost": lost,
                "broke": broke,
                "wall_sec": round(time.monotonic() - start, 2),
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
