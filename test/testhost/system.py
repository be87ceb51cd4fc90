"""Small host-side helpers: running commands, mounts and processes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: Environment used for commands run inside a rootfs or a container.
SANE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
}

#: Host environment variables passed on to apt/pip when building an image.
PASSTHROUGH_ENV: tuple[str, ...] = (
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_DEFAULT_TIMEOUT",
)

NSPAWN_RUNTIME_DIR = Path("/run/systemd/nspawn")


class CommandError(RuntimeError):
    """A command failed; the message carries the tail of its output."""


def sane_env(extra: Mapping[str, str] | None = None, passthrough: bool = False) -> dict[str, str]:
    """Return a minimal environment, optionally with proxy/pip settings of the host."""
    env = dict(SANE_ENV)
    if passthrough:
        env.update({k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ})
    if extra:
        env.update(extra)
    return env


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file ('' if missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_logged(
    cmd: Sequence[str],
    logfile: Path,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Run ``cmd`` appending its output to ``logfile``; raise CommandError on failure."""
    log.debug("running %s", " ".join(cmd))
    with logfile.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        command = " ".join(cmd)
        raise CommandError(
            f"command failed ({proc.returncode}): {command}\n--- {logfile} ---\n{tail(logfile)}"
        )


def _unescape_mountinfo(field: str) -> str:
    """Decode the octal escapes (``\\040`` etc.) used in /proc/self/mountinfo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[tuple[str, str, str]]:
    """Return ``(mount point, fs type, super options)`` for each mount of this namespace."""
    result = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        result.append((_unescape_mountinfo(fields[4]), fields[sep + 1], fields[sep + 3]))
    return result


def mounts_under(path: Path) -> list[str]:
    """Return the mount points at or below ``path``, deepest first."""
    root = str(path.resolve())
    found = [m for m, _, _ in mounts() if m == root or m.startswith(root + "/")]
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def is_mounted(path: Path) -> bool:
    """Tell whether ``path`` is a mount point."""
    return str(path.resolve()) in {m for m, _, _ in mounts()}


def umount_all(path: Path) -> None:
    """Unmount everything at or below ``path`` (deepest first, lazily as a last resort)."""
    for _ in range(5):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            proc = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                log.debug("umount %s failed: %s", point, proc.stderr.strip())
        time.sleep(0.1)
    for point in mounts_under(path):
        log.warning("lazy unmount of busy %s", point)
        subprocess.run(["umount", "-l", point], check=False)


def mount(args: Sequence[str]) -> None:
    """Run ``mount`` with ``args``; raise CommandError on failure."""
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CommandError(f"mount {' '.join(args)} failed: {proc.stderr.strip()}")


def ensure_nspawn_runtime_dir() -> None:
    """Mount a tmpfs on /run/systemd/nspawn (needed by systemd-nspawn without systemd as init)."""
    if not is_mounted(NSPAWN_RUNTIME_DIR):
        NSPAWN_RUNTIME_DIR.mkdir(parents=True, exist_ok=True)
        mount(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(NSPAWN_RUNTIME_DIR)])


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    match = re.search(r"^State:\s+(\S)", status, re.M)
    return bool(match) and match.group(1) not in ("Z", "X")


def pid_cmdline(pid: int) -> list[str]:
    """Return the argv of ``pid`` ([] if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_children(pid: int) -> list[int]:
    """Return the child pids of ``pid`` (all its threads)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return children


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is gone (or a zombie); return False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)


def systemd_cgroup_roots() -> list[Path]:
    """Mount points of the hierarchies systemd tracks processes in (cgroup2, name=systemd)."""
    roots: list[Path] = []
    for point, fstype, opts in mounts():
        tracked = fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(","))
        if tracked and Path(point) not in roots:
            roots.append(Path(point))
    return roots


def cgroup_pids(cgroup: Path) -> list[int]:
    """Pids in ``cgroup`` and all its descendants."""
    pids: list[int] = []
    # os.walk, not rglob: a cgroup that goes away during the walk is skipped.
    for directory, _, files in os.walk(cgroup):
        if "cgroup.procs" not in files:
            continue
        try:
            pids += [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
        except OSError:
            continue
    return pids


def remove_cgroup(cgroup: Path) -> None:
    """Kill what is left in ``cgroup`` (a tree we created) and remove it bottom-up."""
    if not cgroup.is_dir():
        return
    for pid in cgroup_pids(cgroup):
        log.warning("killing leftover pid %d in %s", pid, cgroup)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while cgroup_pids(cgroup) and time.monotonic() < deadline:
        time.sleep(0.05)
    for directory, _, _ in sorted(os.walk(cgroup), key=lambda w: w[0].count("/"), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
