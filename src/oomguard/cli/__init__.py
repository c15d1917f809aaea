"""The ``oomguard`` command. Thin: parses, calls the Python API, prints.

Each module holds a family of commands; importing them registers them on the one group.
"""

from oomguard.cli import harness_commands, job_commands, machine_commands
from oomguard.cli.app import cli, entry_point, main

__all__ = ["cli", "entry_point", "harness_commands", "job_commands", "machine_commands", "main"]
