"""``python -m oomguard.cli``: the same as the ``oomguard`` command."""

from oomguard.cli import entry_point

entry_point()
