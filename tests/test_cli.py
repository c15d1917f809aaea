import json

from oomguard.cli import main
from tests.helpers.cli import run_cli


def test_doctor_json_tells_the_truth() -> None:
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    from oomguard.limits import probe_cgroup_access
    from oomguard.memory import effective_budget

    assert facts["budget"]["bytes"] == effective_budget().bytes
    access = probe_cgroup_access()
    assert facts["cgroup"]["writable"] == access.writable
    assert facts["enforcement"] == (f"cgroup-{access.version}" if access.writable else "watchdog")


def test_doctor_screen() -> None:
    result = run_cli("doctor")
    assert result.returncode == 0, result.stderr
    assert "Memory budget" in result.stdout and "Enforcement" in result.stdout


def test_bad_size_is_one_line_exit_2_no_traceback() -> None:
    result = run_cli("doctor", "--memory", "6x")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "'6x'" in result.stderr and "6GiB" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_is_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["doctor", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err


def test_percent_memory_is_accepted(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["doctor", "--json", "--memory", "50%"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert any("50%" in line for line in facts["plan"])
