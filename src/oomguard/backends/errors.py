"""Which worker errors mean "the backend is gone or out of memory" — shared with the engine.

The out-of-memory texts are the engine's one table (:mod:`oomguard.classify`); the
connection texts are added here. Extend with :func:`add_backend_pattern`.
"""

from __future__ import annotations

import re

from oomguard.classify import mentions_out_of_memory

BACKEND_GONE_PATTERNS: list[re.Pattern[str]] = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"connection refused",
        r"connection reset",
        r"connection aborted",
        r"remote end closed connection",
        r"broken pipe",
        r"server disconnected",
        r"\bIncompleteRead\b",
        r"connection broken",
        r"\bRemoteDisconnected\b",
        r"\bECONNREFUSED\b",
        r"\bECONNRESET\b",
        r"\b50[234]\b.*(bad gateway|service unavailable|gateway timeout)",
    )
]
_HTTP_5XX = re.compile(r"\b(HTTP(?: Error)?|status(?: code)?)[ :]*5\d\d\b", re.IGNORECASE)


def add_backend_pattern(pattern: str) -> None:
    BACKEND_GONE_PATTERNS.append(re.compile(pattern, re.IGNORECASE))


def means_backend_failure(text: str) -> bool:
    """True for errors that say the backend is unreachable, or answered 5xx out of memory."""
    if any(p.search(text) for p in BACKEND_GONE_PATTERNS):
        return True
    return bool(_HTTP_5XX.search(text)) and mentions_out_of_memory(text)
