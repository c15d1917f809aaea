"""The PDF benchmark's function and corpus (importable as ``benchmarks.pdf_work``).

``extract_text`` is what a knowledge-base ingestion does first: pypdf's text of every page
(pypdf's default limits, no image decoding). ``write_corpus`` writes 31 PDFs shaped like a
public sample corpus: ordinary documents of a few pages, two long ones with charts, one
encrypted with a user password, one truncated download and one file that is no PDF.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

UNREADABLE = ("encrypted.pdf", "truncated.pdf", "notes.pdf")


def extract_text(item: dict[str, Any]) -> dict[str, Any]:
    import logging

    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = pypdf.PdfReader(item["path"])
    chars = sum(len(page.extract_text() or "") for page in reader.pages)
    return {"path": item["path"], "pages": len(reader.pages), "chars": chars}


def write_corpus(directory: Path, seed: int = 2026) -> list[Path]:
    """31 files (28 readable), reproducible for a seed; returns their paths."""
    from fpdf import FPDF

    from oomguard.demo.corpus import TOPICS, write_document

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    for number in range(26):
        path = directory / f"doc-{number:03d}.pdf"
        write_document(path, rng, topics[number % len(topics)], pages=rng.randint(2, 12))
        _add_photo(path, rng)
    for number in range(2):
        pages = rng.randint(150, 220)
        write_document(directory / f"long-{number}.pdf", rng, topics[number], pages, images=8)
    locked = FPDF()
    locked.add_page()
    locked.set_font("helvetica", size=11)
    locked.multi_cell(0, 6, "Quarterly figures, not for circulation.")
    locked.set_encryption(owner_password="owner", user_password="reader")
    locked.output(str(directory / "encrypted.pdf"))
    whole = (directory / "doc-000.pdf").read_bytes()
    (directory / "truncated.pdf").write_bytes(whole[: len(whole) // 3])
    (directory / "notes.pdf").write_text("Meeting notes\n- this was never a PDF\n")
    return sorted(directory.iterdir())


def _add_photo(path: Path, rng: random.Random) -> None:
    """Append a page with a photograph-like (incompressible) image, as scanned or
    illustrated documents carry: 100-400 KB of file, never decoded by ``extract_text``."""
    import io

    import pypdf
    from fpdf import FPDF
    from PIL import Image

    side = rng.randint(180, 360)
    photo = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    page = FPDF()
    page.add_page()
    page.image(photo, w=150)
    writer = pypdf.PdfWriter(clone_from=path)
    writer.append(pypdf.PdfReader(io.BytesIO(bytes(page.output()))))
    writer.write(path)


def write_many(directory: Path, corpus: list[Path], count: int) -> list[Path]:
    """``count`` copies of the corpus's files, round robin (distinct files: a cold read each)."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for number in range(count):
        original = corpus[number % len(corpus)]
        copy = directory / f"{number:05d}-{original.name}"
        shutil.copyfile(original, copy)
        made.append(copy)
    return made
