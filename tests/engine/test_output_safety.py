"""An output belongs to one run, and a run finds its files from anywhere: end to end, with
the real command, real files and real processes."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
from pathlib import Path

from tests.engine.conftest import WORK, write_jsonl
from tests.helpers.cli import ROOT, cli_env, oomguard_argv, run_cli
from tests.helpers.gates import Gate

OK = [{"kind": "ok", "value": i} for i in range(5)]


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("oomguard: error:") and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def indices(path: Path) -> collections.Counter[int]:
    return collections.Counter(
        json.loads(line)["input_index"] for line in path.read_text().splitlines()
    )


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {"cwd": cwd} if cwd is not None else {}
    return run_cli("run", *map(str, args), "--log-format", "quiet", "-w", "1", **extra)  # type: ignore[arg-type]


def test_a_new_run_refuses_an_output_that_holds_data(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    out = tmp_path / "out.jsonl"
    out.write_text("precious results of another day\n")
    for attempt in ("first", "again"):  # the refused run left its run directory: still new
        refused = run(WORK, "-i", source, "-o", out, "--run-dir", tmp_path / "run")
        one_line_error(refused, str(out), "--overwrite")
        assert out.read_text() == "precious results of another day\n", attempt
    replaced = run(WORK, "-i", source, "-o", out, "--run-dir", tmp_path / "run", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert indices(out) == {i: 1 for i in range(5)}
    again = run_cli("resume", str(tmp_path / "run"), "--log-format", "quiet")
    assert again.returncode == 0, again.stderr  # its own output: resumed, nothing redone
    assert indices(out) == {i: 1 for i in range(5)}


def test_the_output_is_never_the_input_by_any_name(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    original = source.read_bytes()
    (tmp_path / "sub").mkdir()
    os.link(source, tmp_path / "hard.jsonl")
    (tmp_path / "link.jsonl").symlink_to(source)
    others = [source, tmp_path / "sub" / ".." / "in.jsonl", tmp_path / "hard.jsonl"]
    for name, other in enumerate([*others, tmp_path / "link.jsonl"]):
        refused = run(WORK, "-i", source, "-o", other, "--run-dir", tmp_path / f"r{name}")
        one_line_error(refused, "is the input")
        assert source.read_bytes() == original
    on_purpose = run(WORK, "-i", source, "-o", source, "--run-dir", tmp_path / "rx", "--overwrite")
    one_line_error(on_purpose, "is the input")  # refused outright, even when asked
    inside = tmp_path / "docs"
    inside.mkdir()
    (inside / "a.txt").write_text("a")
    one_line_error(
        run(WORK, "-i", inside, "-o", inside / "out.jsonl", "--run-dir", tmp_path / "rd"),
        "inside the input directory",
    )


def test_a_second_run_on_the_same_output_is_refused_and_harms_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    # run b names out.jsonl but has committed nothing to it (an empty input)
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    made = run(WORK, "-i", empty, "-o", out, "--run-dir", tmp_path / "b")
    assert made.returncode == 0 and out.read_bytes() == b"", made.stderr
    gate = Gate(tmp_path)
    items = [*({"kind": "ok", "value": i} for i in range(40)), gate.item()]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    first = subprocess.Popen(
        oomguard_argv(
            "run",
            WORK,
            "-i",
            str(source),
            "-o",
            str(out),
            "--run-dir",
            str(tmp_path / "a"),
            "-w",
            "1",
            "--batch-size",
            "1",
            "--log-format",
            "quiet",
        ),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        gate.wait_running(first)  # the 40 items before it are done, most of them committed
        before = out.read_bytes()
        second = run_cli("resume", str(tmp_path / "b"), "--log-format", "quiet")
        one_line_error(second, "being written by another run")
        # not cut back to b's position (nothing); a's own commits may still add to it
        assert out.read_bytes().startswith(before)
        gate.open()
        assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if first.stderr is not None:
            first.stderr.close()
    assert indices(out) == {i: 1 for i in range(41)}


# a user's module in the job's own directory, as in the README's `ingest:process`
PROJECT = """
import os
from pathlib import Path


def process(item):
    if "ready" not in item:
        return item["value"] * 2
    # tests/helpers/gates.py: the first attempt says it runs, then waits for ever
    if Path(item["marker"]).exists():
        return "passed"
    Path(item["marker"]).write_text("1")
    with open(item["ready"], "w") as ready:
        ready.write(f"{os.getpid()}\\n")
    with open(item["go"]) as go:
        go.readline()


def flaky(item):
    marker = Path(item["marker"])
    if not marker.exists():
        marker.write_text("1")
        raise ValueError("fails the first time")
    return "fine"
