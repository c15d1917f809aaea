"""The ``oomguard`` command. Thin: parses, calls the Python API, prints.

Errors a user can fix print one line, ``oomguard: error: ...``, and exit with code 2;
nothing else prints a traceback unless it is a bug (exit code 1).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from oomguard import __version__
from oomguard.errors import (
    ConfigError,
    DiskFullError,
    OomguardError,
    OomguardWarning,
    Terminated,
)
from oomguard.sizes import format_size, parse_size

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SIGTERM = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class SizeParam(click.ParamType):  # type: ignore[type-arg]
    """A memory size (``6g``, ``512MiB``, ``70%`` of the effective budget) in bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value

        def budget() -> int:
            from oomguard.memory.budget import effective_budget

            return effective_budget().bytes

        try:
            what = param.opts[0] if param is not None and param.opts else "size"
            return parse_size(value, budget=budget, what=what)
        except ConfigError as err:
            self.fail(str(err), param, ctx)


SIZE = SizeParam()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oomguard")
def cli() -> None:
    """Run long batch jobs to the end under memory pressure."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON for scripts.")
@click.option(
    "--memory",
    type=SIZE,
    default=None,
    help="A cap you plan to use (6g, 512MiB, 70%): checked against the budget.",
)
def doctor(as_json: bool, memory: int | None) -> None:
    """What this machine supports, and what oomguard will do as a result."""
    from oomguard.doctor import examine, render

    report = examine()
    if memory is not None:
        share = memory / report.budget.bytes
        budget = format_size(report.budget.bytes)
        verdict = f"A cap of {format_size(memory)} is {share:.0%} of the {budget} budget" + (
            ": above 95%, the machine itself could run out first." if share > 0.95 else "."
        )
        report.plan.append(verdict)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        render(report)


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
    help="Cap for the whole job [default: 90% of the budget].",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: cores].",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Items per batch [default: 10]."
)
@click.option(
    "--adaptive-batch",
    is_flag=True,
    default=None,
    help="Let batch size follow memory and time, within --min/--max-batch-size.",
)
@click.option("--min-batch-size", type=click.IntRange(min=1), default=None, help="[default: 1]")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=None, help="[default: 1000]")
@click.option("--max-bytes", type=SIZE, default=None, help="Bytes per batch [default: 5000000].")
@click.option(
    "--max-wait-ms",
    type=click.IntRange(min=1),
    default=None,
    help="Longest wait to fill a batch [default: 5000].",
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
    type=click.Choice(["auto", "cgroup", "watchdog"]),
    default=None,
    help="How memory is enforced [default: auto].",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "rich", "plain", "json", "quiet"]),
    default=None,
    help="Progress output [default: auto].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port.",
)
@click.option(
    "--metrics-addr", default=None, help="Address for --metrics-port [default: 127.0.0.1]."
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
    click.echo(
        f"oomguard: {result.succeeded} items done, {len(result.quarantined)} quarantined, "
        f"peak {summary['peak_cgroup_mb']} MiB of a {summary['cap_mb']} MiB cap "
        f"({summary['peak_percent_of_cap']}%), {summary['duration_sec']} s; "
        f"artifacts in {result.run_dir}",
        err=True,
    )
    from oomguard.engine.quarantine import quarantine_reason

    for entry in result.quarantined[:10]:
        why = quarantine_reason(entry)
        click.echo(
            f"  quarantined item {entry['input_index']}: {entry['status']} {why}".rstrip(), err=True
        )


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--force",
    is_flag=True,
    help="Resume even though the input changed, or the output is not the file the run wrote.",
)
@click.option(
    "--log-format", type=click.Choice(["auto", "rich", "plain", "json", "quiet"]), default=None
)
def resume(run_dir: str, force: bool, log_format: str | None) -> None:
    """Carry on a run where it stopped: nothing committed is redone, nothing is lost."""
    from oomguard.engine.job import Job

    overrides = {"log_format": log_format} if log_format else {}
    _finish(lambda: Job.resume(run_dir, force=force, **overrides))


@cli.command(name="retry-quarantined")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--memory", "-m", type=SIZE, default=None, help="A new cap for the retry.")
@click.option(
    "--log-format", type=click.Choice(["auto", "rich", "plain", "json", "quiet"]), default=None
)
def retry_quarantined(run_dir: str, memory: int | None, log_format: str | None) -> None:
    """Run the quarantined items of a run again, on purpose."""
    from oomguard.engine.job import Job

    overrides: dict[str, Any] = {"log_format": log_format} if log_format else {}
    if memory is not None:
        overrides["memory"] = memory
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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--memory", "-m", type=SIZE, required=True, help="The cap: 6g, 512MiB, 50%.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    help="Seconds between memory samples.",
)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Artifacts go here [default: oomguard-repro/TIME].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop the command after this many seconds.",
)
@click.option(
    "--docker", "image", default=None, help="Run inside this Docker image (needs an engine)."
)
@click.option(
    "--limiter",
    type=click.Choice(["auto", "cgroup", "watchdog"]),
    default="auto",
    show_default=True,
)
@click.option("--allow-large-cap", is_flag=True, help="Allow a cap above 95% of the budget.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def repro(
    memory: int,
    interval: float,
    output_dir: str | None,
    timeout: float | None,
    image: str | None,
    limiter: str,
    allow_large_cap: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND under a memory cap and keep the evidence: oomguard repro -m 6g -- CMD ARGS...

    Exit code: the command's own, or 137 when it was OOM-killed.
    """
    import time
    from pathlib import Path

    from oomguard.repro.harness import reproduce, reproduce_in_docker

    directory = (
        Path(output_dir) if output_dir else Path("oomguard-repro") / time.strftime("%Y%m%d-%H%M%S")
    )
    if image:
        result = reproduce_in_docker(
            image,
            list(command),
            memory,
            output_dir=directory,
            interval=interval,
            allow_large_cap=allow_large_cap,
        )
    else:
        result = reproduce(
            list(command),
            memory,
            output_dir=directory,
            interval=interval,
            timeout=timeout,
            limiter_mode=limiter,
            allow_large_cap=allow_large_cap,
        )
    click.echo(f"oomguard: {result.verdict}", err=True)
    raise click.exceptions.Exit(result.exit_code)


