"""The cgroup v2 lane: the suite's real-cgroup tests on Debian 12's kernel, in a VM.

This machine's memory controller is on cgroup v1; most users' machines have it on v2. The
lane boots Debian 12's own kernel (``linux-image-6.1.0-*-amd64``, cgroup v2 with the
memory controller, a ``memory.peak`` that cannot be reset) under ``qemu-system-x86_64``
with software emulation, and runs every test marked ``cgroups`` there (but the Dask
cluster's, too slow to start under emulation; inside.sh says why)::

    host /  ──9p, read-only──►  VM /host  ──chroot──►  the same tree, the same python
    REPO/.vm/results  ◄──9p, read-write──  the lane's exit status and junit report
    /tmp: an ext4 scratch disk (page-cache tests need a file system with a page cache);
    /run, /dev/shm: tmpfs (the tree is read-only there)

The initramfs is busybox plus the virtio and 9p modules (and zram, for swap) of the same
kernel package. Nothing is committed: the kernel package and the initramfs are cached in
``REPO/.vm`` (or ``$OOMGUARD_VM_CACHE``).

Software emulation because the host's ``/dev/kvm`` does not boot a stock kernel here;
``-cpu max`` because numpy needs instructions qemu's default CPU model lacks.

Where qemu cannot run (no qemu-system-x86_64, no busybox-static, no apt to fetch the
kernel) the lane fails under ``CI=true`` and skips with the reason elsewhere.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KERNEL_PACKAGE = re.compile(r"^linux-image-6\.1\.0-[0-9]+-amd64$")
# what the init needs, each loaded after what it depends on (read from the modules)
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "zram", "virtio_blk", "crc32c_generic", "ext4")
SCRATCH_SIZE = 6 * 1024**3  # the VM's /tmp: a sparse ext4 image (tmpfs has no page cache to test)
VM_MEMORY = "4G"
VM_CPUS = "2"


# the lane's tests: every real-cgroup test but the Dask cluster's (a scheduler and two worker
# nodes, each an interpreter start that takes tens of seconds under software emulation, over
# the same node engine and limiter the rest of the lane tests on this kernel)
MARKER = ("-m", "cgroups")
SELECTION = (*MARKER, "--ignore=tests/dask")


class Unavailable(Exception):
    """The VM cannot be started here (a tool or the kernel is missing)."""


def cache_dir() -> Path:
    return Path(os.environ.get("OOMGUARD_VM_CACHE") or REPO / ".vm")


def check_tools() -> tuple[str, str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise Unavailable("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    busybox = shutil.which("busybox")
    if busybox is None or not _is_static(Path(busybox)):
        raise Unavailable("no static busybox (apt-get install busybox-static)")
    return qemu, busybox


def _is_static(path: Path) -> bool:
    # a dynamic ELF names its interpreter; the initramfs has no libc to load
    return b"/lib64/ld-linux" not in path.read_bytes()[:4096]


def kernel_package_name() -> str:
    try:
        out = subprocess.run(
            ["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise Unavailable(f"cannot ask apt for Debian 12's kernel: {err}") from err
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    names = [n for n in names if KERNEL_PACKAGE.match(n)]
    if not names:
        raise Unavailable("apt knows no linux-image-6.1.0-*-amd64 (a Debian 12 source list?)")
    return max(names, key=lambda n: int(n.split("-")[3]))


def fetch_kernel(cache: Path) -> Path:
    """The unpacked kernel package: ``apt-get download`` and ``dpkg-deb -x``, once."""
    unpacked = cache / "kernel"
    if list(unpacked.glob("boot/vmlinuz-*")):
        return unpacked
    downloads = cache / "deb"
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob("linux-image-6.1.0-*-amd64_*.deb"))
    if not debs:
        name = kernel_package_name()
        print(f"== v2 lane: apt-get download {name}", flush=True)
        _tool(["apt-get", "download", "-q", name], downloads)
        debs = sorted(downloads.glob("linux-image-6.1.0-*-amd64_*.deb"))
    partial = cache / "kernel.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _tool(["dpkg-deb", "-x", str(debs[-1]), str(partial)], cache)
    partial.rename(unpacked)
    return unpacked


def _tool(command: list[str], cwd: Path) -> None:
    try:
        subprocess.run(command, cwd=cwd, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise Unavailable(f"{command[0]} failed: {err}") from err


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """``wanted`` and everything they depend on, dependencies first (no depmod needed)."""
    files = {p.name.split(".ko")[0]: p for p in modules_dir.rglob("*.ko*")}
    order: list[Path] = []

    def visit(name: str) -> None:
        path = files.get(name) or files.get(name.replace("-", "_"))
        if path is None:
            raise Unavailable(f"module {name} is not in {modules_dir}")
        if path in order:
            return
        info = path.read_bytes()
        match = re.search(rb"depends=([^\0]*)\0", info)
        for dependency in match.group(1).decode().split(",") if match else []:
            if dependency:
                visit(dependency)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/modules/$m || echo "init: insmod $m failed"; done
mkdir -p /host
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $opts,cache=loose,ro hostroot /host || echo "init: no host root"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs -o mode=1777 shm /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t ext4 /dev/vda /host/tmp || {{ echo "init: no scratch disk"; mount -t tmpfs tmp /host/tmp; }}
chmod 1777 /host/tmp
mount -t tmpfs run /host/run
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /host/sys/fs/cgroup
mount -t 9p -o $opts results /host{results}
ip link set lo up
# swap, so memory.swap.max has something to refuse: zram, compressed in RAM
echo 1G > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null && swapon /dev/zram0
# directories others cannot enter on the way to the interpreter (pyenv under /root) are
# opened: a tmpfs (0755) of bind mounts of what they hold, for the unprivileged user
n=0
for dir in {opened}; do
  n=$((n + 1)); stash=/stash/$n; mkdir -p $stash
  mount -o bind "/host$dir" $stash
  mount -t tmpfs -o mode=0755 opened "/host$dir"
  for entry in $stash/* $stash/.[!.]* $stash/..?*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue
    target="/host$dir/${{entry##*/}}"
    if [ -L "$entry" ]; then ln -s "$(readlink "$entry")" "$target"; continue; fi
    if [ -d "$entry" ]; then mkdir "$target"; else touch "$target"; fi
    mount -o bind "$entry" "$target"
  done
done
echo "init: booted in $(cut -d' ' -f1 /proc/uptime) s"
chroot /host /usr/bin/env -i PATH={path} OOMGUARD_LANE_PYTHON={python} /bin/sh {inside}
sync
poweroff -f
"""


