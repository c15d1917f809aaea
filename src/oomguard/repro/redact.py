"""What ``bundle --redact`` keeps: numbers, statuses and the shape of the kernel's OOM
report; every other string becomes a hash.

The rule is an allowlist, not a list of what to hide: a string is kept only under a key
whose values are oomguard's own vocabulary (a status, an event name, a machine fact),
and a kernel line only in the known shapes of the OOM report, with the command names and
cgroup paths in it hashed. A file name, a command, an error message, an environment
value, a host name, an input payload: each is a hash, wherever it went (a relative file
name in a failure, a command in ``Comm:``, a cgroup path in ``memcg=``). The same string
hashes alike everywhere, so a maintainer can still tell that two fields name one thing.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# keys whose string values are oomguard's own words (statuses, event names, machine facts)
KEEP_KEYS = frozenset(
    {
        "status",
        "event",
        "error_class",
        "enforcement",
        "host_os",
        "kernel",
        "cpu",
        "cgroup_layout",
        "cgroup_memory_version",
        "gpu_driver",
        "python",
        "oomguard",
        "name",  # a GPU's model
    }
)
KERNEL_KEYS = frozenset({"kernel_log"})  # lists of kernel lines: redacted line by line
_TOKEN = re.compile(r"^[\w .:+()/@-]{0,120}$")  # a value of our vocabulary has no more


def hash_text(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` (parsed JSON) with every string hashed unless ``key`` keeps it."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        if key == "inputs":  # the files a command read: their sizes and hashes only
            return [
                {"size": i.get("size"), "sha256": i.get("sha256")}
                for i in value
                if isinstance(i, dict)
            ]
        if key in KERNEL_KEYS:
            return [redact_kernel_line(v) if isinstance(v, str) else v for v in value]
        return [redact(item, key) for item in value]
    if isinstance(value, str):
        if key in KEEP_KEYS and _TOKEN.match(value):
            return value
        return hash_text(value)
    return value


# --------------------------------------------------------------------- kernel lines

_NAME = r"(?P<name>.+?)"
# substitutions: the named group is hashed, the rest of the line stays
_SUBSTITUTIONS = [
    re.compile(rf"^{_NAME} invoked oom-killer:"),
    re.compile(rf"\bComm: {_NAME}(?= (?:Not tainted|Tainted:)|$)"),
    re.compile(r"\btask=(?P<name>[^,]*)"),
    re.compile(r"memcg=(?P<name>[^,\s]*)"),  # memcg=, oom_memcg=, task_memcg=
    re.compile(r"\bcpuset=(?P<name>[^,\s]*)"),
    re.compile(rf"^Memory cgroup stats for {_NAME}:$"),
    re.compile(r"^Task in (?P<name>\S+) killed as a result of limit of"),
    re.compile(r"killed as a result of limit of (?P<name>\S+)"),
    re.compile(rf"\bprocess \d+ \({_NAME}\)(?= total-vm|, now|$)"),
    re.compile(r"^\[\s*\d+\](?:\s+-?\d+){5,}\s+(?P<name>.+)$"),  # a row of the task table
]
# the shapes of the OOM report's lines (after the substitutions); any other line is hashed
_SHAPES = [
    re.compile(pattern)
    for pattern in (
        r" invoked oom-killer: ",
        r"^CPU: \d+ ",
        r"^Hardware name: ",
        r"^Call Trace:$",
        r"^\s*</?(TASK|IRQ)>$",
        r"^\s*(\? )?[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+",  # a stack frame
        r"^(RIP|RSP|RAX|RDX|RBP|R1[03]|Code):",
        r"^R\d+: ",
        r"^(memory|memory\+swap|kmem|swap): usage \d+kB",
        r"^Memory cgroup stats for ",
        r"^[a-z_]+ \d+$",  # one memory statistic
        r"^Tasks state \(memory values in pages\):$",
        r"^\[\s+pid\s+\]",
        r"^\[\s*\d+\](\s+-?\d+){5,}\s+sha256:",
        r"^oom-kill:constraint=",
        r"^(Memory cgroup out of memory|Out of memory): Killed process \d+ ",
        r"^oom_reaper: reaped process \d+ ",
        r"^Task in .* killed as a result of limit of ",
        r"^Mem-Info:$",
        r"^(active_anon|Node \d+|\d+ total pagecache|Free swap|Total swap|\d+ pages)",
    )
]
_LINE = re.compile(r"^(?P<stamp>\[\s*[\d.]+\] )?(?P<text>.*)$", re.DOTALL)


def redact_kernel_line(line: str) -> str:
    """One kernel log line (with or without its ``[uptime]`` stamp), redacted."""
    match = _LINE.match(line)
    assert match is not None
    stamp, text = match.group("stamp") or "", match.group("text")
    for pattern in _SUBSTITUTIONS:
        text = pattern.sub(_hash_name, text)
    if not any(shape.search(text) for shape in _SHAPES):
        text = hash_text(text)
    return stamp + text


def _hash_name(match: re.Match[str]) -> str:
    whole, name = match.group(0), match.group("name")
    start = match.start("name") - match.start(0)
    return whole[:start] + hash_text(name) + whole[start + len(name) :]


def redact_kernel_log(text: str) -> str:
    return "".join(redact_kernel_line(line) + "\n" for line in text.splitlines())
