"""The "oomguard" joblib backend on real processes and cgroups: Parallel under a cap, a
poison call that fails as OomKilled while the rest finish."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomguard import OomKilled
from oomguard.limits import CgroupLimiter
from tests.executor import tasks

joblib = pytest.importorskip("joblib")
import oomguard.joblib  # noqa: E402, F401 - registers the backend

POISON_MB = 700  # more than the cap below


def test_parallel_runs_under_oomguard() -> None:
    with joblib.parallel_config(backend="oomguard", memory="512m"):
        results = joblib.Parallel(n_jobs=2)(joblib.delayed(tasks.square)(n) for n in range(50))
    assert results == [n * n for n in range(50)]


def test_poison_call_raises_oom_killed_after_the_rest(
    cgroup_limiter: CgroupLimiter, tmp_path: Path
) -> None:
    """joblib's error semantics kept: the poison call's OomKilled comes out of Parallel,
    after every survivable call finished (the poison item is retried alone, after the
    rest). Which results the generator yields before the error is joblib's race between its
    consumer and its callbacks (it raises an error as soon as it is recorded), so the calls
    say for themselves that they finished."""
    sizes = [8, 40, 16, 60, 8, 24, POISON_MB]
    calls = (
        joblib.delayed(tasks.allocate_noting)(i, mb, str(tmp_path)) for i, mb in enumerate(sizes)
    )
    seen = []
    with joblib.parallel_config(backend="oomguard", memory="320m"):
        results = joblib.Parallel(n_jobs=2, return_as="generator_unordered")(calls)
        with pytest.raises(OomKilled):
            for result in results:
                seen.append(result)
    survivable = list(range(len(sizes) - 1))
    assert sorted(int(path.name) for path in tmp_path.iterdir()) == survivable
    assert set(seen) <= set(survivable) and len(seen) == len(set(seen))


def test_lambda_travels_by_cloudpickle() -> None:
    with joblib.parallel_config(backend="oomguard"):
        results = joblib.Parallel(n_jobs=2)(joblib.delayed(lambda x: x + 1)(n) for n in range(5))
    assert results == [1, 2, 3, 4, 5]
