"""Percentiles in a fixed memory budget: oomguard's registry against hdrhistogram and ddsketch.

    python benchmarks/metrics_sketches.py [--quick]

1. memory per label (RSS growth over 1,000 labels of 1,000 latencies each, in a fresh process);
2. how far each gets towards 1,000,000 labels and 100,000,000 values inside a 1 GiB cgroup
   (run with `oomguard repro`; the others are OOM-killed where they end);
3. values per second, one at a time and in bulk;
4. the worst relative error at p50/p90/p99/p99.9 against exact quantiles, lognormal and Pareto;
5. A load tester's memory-targets table (safe configurations per RAM size) rebuilt for oomguard from the measured costs, one row
   checked by a simulated run.

hdrhistogram: 3 significant digits over 1 us .. 1 h; ddsketch: 1% relative accuracy
(DDSketch); oomguard: Registry(budget="32MiB", relative_accuracy=0.01) with 60 one-minute
windows, as the engine would configure it for a load tester.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HOUR_US = 3600 * 10**6
MiB = 2**20


def make(impl: str):  # type: ignore[no-untyped-def]
    if impl == "hdrhistogram":
        from hdrh.histogram import HdrHistogram

        return lambda: HdrHistogram(1, HOUR_US, 3)
    if impl == "ddsketch":
        from ddsketch import DDSketch

        return lambda: DDSketch(0.01)
    raise ValueError(impl)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def latencies(n: int, seed: int = 1) -> np.ndarray:
    # microseconds: lognormal around 20 ms with a heavy tail, clipped to 1 us .. 1 h
    return np.clip(np.random.default_rng(seed).lognormal(np.log(20_000), 1.5, n), 1, HOUR_US - 1)


# ---------------------------------------------------------------- child processes


def child_per_label(impl: str, labels: int, per_label: int) -> dict[str, float]:
    values = latencies(per_label).astype(np.int64).tolist()
    base = rss()
    if impl == "oomguard":
        from oomguard.metrics import Registry

        registry = Registry("1GiB", 0.01, windows=60)
        for label in range(labels):
            registry.record_many(f"scenario-{label}/step", values)
    else:
        factory = make(impl)
        store = {}
        for label in range(labels):
            sketch = store[f"scenario-{label}/step"] = factory()
            record = sketch.record_value if impl == "hdrhistogram" else sketch.add
            for value in values:
                record(value)
    return {"bytes_per_label": (rss() - base) / labels}


def child_grow(impl: str, labels: int, per_label: int) -> None:
    """Add labels of ``per_label`` values each, printing the count every 1,000 labels."""
    values_np = latencies(per_label)
    values = values_np.astype(np.int64).tolist()
    if impl == "oomguard":
        from oomguard.metrics import Registry

        registry = Registry("32MiB", 0.01, windows=60)
        for label in range(labels):
            registry.record_many(f"user-{label}", values_np)
            if label % 1000 == 0:
                print(label, registry.memory_bytes(), flush=True)
        print(labels, registry.memory_bytes(), flush=True)
        return
    factory = make(impl)
    store = {}
    for label in range(labels):
        sketch = store[f"user-{label}"] = factory()
        record = sketch.record_value if impl == "hdrhistogram" else sketch.add
        for value in values:
            record(value)
        if label % 1000 == 0:
            print(label, rss(), flush=True)
    print(labels, rss(), flush=True)


def run_child(
    *args: str, cap: str | None = None
) -> subprocess.CompletedProcess[str] | tuple[int, str]:
    command = [sys.executable, __file__, "--child", *args]
    if cap is None:
        return subprocess.run(command, capture_output=True, text=True, check=True)
    from oomguard.repro import reproduce
    from oomguard.sizes import parse_size

    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        result = reproduce(command, parse_size(cap), output_dir=Path(tmp))
        return result.exit_code, (Path(tmp) / "stdout.txt").read_text()


# ---------------------------------------------------------------- measurements in this process


def speeds(n: int) -> dict[str, tuple[float, float | None]]:
    from oomguard.metrics import Registry

    values_np = latencies(n)
    values = values_np.astype(np.int64).tolist()
    out: dict[str, tuple[float, float | None]] = {}
    registry = Registry("32MiB", 0.01, windows=60)
    start = time.perf_counter()
    for value in values:
        registry.record("x", value)
    single = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for chunk in np.array_split(values_np, max(1, n // 10_000)):
        registry.record_many("y", chunk)
    out["oomguard"] = (single, n / (time.perf_counter() - start))
    for impl in ("hdrhistogram", "ddsketch"):
        sketch = make(impl)()
        record = sketch.record_value if impl == "hdrhistogram" else sketch.add
        start = time.perf_counter()
        for value in values:
            record(value)
        out[impl] = (n / (time.perf_counter() - start), None)
    return out


def errors(n: int) -> list[tuple[str, str, dict[float, float]]]:
    from oomguard.metrics import QuantileSketch

    rng = np.random.default_rng(11)
    data = {
        "lognormal": np.clip(rng.lognormal(np.log(20_000), 1.5, n), 1, HOUR_US - 1),
        "pareto": np.clip((rng.pareto(1.2, n) + 1) * 1000, 1, HOUR_US - 1),
    }
    rows = []
    for name, values in data.items():
        ints = values.astype(np.int64)
        ordered = np.sort(ints)
        truth = {q: float(ordered[int(q * (n - 1))]) for q in (0.5, 0.9, 0.99, 0.999)}
        ours = QuantileSketch(0.01)
        ours.add_many(ints.astype(np.float64))
        hdr = make("hdrhistogram")()
        dd = make("ddsketch")()
        for value in ints.tolist():
            hdr.record_value(value)
            dd.add(value)
        for impl, estimate in (
            ("oomguard", ours.quantile),
            ("hdrhistogram", lambda q, h=hdr: h.get_value_at_percentile(q * 100)),
            ("ddsketch", dd.get_quantile_value),
        ):
            rows.append((impl, name, {q: abs(estimate(q) - t) / t for q, t in truth.items()}))
    return rows


def targets_table(per_label: dict[str, float]) -> list[list[str]]:
    """The load tester's targets: what percentile tracking costs per configuration."""
    from oomguard.metrics import Registry

    hdr_per_label = per_label["hdrhistogram"]
    rows = []
    # (RAM, tasks, RPS, duration, distinct labels): the seed's table; a label per scenario step
    for ram, tasks, rps, duration, labels in (
        ("512MB", 10, 500, "5m", 20),
        ("2GB", 100, 5_000, "30m", 200),
        ("4GB", 500, 10_000, "1h", 1_000),
        ("4GB", 200, 5_000, "24h", 400),
        ("8GB", 1_000, 25_000, "2h", 2_000),
        ("8GB", 500, 10_000, "24h", 1_000),
        ("4GB", 5_000, 50_000, "24h", 10_000),
    ):
        registry = Registry("32MiB", 0.01, windows=60)
        kept = min(labels, registry.max_labels)
        cpu = rps / 600_000  # cores, at the measured single-value rate
        rows.append(
            [
                ram,
                f"{tasks:,}",
                f"{rps:,}",
                duration,
                f"{labels:,}",
                f"{labels * hdr_per_label / MiB:,.0f} MiB",
                f"≤ 32 MiB ({kept:,} labels kept{'' if kept == labels else ', the rest in overflow'})",
                f"{cpu:.0%} of a core",
            ]
        )
    return rows


