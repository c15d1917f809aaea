"""A reproducible PDF corpus, written at run time (no binaries are committed).

Ordinary documents of a few pages; large ones (hundreds of pages, with images); and the
hostile ones an ingestion pipeline meets in the wild:

- ``bomb.pdf``: an image whose Flate stream is 3 MiB on disk and inflates to 3 GiB;
- ``huge-scan.pdf``: a legitimate scan whose decoded image needs more than the cap;
- ``truncated.pdf``: an ordinary document cut off half way (a broken download);
- ``notes.pdf``: not a PDF at all, only named like one.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOPICS = {
    "memory": "cgroup limit kernel oom killer resident pages swap pressure allocator",
    "ingestion": "pipeline batch document chunk parser extract flush knowledge base",
    "chemistry": "molecule transform reaction phenol methyl ether bloom filter parquet",
    "inference": "model server request context token gpu vram batch latency restart",
    "loadtest": "latency percentile histogram label rotation sampling throughput",
}
FILLER = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "at",
    "from",
    "or",
    "an",
    "which",
    "system",
    "data",
    "value",
    "result",
    "process",
    "time",
    "work",
    "file",
    "run",
    "job",
    "item",
    "user",
    "store",
]


@dataclass(frozen=True)
class Corpus:
    directory: Path
    ordinary: list[str]
    large: list[str]
    hostile: dict[str, str]  # file name -> what it is

    @property
    def survivable(self) -> list[str]:
        return self.ordinary + self.large


def _sentence(rng: random.Random, topic_words: list[str]) -> str:
    words = [
        rng.choice(topic_words if rng.random() < 0.3 else FILLER) for _ in range(rng.randint(8, 16))
    ]
    return " ".join(words).capitalize() + "."


def write_document(path: Path, rng: random.Random, topic: str, pages: int, images: int = 0) -> None:
    from fpdf import FPDF

    words = TOPICS[topic].split()
    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_font("helvetica", size=11)
    for page in range(pages):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 14)
        pdf.cell(0, 10, f"{topic.title()} notes, page {page + 1}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        paragraph = " ".join(_sentence(rng, words) for _ in range(rng.randint(6, 12)))
        pdf.multi_cell(0, 6, paragraph)
        if images and page % max(1, pages // images) == 0:
            pdf.image(_chart(rng), w=120)
    pdf.output(str(path))


def _chart(rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (480, 240), "white")
    draw = ImageDraw.Draw(image)
    for bar in range(12):
        height = rng.randint(20, 220)
        draw.rectangle(
            [20 + bar * 38, 240 - height, 48 + bar * 38, 238], fill=(40, 90 + bar * 10, 160)
        )
    return image


def _pdf_with_image(path: Path, width: int, height: int, stream: bytes, colours: str) -> None:
    """A one-page PDF whose page shows one Flate-encoded image XObject, written by hand."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /Im0 5 0 R >> >> >>",
    ]
    content = b"q 612 0 0 792 0 0 cm /Im0 Do Q"
    body = [b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"]
    offsets = []
    position = len(body[0])

    def add(data: bytes) -> None:
        nonlocal position
        offsets.append(position)
        chunk = f"{len(offsets)} 0 obj\n".encode() + data + b"\nendobj\n"
        body.append(chunk)
        position += len(chunk)

    for obj in objects:
        add(obj)
    add(f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream")
    add(
        f"<< /Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace /{colours} "
        f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(stream)} >>\nstream\n".encode()
        + stream
        + b"\nendstream"
    )
    xref = position
    table = [f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f \n".encode()]
    table += [f"{offset:010d} 00000 n \n".encode() for offset in offsets]
    trailer = (
        f"trailer\n<< /Size {len(offsets) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    path.write_bytes(b"".join(body) + b"".join(table) + trailer)


def zeros_deflate(size: int, block: int = 1 << 20) -> bytes:
    """A zlib stream that inflates to ``size`` zero bytes, built in milliseconds.

    One fully flushed deflate block of ``block`` zeros, repeated; the Adler-32 of n zero
    bytes is (n mod 65521) << 16 | 1, so nothing of ``size`` is ever held or hashed.
    """
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = raw.compress(bytes(block)) + raw.flush(zlib.Z_FULL_FLUSH)
    ending = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    adler = ((size % 65521) << 16) | 1
    return b"\x78\xda" + unit * (size // block) + ending + struct.pack(">I", adler)


def write_bomb(path: Path, inflated: int = 3 << 30) -> None:
    side = int((inflated // 3) ** 0.5)
    _pdf_with_image(path, side, side, zeros_deflate(side * side * 3), "DeviceRGB")


def write_huge_scan(path: Path, width: int = 16000, height: int = 16000) -> None:
    """A legitimate scan (an RGB gradient): 5 MiB on disk, 730 MiB decoded, more to process.

    Built like :func:`zeros_deflate`: one flushed deflate block per (identical) row.
    """
    row = bytes(
        channel
        for x in range(width)
        for channel in ((x * 255) // width, 128, 255 - (x * 255) // width)
    )
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    unit = raw.compress(row) + raw.flush(zlib.Z_FULL_FLUSH)
    ending = zlib.compressobj(6, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(row, adler)
    stream = b"\x78\x9c" + unit * height + ending + struct.pack(">I", adler)
    _pdf_with_image(path, width, height, stream, "DeviceRGB")


def generate(directory: Path, *, ordinary: int = 24, large: int = 2, seed: int = 2026) -> Corpus:
    """Write the corpus into ``directory`` (reproducible for a given seed)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # noqa: S311 - a reproducible corpus, not cryptography
    topics = sorted(TOPICS)
    ordinary_names = []
    for number in range(ordinary):
        name = f"doc-{number:03d}.pdf"
        write_document(directory / name, rng, topics[number % len(topics)], pages=rng.randint(2, 6))
        ordinary_names.append(name)
    large_names = []
    for number in range(large):
        name = f"large-{number}.pdf"
        write_document(
            directory / name,
            rng,
            topics[number % len(topics)],
            pages=rng.randint(150, 220),
            images=8,
        )
        large_names.append(name)
    write_bomb(directory / "bomb.pdf")
    write_huge_scan(directory / "huge-scan.pdf")
    whole = (directory / ordinary_names[0]).read_bytes()
    (directory / "truncated.pdf").write_bytes(whole[: len(whole) // 2])
    (directory / "notes.pdf").write_text("Meeting notes\n- this was never a PDF\n")
    return Corpus(
        directory,
        ordinary_names,
        large_names,
        {
            "bomb.pdf": "decompression bomb (3 MiB inflating to 3 GiB)",
            "huge-scan.pdf": "a scan whose decoded image needs more than the cap",
            "truncated.pdf": "truncated download",
            "notes.pdf": "not a PDF",
        },
    )
