"""The journal: the SQLite checkpoint store that lets a run survive its own supervisor."""

from oomguard.journal.lock import RunLock, supervisor_alive
from oomguard.journal.ranges import RangeSet, decode_ranges, encode_ranges
from oomguard.journal.store import JOURNAL_NAME, Checkpoint, Journal

__all__ = [
    "JOURNAL_NAME",
    "Checkpoint",
    "Journal",
    "RangeSet",
    "RunLock",
    "decode_ranges",
    "encode_ranges",
    "supervisor_alive",
]