"""


def killed_at_the_gate(argv: list[str], cwd: Path, gate: Gate, env: dict[str, str]) -> None:
    """Run ``argv`` until its worker is inside the gate's item, then SIGKILL it all."""
    first = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        start_new_session=True,  # the supervisor and its workers, killed at once
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        gate.wait_running(first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_a_resume_from_another_directory_writes_the_runs_own_output(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    gate = Gate(tmp_path, once=True)
    items = [*({"kind": "ok", "value": i} for i in range(30)), gate.item(), *OK]
    write_jsonl(project / "items.jsonl", items)
    env = cli_env(PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(ROOT)]))
    argv = oomguard_argv(
        "run",
        WORK,
        "-i",
        "items.jsonl",
        "-o",
        "out.jsonl",
        "--run-dir",
        "run",
        "-w",
        "1",
        "--batch-size",
        "1",
        "--log-format",
        "quiet",
    )
    killed_at_the_gate(argv, project, gate, env)
    resumed = subprocess.run(
        oomguard_argv("resume", str(project / "run"), "--log-format", "quiet"),
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not (elsewhere / "out.jsonl").exists()  # never split into the new directory
    assert indices(project / "out.jsonl") == {i: 1 for i in range(36)}


def test_resume_and_retry_import_the_function_from_the_runs_directory(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "ingest.py").write_text(PROJECT)  # found there only: not on PYTHONPATH
    gate = Gate(tmp_path, once=True)
    write_jsonl(project / "items.jsonl", [*({"value": i} for i in range(10)), gate.item()])
    argv = oomguard_argv(
        "run",
        "ingest:process",
        "-i",
        "items.jsonl",
        "-o",
        "out.jsonl",
        "--run-dir",
        "run",
        "-w",
        "1",
        "--batch-size",
        "1",
        "--log-format",
        "quiet",
    )
    killed_at_the_gate(argv, project, gate, cli_env())
    resumed = run_cli("resume", str(project / "run"), "--log-format", "quiet", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert indices(project / "out.jsonl") == {i: 1 for i in range(11)}
    write_jsonl(project / "flaky.jsonl", [{"marker": str(tmp_path / f"m{i}")} for i in range(3)])
    first_try = run_cli(
        "run",
        "ingest:flaky",
        "-i",
        "flaky.jsonl",
        "-o",
        "flaky-out.jsonl",
        "--run-dir",
        "flaky-run",
        "--log-format",
        "quiet",
        "-w",
        "1",
        cwd=project,
    )
    assert first_try.returncode == 3, first_try.stderr  # every item quarantined once
    retried = run_cli(
        "retry-quarantined", str(project / "flaky-run"), "--log-format", "quiet", cwd=elsewhere
    )
    assert retried.returncode == 0, retried.stderr
    assert indices(project / "flaky-out.jsonl") == {0: 1, 1: 1, 2: 1}


def test_a_restored_copy_of_the_output_is_resumed_only_when_forced(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", OK)
    out = tmp_path / "out.jsonl"
    first = run(WORK, "-i", source, "-o", out, "--run-dir", tmp_path / "run")
    assert first.returncode == 0, first.stderr
    restored = out.read_bytes()
    out.unlink()
    out.write_bytes(restored)  # the same results, restored from a backup: another file
    refused = run_cli("resume", str(tmp_path / "run"), "--log-format", "quiet")
    one_line_error(refused, "not the file this run wrote", "--force")
    forced = run_cli("resume", str(tmp_path / "run"), "--force", "--log-format", "quiet")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() == restored  # nothing cut, nothing redone
    again = run_cli("resume", str(tmp_path / "run"), "--log-format", "quiet")
    assert again.returncode == 0, again.stderr  # the copy is the run's output now


def test_a_file_written_again_in_the_same_inode_is_not_the_same_file(tmp_path: Path) -> None:
    """ext4 gives a file deleted and written again the same inode number at once, often:
    its generation tells them apart (where the file system keeps one)."""
    from oomguard.engine.output import current_identity, same_file

    path = tmp_path / "out.jsonl"
    path.write_text("{}\n")
    before = current_identity(path)
    path.unlink()
    path.write_text("{}\n")
    after = current_identity(path)
    assert not same_file(after, before)
    assert same_file(after, after)
    # an identity from an older journal (no generation) still matches by inode alone
    assert same_file(after, {"dev": after["dev"], "ino": after["ino"]})
    assert not same_file(
        {"dev": 1, "ino": 2, "generation": 3}, {"dev": 1, "ino": 2, "generation": 4}
    )
