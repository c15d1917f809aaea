"""Every policy number of a job, in one place, with its default and why.

:class:`JobConfig` is what the Python API (:class:`oomguard.Job`), the CLI flags and the
``--config oomguard.toml`` file all fill in; the same keys in each.
"""

from __future__ import annotations

import math
import numbers
import os
import tomllib
import types
import typing
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError, OomguardWarning
from oomguard.limits.select_limiter import MODES
from oomguard.sizes import format_size, parse_size

DEFAULT_MEMORY_FRACTION = 0.90  # the job's cap, of the effective budget: the machine keeps 10%
# a cap below this cannot hold one worker's interpreter (the kernel refuses or kills at once)
MIN_MEMORY = 32 * 1024 * 1024
# more workers than this many per core only compete for the cores (and for memory): a
# larger number is clamped, with a warning, not refused, so a config file written for a
# bigger machine still runs here
MAX_WORKERS_PER_CORE = 8
LOG_FORMATS = ("auto", "rich", "plain", "json", "quiet")
LIMITERS = MODES  # how memory is enforced (limits/select_limiter.py)
START_METHODS = ("forkserver", "spawn")
BATCH_SECONDS = 0.5  # adaptive batching's aim on one machine
CLUSTER_BATCH_SECONDS = 2.0  # and on a cluster (BENCHMARKS.md, "On a Dask cluster")


