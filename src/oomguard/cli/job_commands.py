"""The commands that run, resume, inspect and plan jobs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from oomguard.cli.app import EXIT_SIGTERM, SIZE, cli
from oomguard.engine.config import DEFAULT_MEMORY_FRACTION, LIMITERS, LOG_FORMATS, JobConfig
from oomguard.errors import Terminated


def default(name: str) -> str:
    """``[default: X]`` for a help text, from JobConfig: the one home of every default."""
    return f"[default: {getattr(JobConfig, name)}]"


@cli.command(name="run", context_settings={"show_default": True})
@click.argument("function")
@click.option(
    "--input", "-i", "input_", required=False, help="Items: .jsonl, .csv, .parquet or a directory."
)
@click.option(
    "--output",
    "-o",
    default=None,
    help="Results: .jsonl or .parquet [default: RUN_DIR/results.jsonl].",
)
@click.option(
    "--glob",
    default=None,
    help="A directory input's files, by pattern: '*.pdf'; '**/*.pdf' recurses into "
    "subdirectories [default: '*', every file directly in the directory].",
)
@click.option(
    "--label-field",
    default=None,
    help="The item field that names each item (shown beside its index in progress, "
    "quarantine.jsonl, status and the report) [default: a directory input's file path].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="oomguard.toml with the same keys as these options.",
)
@click.option(
    "--memory",
    "-m",
    type=SIZE,
    default=None,
    help=f"Cap for the whole job [default: {DEFAULT_MEMORY_FRACTION:.0%} of the budget].",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: cores].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help=f"Items per batch: every batch this size (without it, the first batch's size "
    f"{default('batch_size')}, then adaptive).",
)
@click.option(
    "--adaptive-batch/--no-adaptive-batch",
    default=None,
    help="Let batch size follow memory and time, within --min/--max-batch-size "
    "[default: on, unless --batch-size is given].",
)
@click.option(
    "--min-batch-size", type=click.IntRange(min=1), default=None, help=default("min_batch_size")
)
@click.option(
    "--max-batch-size", type=click.IntRange(min=1), default=None, help=default("max_batch_size")
)
@click.option(
    "--max-bytes", type=SIZE, default=None, help=f"Bytes per batch {default('max_bytes')}."
)
@click.option(
    "--max-wait-ms",
    type=click.IntRange(min=1),
    default=None,
    help=f"Longest wait to fill a batch {default('max_wait_ms')}.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds per batch attempt.",
)
@click.option(
    "--batched", is_flag=True, default=None, help="The function takes a list and returns a list."
)
@click.option("--ordered", is_flag=True, default=None, help="Write results in input order.")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Artifacts go here [default: oomguard-runs/TIME].",
)
@click.option(
    "--limiter",
    type=click.Choice(LIMITERS),
    default=None,
    help=f"How memory is enforced {default('limiter')}.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help=f"Progress output {default('log_format')}.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port.",
)
@click.option(
    "--metrics-addr", default=None, help=f"Address for --metrics-port {default('metrics_addr')}."
)
@click.option(
    "--cluster",
    default=None,
    help="Run the batches on a Dask cluster: its scheduler's address (tcp://host:8786), or "
    "local:N for N Dask worker processes here; --memory and --workers are then each node's.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    default=False,
    help="Replace an output that holds data already (a new run refuses it otherwise).",
)
def run_command(
    function: str,
    input_: str | None,
    output: str | None,
    config_file: str | None,
    overwrite: bool,
    **options: Any,
) -> None:
    """Run FUNCTION ('package.module:function') over every input item under a memory cap.

    Exit codes: 0 all done; 3 finished with quarantined items; 2 usage or configuration
    error, or a full disk; 143 stopped by SIGTERM (resumable); 1 internal failure.
    """
    import os
    from pathlib import Path

    from oomguard.engine.config import load_toml, normalise

    # like 'python -m', find the user's modules in the current directory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    from oomguard.engine.job import Job

    values: dict[str, Any] = load_toml(Path(config_file)) if config_file else {}
    values = normalise(values)
    source = input_ or values.pop("input", None) or values.pop("source", None)
    sink = output or values.pop("output", None) or values.pop("sink", None)
    values.pop("input", None)
    values.pop("source", None)
    values.pop("output", None)
    values.pop("sink", None)
    values.pop("function", None)
    values.update({k: v for k, v in options.items() if v is not None})
    if source is None:
        raise click.UsageError("no input: give --input FILE (or 'input' in --config)")
    run_dir = values.pop("run_dir", None)
    memory = values.pop("memory", None)
    job = Job(
        function,
        source=source,
        sink=sink,
        run_dir=run_dir,
        memory=memory,
        overwrite=overwrite,
        **values,
    )
    _finish(job.run)


def _finish(run: Callable[[], Any]) -> None:
    """Run a job and exit with its code: 143 (one line) when SIGTERM stopped it."""
    try:
        result = run()
    except Terminated as stopped:
        click.echo(f"oomguard: {stopped}", err=True)
        raise click.exceptions.Exit(EXIT_SIGTERM) from None
    _print_result(result)
    raise click.exceptions.Exit(result.exit_code)


def _print_result(result: Any) -> None:
    summary = result.summary
    cluster = summary.get("cluster")
    if cluster is not None:
        click.echo(
            f"oomguard: {result.succeeded} items done, {len(result.quarantined)} quarantined, "
            f"on {len(cluster['nodes'])} nodes of {cluster['address']}, "
            f"{summary['duration_sec']} s; artifacts in {result.run_dir}",
            err=True,
        )
    else:
        click.echo(
            f"oomguard: {result.succeeded} items done, {len(result.quarantined)} quarantined, "
            f"peak {summary['peak_cgroup_mb']} MiB of a {summary['cap_mb']} MiB cap "
            f"({summary['peak_percent_of_cap']}%), {summary['duration_sec']} s; "
            f"artifacts in {result.run_dir}",
            err=True,
        )
    from oomguard.engine.quarantine import item_name, quarantine_reason

    for entry in result.quarantined[:10]:
        why = quarantine_reason(entry)
        name = item_name(entry["input_index"], entry.get("label"))
        click.echo(f"  quarantined {name}: {entry['status']} {why}".rstrip(), err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--force",
    is_flag=True,
    help="Resume even though the input changed, or the output is not the file the run wrote.",
)
@click.option(
    "--memory",
    "-m",
    type=SIZE,
    default=None,
    help="A new cap for the job, kept for later resumes [default: the run's last].",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="A new number of workers, kept for later resumes [default: the run's last].",
)
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
def resume(run_dir: str, force: bool, **options: Any) -> None:
    """Carry on a run where it stopped: nothing committed is redone, nothing is lost.

    With --memory (after a cap too small, or items quarantined as oom_killed) the rest of
    the run goes on under the new cap; the journal records each session's settings."""
    from oomguard.engine.job import Job

    overrides = {k: v for k, v in options.items() if v is not None}
    _finish(lambda: Job.resume(run_dir, force=force, **overrides))


