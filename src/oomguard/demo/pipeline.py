"""The ingestion pipeline: read a PDF with pypdf, extract its text and images, chunk it.

``extract`` takes one item of a directory source (``{"path", "size"}``) and returns the
document for the knowledge base. Like many real pipelines it raises pypdf's decompression
limits, because its large scans exceed the 75 MB default — which is exactly how a
decompression bomb gets through, and why it runs under oomguard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHUNK_CHARS = 1000
OVERLAP = 100
LIMIT = 4 << 30  # large scans decode to GiBs


def chunk(text: str, size: int = CHUNK_CHARS, overlap: int = OVERLAP) -> list[str]:
    text = " ".join(text.split())
    if not text:
        return []
    step = size - overlap
    return [text[start : start + size] for start in range(0, max(1, len(text) - overlap), step)]


def extract(item: dict[str, Any]) -> dict[str, Any]:
    import logging

    import pypdf

    logging.getLogger("pypdf").setLevel(
        logging.ERROR
    )  # its warnings about broken files are ours to report

    path = Path(item["path"])
    with pypdf.apply_configuration(
        zlib_maximum_output_length=LIMIT,
        maximum_declared_stream_length=LIMIT,
        image_maximum_buffer_size=LIMIT,
        stream_decoding_work_maximum_length=LIMIT,
    ):
        reader = pypdf.PdfReader(path)
        texts = []
        images = 0
        for page in reader.pages:
            texts.append(page.extract_text() or "")
            for image in page.images:  # decoded, as an OCR or captioning step would
                images += len(image.data) > 0
    return {
        "path": str(path),
        "pages": len(reader.pages),
        "images": images,
        "chunks": chunk("\n".join(texts)),
    }
