import json
import subprocess
import sys
from pathlib import Path

from oomguard.limits import CgroupLimiter
from oomguard.memory.budget import effective_budget
from oomguard.memory.cgroups import CgroupSetup
from oomguard.memory.system import read_system_memory
from tests.memory.test_cgroups import make_v2_tree

MiB = 1024**2

REPORT_BUDGET = r"""
import json, sys
sys.stdin.readline()
from oomguard.memory.budget import effective_budget
b = effective_budget()
print(json.dumps({"bytes": b.bytes, "kind": b.source.kind, "detail": b.source.detail}), flush=True)
"""


def test_budget_inside_a_capped_cgroup_is_the_cap(cgroup_limiter: CgroupLimiter) -> None:
    group = cgroup_limiter.create_group("budget", 300 * MiB)
    child = subprocess.Popen(
        [sys.executable, "-c", REPORT_BUDGET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        group.add_pid(child.pid)
        out, _ = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    report = json.loads(out)
    assert report["bytes"] == 300 * MiB
    assert report["kind"] == f"cgroup-{cgroup_limiter.version}"
    assert report["detail"] == group.path


def test_budget_never_exceeds_physical_memory() -> None:
    budget = effective_budget()
    assert 0 < budget.bytes <= read_system_memory().total
    assert budget.source in budget.candidates


def test_budget_from_v2_fixture_tree(tmp_path: Path) -> None:
    worker = make_v2_tree(tmp_path)
    budget = effective_budget(CgroupSetup("v2", "v2", worker, tmp_path))
    assert budget.bytes == 1024**3
    assert budget.source.kind == "cgroup-v2"
    assert budget.source.detail == str(tmp_path / "job")


RLIMIT_BUDGET = r"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (512 * 1024**2, resource.RLIM_INFINITY))
from oomguard.memory.budget import effective_budget
b = effective_budget()
print(b.bytes, b.source.kind)
"""


def test_rlimit_as_counts() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RLIMIT_BUDGET],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    size, kind = out.stdout.split()
    assert int(size) == 512 * MiB and kind == "rlimit_as"
