"""``bundle --redact`` leaks nothing: distinctive strings planted in every place they can
reach (a file name, a command, an environment token, a host name), real OOM kills, real
kernel lines, the real command; then every byte of the unzipped bundles is searched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from oomguard.limits import CgroupLimiter
from oomguard.memory.cgroups import detect_setup
from tests.engine.conftest import write_jsonl
from tests.helpers.cli import ROOT, cli_env, oomguard_argv

FILE = "zqfile7731"  # in input, output, run directory and argument names, and a failure
COMMAND = "zqcmd7731"  # a process's name in the kernel's OOM report
TOKEN = "zqtoken7731"  # an environment value, in an argument and an error message
HOST = "zqhost7731"  # the host name every command runs under

# a user's module that cannot be loaded: the run fails, naming a relative file
BROKEN = f"open('{FILE}.cfg')\n"
HOG = f"#!{sys.executable}\nimport sys\nhog = bytearray(300 * 1024 * 1024)\n"


def oomguard(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user types it, under the planted host name (its own UTS namespace)."""
    argv = ["unshare", "--uts", "sh", "-c", f'hostname {HOST} && exec "$@"', "sh"]
    return subprocess.run(
        [*argv, *oomguard_argv(*args)],
        cwd=cwd,
        # the workloads module is found from the repository; the user's from the directory
        env=cli_env(ZQ_TOKEN=TOKEN, PYTHONPATH=f"{os.environ.get('PYTHONPATH', '')}:{ROOT}"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def unzipped(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_redacted_bundles_hold_none_of_the_planted_strings(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("the host name is planted through a UTS namespace of its own: no unshare")
    project = tmp_path / "project"
    project.mkdir()
    items = [
        {"kind": "ok", "value": 1},
        {"kind": "named_grow", "comm": COMMAND, "mb": 600},  # killed by the kernel, named
        {"kind": "secret_error", "var": "ZQ_TOKEN", "file": f"{FILE}.csv"},
    ]
    write_jsonl(project / f"{FILE}.jsonl", items)
    ran = oomguard(
        project, "run", "tests.engine.workloads:work", "-i", f"{FILE}.jsonl",
        "-o", f"{FILE}-out.jsonl", "--run-dir", f"{FILE}-run", "--memory", "300m",
        "-w", "1", "--log-format", "quiet",
    )  # fmt: skip
    assert ran.returncode == 3, ran.stderr
    (project / "hog").write_text(HOG)
    (project / "hog").chmod(0o755)
    (project / COMMAND).symlink_to(project / "hog")  # the kernel names it by this name
    repro = oomguard(
        project, "repro", "--memory", "100m", "--output-dir", f"{FILE}-repro", "--",
        f"./{COMMAND}", f"--token={TOKEN}", f"{FILE}.jsonl",
    )  # fmt: skip
    assert repro.returncode == 137, repro.stderr
    (project / "broken.py").write_text(BROKEN)
    write_jsonl(project / "one.jsonl", [1])
    failed = oomguard(
        project, "run", "broken:f", "-i", "one.jsonl", "-o", "one-out.jsonl",
        "--run-dir", f"{FILE}-failed", "--log-format", "quiet",
    )  # fmt: skip
    assert failed.returncode == 2, failed.stderr
    summary = json.loads((project / f"{FILE}-failed" / "summary.json").read_text())
    assert FILE in summary["failure"]  # the relative name, which --redact must not keep

    planted = [FILE, COMMAND, TOKEN, HOST, "oomguard-"]
    setup = detect_setup()
    if setup.memory_dir is not None and setup.memory_dir != setup.memory_mount:
        planted.append(setup.memory_dir.name)  # the container's own cgroup, in every path
    for kind in ("run", "repro", "failed"):
        run_dir = f"{FILE}-{kind}"
        bundled = oomguard(project, "bundle", run_dir, "--redact", "-o", f"{kind}.zip")
        assert bundled.returncode == 0, bundled.stderr
        files = unzipped(project / f"{kind}.zip")
        for name, data in files.items():
            for secret in planted:
                assert secret.encode() not in data, (run_dir, name, secret)
        plain = oomguard(project, "bundle", run_dir, "-o", "plain.zip")
        assert plain.returncode == 0, plain.stderr
        everything = b"".join(unzipped(project / "plain.zip").values())
        assert FILE.encode() in everything  # the strings were there to leak

    # what a maintainer needs stays: statuses, counts, the shape of the kernel's report
    files = unzipped(project / "run.zip")
    quarantined = [json.loads(line) for line in files["quarantine.jsonl"].splitlines()]
    assert sorted(q["status"] for q in quarantined) == ["error", "oom_killed"]
    killed = next(q for q in quarantined if q["status"] == "oom_killed")
    assert any("Killed process" in line for line in killed["evidence"]["kernel_log"])
    assert json.loads(files["summary.json"])["counts"]["success"] == 1
    repro_files = unzipped(project / "repro.zip")
    assert b"invoked oom-killer" in repro_files["dmesg_excerpt.txt"]
    assert json.loads(repro_files["summary.json"])["oom_killed"] is True