@cli.command(name="retry-quarantined")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--memory", "-m", type=SIZE, default=None, help="A new cap for the retry.")
@click.option(
    "--workers", "-w", type=click.IntRange(min=1), default=None, help="Workers for the retry."
)
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
def retry_quarantined(run_dir: str, **options: Any) -> None:
    """Run the quarantined items of a run again, on purpose (with a bigger --memory, say)."""
    from oomguard.engine.job import Job

    overrides = {k: v for k, v in options.items() if v is not None}
    _finish(lambda: Job.retry_quarantined(run_dir, **overrides))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(run_dir: str, as_json: bool) -> None:
    """Progress, counts, quarantined items, recent events, and whether a supervisor is alive."""
    from pathlib import Path

    from oomguard.engine.run_status import render_status, run_status

    report = run_status(Path(run_dir))
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        render_status(report)


@cli.command()
@click.argument("function")
@click.option("--input", "-i", "input_", required=True, help="Items to sample from.")
@click.option(
    "--memory",
    "-m",
    type=SIZE,
    default=None,
    help=f"The job's cap [default: {DEFAULT_MEMORY_FRACTION:.0%} of the budget].",
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Items to calibrate on.",
)
@click.option("--batched", is_flag=True, help="The function takes a list and returns a list.")
@click.option("--glob", default=None, help="A directory input's files, as for 'run'.")
@click.option("--json", "as_json", is_flag=True)
def plan(
    function: str,
    input_: str,
    memory: int | None,
    sample: int,
    batched: bool,
    glob: str | None,
    as_json: bool,
) -> None:
    """Calibrate on a sample and print predicted peak memory vs workers (and batch size,
    for a batched function), with the batch size the measured item time calls for."""
    import os

    from oomguard.engine.plan import calibrate
    from oomguard.engine.plan import render as render_plan

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    result = calibrate(function, input_, memory=memory, sample=sample, batched=batched, glob=glob)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        render_plan(result)
