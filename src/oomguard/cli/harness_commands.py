"""The harness's commands: reproduce an OOM, check memory is given back, look at a run, pack it."""

from __future__ import annotations

import json

import click

from oomguard.cli.app import SIZE, cli
from oomguard.engine.config import LIMITERS


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
    type=click.Choice(LIMITERS),
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

    from oomguard.repro.harness import reproduce
    from oomguard.repro.in_docker import reproduce_in_docker

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