def closed_directories() -> list[Path]:
    """Directories on the way to the interpreter and the repository that other users cannot
    enter (shallowest first): the delegation test runs the same Python as another user."""
    closed: list[Path] = []
    for target in (Path(sys.executable).resolve(), Path(sys.prefix).resolve() / "lib", REPO):
        for directory in reversed(target.parents):
            if directory not in closed and directory.stat().st_mode & 0o005 != 0o005:
                closed.append(directory)
    return sorted(closed, key=lambda d: len(d.parts))


def build_initramfs(cache: Path, kernel: Path, busybox: str, results: Path, inside: str) -> Path:
    modules_dir = next((kernel / "lib/modules").iterdir())
    order = module_order(modules_dir, MODULES)
    init = INIT.format(
        modules=" ".join(p.name for p in order),
        results=shlex.quote(str(results)),
        inside=shlex.quote(inside),
        path=shlex.quote(os.environ.get("PATH", "/usr/bin:/bin")),
        opened=" ".join(shlex.quote(str(d)) for d in closed_directories()),
        python=shlex.quote(sys.executable),
    )
    archive = _Cpio()
    for directory in ("bin", "proc", "sys", "dev", "lib", "lib/modules", "host"):
        archive.add(directory, b"", 0o040755)
    archive.add("bin/busybox", Path(busybox).read_bytes(), 0o100755)
    archive.add("init", init.encode(), 0o100755)
    for path in order:
        archive.add(f"lib/modules/{path.name}", path.read_bytes(), 0o100644)
    target = cache / "initramfs.gz"
    target.write_bytes(gzip.compress(archive.finish(), compresslevel=1))
    return target