@cli.command(name="simulate-pressure")
@click.option("--target-mb", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--native", is_flag=True, help="Allocate with malloc instead of Python objects.")
@click.option(
    "--tolerance-mb",
    type=click.FloatRange(min=0),
    default=None,
    help="How much may stay resident [default: max(32, 5% of the target)].",
)
@click.option("--retain-mb", type=click.IntRange(min=0), default=0, hidden=True)
@click.option("--json", "as_json", is_flag=True)
def simulate_pressure_command(
    target_mb: int, native: bool, tolerance_mb: float | None, retain_mb: int, as_json: bool
) -> None:
    """Allocate, free, trim: does memory go back to the OS? (exit 0 reclaimed, 1 not)."""
    from oomguard.repro.simulate_pressure import simulate_pressure

    report = simulate_pressure(
        target_mb, native=native, retain_mb=retain_mb, tolerance_mb=tolerance_mb
    )
    if as_json:
        click.echo(json.dumps(report))
    elif report["reclaimed"]:
        click.echo(
            f"reclaimed: {report['target_mb']} MiB allocated ({'native' if native else 'Python objects'}), "
            f"RSS back to {report['after_mb']} MiB from a baseline of {report['baseline_mb']} MiB "
            f"(peak {report['peak_mb']} MiB, {report['stayed_mb']} MiB stayed, tolerance {report['tolerance_mb']} MiB)"
        )
    else:
        click.echo(
            f"not reclaimed: {report['stayed_mb']} MiB stayed resident after freeing "
            f"{report['target_mb']} MiB (baseline {report['baseline_mb']} MiB, now {report['after_mb']} MiB, "
            f"tolerance {report['tolerance_mb']} MiB); native code or the allocator keeps memory"
        )
    raise click.exceptions.Exit(0 if report["reclaimed"] else 1)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
def report(run_dir: str) -> None:
    """Write report.html and memory.png into RUN_DIR (a run or a repro directory)."""
    from pathlib import Path

    from oomguard.report import write_report

    page = write_report(Path(run_dir))
    click.echo(f"oomguard: wrote {page} and {page.with_name('memory.png')}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--redact",
    is_flag=True,
    help="Drop arguments, names, payloads and messages; keep sizes and hashes.",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), default=None, help="The zip to write."
)
def bundle(run_dir: str, redact: bool, output: str | None) -> None:
    """Pack RUN_DIR into a zip to attach to a bug report."""
    from pathlib import Path

    from oomguard.repro.bundle import make_bundle

    target = make_bundle(Path(run_dir), Path(output) if output else None, redacted=redact)
    click.echo(f"oomguard: wrote {target}", err=True)


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="oomguard-demo",
    show_default=True,
    help="Where the corpus, the knowledge base and the artifacts go.",
)
@click.option(
    "--compare", is_flag=True, help="Also run a plain ProcessPoolExecutor under the same cap."
)
@click.option(
    "--memory", "-m", type=SIZE, default=None, help="The cap [default: 1 GiB, or half the budget]."
)
@click.option(
    "--log-format", type=click.Choice(["auto", "rich", "plain", "json", "quiet"]), default="auto"
)
def demo(directory: str, compare: bool, memory: int | None, log_format: str) -> None:
    """PDF ingestion into a knowledge base under a memory cap, hostile documents included."""
    from pathlib import Path

    from oomguard.demo.run import render, run_demo

    render(run_demo(Path(directory), compare=compare, cap=memory, log_format=log_format))


