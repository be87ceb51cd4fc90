"""
The chroots' mount namespace: every account's bind mounts live there, not in
PID 1's mount namespace.

systemd slows down with the number of mounts of its namespace (at 1,000
accounts, 7,000 mounts: ``systemctl restart systemd-logind`` 40 s,
``daemon-reload`` 18 s, every unit with a mount namespace of its own 7 s;
bench/mounts.py).  So the chroots' mounts are made in a namespace of their own,
pinned (a bind mount of its nsfs file) at ``paths.CHROOT_NS``:

* ``paths.CHROOT_NS_DIR`` is a private bind mount (the kernel refuses to pin a
  namespace on a shared mount);
* the namespace is made with its mounts' propagation unchanged: the host's
  mounts (and unmounts) reach it, as they reach a process of PID 1's;
* the chroot base is a private bind mount of itself on the host, made before
  the namespace, so that its copy in the namespace is private too: the
  accounts' mounts under it never propagate back to the host's namespace,
  where the chroots are plain directories (the skeletons webarch_chroot
  builds);
* the mounts are listed in ``paths.CHROOT_FSTAB`` (fstab syntax), which
  webarch-chroots.service mounts at boot and webarch_mount keeps.

sshd and Salt's commands in a chroot enter it (``nsenter --mount=CHROOT_NS``);
the units that run in a chroot (PHP-FPM pools, cron jobs, Matomo's archiving)
get the same binds from systemd in a namespace of their own
(``webarch_layout.unit_binds``).  Plain Python, standard library only: Salt
imports it from ``_utils``, the program webarch-chroots from
``/usr/local/lib/webarch``.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import NamedTuple

import webarch_paths as paths

NS = paths.CHROOT_NS
NS_DIR = paths.CHROOT_NS_DIR
FSTAB = paths.CHROOT_FSTAB
#: Where the chroots' mounts were before they had a namespace of their own.
HOST_FSTAB = "/etc/fstab"


class Mount(NamedTuple):
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    parent: int
    target: str
    fstype: str
    #: Per-mount and superblock options and the propagation tags (``shared:N``...).
    options: frozenset[str]

    @property
    def shared(self) -> bool:
        """Whether the mount shares mount events with peers."""
        return any(o.startswith("shared:") for o in self.options)


def unescape(path: str) -> str:
    """mountinfo and fstab escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo text, in its order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        sep = fields.index("-")
        options = set(fields[5].split(",")) | set(fields[sep + 3].split(","))
        options |= set(fields[6:sep])
        mounts.append(
            Mount(int(fields[0]), int(fields[1]), unescape(fields[4]), fields[sep + 1],
                  frozenset(options))
        )  # fmt: skip
    return mounts


def host_mounts() -> list[Mount]:
    """The mounts of the calling process's namespace (the host's, for Salt)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return parse_mountinfo(handle.read())


def pinned(host: list[Mount]) -> bool:
    """Whether the chroots' namespace is pinned (its nsfs file is mounted at NS)."""
    return any(m.target == NS and m.fstype == "nsfs" for m in host)


def in_namespace(argv: list[str]) -> list[str]:
    """``argv`` run in the chroots' namespace (needs root: CAP_SYS_ADMIN, CAP_SYS_CHROOT)."""
    return ["/usr/bin/nsenter", f"--mount={NS}", "--", *argv]


def ns_mounts() -> list[Mount]:
    """The mounts of the chroots' namespace (none if it is not pinned)."""
    if not pinned(host_mounts()):
        return []
    out = subprocess.run(
        in_namespace(["cat", "/proc/self/mountinfo"]), capture_output=True, text=True, check=True
    )
    return parse_mountinfo(out.stdout)


def top_at(mounts: list[Mount], target: str) -> Mount | None:
    """The mount a path lookup of ``target`` finds there (the last stacked), if any."""
    here = [m for m in mounts if m.target == target]
    ids = {m.mount_id for m in here}
    tops = [m for m in here if not any(o.parent == m.mount_id for o in here if o.mount_id in ids)]
    return tops[-1] if tops else None


