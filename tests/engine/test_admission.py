"""Memory-aware admission, AIMD, worker hygiene and group restarts, for real where it matters."""

from __future__ import annotations

import collections
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from oomguard.engine.admission import Admission, AdmissionConfig, CostModel
from oomguard.engine.aimd import Aimd
from oomguard.engine.runaways import smaller_to_stop
from oomguard.limits import CgroupLimiter
from oomguard.memory.kernel_log import read_kernel_log
from tests.conftest import require_cgroups
from tests.engine.conftest import manifest

MiB = 1024**2


def test_admission_keeps_known_size_items_under_the_target(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    items = [{"kind": "hold", "mb": 110, "seconds": 0.3} for _ in range(16)]
    admitted, _ = run_job(items, memory="500m", workers=4, batch_size=1)
    free, _ = run_job(items, name="free", memory="500m", workers=4, batch_size=1, admission=False)
    assert admitted.succeeded == free.succeeded == 16
    cap = 500
    # with admission the job stays near its 80% target; without it, four 100 MiB items at once
    assert admitted.summary["peak_cgroup_mb"] <= 0.85 * cap, admitted.summary["peak_cgroup_mb"]
    assert free.summary["peak_cgroup_mb"] > 0.85 * cap, free.summary["peak_cgroup_mb"]
    assert admitted.summary["admission"]["cost_observations"] >= 3


def test_cost_model_uses_a_high_quantile_per_item_and_per_byte() -> None:
    model = CostModel(0.95)
    assert model.predict(10, 1000) is None
    for _ in range(50):
        model.observe(10, 1000, 10 * MiB)  # 1 MiB per item
    model.observe(10, 1000, 10_000 * MiB)  # one outlier does not move a 95% quantile much
    assert model.predict(10, 1000) == pytest.approx(10 * MiB, rel=0.05)
    for _ in range(50):
        model.observe(1, 100 * MiB, 200 * MiB)  # big inputs cost 2x their size
    assert model.predict(1, 100 * MiB) >= 190 * MiB


def test_unknown_items_start_conservative_then_tighten() -> None:
    admission = Admission(AdmissionConfig(warmup_batches=3, unknown_share=0.25), budget=1000 * MiB)
    assert admission.predict(10, 0) == 250 * MiB
    for _ in range(2):
        admission.costs.observe(10, 0, 10 * MiB)
    assert admission.predict(10, 0) == 250 * MiB  # still warming up
    admission.costs.observe(10, 0, 10 * MiB)
    assert admission.predict(10, 0) < 20 * MiB
    assert admission.admits(700 * MiB, 90 * MiB, in_flight=2)
    assert not admission.admits(750 * MiB, 90 * MiB, in_flight=2)
    assert admission.admits(10_000 * MiB, 90 * MiB, in_flight=0)  # one batch may always run


def test_a_workers_warm_up_is_learned_apart_from_the_cost_of_a_batch() -> None:
    """A first batch that loads a library (kept for good) teaches the warm-up; a warm
    worker's next batch is predicted at what the work itself needs, a fresh one at both."""
    from oomguard.engine.items import Batch, Item

    admission = Admission(AdmissionConfig(warmup_batches=1), budget=1000 * MiB)
    batch = Batch([Item(i, {}, 0) for i in range(10)])
    admission.learn(batch, 45 * MiB, retained=40 * MiB, first=True)
    admission.learn(batch, 5 * MiB, retained=1 * MiB, first=False)
    warm, fresh = admission.predict_batch(batch), admission.predict_batch(batch, warm=False)
    assert 4 * MiB <= warm <= 6 * MiB  # not the 45 MiB the first batch needed
    assert fresh >= warm + 39 * MiB
    admission.learn(batch, 3 * MiB, retained=8 * MiB, first=True)  # retained past the cost
    assert admission.costs.warmup() <= 40 * MiB + 2 * MiB  # the sketch's 2 MiB resolution


@pytest.mark.cgroups
@pytest.mark.timeout(120)
def test_a_warm_up_kept_by_each_worker_does_not_keep_the_second_one_idle(run_job) -> None:
    """Each worker keeps 80 MiB after its first item (a library it loaded); under a 256 MiB
    cap both warm workers fit side by side (2 x ~90 MiB), but predicted at the first
    items' cost every later item would need 80 MiB more and only one would ever run."""
    require_cgroups()
    items = [{"kind": "warm", "warm_mb": 80, "seconds": 0.1, "value": i} for i in range(24)]
    result, out = run_job(items, memory="256m", workers=2, batch_size=1)
    assert sorted(line["result"]["value"] for line in out) == list(range(24))
    attempts = sorted(manifest(result.run_dir), key=lambda a: a["start"])
    later = attempts[4:]  # both workers warm, the cost model past its first batches
    overlaps = [
        (a, b)
        for a, b in itertools.combinations(later, 2)
        if a["worker_pid"] != b["worker_pid"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlaps, [(a["worker_pid"], a["start"], a["end"]) for a in later]
    assert result.summary["peak_working_set_mb"] < 0.95 * 256


def test_each_kind_of_item_has_its_own_cost() -> None:
    """An executor's tasks of two functions: the small one is not admitted at the big one's
    cost, nor the big one at the small one's."""
    from oomguard.engine.items import Batch, Item

    admission = Admission(
        AdmissionConfig(warmup_batches=3, unknown_share=0.25, sequential=True), 1000 * MiB
    )
    big, small = (Batch([Item(0, None, 100, kind=kind)]) for kind in ("big", "small"))
    for _ in range(5):
        admission.learn(big, 300 * MiB)
        admission.learn(small, 2 * MiB)
    assert admission.predict_batch(big) >= 290 * MiB
    assert admission.predict_batch(small) <= 3 * MiB
    assert admission.predict_batch(Batch([Item(0, None, 100, kind="new")])) == 250 * MiB
    assert admission.observed == 10


def test_pause_and_resume_have_hysteresis() -> None:
    admission = Admission(
        AdmissionConfig(target=0.80, high_water=0.85, psi_some_avg10=40), budget=1000
    )
    assert admission.update_pause(700, 0.0) is None
    assert admission.update_pause(860, 0.0) == "pause"
    assert admission.update_pause(820, 0.0) is None  # between target and high water: still paused
    assert admission.paused
    assert admission.update_pause(790, 0.0) == "resume"
    assert admission.update_pause(500, 55.0) == "pause"  # memory stalls pause too
    assert admission.update_pause(500, 50.0) is None
    assert admission.update_pause(500, 5.0) == "resume"
    assert admission.pauses == 2


def test_a_per_item_function_needs_what_its_biggest_item_needs() -> None:
    from oomguard.engine.items import Batch, Item

    def items(sizes: list[int]) -> Batch:
        return Batch([Item(i, None, size) for i, size in enumerate(sizes)])

    sequential = Admission(AdmissionConfig(sequential=True, warmup_batches=1), 1000 * MiB)
    batched = Admission(AdmissionConfig(warmup_batches=1), 1000 * MiB)
    for admission in (sequential, batched):
        admission.learn(items([100] * 10), 50 * MiB)  # ten items, 50 MiB over the start
    # one at a time: a longer batch of such items still needs about 50 MiB ...
    assert sequential.predict_batch(items([100] * 40)) == pytest.approx(50 * MiB, rel=0.05)
    # ... while a batched function holds them all at once: 5 MiB each
    assert batched.predict_batch(items([100] * 40)) == pytest.approx(200 * MiB, rel=0.05)
    # by bytes, the sequential model looks at the largest item, not the sum
    assert sequential.predict_batch(items([100, 400])) == pytest.approx(200 * MiB, rel=0.05)


def test_aimd() -> None:
    aimd = Aimd(ceiling=8, step_after=2)
    assert [aimd.decrease(), aimd.decrease(), aimd.decrease(), aimd.decrease()] == [4, 2, 1, 1]
    assert [aimd.success() for _ in range(4)] == [1, 2, 2, 3]


def test_aimd_grows_one_step_per_round_of_the_limit() -> None:
    aimd = Aimd(ceiling=4)
    aimd.decrease()
    aimd.decrease()
    # at limit 1 one success steps up; at 2, two; at 3, three (TCP's +1 per window)
    assert [aimd.success() for _ in range(6)] == [2, 2, 3, 3, 3, 4]
    assert aimd.success() == 4  # never past the ceiling


def test_aimd_cuts_once_per_event() -> None:
    aimd = Aimd(ceiling=8)
    first, second = aimd.ticket(), aimd.ticket()  # two batches in flight under limit 8
    assert aimd.decrease(first) == 4
    assert aimd.decrease(second) is None  # it ran under the old limit: the same event
    later = aimd.ticket()  # started under limit 4
    assert aimd.decrease(later) == 2


def test_an_oom_from_too_much_at_once_lowers_the_in_flight_limit(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # each item fits alone, two at once do not: the first kill halves the in-flight limit
    items = [{"kind": "hold", "mb": 230, "seconds": 0.3} for _ in range(4)]
    result, lines = run_job(items, memory="400m", workers=2, batch_size=1, admission=False)
    assert sorted(line["input_index"] for line in lines) == [0, 1, 2, 3]
    assert result.quarantined == []
    events = [e for e in result.summary["events"] if e["event"] == "concurrency"]
    assert events and events[0]["in_flight_limit"] == 1
    assert result.summary["cgroup_events"]["oom_kill"] >= 1


def test_a_poison_item_does_not_lower_the_limit(cgroup_limiter: CgroupLimiter, run_job) -> None:
    items = [{"kind": "grow", "mb": 10} for _ in range(8)]
    items[3] = {"kind": "grow", "mb": 2000}
    result, _ = run_job(items, memory="400m", workers=2, batch_size=1)
    assert [q["status"] for q in result.quarantined] == ["oom_killed"]
    assert not [e for e in result.summary["events"] if e["event"] == "concurrency"]


def test_a_leaking_worker_is_recycled(run_job) -> None:
    items = [{"kind": "leak", "mb": 40} for _ in range(12)]
    result, lines = run_job(items, workers=1, batch_size=1, memory="1g", recycle_rss_growth="100m")
    assert sorted(line["input_index"] for line in lines) == list(range(12))
    recycles = [e for e in result.summary["events"] if e["event"] == "recycle"]
    manifest_events = [
        e for e in json.loads((result.run_dir / "ingest_manifest.json").read_text()) if "event" in e
    ]
    assert [e["event"] for e in manifest_events].count("recycle") == len(
        recycles
    )  # in the manifest too
    assert result.summary["recycled_workers"] == len(recycles) >= 2
    assert "RSS grew" in recycles[0]["reason"]
    # a fresh worker starts from nothing: no result ever saw more than ~4 items' leak
    assert max(line["result"]["leaked_mb"] for line in lines) <= 160


def test_recycle_after_n_batches_and_trim_after_each(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(12)]
    result, lines = run_job(items, workers=1, batch_size=2, max_batches_per_worker=2)
    assert len(lines) == 12
    assert result.summary["recycled_workers"] == 3  # after batches 2, 4 and 6 of one worker
    assert result.summary["malloc_trims"] == 6  # glibc here: malloc_trim(0) after every batch


def group_items(tmp_path: Path, holders: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``holders`` members holding 5 MiB until the kernel decides, and the poison that grows
    past the cap once all of them hold (workloads.group_member)."""
    fifos = [tmp_path / f"holder-{n}" for n in range(holders)]
    for fifo in fifos:
        os.mkfifo(fifo)
    members = [
        {"kind": "member", "role": "holder", "mb": 5, "fifo": str(fifo), "marker": f"{fifo}.m"}
        for fifo in fifos
    ]
    poison = {
        "kind": "member",
        "role": "poison",
        "mb": 2000,
        "fifos": [str(f) for f in fifos],
        "marker": str(tmp_path / "poison.m"),
    }
    return members, poison


def test_group_restart_requeues_every_members_batch(
    cgroup_limiter: CgroupLimiter, run_job, tmp_path: Path
) -> None:
    """cgroup v2: memory.oom.group, the kernel kills them all; v1: the engine kills the rest."""
    (first, second), poison = group_items(tmp_path, 2)
    items = [first, second, poison] + [{"kind": "hold", "mb": 5, "seconds": 0.1}] * 6
    result, lines = run_job(
        items, memory="400m", workers=3, batch_size=1, group=True, admission=False
    )
    counts = collections.Counter(line["input_index"] for line in lines)
    assert set(counts) == set(range(9)) - {2} and set(counts.values()) == {1}
    assert result.summary["group_restarts"] == 1
    group_kills = [a for a in manifest(result.run_dir) if a["status"] == "worker_crash"]
    assert sorted(a["input_indices"][0] for a in group_kills) == [0, 1]
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(2, "oom_killed")]
    if cgroup_limiter.version == "v2":  # the kernel took the group (memory.oom.group)
        assert result.summary["cgroup_events"]["job_oom_group_kill"] == 1


def test_a_group_restart_runs_again_only_what_its_members_had_not_reported(
    cgroup_limiter: CgroupLimiter, run_job, tmp_path: Path
) -> None:
    # each member has reported its first item (done after the 0.5 s a group of results
    # waits) when the poison, first in the middle batch, reaches the cap
    (first, second), poison = group_items(tmp_path, 2)
    hold = {"kind": "hold", "mb": 5, "seconds": 0.6}
    items = [hold, first, poison, {"kind": "ok", "value": 3}, hold, second]
    result, lines = run_job(
        items, memory="400m", workers=3, batch_size=2, group=True, admission=False
    )
    counts = collections.Counter(line["input_index"] for line in lines)
    assert set(counts) == set(range(6)) - {2} and set(counts.values()) == {1}
    restarted = [a for a in manifest(result.run_dir) if a["status"] == "worker_crash"]
    assert sorted(a["items_done"] for a in restarted) == [1, 1], restarted
    assert [q["input_index"] for q in result.quarantined] == [2]


def test_batch_sizer_grows_on_fast_batches_with_memory_to_spare_and_shrinks_on_slow_ones() -> None:
    from oomguard.engine.batch_size import BatchSizer

    sizer = BatchSizer(start=10, low=2, high=64, seconds=0.5, enabled=True)
    assert sizer.after_batch(10, 0.05, plentiful=True) == 20
    assert sizer.after_batch(20, 0.05, plentiful=False) is None  # memory is not plentiful
    assert sizer.after_batch(5, 0.05, plentiful=True) is None  # a partial batch says nothing
    assert [sizer.after_batch(sizer.size, 0.01, True) for _ in range(3)] == [40, 64, None]
    assert sizer.after_batch(64, 2.5, plentiful=True) == 32  # over 4 x 0.5 s: halve
    # memory: cut to what fits the room, never under the floor
    assert sizer.fitting(per_item=10 * MiB, room=100 * MiB) == 10
    assert sizer.fitting(per_item=10 * MiB, room=0) == 2
    assert sizer.fitting(per_item=None, room=0) == 32  # nothing learned yet
    fixed = BatchSizer(start=10)
    assert fixed.after_batch(10, 0.01, True) is None and fixed.fitting(10 * MiB, 0) == 10
    # the last 50 items over 4 workers: 7 each (half a share: items differ in length), not
    # one batch of 32 and idle workers
    assert sizer.share(32, remaining=50, workers=4) == 7
    assert sizer.share(32, remaining=3, workers=4) == 2  # never under the floor
    assert fixed.share(10, remaining=50, workers=4) == 10


def test_adaptive_batches_grow_for_fast_items(run_job) -> None:
    items = [{"kind": "ok", "value": i} for i in range(3000)]
    result, lines = run_job(
        items, batch_size=4, adaptive_batch=True, max_batch_size=256, batch_seconds=2.0
    )
    assert sorted(line["input_index"] for line in lines) == list(range(3000))
    sizes = [len(entry["input_indices"]) for entry in manifest(result.run_dir)]
    assert sizes[0] == 4 and max(sizes) > 4 and max(sizes) <= 256
    growth = [e["batch_size"] for e in result.summary["events"] if e["event"] == "batch_size"]
    assert growth and growth == sorted(growth)


def test_adaptive_batches_shrink_to_a_share_of_the_items_left(run_job) -> None:
    # a source of known length: no batch takes more than an equal share of the items not
    # handed out yet, so the run ends on small batches, not one worker behind a big one
    items = [{"kind": "ok", "value": i} for i in range(3000)]
    result, lines = run_job(
        items, workers=2, batch_size=64, adaptive_batch=True, max_batch_size=256
    )
    assert sorted(line["input_index"] for line in lines) == list(range(3000))
    batches = sorted(manifest(result.run_dir), key=lambda entry: entry["batch_id"])
    sizes = [len(entry["input_indices"]) for entry in batches]
    assert max(sizes) == 256  # they grew
    left = 3000
    for size in sizes:
        assert size <= -(-left // 2), sizes
        left -= size
    assert left == 0 and sizes[-1] == 1


class CountsShort(list):  # type: ignore[type-arg]
    """A list whose len() says 10 whatever it holds: a source count that turns out wrong."""

    def __len__(self) -> int:
        return 10


def test_a_source_count_that_was_wrong_does_not_cap_batches(run_job) -> None:
    items = CountsShort({"kind": "ok", "value": i} for i in range(3000))
    result, lines = run_job(
        items, as_iterable=True, batch_size=64, adaptive_batch=True, max_batch_size=256
    )
    assert sorted(line["input_index"] for line in lines) == list(range(3000))
    batches = sorted(manifest(result.run_dir), key=lambda entry: entry["batch_id"])
    sizes = [len(entry["input_indices"]) for entry in batches]
    assert max(sizes[len(sizes) // 2 :]) > 64, sizes  # they grew past the count, not to 1


def test_adaptive_batches_shrink_to_the_memory_left(cgroup_limiter: CgroupLimiter, run_job) -> None:
    # a batched function holding 15 MiB per item a while: two full batches of 8 (120 MiB
    # each) fit the 320 MiB target, a third does not; the sizer cuts the third to what fits
    items = [{"kind": "grow", "mb": 15} for _ in range(72)]
    result, lines = run_job(
        items,
        function="tests.engine.workloads:work_batch_hold",
        batched=True,
        memory="400m",
        workers=3,
        batch_size=8,
        adaptive_batch=True,
        min_batch_size=1,
        max_batch_size=8,
    )
    assert sorted(line["input_index"] for line in lines) == list(range(72))
    attempts = manifest(result.run_dir)
    # the first three batches are admitted at the unknown cost (a quarter of the budget
    # each) and grow past it together: the runaway rule may stop all but one of them, to run
    # again after it; nothing else may fail
    assert all(a["status"] in ("success", "preempted") for a in attempts)
    assert result.summary["cgroup_events"]["oom_kill"] == 0
    succeeded = [a for a in attempts if a["status"] == "success"]
    assert any(len(a["input_indices"]) < 8 for a in succeeded[:-1])  # cut, not only the last


def test_a_kill_at_the_workers_own_cap_does_not_lower_the_limit(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # worker_memory caps each worker at 128 MiB inside a 1 GiB job: these items die at
    # their own cap with the job's memory to spare, which says nothing about concurrency
    items = [{"kind": "grow", "mb": 200}, {"kind": "ok", "value": 1}, {"kind": "grow", "mb": 200}]
    result, lines = run_job(items, memory="1g", worker_memory="128m", batch_size=1)
    assert [line["input_index"] for line in lines] == [1]
    assert sorted(q["input_index"] for q in result.quarantined) == [0, 2]
    assert all(q["evidence"]["at_worker_cap"] is True for q in result.quarantined)
    assert not [e for e in result.summary["events"] if e["event"] == "concurrency"]


CREEP = {"kind": "creep", "step_mb": 12, "step_seconds": 0.04}


def test_small_items_run_held_beside_a_runaway_which_is_still_quarantined_at_once(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # warm-up items teach the cost model; then a poison item creeps towards 900 MiB (past
    # the 600 MiB cap) while small items and one 150 MiB item come after it
    items = [{"kind": "hold", "mb": 4, "seconds": 0.02} for _ in range(6)]
    items.append({**CREEP, "mb": 900})
    items += [{"kind": "hold", "mb": 4, "seconds": 0.05} for _ in range(12)]
    items.append({"kind": "hold", "mb": 150, "seconds": 0.05})  # more than the side room
    items += [{"kind": "hold", "mb": 4, "seconds": 0.05} for _ in range(12)]
    poison, big = 6, 19
    result, lines = run_job(items, memory="600m", workers=3, batch_size=1, side_lane=True)
    assert sorted(line["input_index"] for line in lines) == sorted(set(range(32)) - {poison})
    assert [(q["input_index"], q["status"]) for q in result.quarantined] == [(poison, "oom_killed")]
    attempts = manifest(result.run_dir)
    # killed beside held work, the poison still died holding nearly all the budget: one
    # kernel kill, quarantined at its first death, and no other item was ever killed
    killed = [a for a in attempts if a["status"] == "oom_killed"]
    assert [a["input_indices"] for a in killed] == [[poison]]
    assert killed[0]["side"] is False
    side = [a for a in attempts if a["side"]]
    assert any(a["status"] == "success" for a in side)
    assert result.summary["side_lane"]["batches"] == len(side)
    # the big item stalled at its ceiling and waited there, holding what it had, until the
    # poison was gone; then it went on where it stopped: one attempt, nothing run twice
    big_attempts = [(a["status"], a["side"]) for a in attempts if a["input_indices"] == [big]]
    assert big_attempts == [("success", True)]
    assert result.summary["side_lane"]["stalled"] >= 1
    assert not any(a["status"] == "preempted" for a in side)
    lanes = [e for e in result.summary["events"] if e["event"] == "side_lane"]
    assert lanes and lanes[0]["open"] is True and lanes[-1]["open"] is False


def test_two_runaways_together_go_one_at_a_time(cgroup_limiter: CgroupLimiter, run_job) -> None:
    # two poison items start together; growing side by side, each would die short of the
    # whole budget: one is stopped and run again after the other, and each dies alone once
    items = [{"kind": "hold", "mb": 4, "seconds": 0.02} for _ in range(4)]
    items += [{**CREEP, "mb": 900}, {**CREEP, "mb": 900}]
    result, lines = run_job(items, memory="600m", workers=2, batch_size=1)
    assert sorted(line["input_index"] for line in lines) == [0, 1, 2, 3]
    assert sorted((q["input_index"], q["status"]) for q in result.quarantined) == [
        (4, "oom_killed"),
        (5, "oom_killed"),
    ]
    attempts = manifest(result.run_dir)
    killed = sorted(a["input_indices"][0] for a in attempts if a["status"] == "oom_killed")
    assert killed == [4, 5]  # one kernel kill each: neither died beside the other
    assert any(a["status"] == "preempted" for a in attempts)
    assert any(e["event"] == "runaway_preempted" for e in result.summary["events"])


def test_items_growing_together_past_the_target_within_their_predictions_go_one_at_a_time(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # warm-up items teach a cost of about 120 MiB; then four poison items, growing at about
    # 600 MiB/s each, fast enough that those admitted side by side reach the cap together
    # before any has passed its own prediction by the slack (the runaway test): the job's
    # usage past the target with several of them growing stops the smallest of them until
    # the rest are back under it, so each still dies alone, once (without this: five kills
    # or more here)
    items = [{"kind": "hold", "mb": 120, "seconds": 0.02} for _ in range(5)]
    items += [{**CREEP, "mb": 900, "step_seconds": 0.02} for _ in range(4)]
    poison = {5, 6, 7, 8}
    result, lines = run_job(items, memory="600m", workers=4, batch_size=1, side_lane=False)
    assert sorted(line["input_index"] for line in lines) == [0, 1, 2, 3, 4]
    assert {q["input_index"] for q in result.quarantined} == poison
    attempts = manifest(result.run_dir)
    killed = sorted(a["input_indices"][0] for a in attempts if a["status"] == "oom_killed")
    assert killed == sorted(poison)  # one kernel kill each, every one holding the budget
    assert all(a["peak_mb"] >= 0.9 * 540 for a in attempts if a["status"] == "oom_killed")
    assert any(e["event"] == "runaway_preempted" for e in result.summary["events"])


def test_runaways_stopped_for_another_run_one_at_a_time_after_it(
    cgroup_limiter: CgroupLimiter, run_job
) -> None:
    # three poison items start together: two are stopped for the one holding most. Each is
    # admitted again at what it reached, so both would fit side by side, and would grow into
    # each other before either looked like a runaway: they go one at a time
    items = [{**CREEP, "mb": 900} for _ in range(3)]
    result, lines = run_job(items, memory="600m", workers=3, batch_size=1)
    assert lines == []
    assert sorted(q["input_index"] for q in result.quarantined) == [0, 1, 2]
    attempts = manifest(result.run_dir)
    killed = sorted(a["input_indices"][0] for a in attempts if a["status"] == "oom_killed")
    assert killed == [0, 1, 2]  # one kernel kill each
    if read_kernel_log() is not None:  # the kernel's own words on each kill, where readable
        for entry in result.quarantined:
            assert any("Killed process" in line for line in entry["evidence"]["kernel_log"])
    stopped = {a["input_indices"][0] for a in attempts if a["status"] == "preempted"}
    assert len(stopped) >= 2
    # intake pauses as each one nears the cap and resumes once it is gone: it does not flap
    # between a fresh reading and a stale one (one pause per runaway, give or take)
    pauses = [e for e in result.summary["events"] if e["event"] == "pause"]
    assert len(pauses) <= 2 * len(killed)
    again = sorted(
        (a["start"], a["end"])
        for a in attempts
        if a["input_indices"][0] in stopped and a["status"] != "preempted"
    )
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(again))


def test_of_batches_growing_into_each_other_the_one_holding_most_goes_on() -> None:
    # all but the biggest are stopped, smallest first; with the job's usage, only as many as
    # bring it under the target
    readings = [("a", 150 * MiB), ("b", 300 * MiB), ("c", 200 * MiB)]
    assert smaller_to_stop(readings, None, 480 * MiB) == ("b", ["a", "c"])
    assert smaller_to_stop(readings, 620 * MiB, 480 * MiB) == ("b", ["a"])
    assert smaller_to_stop(readings, 470 * MiB, 480 * MiB) == ("b", [])
    # batches that started together grow alike: of equals one still goes on, the rest stop
    equals = [("a", 168 * MiB), ("b", 168 * MiB), ("c", 168 * MiB)]
    keep, stop = smaller_to_stop(equals, None, 480 * MiB)
    assert sorted([keep, *stop]) == ["a", "b", "c"] and len(stop) == 2
    keep, stop = smaller_to_stop(equals, 512 * MiB, 480 * MiB)
    assert len(stop) == 1 and keep not in stop


def test_runaway_side_room() -> None:
    budget = 1000 * MiB
    admission = Admission(AdmissionConfig(side_share=0.05, side_lane=True), budget)
    # a runaway: grown past its prediction by more than 5% of the budget
    assert not admission.over_prediction(140 * MiB, 10 * MiB, 100 * MiB)
    assert admission.over_prediction(170 * MiB, 10 * MiB, 100 * MiB)
    # and still growing: too young to say counts as growing; levelled off does not
    assert admission.still_growing(None) and admission.still_growing(40 * MiB)
    assert not admission.still_growing(2 * MiB)
    # side room: 5% of the budget in all, less what is held already, and half of it at
    # most for one batch (a stalled one leaves room for another)
    assert admission.side_room(0) == 25 * MiB
    assert admission.side_room(30 * MiB) == 20 * MiB
    assert admission.side_room(40 * MiB) == 0  # under side_minimum (16 MiB): not worth it
    assert admission.crowded(800 * MiB) and not admission.crowded(700 * MiB)
    assert (
        Admission(AdmissionConfig(side_share=0.05), budget).side_room(0) == 25 * MiB
    )  # default on
    off = Admission(AdmissionConfig(side_lane=False), budget)
    assert off.side_room(0) == 0
