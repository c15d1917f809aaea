"""report.html and memory.png: rendered for real, and looked at by a real browser."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from oomguard import Job
from oomguard.errors import ConfigError
from oomguard.limits import CgroupLimiter
from oomguard.report import FIGURE_PIXELS, write_report
from oomguard.repro import reproduce
from tests.engine.conftest import WORK, write_jsonl

GREEDY = "x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))\n"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium here (.ci/run installs Debian's chromium)")


def screenshot(page: Path, target: Path, tmp_path: Path) -> None:
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome-profile'}",
            "--window-size=1280,1400",
            f"--screenshot={target}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


def test_repro_report_renders(cgroup_limiter: CgroupLimiter, tmp_path: Path) -> None:
    reproduce([sys.executable, "-c", GREEDY], 150 * 1024**2, output_dir=tmp_path / "run")
    page = write_report(tmp_path / "run")
    text = page.read_text()
    assert "OOM-killed" in text and "data:image/png;base64," in text
    image = matplotlib.image.imread(tmp_path / "run" / "memory.png")
    assert (image.shape[1], image.shape[0]) == FIGURE_PIXELS
    shot = tmp_path / "shot.png"
    screenshot(page, shot, tmp_path)
    rendered = matplotlib.image.imread(shot)
    assert rendered.shape[0] > 500 and rendered.shape[1] > 1000
    assert rendered[..., :3].std() > 0.05, "the page rendered blank"


def test_engine_run_report_has_the_batch_table(tmp_path: Path) -> None:
    items = [{"kind": "ok", "value": i} for i in range(20)] + [{"kind": "raise", "value": 99}]
    source = write_jsonl(tmp_path / "items.jsonl", items)
    result = Job(
        WORK,
        source=source,
        sink=tmp_path / "o.jsonl",
        run_dir=tmp_path / "run",
        workers=2,
        log_format="quiet",
    ).run()
    page = write_report(result.run_dir)
    text = page.read_text()
    assert (
        "Batch attempts by status" in text and "Quarantined items" in text and "bad item 99" in text
    )
    assert "<h2>Nodes</h2>" not in text and "<th>node</th>" not in text  # one machine: none
    shot = tmp_path / "shot.png"
    screenshot(page, shot, tmp_path)
    assert matplotlib.image.imread(shot)[..., :3].std() > 0.05


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        write_report(tmp_path)