def under_base(mounts: list[Mount], base: str) -> dict[str, Mount]:
    """Mount point -> mount, of the mounts on the chroot base's own bind mount.

    In the namespace the host's mounts under ``base`` (propagated to the copy of
    the host's root, under the base's bind) are hidden: only the descendants of
    the top mount at ``base`` count.
    """
    top = top_at(mounts, base)
    if top is None:
        return {}
    children: dict[int, list[Mount]] = {}
    for mount in mounts:
        children.setdefault(mount.parent, []).append(mount)
    found: dict[str, Mount] = {}
    queue = list(children.get(top.mount_id, []))
    while queue:
        mount = queue.pop(0)
        if mount.mount_id == top.mount_id:
            continue
        found[mount.target] = mount  # a mount stacked on another comes after it
        queue.extend(children.get(mount.mount_id, []))
    return found


def read_fstab(path: str) -> list[tuple[str, ...]]:
    """The entries of an fstab file (its first six fields, unescaped), in order."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            entries.append(tuple(unescape(f) for f in fields[:6]))
    return entries


def mount_command(device: str, target: str, fstype: str, opts: str) -> list[str]:
    """mount(8) for one entry (no utab: the host's /run is shared with the namespace)."""
    cmd = ["mount", "-n", "-o", opts]
    if fstype != "none":
        cmd += ["-t", fstype]
    return [*cmd, device, target]


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _pin(attempts: int = 10) -> None:
    """Pin a new mount namespace at NS.

    Right after boot the pin sometimes fails with EINVAL although NS_DIR was
    just made private (seen on the test hosts, a second try a moment later
    succeeds): tried again, NS_DIR made private again first.
    """
    for attempt in range(attempts):
        try:
            _run(["unshare", f"--mount={NS}", "--propagation", "unchanged", "true"])
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
        time.sleep(0.5)
        _run(["mount", "--make-private", NS_DIR])


def _propagating(mount: Mount | None) -> bool:
    """Whether ``mount`` sends or receives mount events (shared or a slave)."""
    if mount is None:
        return False
    return mount.shared or any(o.startswith("master:") for o in mount.options)


def setup(base: str) -> list[str]:
    """Pin the chroots' namespace, ``base`` a private mount in it; idempotent.

    ``base`` is made a private recursive bind mount on the host first: the new
    namespace's copy of it is private too, so that nothing mounted under it
    there propagates back to the host (a bind made in the namespace, under its
    copy of the shared root, would reach the host's root).  The old layout's
    mounts under ``base`` come along into that bind, still seen by the host's
    processes until webarch_mount moves them; the namespace drops its copies.
    Returns what it did.  Run after boot has made the host's mounts shared
    (webarch-chroots.service: After=local-fs.target).
    """
    done = []
    os.makedirs(NS_DIR, mode=0o755, exist_ok=True)
    os.makedirs(base, mode=0o755, exist_ok=True)
    host = host_mounts()
    if top_at(host, NS_DIR) is None:
        _run(["mount", "--bind", NS_DIR, NS_DIR])
        done.append(f"bind-mounted {NS_DIR}")
        host = host_mounts()
    if _propagating(top_at(host, NS_DIR)):
        _run(["mount", "--make-private", NS_DIR])
        done.append(f"made {NS_DIR} private")
    if top_at(host, base) is None:
        _run(["mount", "--rbind", base, base])
        done.append(f"bind-mounted {base}")
        host = host_mounts()
    if _propagating(top_at(host, base)) or any(m.shared for m in under_base(host, base).values()):
        _run(["mount", "--make-rprivate", base])
        done.append(f"made {base} private")
    if not pinned(host):
        with open(NS, "a", encoding="utf-8"):
            pass
        _pin()
        done.append(f"pinned a new mount namespace at {NS}")
        stale = sorted(under_base(ns_mounts(), base), key=lambda t: -t.count("/"))
        for target in stale:
            subprocess.run(in_namespace(["umount", "-l", target]), check=False, capture_output=True)
        if stale:
            done.append(f"dropped the namespace's copies of {len(stale)} host mounts under {base}")
    return done


def mount_all(base: str, fstab: str = FSTAB) -> tuple[list[str], list[str]]:
    """Mount every entry of ``fstab`` not mounted in the namespace yet (parents first).

    Returns (mounted, failures); an entry with ``nofail`` that fails is a failure too.
    """
    have = under_base(ns_mounts(), base)
    mounted, failures = [], []
    entries = sorted(read_fstab(fstab), key=lambda e: e[1].rstrip("/").count("/"))
    for device, target, fstype, opts, *_ in (e for e in entries if len(e) >= 4):
        if target in have:
            continue
        argv = in_namespace(mount_command(device, target, fstype, opts))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            mounted.append(target)
        else:
            failures.append(f"{target}: {done.stderr.strip()}")
    return mounted, failures
