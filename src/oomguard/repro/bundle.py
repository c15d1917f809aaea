"""``oomguard bundle DIR [--redact]``: one zip to attach to a bug report.

``--redact`` keeps what a maintainer needs (sizes, hashes, memory curves, statuses,
kernel lines) and drops what may be private (an LLM batch sends real candidate
data): command arguments, file names and paths, item payloads, error messages and
tracebacks, the command's own output, and the journal (which names the input).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from oomguard.errors import ConfigError

ALWAYS = (
    "summary.json",
    "memory_log.csv",
    "dmesg_excerpt.txt",
    "ingest_manifest.json",
    "quarantine.jsonl",
)
UNREDACTED_ONLY = ("stdout.txt", "stderr.txt", "report.html", "memory.png")
PRIVATE_KEYS = {
    "message",
    "traceback",
    "error_message",
    "command",
    "path",
    "source",
    "sink",
    "function",
    "docker_argv",
}
_PATH = re.compile(r"(/[\w.\-]+)+")


def _hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def redact(value: Any) -> Any:
    """Private strings become a hash; structure, numbers and statuses stay."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in PRIVATE_KEYS:
                out[key] = _redact_leaf(item)
            elif key == "inputs" and isinstance(item, list):
                out[key] = [
                    {"size": i.get("size"), "sha256": i.get("sha256")}
                    for i in item
                    if isinstance(i, dict)
                ]
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return _PATH.sub(lambda m: _hash(m.group(0)), value)
    return value


def _redact_leaf(value: Any) -> Any:
    if isinstance(value, list):
        return [_hash(str(v)) for v in value]
    if value is None:
        return None
    return _hash(str(value))


def _redact_kernel_log(text: str) -> str:
    # kernel lines name cgroup paths and command names; keep numbers and structure
    text = re.sub(r"memcg=[^,\s]*", lambda m: "memcg=" + _hash(m.group(0)), text)
    return re.sub(r"\(([^)]*)\) total-vm", lambda m: f"({_hash(m.group(1))}) total-vm", text)


def make_bundle(run_dir: Path, target: Path | None = None, *, redacted: bool = False) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").exists():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no summary.json)")
    target = target or run_dir.with_name(run_dir.name + ("-redacted" if redacted else "") + ".zip")
    manifests = sorted(p.name for p in run_dir.glob("run_manifest_*.json"))
    names = [n for n in (*ALWAYS, *manifests) if (run_dir / n).exists()]
    if not redacted:
        names += [n for n in UNREDACTED_ONLY if (run_dir / n).exists()]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            path = run_dir / name
            if not redacted:
                archive.write(path, name)
                continue
            if name.endswith(".json"):
                archive.writestr(name, json.dumps(redact(json.loads(path.read_text())), indent=2))
            elif name.endswith(".jsonl"):
                lines = [
                    json.dumps(redact(json.loads(line)))
                    for line in path.read_text().splitlines()
                    if line
                ]
                archive.writestr(name, "\n".join(lines) + ("\n" if lines else ""))
            elif name == "dmesg_excerpt.txt":
                archive.writestr(name, _redact_kernel_log(path.read_text()))
            else:
                archive.write(path, name)
        archive.writestr(
            "BUNDLE.txt",
            "oomguard bug-report bundle"
            + (
                " (redacted: arguments, names, payloads and messages replaced by hashes)"
                if redacted
                else ""
            )
            + "\nfiles: "
            + ", ".join(names)
            + "\n",
        )
    target.chmod(0o600)
    return target