@dataclass
class JobConfig:
    function: str
    batched: bool = False
    memory: int | None = None  # bytes for the whole job; None: 90% of the effective budget
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 10  # items per batch; with adaptive_batch, the first batch's size
    # batch size follows memory and time (engine/batch_size.py); a batch_size given
    # without it means that size, fixed (fixed_when_named)
    adaptive_batch: bool = True
    min_batch_size: int = 1  # adaptive bounds; the upper one lets items of a fraction of a
    # millisecond reach a batch of ~0.25 s, where the per-batch cost (a round trip, cgroup
    # reads, a manifest entry) stops showing: BENCHMARKS.md, "The defaults' speed"
    max_batch_size: int = 5000
    # adaptive: the batch duration aimed at; None: BATCH_SECONDS on one machine,
    # CLUSTER_BATCH_SECONDS on a cluster (aimed_batch_seconds)
    batch_seconds: float | None = None
    max_bytes: int = 5_000_000  # bytes per batch, by item size (the PDF ingestion's)
    # a partial batch waits at most this long for more items; 0: it goes as soon as a worker
    # is free with whatever is there (the executor's: a lone task never waits)
    max_wait_ms: int = 5000
    timeout: float | None = None  # seconds per batch attempt; None: no limit
    crash_retries: int = 2  # timeout / worker_crash retries before bisecting
    error_retries: int = 0  # exceptions in user code are not retried by default
    alone_fraction: float = 0.90  # a worker dying at >= this share of the budget died "alone"
    worker_memory: int | None = None  # optional cap per worker, inside the job's cap
    rlimit_as: int | None = (
        None  # optional RLIMIT_AS per worker: allocations past it raise MemoryError
    )
    sample_interval: float = 0.2  # memory_log.csv sampling period, seconds
    ordered: bool = False  # write results in input order
    limiter: str = "auto"  # auto | cgroup | watchdog
    log_format: str = "auto"  # auto | rich | plain | json | quiet
    parquet_buffer_bytes: int = 8 * 1024 * 1024  # the Parquet sink's buffer bound
    commit_interval: float = 0.25  # seconds between journal checkpoints (grouped commits)
    metrics_port: int | None = None  # serve Prometheus metrics on this port (off by default)
    metrics_addr: str = "127.0.0.1"  # and this address: loopback unless told otherwise
    backend: Any = None  # a BackendConfig (or its dict) for a model server the workers call
    # past one machine (oomguard/dask): a Dask scheduler's address, or local:N (a
    # LocalCluster of N nodes here); memory and workers are then each node's
    cluster: str | None = None
    # admission (engine/admission.py holds the policy; these are its knobs)
    admission: bool = True  # dispatch by predicted memory; False: every idle worker gets work
    target: float = 0.80  # predicted in-flight memory stays under this share of the job's cap
    high_water: float = 0.85  # real usage at this share pauses intake until back under target
    psi_threshold: float = 40.0  # or PSI memory "some avg10" (%) at this level pauses intake
    max_in_flight: int | None = None  # an upper cap on batches in flight [default: workers]
    side_lane: bool = True  # beside a runaway batch, idle cores run batches held at a ceiling
    # worker hygiene
    max_batches_per_worker: int | None = None  # recycle a worker after this many batches
    recycle_rss_growth: int = (
        256 * 1024 * 1024
    )  # or when its RSS grew this much over its first batch
    malloc_arena_max: int | None = (
        2  # MALLOC_ARENA_MAX for workers: fewer arenas, less fragmentation
    )
    malloc_trim_threshold: int | None = 128 * 1024  # MALLOC_TRIM_THRESHOLD_ for workers
    trim: bool = True  # malloc_trim(0) after each batch (glibc; skipped under jemalloc)
    # group semantics (model handlers in Kubernetes): an OOM kill of one worker restarts them all
    group: bool = False
    # how workers start: forked by a clean fork server (fast) or as fresh interpreters
    start_method: str = "forkserver"
    # where workers import the function from, as `oomguard run` finds a module in the
    # working directory [default: the working directory of the run's first session, kept
    # in the journal so a resume from anywhere imports the same code]
    import_path: str | None = None
    # a directory input's files: "*" (those directly in it) unless told, "**/*.pdf" recurses
    glob: str | None = None
    # the field of each item (a JSONL object, a CSV or Parquet row) that names it for a
    # person: shown beside input_index in progress, quarantine.jsonl, status and the report
    label_field: str | None = None

    def aimed_batch_seconds(self) -> float:
        """The batch duration adaptive batching aims at. On a cluster a batch is a Dask
        task, milliseconds more than a local pool's round trip (docs/scale.md): longer
        batches there keep that under a few percent of the work."""
        if self.batch_seconds is not None:
            return self.batch_seconds
        return CLUSTER_BATCH_SECONDS if self.cluster else BATCH_SECONDS

    def validate(self) -> None:
        """Refuse, in one line, any value of the wrong type or out of its range."""
        check_types(self)
        if ":" not in self.function:
            raise ConfigError(
                f"invalid function {self.function!r}: expected 'package.module:function'"
            )
        self._check_numbers()
        self._check_choices()
        if self.cluster is not None:
            self._check_cluster()
        from oomguard.backends.config import BackendConfig

        if isinstance(self.backend, dict):
            self.backend = BackendConfig.from_dict(self.backend)
        elif isinstance(self.backend, BackendConfig):
            self.backend.validate()
        elif self.backend is not None:
            raise ConfigError(
                f"invalid backend {self.backend!r}: expected a BackendConfig, or a table of its "
                "keys (command = [...], health_url = ...)"
            )

    def _check_numbers(self) -> None:
        for name in (*_POSITIVE, *(n for n in _POSITIVE_OR_NONE if getattr(self, n) is not None)):
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"invalid {name} {value!r}: expected a number above 0")
        for name in ("commit_interval", "psi_threshold", "malloc_trim_threshold", "max_wait_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"invalid {name} {value!r}: expected a number >= 0")
        for name in ("crash_retries", "error_retries"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"invalid {name} {value!r}: expected a whole number >= 0")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"invalid metrics_port {self.metrics_port!r}: expected a port from 0 to 65535"
            )
        if self.adaptive_batch and not self.min_batch_size <= self.max_batch_size:
            raise ConfigError(
                f"invalid min_batch_size {self.min_batch_size!r} / max_batch_size "
                f"{self.max_batch_size!r}: expected min_batch_size <= max_batch_size"
            )
        if self.worker_memory is not None and self.worker_memory < MIN_MEMORY:
            raise ConfigError(
                f"invalid worker_memory {format_size(self.worker_memory)}: below the "
                f"{format_size(MIN_MEMORY)} a worker needs at the least"
            )
        if not 0.0 < self.target <= self.high_water <= 1.0:
            raise ConfigError(
                f"invalid target {self.target!r} / high_water {self.high_water!r}: expected 0 < target <= high_water <= 1"
            )
        if not 0.0 < self.alone_fraction <= 1.0:
            raise ConfigError(f"invalid alone_fraction {self.alone_fraction!r}: expected (0, 1]")

    def _check_cluster(self) -> None:
        from oomguard.dask.address import parse_cluster

        parse_cluster(self.cluster or "")
        if self.backend is not None:
            raise ConfigError("a backend runs on one machine: it cannot be combined with cluster")

    def _check_choices(self) -> None:
        for name, choices in (
            ("start_method", START_METHODS),
            ("limiter", MODES),
            ("log_format", LOG_FORMATS),
        ):
            value = getattr(self, name)
            if value not in choices:
                raise ConfigError(f"invalid {name} {value!r}: expected one of {', '.join(choices)}")