@cli.command()
@click.argument("function")
@click.option("--input", "-i", "input_", required=True, help="Items to sample from.")
@click.option(
    "--memory", "-m", type=SIZE, default=None, help="The job's cap [default: 90% of the budget]."
)
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Items to calibrate on.",
)
@click.option("--batched", is_flag=True, help="The function takes a list and returns a list.")
@click.option("--json", "as_json", is_flag=True)
def plan(
    function: str, input_: str, memory: int | None, sample: int, batched: bool, as_json: bool
) -> None:
    """Calibrate on a sample and print predicted peak memory vs workers and batch size."""
    import os

    from oomguard.engine.plan import calibrate
    from oomguard.engine.plan import render as render_plan

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    result = calibrate(function, input_, memory=memory, sample=sample, batched=batched)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        render_plan(result)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """oomguard's own warnings as one line each; others as Python shows them."""
    if issubclass(category, OomguardWarning):
        click.echo(f"oomguard: warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    warnings.showwarning = _show_warning
    try:
        code = cli.main(args=argv, prog_name="oomguard", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.Abort:
        click.echo("oomguard: aborted", err=True)
        return 130
    except click.ClickException as err:
        hint = ""
        message = err.format_message()
        if isinstance(err, click.BadParameter) and isinstance(err.param, click.Option):
            message = err.message  # ours already names the option and the accepted forms
        elif isinstance(err, click.UsageError) and err.ctx is not None:
            hint = f" (see '{err.ctx.command_path} --help')"
        click.echo(f"oomguard: error: {message}{hint}", err=True)
        return EXIT_USAGE if isinstance(err, click.UsageError) else err.exit_code
    except (ConfigError, DiskFullError) as err:
        click.echo(f"oomguard: error: {err}", err=True)
        return EXIT_USAGE
    except OomguardError as err:
        click.echo(f"oomguard: {err}", err=True)
        return EXIT_INTERNAL
    return EXIT_OK


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
