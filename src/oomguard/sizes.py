"""Memory sizes as users write them, and as people read them.

Inside oomguard every amount of memory is an ``int`` of bytes. Sizes only become text at
the edges: :func:`parse_size` reads what a user typed, :func:`format_size` prints.

Accepted forms (units case-insensitive, every unit binary, as Docker and Kubernetes read
``6g``): plain bytes ``1048576``; ``512k``/``512kb``/``512KiB``; ``512m``/``512MB``/
``2048MiB``; ``6g``/``6G``/``6GiB``; ``1t``/``1TiB``; fractions such as ``1.5g``; and a
percentage of the effective memory budget, ``70%``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from oomguard.errors import SizeError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")

ACCEPTED_FORMS = (
    "bytes (1048576), a number with a unit (512m, 512M, 2048MiB, 6g, 6GiB) "
    "or a percentage of the memory budget (70%)"
)


def parse_size(
    value: str | int,
    *,
    budget: int | Callable[[], int] | None = None,
    what: str = "size",
) -> int:
    """Return ``value`` in bytes.

    ``budget`` resolves percentages; it may be a callable so the (slightly costly) budget
    is only computed when a percentage is given. Raises :class:`SizeError` with a
    one-line message naming the value and the accepted forms.
    """
    if isinstance(value, bool):
        raise SizeError(f"invalid {what} {value!r}: expected {ACCEPTED_FORMS}")
    if isinstance(value, int):
        if value <= 0:
            raise SizeError(f"invalid {what} {value!r}: must be a positive number of bytes")
        return value
    text = str(value)
    percent = _PERCENT_RE.match(text)
    if percent:
        fraction = float(percent.group(1)) / 100.0
        if not 0.0 < fraction <= 1.0:
            raise SizeError(
                f"invalid {what} {text!r}: a percentage must be above 0% and at most 100%"
            )
        if budget is None:
            raise SizeError(
                f"invalid {what} {text!r}: a percentage needs a memory budget here; "
                f"give {ACCEPTED_FORMS}"
            )
        total = budget() if callable(budget) else budget
        return max(1, int(total * fraction))
    match = _SIZE_RE.match(text)
    if not match:
        raise SizeError(f"invalid {what} {text!r}: expected {ACCEPTED_FORMS}")
    number, unit, suffix = match.groups()
    if suffix and suffix.lower() == "ib" and not unit:
        raise SizeError(f"invalid {what} {text!r}: expected {ACCEPTED_FORMS}")
    result = int(float(number) * _UNITS[unit.lower()])
    if result <= 0:
        raise SizeError(f"invalid {what} {text!r}: must be more than 0 bytes")
    return result


def format_size(n_bytes: float | None) -> str:
    """``1536 * 2**20`` -> ``'1.5 GiB'``; ``None`` -> ``'unknown'``."""
    if n_bytes is None:
        return "unknown"
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def mib(n_bytes: float) -> float:
    """Bytes to MiB, rounded to 0.1, for artifacts whose fields end in ``_mb``."""
    return round(n_bytes / 2**20, 1)