_POSITIVE = (
    "workers",
    "batch_size",
    "min_batch_size",
    "max_batch_size",
    "max_bytes",
    "sample_interval",
    "parquet_buffer_bytes",
    "recycle_rss_growth",
)
_POSITIVE_OR_NONE = (
    "batch_seconds",
    "timeout",
    "memory",
    "worker_memory",
    "rlimit_as",
    "max_in_flight",
    "max_batches_per_worker",
    "malloc_arena_max",
)


def fit_workers(config: JobConfig, items_left: int | None) -> JobConfig:
    """``config`` with no more workers than items left (where known: a worker without an
    item is a process for nothing), nor than ``MAX_WORKERS_PER_CORE`` per core."""
    cores = os.cpu_count() or 1
    workers = config.workers
    ceiling = MAX_WORKERS_PER_CORE * cores
    if workers > ceiling:
        warnings.warn(
            OomguardWarning(
                f"workers {workers} is more than {MAX_WORKERS_PER_CORE} per core on this "
                f"machine's {cores} cores: running {ceiling}"
            ),
            stacklevel=3,
        )
        workers = ceiling
    if items_left is not None:
        workers = max(1, min(workers, items_left))
    return config if workers == config.workers else replace(config, workers=workers)


def check_types(config: JobConfig) -> None:
    """Every field holds a value of its declared type: a TOML ``batched = "yes"`` or
    ``workers = 2.5`` is refused, never read as something else."""
    hints = typing.get_type_hints(JobConfig)
    for item in fields(config):
        value = getattr(config, item.name)
        hint = hints[item.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if not any(_is_a(value, kind) for kind in allowed):
            expected = " or ".join(
                _WORDS.get(kind, getattr(kind, "__name__", "?")) for kind in allowed
            )
            raise ConfigError(f"invalid {item.name} {value!r}: expected {expected}")


_WORDS: dict[Any, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text",
    type(None): "nothing",
}


def _is_a(value: Any, kind: Any) -> bool:
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # True is an int to Python, never a count or a size to us
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is float:
        return isinstance(value, numbers.Real) and math.isfinite(value)
    return isinstance(value, kind)


SIZE_KEYS = (
    "memory",
    "max_bytes",
    "worker_memory",
    "parquet_buffer_bytes",
    "rlimit_as",
    "recycle_rss_growth",
    "malloc_trim_threshold",
)
CONFIG_KEYS = {f.name for f in fields(JobConfig)} | {"source", "sink", "input", "output", "run_dir"}


def normalise(values: dict[str, Any], budget: Any = None) -> dict[str, Any]:
    """Sizes as text become bytes; ``input``/``output`` are the CLI's names for source/sink."""
    out = dict(values)
    for key in SIZE_KEYS:
        if isinstance(out.get(key), str):
            out[key] = parse_size(out[key], budget=budget, what=key)
    return fixed_when_named(out)


def fixed_when_named(options: dict[str, Any]) -> dict[str, Any]:
    """The one home of the batching default: batch size adapts to memory and time unless
    the user names one (``batch_size`` given, ``adaptive_batch`` not), which then keeps
    its exact meaning: every batch that size."""
    if options.get("batch_size") is not None and options.get("adaptive_batch") is None:
        options["adaptive_batch"] = False
    if options.get("adaptive_batch") is None:
        options.pop("adaptive_batch", None)
    return options


def load_toml(path: Path) -> dict[str, Any]:
    """Read ``oomguard.toml`` (top level or a ``[job]`` table) with the same keys as the API."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file {str(path)!r} does not exist") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from err
    table = data.get("job", data)
    unknown = sorted(set(table) - CONFIG_KEYS - {"job"})
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key {unknown[0]!r}; expected one of "
            + ", ".join(sorted(CONFIG_KEYS))
        )
    return {k: v for k, v in table.items() if k != "job"}
