"""The public face of the engine: :class:`Job` and its :class:`RunResult`.

from oomguard import Job
result = Job("mypkg.ingest:process", source="items.jsonl", sink="out.jsonl",
             memory="6g", workers=8).run()
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from oomguard.engine.arrow_pool import is_parquet, system_arrow_pool
from oomguard.engine.artifacts import make_run_dir, open_private
from oomguard.engine.config import (
    JobConfig,
    fit_workers,
    normalise,
)
from oomguard.engine.default_cap import resolve_memory
from oomguard.engine.fork_server import ForkServer, boot, release
from oomguard.engine.function_spec import function_spec
from oomguard.engine.handles import worker_env
from oomguard.engine.output import OutputClaim, claim_output
from oomguard.engine.progress import make_progress
from oomguard.engine.quarantine import quarantine_line
from oomguard.engine.sinks import open_sink
from oomguard.engine.sources import Source, count_up_to, open_source
from oomguard.engine.stopping import disk_full, sigterm_stops_the_run, terminated
from oomguard.engine.supervisor import Supervisor
from oomguard.errors import ConfigError, Terminated
from oomguard.journal.fingerprint import describe_change, fingerprint, path_of
from oomguard.journal.lock import RunLock
from oomguard.journal.ranges import RangeSet
from oomguard.journal.store import JOURNAL_NAME, Checkpoint, Journal
from oomguard.limits.cgroup import CgroupLimiter, sweep_stale_groups
from oomguard.limits.process import protect_supervisor, read_oom_score_adj, set_oom_score_adj
from oomguard.limits.select_limiter import open_limiter
from oomguard.metrics.exporter import check_endpoint

EXIT_OK = 0
EXIT_QUARANTINED = 3
QUARANTINE_IN_RESULT = 1000  # the rest stay in quarantine.jsonl


@dataclass
class RunResult:
    """What a finished run did. Everything here is also in ``run_dir/summary.json``."""

    run_dir: Path
    counts: dict[str, int]
    quarantined: list[dict[str, Any]]
    peak_rss_mb: float | None
    peak_cgroup_mb: float
    duration_sec: float
    summary: dict[str, Any] = field(repr=False)

    @property
    def succeeded(self) -> int:
        return self.counts.get("success", 0)

    @property
    def exit_code(self) -> int:
        """0: every item done; 3: finished with quarantined items."""
        return EXIT_QUARANTINED if self.quarantined else EXIT_OK


class Job:
    """A batch job: a function over a source, results to a sink, under a memory cap."""

    def __init__(
        self,
        function: str | Callable[..., Any],
        source: Any,
        sink: Any = None,
        *,
        run_dir: str | Path | None = None,
        memory: str | int | None = None,
        overwrite: bool = False,
        **options: Any,
    ) -> None:
        """``overwrite``: a new run may replace an output that holds data already (else it
        is refused: engine/output.py)."""
        options = normalise(options)  # sizes may be given as text: "8MiB", "1g"
        # what `oomguard run` puts on sys.path; kept in the journal for every resume
        if options.get("import_path") is None:
            options["import_path"] = os.getcwd()
        elif isinstance(options["import_path"], os.PathLike):
            options["import_path"] = os.fspath(options["import_path"])
        self.function_spec = function_spec(function, options["import_path"])
        # absolute: a resume from another directory reads and writes the same files
        self.source_spec = _absolute(source)
        self.sink_spec = _absolute(sink)
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
        self.memory_spec = memory
        self.overwrite = overwrite
        try:
            self.config = JobConfig(function=self.function_spec, **options)
        except TypeError as err:
            raise ConfigError(f"invalid job option: {err}") from err
        self.config.validate()

    def resolve_memory(self) -> int:
        return resolve_memory(
            self.memory_spec,
            parquet=is_parquet(self.source_spec) or is_parquet(self.sink_spec),
            cluster=self.config.cluster,
        )

    def run(self, *, force: bool = False, only: RangeSet | None = None) -> RunResult:
        """Run to the end, or resume: a run directory with a journal carries on where it stopped.

        Configuration errors raise :class:`ConfigError` before any work. ``force`` resumes
        over a source that changed since the journal was started, or onto an output the
        journal does not recognise (engine/output.py); ``only`` limits the run
        to those input indices (``retry_quarantined``). SIGTERM stops the run as Ctrl-C
        does and raises :class:`~oomguard.errors.Terminated`; a full disk raises
        :class:`~oomguard.errors.DiskFullError` (engine/stopping.py).
        """
        memory = self.resolve_memory()
        source = open_source(
            self.source_spec, glob=self.config.glob, label_field=self.config.label_field
        )
        if self.config.metrics_port is not None:
            check_endpoint(self.config.metrics_addr, self.config.metrics_port)
        caller_oom_score_adj = read_oom_score_adj()
        protect_supervisor()  # before any child starts: children inherit oom_score_adj
        # first: the fork server's interpreter boots while the rest is set up (unless an
        # earlier job in this process left one idle)
        local = self.config.start_method == "forkserver" and self.config.cluster is None
        fork_server = boot(worker_env(self.config)) if local else None
        try:
            parquet = is_parquet(self.source_spec) or is_parquet(self.sink_spec)
            with sigterm_stops_the_run(), system_arrow_pool(parquet):
                return self._run(memory, source, fork_server, force, only)
        except Terminated:
            raise terminated(self.run_dir) from None
        finally:
            if isinstance(fork_server, ForkServer):
                release(fork_server)  # kept idle for the next job, or closed
            if caller_oom_score_adj is not None:
                # the caller's process goes on as it was: what it starts next must not
                # inherit -1000, which the kernel's OOM killer never picks
                set_oom_score_adj(caller_oom_score_adj)

    def _run(
        self,
        memory: int,
        source: Source,
        fork_server: ForkServer | OSError | None,
        force: bool,
        only: RangeSet | None,
    ) -> RunResult:
        lock: RunLock | None = None
        try:
            make_run_dir(self.run_dir)
            lock = RunLock(self.run_dir)
            lock.acquire()
            journal = Journal.open(self.run_dir)
            try:
                summary = self._run_journaled(journal, memory, source, fork_server, force, only)
            finally:
                journal.close()
        except BaseException as err:
            full = disk_full(err, self.run_dir, self.run_dir / JOURNAL_NAME)
            if full is not None:
                raise full from err
            raise
        finally:
            if lock is not None:
                lock.release()
        return load_result(self.run_dir, summary)

    def _run_journaled(
        self,
        journal: Journal,
        memory: int,
        source: Source,
        fork_server: ForkServer | OSError | None,
        force: bool,
        only: RangeSet | None,
    ) -> dict[str, Any]:
        new_run = journal.get_meta("function") is None
        if not new_run:
            self.check_same_job(journal)
        claim = self.claim_output(journal, new_run, force)
        try:
            done = self.check_journal(journal, force, new_run, claim)
            sink = open_sink(self.sink_path(), self.config.parquet_buffer_bytes)
            sink.recover(journal.tokens())
            rewrite_quarantine_file(journal, self.run_dir)
            config = self.fitted(source, done, only)
            record_session(journal, self, memory, config, new_run)
            progress = make_progress(config.log_format)
            run = (self.function_spec, memory, journal)
            if config.cluster is not None:  # the driver here, the batches on Dask nodes
                from oomguard.dask.driver import ClusterDriver

                driver = ClusterDriver(
                    config, source, sink, self.run_dir, progress, *run, done, only
                )
                summary = driver.run()
            else:
                limiter = open_limiter(config.limiter)  # type: ignore[arg-type]
                if isinstance(limiter, CgroupLimiter):
                    sweep_stale_groups(limiter.base)
                try:
                    supervisor = Supervisor(
                        config, source, sink, limiter, self.run_dir, progress, *run,
                        done=done, only=only, fork_server=fork_server,
                    )  # fmt: skip
                    summary = supervisor.run()
                finally:
                    limiter.close()
            journal.ensure_present()  # never report a finished run without its journal
            return summary
        finally:
            if claim is not None:
                claim.release()

    def sink_path(self) -> Any:
        """The sink as given (an absolute path, or an object), or the run's own results.jsonl."""
        if self.sink_spec is not None:
            return self.sink_spec
        return self.run_dir.resolve() / "results.jsonl"

    def claim_output(self, journal: Journal, new_run: bool, force: bool) -> OutputClaim | None:
        """Lock the output file for this run, refusing what would destroy data (output.py)."""
        target = path_of(self.sink_path())
        if target is None:
            return None  # a callable or a store of the user's: theirs to guard
        return claim_output(
            target,
            source=path_of(self.source_spec),
            run_dir=self.run_dir,
            new_run=new_run,
            overwrite=self.overwrite,
            recorded=journal.get_meta("output"),
            committed=journal.committed_count(),
            force=force,
        )

    def fitted(self, source: Source, done: RangeSet, only: RangeSet | None) -> JobConfig:
        """The configuration with no more workers than items left to run (nor than the
        machine can sensibly hold: config.fit_workers)."""
        if only is not None:
            left: int | None = len(only)
        else:
            counted = count_up_to(source, len(done) + self.config.workers)
            left = None if counted is None else max(0, counted - len(done))
        return fit_workers(self.config, left)

    def check_same_job(self, journal: Journal) -> None:
        """A journal of another job (another function, another output) is not ours to resume."""
        recorded = journal.get_meta("function")
        if recorded != self.function_spec:
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} belongs to a run of {recorded!r}, not "
                f"{self.function_spec!r}; use another --run-dir"
            )
        recorded_sink = journal.get_meta("sink")
        sink = path_of(self.sink_spec)
        if recorded_sink is not None and sink is not None and Path(recorded_sink) != sink:
            raise ConfigError(
                f"run directory {str(self.run_dir)!r} writes its results to {recorded_sink!r}, "
                f"not {str(sink)!r}: a run has one output"
            )

    def check_journal(
        self, journal: Journal, force: bool, new_run: bool, claim: OutputClaim | None
    ) -> RangeSet:
        """A new journal records the job; an old one must be of this input."""
        source_path = path_of(self.source_spec)
        current = fingerprint(source_path) if source_path is not None else None
        output = claim.identity if claim is not None else None
        if new_run:
            journal.set_metas(
                {
                    "function": self.function_spec,
                    "source": str(source_path) if source_path else None,
                    "sink": str(self.sink_spec) if path_of(self.sink_spec) else None,
                    "output": output,
                    "memory": self.memory_spec,
                    "config": asdict(self.config),
                    "fingerprint": current,
                    "created": time.time(),
                }
            )
            return RangeSet()
        old = journal.get_meta("fingerprint")
        if old is not None and current is not None:
            change = describe_change(old, current)
            if change is not None and not force:
                raise ConfigError(
                    f"the input {str(source_path)!r} changed since this run started ({change}); "
                    "resuming would mix two inputs. Use --force to resume anyway"
                )
            if change is not None:
                journal.set_meta("fingerprint", current)
        journal.set_meta("output", output)  # a file made afresh (nothing was committed to it)
        return journal.done_set()

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, **overrides: Any) -> Job:
        """The job recorded in a run directory's journal (for resume and retry)."""
        run_dir = Path(run_dir)
        if not Journal.exists(run_dir):
            raise ConfigError(f"{str(run_dir)!r} is not an oomguard run directory (no journal)")
        journal = Journal(run_dir / JOURNAL_NAME, read_only=True)
        try:
            function = journal.get_meta("function")
            source = journal.get_meta("source")
            sink = journal.get_meta("sink")
            memory = journal.get_meta("memory")
            config = dict(journal.get_meta("config") or {})
        finally:
            journal.close()
        if source is None:
            raise ConfigError(
                f"the run in {str(run_dir)!r} read a Python iterable: resume it from Python with "
                "Job(..., run_dir=...).run()"
            )
        config.pop("function", None)
        config.pop("memory", None)
        memory = overrides.pop("memory", None) or memory
        config.update(overrides)
        return cls(function, source=source, sink=sink, run_dir=run_dir, memory=memory, **config)

    @classmethod
    def resume(cls, run_dir: str | Path, *, force: bool = False, **overrides: Any) -> RunResult:
        return cls.from_run_dir(run_dir, **overrides).run(force=force)

    @classmethod
    def retry_quarantined(cls, run_dir: str | Path, **overrides: Any) -> RunResult:
        """Run the quarantined items again, on purpose (with more memory, say)."""
        job = cls.from_run_dir(run_dir, **overrides)
        lock = RunLock(Path(run_dir))  # no supervisor may be running on it meanwhile
        lock.acquire()
        try:
            journal = Journal.open(Path(run_dir))
            try:
                indices = [entry["input_index"] for entry in journal.quarantined()]
                journal.remove_quarantined(indices)
            finally:
                journal.close()
        finally:
            lock.release()
        only = RangeSet()
        for index in indices:
            only.add(index)
        return job.run(only=only)