def simulated_check() -> tuple[float, int, int, int]:
    """One row for real: 400 labels, 5,000 values/s for a simulated 24 h (1-in-50 sampling),
    with a window ring sized for that many labels: 12 windows of 5 minutes (the last hour)."""
    from oomguard.metrics import Registry

    now = [0.0]
    registry = Registry(
        "32MiB", 0.01, windows=12, window_seconds=300, sample_every=50, clock=lambda: now[0]
    )
    rng = np.random.default_rng(5)
    peak = 0
    for minute in range(24 * 60):
        now[0] = minute * 60.0
        batch = np.clip(rng.lognormal(np.log(20_000), 1.5, 5_000 * 60), 1, HOUR_US - 1)
        for label, part in enumerate(np.array_split(batch, 400)):
            registry.record_many(f"scenario-{label}", part)
        peak = max(peak, registry.memory_bytes())
    return (
        peak / MiB,
        sum(registry.count(label) for label in registry.labels()),
        registry.budget,
        registry.dropped,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (for a smoke test)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, impl, labels, per_label = args.child
        if mode == "per-label":
            print(json.dumps(child_per_label(impl, int(labels), int(per_label))))
        else:
            child_grow(impl, int(labels), int(per_label))
        return

    quick = args.quick
    print(
        f"# metrics: oomguard vs hdrhistogram vs ddsketch, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    )
    per_label = {}
    print("\n| implementation | memory per label (1,000 values, RSS) |\n|---|---|")
    for impl in ("oomguard", "hdrhistogram", "ddsketch"):
        result = run_child("per-label", impl, "200" if quick else "1000", "1000")
        assert isinstance(result, subprocess.CompletedProcess)
        per_label[impl] = json.loads(result.stdout)["bytes_per_label"]
        print(f"| {impl} | {per_label[impl] / 1024:,.1f} KiB |")

    labels = 20_000 if quick else 1_000_000
    print(
        f"\n| implementation | towards {labels:,} labels x 100 values in a 1 GiB cgroup | exit | memory at the end |"
    )
    print("|---|---|---|---|")
    for impl in ("oomguard", "hdrhistogram", "ddsketch"):
        outcome = run_child("grow", impl, str(labels), "100", cap="1g")
        assert isinstance(outcome, tuple)
        code, out = outcome
        last = out.strip().splitlines()[-1].split() if out.strip() else ["0", "0"]
        done = int(last[0])
        what = "sketch bytes" if impl == "oomguard" else "RSS"
        state = "finished" if code == 0 else ("OOM-killed" if code == 137 else f"exit {code}")
        print(
            f"| {impl} | {done:,} labels, {done * 100:,} values | {state} | {int(last[1]) / MiB:,.1f} MiB {what} |"
        )

    print("\n| implementation | values/s, one at a time | values/s, bulk (numpy) |\n|---|---|---|")
    for impl, (single, bulk) in speeds(200_000 if quick else 1_000_000).items():
        print(f"| {impl} | {single:,.0f} | {f'{bulk:,.0f}' if bulk else 'n/a'} |")

    print("\n| implementation | data | p50 | p90 | p99 | p99.9 |\n|---|---|---|---|---|---|")
    for impl, name, errs in errors(200_000 if quick else 1_000_000):
        print(
            f"| {impl} | {name} | "
            + " | ".join(f"{errs[q]:.3%}" for q in (0.5, 0.9, 0.99, 0.999))
            + " |"
        )

    print("\n## A load tester's memory targets, rebuilt\n")
    print(
        "| RAM | tasks | RPS | duration | labels | HDR histograms | oomguard registry | CPU for recording |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in targets_table(per_label):
        print("| " + " | ".join(row) + " |")
    if not quick:
        peak, counted, budget, dropped = simulated_check()
        print(
            f"\nSimulated check (4GB / 200 tasks / 5,000 RPS / 24 h / 400 labels, 12 x 5 min windows, 1-in-50 sampling): "
            f"{counted:,} values counted exactly, registry peak {peak:.1f} MiB of its {budget / MiB:.0f} MiB budget, "
            f"{dropped:,} values kept out of full sketches by the budget (windows first)."
        )


if __name__ == "__main__":
    main()