class _Cpio:
    """The kernel's initramfs format: newc cpio (see the kernel's initramfs docs)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def add(self, name: str, data: bytes, mode: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._parts.append(_pad(header + encoded) + _pad(data))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", b"", 0)
        return b"".join(self._parts)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def lane_test_files() -> list[str]:
    """The files that hold the lane's tests, collected here on the host (seconds) so that
    pytest in the VM imports only those: collecting the whole suite there takes minutes."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, *SELECTION], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    files = sorted({line.split("::", 1)[0] for line in done.stdout.splitlines() if "::" in line})
    if not files:
        raise Unavailable(f"the host's pytest collected no cgroups tests: {done.stdout[-500:]}")
    return files


def write_request(cache: Path, command: str | None, pytest_args: list[str]) -> Path:
    """The results share, holding what the VM is to run: ``command``, or pytest with
    ``pytest_args`` (by default the lane's tests)."""
    results = cache / "results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    if command:
        (results / "command").write_text(command)
    else:
        pytest_args = pytest_args or [*MARKER, *lane_test_files()]
        (results / "args").write_text(shlex.join(pytest_args))
    return results


def make_scratch(cache: Path) -> Path:
    """A fresh, sparse ext4 image for the VM's /tmp: page-cache tests need a file system
    whose reads go through the page cache (tmpfs pages are shared memory instead)."""
    image = cache / "scratch.img"
    image.unlink(missing_ok=True)
    with open(image, "wb") as handle:
        handle.truncate(SCRATCH_SIZE)
    # no metadata checksums: the VM's init has no crc32c module loader to ask for it
    _tool(["mkfs.ext4", "-q", "-F", "-O", "^metadata_csum", str(image)], cache)
    return image


def boot(
    qemu: str, kernel: Path, initramfs: Path, results: Path, scratch: Path, timeout: float
) -> int:
    vmlinuz = next(kernel.glob("boot/vmlinuz-*"))
    command = [
        qemu,
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        VM_CPUS,
        "-m",
        VM_MEMORY,
        "-display",
        "none",
        "-nic",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(vmlinuz),
        "-initrd",
        str(initramfs),
        "-append",
        "console=ttyS0 panic=-1 loglevel=3",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={results},mount_tag=results,security_model=none",
        "-drive",
        f"file={scratch},if=virtio,format=raw,cache=unsafe",
    ]
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"== v2 lane: the VM ran past {timeout:.0f} s and was stopped", flush=True)
        return 124


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=3300, help="seconds for the whole VM")
    parser.add_argument("--run", metavar="COMMAND", help="run this shell command instead")
    parser.add_argument(
        "pytest_args",
        nargs="*",
        help="pytest's arguments inside (default: " + " ".join(SELECTION) + ")",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    ci = os.environ.get("CI") == "true"
    cache = cache_dir()
    try:
        qemu, busybox = check_tools()
        kernel = fetch_kernel(cache)
    except Unavailable as err:
        if ci:
            print(f"== v2 lane: FAILED: the VM cannot start: {err}", flush=True)
            return 1
        print(f"== v2 lane: SKIPPED (not under CI=true): the VM cannot start: {err}", flush=True)
        return 0
    try:
        results = write_request(cache, args.run, args.pytest_args)
    except Unavailable as err:
        print(f"== v2 lane: FAILED: {err}", flush=True)
        return 1
    inside = str(REPO / "tests/vm/inside.sh")
    initramfs = build_initramfs(cache, kernel, busybox, results, inside)
    print(f"== v2 lane: booting {next(kernel.glob('boot/vmlinuz-*')).name}", flush=True)
    try:
        scratch = make_scratch(cache)
    except Unavailable as err:
        print(f"== v2 lane: FAILED: the VM cannot start: {err}", flush=True)
        return 1
    try:
        code = boot(qemu, kernel, initramfs, results, scratch, args.timeout)
    finally:
        scratch.unlink(missing_ok=True)
    rc_file = results / "rc"
    rc = int(rc_file.read_text()) if rc_file.exists() else None
    wall = time.monotonic() - started
    if code != 0 or rc is None:
        print(f"== v2 lane: FAILED: the VM ended with {code} before the tests did", flush=True)
        return 1
    verdict = "passed" if rc == 0 else f"FAILED (exit status {rc})"
    print(f"== v2 lane: {verdict} in {wall:.0f} s", flush=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
