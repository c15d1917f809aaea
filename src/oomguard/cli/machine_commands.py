"""What this machine can do (doctor), and the demo."""

from __future__ import annotations

import json

import click

from oomguard.cli.app import SIZE, cli
from oomguard.engine.config import LOG_FORMATS
from oomguard.sizes import format_size


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
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="auto")
def demo(directory: str, compare: bool, memory: int | None, log_format: str) -> None:
    """PDF ingestion into a knowledge base under a memory cap, hostile documents included."""
    from pathlib import Path

    from oomguard.demo.run import render, run_demo

    render(run_demo(Path(directory), compare=compare, cap=memory, log_format=log_format))