def record_session(
    journal: Journal, job: Job, memory: int, config: JobConfig, new_run: bool
) -> None:
    """This session's settings, an event in the journal (and the manifest); a resume with
    another cap or number of workers (``resume --memory``) keeps them for the next one."""
    if not new_run:
        recorded = dict(journal.get_meta("config") or {})
        recorded["workers"] = job.config.workers
        journal.set_metas({"memory": job.memory_spec, "config": recorded})
    event = {
        "time": time.time(),
        "event": "session",
        "resumed": not new_run,
        "memory_mb": round(memory / 2**20, 1),
        "memory": job.memory_spec,
        "workers": config.workers,
    }
    journal.checkpoint(Checkpoint([], None, [], [], [event]))


def rewrite_quarantine_file(journal: Journal, run_dir: Path) -> None:
    """quarantine.jsonl as the journal has it (lines a crash left unjournaled vanish)."""
    with open_private(run_dir / "quarantine.jsonl") as out:
        for entry in journal.quarantined():
            out.write(quarantine_line(entry))


def _absolute(spec: Any) -> Any:
    """A path given as text or a Path, absolute and resolved; anything else as it is."""
    if isinstance(spec, str | os.PathLike):
        return Path(spec).resolve()
    return spec


def default_run_dir() -> Path:
    return Path("oomguard-runs") / time.strftime("%Y%m%d-%H%M%S")


def load_result(run_dir: Path, summary: dict[str, Any]) -> RunResult:
    quarantined: list[dict[str, Any]] = []
    path = run_dir / "quarantine.jsonl"
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if len(quarantined) >= QUARANTINE_IN_RESULT:
                    break
                quarantined.append(json.loads(line))
    return RunResult(
        run_dir=run_dir,
        counts=summary["counts"],
        quarantined=quarantined,
        peak_rss_mb=summary["peak_rss_mb"],
        peak_cgroup_mb=summary["peak_cgroup_mb"],
        duration_sec=summary["duration_sec"],
        summary=summary,
    )
