"""Without root, the way people run it: a cgroup v2 subtree delegated to an unprivileged
user, as ``systemd-run --user --scope -p MemoryMax=1G -p Delegate=yes`` gives one (the
directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads owned by the
user). Made here by root, then a poison job runs in it as ``nobody``: the kernel enforces
its caps (not the watchdog), and ``oomguard doctor`` says so. cgroup v2 only (the v2 lane).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from oomguard.limits import CgroupLimiter
from oomguard.limits.cgroup import GROUP_PREFIX, SUPERVISOR_LEAF
from oomguard.limits.cgroupfs import kill_procs, remove_dir
from tests.conftest import require_version
from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import ROOT

NOBODY = 65534
MiB = 1024**2

# As the user, in the subtree: waits for "go" (root moves it in first), then what a user
# types: oomguard doctor, then a run; exits with the run's code.
AS_THE_USER = r"""
import subprocess, sys
work, source = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
oomguard = [sys.executable, "-m", "oomguard.cli"]
with open(f"{work}/doctor.json", "w") as out:
    subprocess.run([*oomguard, "doctor", "--json"], stdout=out, check=True)
run = subprocess.run([
    *oomguard, "run", sys.argv[3], "--input", source, "--output", f"{work}/out.jsonl",
    "--memory", "300m", "--workers", "2", "--batch-size", "2", "--run-dir", f"{work}/run",
    "--log-format", "quiet",
])
sys.exit(run.returncode)
"""


def delegate(directory: Path, uid: int, limit: int) -> None:
    """What systemd does for a delegated unit: the directory and the files that move
    processes and enable controllers become the user's."""
    directory.mkdir()
    (directory / "memory.max").write_text(str(limit))
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(directory / name, uid, uid)


def remove_tree(directory: Path) -> None:
    for child in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        kill_procs(child, timeout=10)
        remove_dir(child)
    kill_procs(directory, timeout=10)
    remove_dir(directory)


def test_a_poison_job_in_a_delegated_subtree_is_capped_by_the_kernel(
    cgroup_limiter: CgroupLimiter,
) -> None:
    require_version(cgroup_limiter, "v2")
    if os.geteuid() != 0:
        pytest.skip("making a delegated subtree for another user needs root")
    subtree = cgroup_limiter.base / f"{GROUP_PREFIX}{os.getpid()}-delegated"
    work = Path(tempfile.mkdtemp(prefix="oomguard-delegated-"))
    items = [{"kind": "grow", "mb": 8} for _ in range(20)]
    items[7] = {"kind": "grow", "mb": 4000}
    source = write_jsonl(work / "items.jsonl", items)
    for path in (work, source):
        os.chown(path, NOBODY, NOBODY)
    delegate(subtree, NOBODY, 1024 * MiB)
    env = {
        **os.environ,
        "HOME": str(work),
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    user = subprocess.Popen(
        [sys.executable, "-c", AS_THE_USER, str(work), str(source), WORK],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
    )
    try:
        assert user.stdout is not None and user.stdout.readline().strip() == "ready"
        (subtree / "cgroup.procs").write_text(str(user.pid))  # as systemd-run --scope does
        assert user.stdin is not None
        user.stdin.write("go\n")
        user.stdin.flush()
        assert user.wait(timeout=600) == 3  # finished, the poison quarantined
        doctor = json.loads((work / "doctor.json").read_text())
        assert doctor["running_as_root"] is False
        assert doctor["enforcement"] == "cgroup-v2"
        assert doctor["cgroup"]["writable"] and doctor["cgroup"]["delegated"]
        assert any("delegated to you" in line for line in doctor["plan"])
        summary = json.loads((work / "run/summary.json").read_text())
        assert summary["enforcement"] == "cgroup-v2"
        assert "delegated" in summary["enforcement_reason"]
        assert summary["counts"] == {"success": 19, "oom_killed": 1}
        outputs = [json.loads(line)["input_index"] for line in (work / "out.jsonl").open()]
        counts = collections.Counter(outputs)
        assert set(counts) == set(range(20)) - {7} and set(counts.values()) == {1}
        quarantined = [json.loads(line) for line in (work / "run/quarantine.jsonl").open()]
        assert [(q["input_index"], q["status"]) for q in quarantined] == [(7, "oom_killed")]
        assert quarantined[0]["evidence"]["enforcer"] == "cgroup-v2"
        assert (subtree / SUPERVISOR_LEAF).is_dir(), "the user's processes moved into a leaf"
    finally:
        if user.poll() is None:
            user.kill()
        user.wait()
        for stream in (user.stdin, user.stdout):
            if stream is not None:
                stream.close()
        remove_tree(subtree)
        shutil.rmtree(work)
