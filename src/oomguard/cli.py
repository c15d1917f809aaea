"""The ``oomguard`` command. Thin: parses, calls the Python API, prints.

Errors a user can fix print one line, ``oomguard: error: ...``, and exit with code 2;
nothing else prints a traceback unless it is a bug (exit code 1).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from oomguard import __version__
from oomguard.errors import ConfigError, OomguardError
from oomguard.sizes import format_size, parse_size

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="oomguard", standalone_mode=False)
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
    except ConfigError as err:
        click.echo(f"oomguard: error: {err}", err=True)
        return EXIT_USAGE
    except OomguardError as err:
        click.echo(f"oomguard: {err}", err=True)
        return EXIT_INTERNAL
    return EXIT_OK


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
