"""The RDKit transforms oomguard runs, one molecule (a Parquet row) per call.

``featurize``: a 2048-bit Morgan fingerprint (radius 2, packed into 256 bytes) and ten
RDKit descriptors (~3 ms a molecule). ``embed``: an ETKDG 3D conformer and its MMFF
energy (~tens of ms, and memory that grows with the molecule). A SMILES RDKit cannot parse
raises ``ValueError``: oomguard quarantines that molecule, by its id, and goes on.
"""

from __future__ import annotations

from typing import Any

FP_BITS = 2048
DESCRIPTORS = (
    "MolWt",
    "MolLogP",
    "TPSA",
    "NumHDonors",
    "NumHAcceptors",
    "NumRotatableBonds",
    "RingCount",
    "NumAromaticRings",
    "FractionCSP3",
    "HeavyAtomCount",
)


def _molecule(item: dict[str, Any]) -> Any:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # a bad SMILES is reported by the ValueError, once
    mol = Chem.MolFromSmiles(item["smiles"])
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES of {item['id']}: {item['smiles']!r}")
    return mol


def featurize(item: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from rdkit import DataStructs
    from rdkit.Chem import Descriptors, rdFingerprintGenerator

    mol = _molecule(item)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=FP_BITS)
    bits = np.zeros(FP_BITS, dtype=np.uint8)
    DataStructs.ConvertToNumpyArray(generator.GetFingerprint(mol), bits)
    row: dict[str, Any] = {"id": item["id"], "smiles": item["smiles"]}
    row["morgan_fp"] = np.packbits(bits).tobytes()
    for name in DESCRIPTORS:
        row[name] = float(getattr(Descriptors, name)(mol))
    return row


def embed(item: dict[str, Any]) -> dict[str, Any]:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(_molecule(item))
    params = AllChem.ETKDGv3()
    params.randomSeed = 0xC0FFEE  # the same conformer on every attempt
    if AllChem.EmbedMolecule(mol, params) != 0:
        return {
            "id": item["id"],
            "embedded": False,
            "mmff_energy": None,
            "atoms": mol.GetNumAtoms(),
        }
    energy = None
    if AllChem.MMFFHasAllMoleculeParams(mol):
        props = AllChem.MMFFGetMoleculeProperties(mol)
        energy = float(AllChem.MMFFGetMoleculeForceField(mol, props).CalcEnergy())
    return {"id": item["id"], "embedded": True, "mmff_energy": energy, "atoms": mol.GetNumAtoms()}
