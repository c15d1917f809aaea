"""Functions the engine tests run in workers. Each item says what to do: ``{"kind": ...}``."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
LEAKED: list[bytearray] = []  # what the "leak" items keep, as a leaky library would
WARMED: list[bytearray] = []  # what the "warm" kind keeps after its first item

# a background helper that detaches itself, as a library's own server would: a new session
# (start_new_session), and its parent exits once it is up, so it is nobody's child (but
# a subreaper's); it says it is up through a pipe, then waits for ever
DAEMON = r"""
import os, sys, threading
ready, up = os.pipe()
if os.fork():
    os.close(up)
    os.read(ready, 1)
    os._exit(0)
with open(sys.argv[1], "w") as pidfile:
    pidfile.write(str(os.getpid()))
os.write(up, b"x")
threading.Event().wait()
"""


def gate(item: dict[str, Any]) -> dict[str, Any]:
    """Tell the test this item runs (its pid through the ``ready`` FIFO), then wait for its
    word on the ``go`` FIFO: a long item the test ends when it wants, never by a sleep.
    With a ``marker`` file, only the first attempt waits (a resumed run passes at once)."""
    marker = Path(item["marker"]) if "marker" in item else None
    if marker is not None and marker.exists():
        return {"gate": "passed"}
    if marker is not None:
        marker.write_text("1")
    with open(item["ready"], "w") as ready:
        ready.write(f"{os.getpid()}\n")
    with open(item["go"]) as go:
        go.readline()
    return {"gate": "opened"}


def allocate(mb: int) -> bytearray:
    return bytearray(mb * MiB)  # zero-filled by calloc: touch every page so it is resident


def touch(block: bytearray) -> None:
    for offset in range(0, len(block), 4096):
        block[offset] = 1


def work(item: dict[str, Any]) -> Any:
    kind = item.get("kind", "ok")
    if kind == "ok":
        return {"value": item.get("value", 0) * 2}
    if kind == "pad":
        return {"value": item["value"], "pad": item["pad"]}
    if kind == "grow":
        block = allocate(item["mb"])
        touch(block)
        return {"mb": item["mb"]}
    if kind == "hold":
        block = allocate(item["mb"])
        touch(block)
        time.sleep(item["seconds"])  # the work takes a while with its memory held
        return {"mb": item["mb"]}
    if kind == "creep":
        # grows step by step (a runaway when "mb" is past the cap): slowly, as real ones do
        blocks = []
        for _ in range(item["mb"] // item["step_mb"]):
            block = allocate(item["step_mb"])
            touch(block)
            blocks.append(block)
            time.sleep(item["step_seconds"])  # the workload is slow by nature; no test waits on it
        return {"mb": item["mb"]}
    if kind == "leak":
        block = allocate(item["mb"])
        touch(block)
        LEAKED.append(block)
        return {"leaked_mb": len(LEAKED) * item["mb"]}
    if kind == "warm":
        # a library's warm-up, paid by a worker's first item and kept (an import, a cache):
        # then the work itself, which holds next to nothing for a while
        if not WARMED:
            block = allocate(item["warm_mb"])
            touch(block)
            WARMED.append(block)
        time.sleep(item["seconds"])  # the work takes a while; no test waits on it
        return {"value": item["value"]}
    if kind == "read":
        # reads a file once, a MiB at a time: its pages enter the page cache, charged to
        # the worker's cgroup, and the worker itself holds next to nothing
        total = 0
        with open(item["path"], "rb", buffering=0) as handle:
            while chunk := handle.read(MiB):
                total += len(chunk)
        return {"read": total}
    if kind == "member":
        return group_member(item)
    if kind == "announce":
        # tells the test, once (a marker file), that it is running: a line on a FIFO
        marker = Path(item["marker"])
        if not marker.exists():
            marker.write_text("1")
            with open(item["fifo"], "w") as pipe:
                pipe.write("running\n")
        return {"announced": True}
    if kind == "slow":
        time.sleep(item["seconds"])  # the workload is slow by nature; no test waits on it
        return {"slow": True}
    if kind == "hang":
        threading.Event().wait()
    if kind == "segv":
        ctypes.string_at(0)
    if kind == "memerr":
        raise MemoryError("cannot allocate the model")
    if kind == "cuda":
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    if kind == "raise":
        raise ValueError(f"bad item {item.get('value')}")
    if kind == "exit":
        os._exit(7)
    if kind == "die_twice":
        # past the worker's own cap on the first two attempts: the third runs alone
        from oomguard import worker_context

        if worker_context().attempt <= 2:
            touch(allocate(item["mb"]))
        time.sleep(item["seconds"])  # the work takes a while: others would overlap it
        return {"attempt": worker_context().attempt}
    if kind == "kill_fork_server":
        # first attempt only, in a forked worker: the parent is the fork server, not the
        # supervisor (checked by name, so a spawned worker never signals its supervisor)
        from oomguard import worker_context

        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
        if worker_context().attempt == 1 and b"oomguard.engine.fork_server_main" in parent:
            os.kill(os.getppid(), 9)
            os._exit(7)
        return {"parent": parent.decode(errors="replace").split("\0")[1:3]}
    if kind == "gate":
        return gate(item)
    if kind == "not_finite":
        return {"value": float(item["value"])}  # "nan", "inf", "-inf"
    if kind == "daemon":
        helper = subprocess.Popen(
            [sys.executable, "-c", DAEMON, item["pidfile"]],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        helper.wait()  # its child, detached, is up and has written its pid
        if item.get("then") == "exit":
            os._exit(7)
        return {"daemon": int(Path(item["pidfile"]).read_text())}
    if kind == "named_grow":
        # the kernel names a process by its comm in every line of its OOM report
        Path("/proc/self/comm").write_text(item["comm"])
        touch(allocate(item["mb"]))
        return {"mb": item["mb"]}
    if kind == "secret_error":
        raise ValueError(f"token {os.environ[item['var']]} while reading {item['file']}")
    if kind == "json_unfriendly":
        return {1, 2, 3}
    if kind == "unpicklable":
        return threading.Lock()
    if kind == "whoami":
        cgroup = Path("/proc/self/cgroup").read_text()
        return {
            "oom_score_adj": int(Path("/proc/self/oom_score_adj").read_text()),
            "cgroup": cgroup,
            "parent": Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace"),
            "ppid": os.getppid(),
        }
    raise AssertionError(f"unknown kind {kind}")


def group_member(item: dict[str, Any]) -> Any:
    """Members of one group, all mid-batch when the poison reaches the cap: each "holder"
    holds its memory until the kernel decides and says so on its FIFO; the "poison" grows
    past the cap only once it has heard from every holder. On a retry (its marker file
    exists) each just returns."""
    marker = Path(item["marker"])
    if marker.exists():
        return {"role": item["role"], "retried": True}
    marker.write_text("1")
    if item["role"] == "holder":
        touch(allocate(item["mb"]))
        with open(item["fifo"], "w") as pipe:
            pipe.write("holding\n")
        threading.Event().wait()  # held until the kernel decides
    for fifo in item["fifos"]:
        with open(fifo) as pipe:
            pipe.readline()
    touch(allocate(item["mb"]))
    return {"role": "poison"}


def work_batch(items: list[dict[str, Any]]) -> list[Any]:
    """Batched: memory for the whole batch at once, like a flush of 10 documents."""
    blocks = []
    for item in items:
        if item.get("kind") == "grow":
            block = allocate(item["mb"])
            touch(block)
            blocks.append(block)
        elif item.get("kind") == "raise":
            raise ValueError(f"bad item {item.get('value')}")
    return [{"ok": True} for _ in items]


def work_batch_hold(items: list[dict[str, Any]]) -> list[Any]:
    """Batched: every item's memory at once, held a while (a batch that really overlaps)."""
    blocks = [allocate(item["mb"]) for item in items]
    for block in blocks:
        touch(block)
    time.sleep(0.3)  # the batch's work, with its memory held
    return [{"mb": item["mb"]} for item in items]


def short_batch(items: list[Any]) -> list[Any]:
    return items[:-1]


def bystander(item: dict[str, Any]) -> Any:
    """Two cooperating items: 'holder' holds memory flat; 'grower' grows after it.

    The holder opens the FIFO for writing (blocking until the grower opens it for reading),
    so the grower only starts growing once the holder holds its memory. On a retry the
    holder finds its marker and just does its work.
    """
    fifo = Path(item["fifo"])
    if item["role"] == "holder":
        block = allocate(item["mb"])
        touch(block)
        marker = fifo.with_suffix(".held")
        if marker.exists():
            return {"role": "holder", "retried": True}
        marker.write_text("1")
        with open(fifo, "w") as pipe:
            pipe.write("holding\n")
        threading.Event().wait()  # held until the kernel decides
    with open(fifo) as pipe:
        pipe.readline()
    blocks = []
    for _ in range(item["steps"]):
        block = allocate(item["step_mb"])
        touch(block)
        blocks.append(block)
        time.sleep(item["step_seconds"])  # a slow grower, as real leaks are
    return {"role": "grower"}


def path_of(item: dict[str, Any]) -> str:
    """A directory source's item: the file's path."""
    return str(item["path"])
