"""Which cgroup a process is in, and what its memory files say. Reading only.

A process's cgroup is found from ``/proc/PID/cgroup`` and ``/proc/PID/mountinfo``, never
assumed: reading ``/sys/fs/cgroup/memory/memory.limit_in_bytes`` reads the *root*
cgroup's limit, not the limit that applies to you (the classic container bug).

Layouts:

``v1``      only legacy hierarchies; memory is one of them.
``v2``      only the unified hierarchy.
``hybrid``  both mounted (systemd's hybrid mode); the memory controller lives on one of them,
            named by :attr:`CgroupSetup.memory_version`.
``none``    no cgroup file system visible.

v1 counters come from ``memory.usage_in_bytes``, ``memory.limit_in_bytes``,
``memory.max_usage_in_bytes``, ``memory.failcnt``, ``memory.oom_control`` and
``memory.stat``; v2 counters from ``memory.current``, ``memory.max``, ``memory.high``,
``memory.peak``, ``memory.events`` and ``memory.stat``. All amounts are bytes; "no limit"
is ``None``.

Three figures, never to be confused:

``usage``        what the cgroup is charged (``memory.usage_in_bytes`` / ``memory.current``):
                 anonymous memory *and* page cache, which the kernel drops at will when the
                 cgroup nears its limit.
``working_set``  usage minus the inactive file cache (v1 ``total_inactive_file``, v2
                 ``inactive_file``): the memory the kernel cannot simply drop, as the
                 kubelet's ``container_memory_working_set_bytes``. Decisions use this one.
RSS              resident pages of the processes (:mod:`oomguard.memory.process`): neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

CgroupVersion = Literal["v1", "v2"]
Layout = Literal["v1", "v2", "hybrid", "none"]

# v1 reports "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE, rounded to the page size; anything
# this large is no limit at all.
V1_UNLIMITED_THRESHOLD = 2**62


@dataclass(frozen=True)
class Mount:
    """A cgroup file system mount from mountinfo."""

    version: CgroupVersion
    root: str  # the path inside the hierarchy that is mounted at ``mountpoint``
    mountpoint: Path
    controllers: frozenset[str]
    read_only: bool


@dataclass(frozen=True)
class CgroupSetup:
    """Where a process's memory cgroup is, and how the machine's cgroups are laid out."""

    layout: Layout
    memory_version: CgroupVersion | None
    memory_dir: Path | None  # the process's own memory cgroup directory
    memory_mount: Path | None  # the mount point it lies under (the top we may walk to)
    read_only: bool = False
    unified_dir: Path | None = None  # the process's v2 cgroup, also in hybrid mode
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CgroupMemory:
    """One reading of a cgroup's memory files. ``events`` holds the kernel's counters;
    ``inactive_file`` the page cache the kernel may reclaim first (hierarchical in v1)."""

    path: Path
    version: CgroupVersion
    usage: int
    limit: int | None
    peak: int | None
    high: int | None
    events: Mapping[str, int]
    inactive_file: int = 0

    @property
    def oom_kill(self) -> int:
        return self.events.get("oom_kill", 0)

    @property
    def working_set(self) -> int:
        """Usage less the inactive file cache (the kubelet's working set), never below 0."""
        return working_set(self.usage, self.inactive_file)


# memory.stat's line for the inactive file cache: v1's own ``inactive_file`` leaves out the
# cgroup's descendants, ``total_inactive_file`` counts them (as usage_in_bytes does)
INACTIVE_FILE_KEY: dict[CgroupVersion, bytes] = {
    "v1": b"total_inactive_file",
    "v2": b"inactive_file",
}
STAT_READ_BYTES = 16384  # memory.stat is ~1 KiB (v1) to ~3 KiB (v2, Linux 6.x)


def working_set(usage: int, inactive_file: int) -> int:
    """The kubelet's rule: usage minus inactive file pages, 0 where those exceed it (the two
    files are read a moment apart)."""
    return usage - inactive_file if inactive_file < usage else 0


def stat_value(text: bytes, key: bytes) -> int:
    """The number on ``key``'s line of a memory.stat text (0 where it has none).

    A search for the one line, not a parse of all ~40: this runs on the supervisor's hot
    path. ``key`` must match a whole name at the start of a line (``inactive_file`` is not
    found inside ``total_inactive_file``)."""
    if text.startswith(key + b" "):
        start = len(key) + 1
    else:
        at = text.find(b"\n" + key + b" ")
        if at < 0:
            return 0
        start = at + len(key) + 2
    end = text.find(b"\n", start)
    return int(text[start:] if end < 0 else text[start:end])


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """``/proc/PID/cgroup`` -> ({v1 controller: path}, v2 path or None)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        hier_id, controllers, path = line.split(":", 2)
        if hier_id == "0" and controllers == "":
            v2 = path
            continue
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return v1, v2


def parse_mountinfo(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts in ``/proc/PID/mountinfo`` (see proc(5))."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        fstype, _source, *rest = right.split()
        super_options = rest[0].split(",") if rest else []
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint, mount_options = fields[3], fields[4], fields[5].split(",")
        read_only = "ro" in mount_options or "ro" in super_options
        if fstype == "cgroup2":
            mounts.append(Mount("v2", root, Path(_unescape(mountpoint)), frozenset(), read_only))
        else:
            known = {"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec"}
            controllers = frozenset(o for o in super_options if o not in known and "=" not in o)
            mounts.append(Mount("v1", root, Path(_unescape(mountpoint)), controllers, read_only))
    return mounts


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return (
        path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def _join(mount: Mount, cgroup_path: str) -> Path:
    """The directory of ``cgroup_path`` under ``mount``, honouring the mount's root."""
    root = mount.root.rstrip("/")
    if root and (cgroup_path == root or cgroup_path.startswith(root + "/")):
        relative = cgroup_path[len(root) :]
    elif root and root != "/":
        # inside a cgroup namespace the path is already relative to the mount
        relative = cgroup_path if not cgroup_path.startswith("/..") else "/"
    else:
        relative = cgroup_path
    return mount.mountpoint / relative.lstrip("/")


def resolve_setup(proc_cgroup: str, mountinfo: str, unified_controllers: str | None) -> CgroupSetup:
    """Work out the layout from the text of the three files (pure; tests feed fixtures)."""
    v1_paths, v2_path = parse_proc_cgroup(proc_cgroup)
    mounts = parse_mountinfo(mountinfo)
    v1_mounts = [m for m in mounts if m.version == "v1"]
    v2_mounts = [m for m in mounts if m.version == "v2"]
    layout: Layout
    if v1_mounts and v2_mounts:
        layout = "hybrid"
    elif v1_mounts:
        layout = "v1"
    elif v2_mounts:
        layout = "v2"
    else:
        return CgroupSetup("none", None, None, None, notes=("no cgroup file system is mounted",))

    unified_dir = _join(v2_mounts[0], v2_path) if v2_mounts and v2_path is not None else None
    memory_mount = next((m for m in v1_mounts if "memory" in m.controllers), None)
    if memory_mount is not None and "memory" in v1_paths:
        return CgroupSetup(
            layout,
            "v1",
            _join(memory_mount, v1_paths["memory"]),
            memory_mount.mountpoint,
            read_only=memory_mount.read_only,
            unified_dir=unified_dir,
        )
    if v2_mounts and v2_path is not None:
        v2 = v2_mounts[0]
        controllers = (unified_controllers or "").split()
        notes: tuple[str, ...] = ()
        if "memory" not in controllers:
            notes = ("the memory controller is not enabled on the unified (v2) hierarchy",)
            return CgroupSetup(layout, None, None, None, v2.read_only, unified_dir, notes)
        return CgroupSetup(layout, "v2", unified_dir, v2.mountpoint, v2.read_only, unified_dir)
    return CgroupSetup(layout, None, None, None, notes=("no memory controller is mounted",))


def detect_setup(pid: int | str = "self") -> CgroupSetup:
    """The cgroup layout as seen by process ``pid`` (default: this process)."""
    try:
        proc_cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return CgroupSetup("none", None, None, None, notes=("/proc/PID/cgroup is not readable",))
    unified_controllers: str | None = None
    for mount in parse_mountinfo(mountinfo):
        if mount.version == "v2":
            _, v2_path = parse_proc_cgroup(proc_cgroup)
            if v2_path is not None:
                unified_controllers = _read_text(_join(mount, v2_path) / "cgroup.controllers")
            break
    return resolve_setup(proc_cgroup, mountinfo, unified_controllers)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    return int(text)


def _v1_limit(value: int | None) -> int | None:
    return None if value is None or value >= V1_UNLIMITED_THRESHOLD else value


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse 'key value' lines (``memory.events``, ``memory.oom_control``, ``memory.stat``)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            values[parts[0]] = int(parts[1])
    return values


def read_cgroup_memory(path: Path, version: CgroupVersion) -> CgroupMemory:
    """Read the memory files of the cgroup directory ``path``. Raises OSError if it is gone."""
    if version == "v1":
        usage = _read_int(path / "memory.usage_in_bytes")
        if usage is None:
            raise FileNotFoundError(f"{path}/memory.usage_in_bytes")
        events = parse_flat_keyed(_read_text(path / "memory.oom_control") or "")
        events.pop("oom_kill_disable", None)
        failcnt = _read_int(path / "memory.failcnt")
        if failcnt is not None:
            events["failcnt"] = failcnt
        return CgroupMemory(
            path=path,
            version="v1",
            usage=usage,
            limit=_v1_limit(_read_int(path / "memory.limit_in_bytes")),
            peak=_read_int(path / "memory.max_usage_in_bytes"),
            high=None,
            events=events,
            inactive_file=_read_inactive_file(path, "v1"),
        )
    current = _read_int(path / "memory.current")
    if current is None:
        raise FileNotFoundError(f"{path}/memory.current")
    return CgroupMemory(
        path=path,
        version="v2",
        usage=current,
        limit=_read_int(path / "memory.max"),
        peak=_read_int(path / "memory.peak"),  # Linux 5.19+
        high=_read_int(path / "memory.high"),
        events=parse_flat_keyed(_read_text(path / "memory.events") or ""),
        inactive_file=_read_inactive_file(path, "v2"),
    )


def _read_inactive_file(path: Path, version: CgroupVersion) -> int:
    try:
        text = (path / "memory.stat").read_bytes()
    except OSError:
        return 0  # no memory.stat (a minimal fixture, an old kernel): nothing to subtract
    return stat_value(text, INACTIVE_FILE_KEY[version])


def enclosing_limits(setup: CgroupSetup) -> list[tuple[Path, int]]:
    """Every memory limit set on the process's cgroup and its ancestors up to the mount."""
    if setup.memory_dir is None or setup.memory_version is None or setup.memory_mount is None:
        return []
    limits: list[tuple[Path, int]] = []
    current = setup.memory_dir
    top = setup.memory_mount
    while True:
        name = "memory.limit_in_bytes" if setup.memory_version == "v1" else "memory.max"
        try:
            value = _read_int(current / name)
        except ValueError:
            value = None
        if setup.memory_version == "v1":
            value = _v1_limit(value)
        if value is not None:
            limits.append((current, value))
        if current == top or top not in current.parents:
            break
        current = current.parent
    return limits
