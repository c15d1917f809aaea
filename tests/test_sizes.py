import pytest

from oomguard import SizeError, format_size, parse_size

GiB = 1024**3
MiB = 1024**2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6g", 6 * GiB),
        ("6G", 6 * GiB),
        ("6GiB", 6 * GiB),
        ("6gb", 6 * GiB),
        ("512m", 512 * MiB),
        ("512M", 512 * MiB),
        ("2048MiB", 2048 * MiB),
        ("1048576", 1048576),
        (" 1.5g ", int(1.5 * GiB)),
        ("64k", 64 * 1024),
        ("1TiB", 1024**4),
        (4096, 4096),
    ],
)
def test_accepted_forms(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


def test_percent_of_budget_is_resolved_lazily() -> None:
    calls = []

    def budget() -> int:
        calls.append(1)
        return 10 * GiB

    assert parse_size("70%", budget=budget) == 7 * GiB
    assert parse_size("1g", budget=budget) == GiB
    assert len(calls) == 1


@pytest.mark.parametrize(
    "bad", ["6x", "", "g", "-5m", "1.2.3g", "six gig", "0", "0m", "150%", "0%", "MiB", True, -1]
)
def test_bad_sizes_name_the_value_and_the_forms(bad: object) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(bad, budget=GiB)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert repr(bad) in message or str(bad) in message


def test_percent_without_budget_is_refused() -> None:
    with pytest.raises(SizeError, match="needs a memory budget"):
        parse_size("50%")


def test_format_size() -> None:
    assert format_size(1536 * MiB) == "1.5 GiB"
    assert format_size(512) == "512 B"
    assert format_size(None) == "unknown"
