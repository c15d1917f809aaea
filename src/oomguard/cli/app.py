"""The ``oomguard`` command group, its size parameter, and the one place errors become
exit codes: a user's mistake one line (``oomguard: error: ...``) and code 2; nothing else
prints a traceback unless it is a bug (exit code 1)."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click

from oomguard import __version__
from oomguard.errors import (
    ConfigError,
    DiskFullError,
    OomguardError,
    OomguardWarning,
)
from oomguard.sizes import parse_size

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
