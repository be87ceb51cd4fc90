"""
Disk quotas of the hosting accounts: the file system of a path, whether it has
user quotas on, an account's limits and usage, and setting them.

Limits and usage are read with the kernel's ``quotactl(2)`` (``Q_GETINFO``,
``Q_GETQUOTA``: exact numbers, no report to parse); limits are set with
``setquota``, the command a sysadmin would type.  Space is in KiB (the
kernel's quota blocks), files are counts, ``0`` is no limit.

On btrfs, which has no user quotas, each home is a subvolume and its qgroup
(``0/SUBVOLUME-ID``) carries the account's hard space limit (``btrfs qgroup
limit``): btrfs has no soft limits, grace periods or file counts, so only
``blocks_hard`` can be set there.  Figures are read from ``btrfs qgroup show
--raw`` (its JSON output crashes in Debian 12's btrfs-progs 6.2).

Salt's own ``quota`` module reports whole file systems (``repquota -a``) and
sets limits without telling what was there; its ``quota`` state only switches
a file system's quotas on or off: the webarch_quota state needs one account's
limits, compared before anything changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import pwd
import shutil
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_quota"
__func_alias__ = {"set_": "set"}

# quotactl(2): commands (QCMD(cmd, type) = cmd << 8 | type), quota type, valid flags.
Q_GETINFO = 0x800005
Q_GETQUOTA = 0x800007
USRQUOTA = 0
QIF_LIMITS = 1 | 4

LIMITS = ("blocks_soft", "blocks_hard", "inodes_soft", "inodes_hard")

BTRFS = "btrfs"
#: The inode number of every btrfs subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_INODE = 256
#: The id of the top-level subvolume (a plain directory in it has this root id).
TOPLEVEL_ID = 5


class _Dqblk(ctypes.Structure):
    """``struct if_dqblk`` (limits in 1 KiB blocks, space used in bytes)."""

    _fields_ = [
        ("bhardlimit", ctypes.c_uint64),
        ("bsoftlimit", ctypes.c_uint64),
        ("curspace", ctypes.c_uint64),
        ("ihardlimit", ctypes.c_uint64),
        ("isoftlimit", ctypes.c_uint64),
        ("curinodes", ctypes.c_uint64),
        ("btime", ctypes.c_uint64),
        ("itime", ctypes.c_uint64),
        ("valid", ctypes.c_uint32),
    ]


class _Dqinfo(ctypes.Structure):
    """``struct if_dqinfo``."""

    _fields_ = [
        ("bgrace", ctypes.c_uint64),
        ("igrace", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("valid", ctypes.c_uint32),
    ]


def __virtual__() -> str:
    return __virtualname__


def _quotactl(cmd: int, device: str, ident: int, buf: ctypes.Structure) -> int:
    """Call quotactl(2); return 0 or the errno."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    ret = libc.quotactl(
        ctypes.c_int((cmd << 8) | USRQUOTA), device.encode(), ctypes.c_int(ident), ctypes.byref(buf)
    )
    return ctypes.get_errno() if ret != 0 else 0


#: Why a file system has no user quotas, by the errno of Q_GETINFO.
WHY = {
    errno.ESRCH: "user quotas are not on for it (mount it with usrquota; ext4 needs the "
    "quota feature, tune2fs -O quota, or quota files from quotacheck and quotaon)",
    errno.EPERM: "quotactl is not allowed here (a container's system call filter?)",
    errno.ENOSYS: "the kernel has no quota support (quotactl missing)",
    errno.ENOTBLK: "it is not on a block device, and such a file system has no user quotas here",
    errno.ENOENT: "its device is not found here, so quotactl cannot reach it",
    errno.ENODEV: "it cannot do quotas (no such block device)",
    errno.EINVAL: "it cannot do user quotas",
    errno.ENOTTY: "it cannot do user quotas",
    errno.EOPNOTSUPP: "it cannot do user quotas",
}


def filesystem(path: str = "/home") -> dict[str, Any]:
    """
    The file system that holds ``path`` and whether it has user quotas on
    (on btrfs: whether its quotas, the qgroups, are on).

    Returns ``mount``, ``device``, ``fstype``, ``quota`` (true or false) and,
    without quotas, ``problem``: why, in words.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.filesystem /home/alice
    """
    existing = path
    while not os.path.exists(existing) and existing not in ("", "/"):
        existing = os.path.dirname(existing)
    out = __salt__["cmd.run_all"](
        ["findmnt", "-J", "-v", "-o", "TARGET,SOURCE,FSTYPE", "-T", existing or "/"],
        python_shell=False,
    )
    if out["retcode"] != 0:
        raise CommandExecutionError(f"findmnt -T {existing} failed: {out['stderr']}")
    found = json.loads(out["stdout"])["filesystems"][0]
    result = {"mount": found["target"], "device": found["source"], "fstype": found["fstype"]}
    if result["fstype"] == BTRFS:
        if shutil.which("btrfs") is None:
            problem = "the btrfs command is missing (package btrfs-progs, not installed yet)"
            return {**result, "quota": False, "problem": problem}
        result["quota"] = _qgroups_on(result["mount"])
        if not result["quota"]:
            result["problem"] = (
                f"its quotas (qgroups) are off (btrfs quota enable {result['mount']})"
            )
        return result
    if not result["device"].startswith("/"):
        result.update(quota=False, problem="it is not on a block device, so it has no user quotas")
        return result
    code = _quotactl(Q_GETINFO, result["device"], 0, _Dqinfo())
    result["quota"] = code == 0
    if code:
        result["problem"] = WHY.get(code, os.strerror(code))
    return result


def describe(fs: dict[str, Any]) -> str:
    """
    A file system in words, as the states name it: ``/home (ext4 on /dev/sdb1)``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.describe '{mount: /home, fstype: ext4, device: /dev/sdb1}'
    """
    return f"{fs['mount']} ({fs['fstype']} on {fs['device']})"


def get(name: str, path: str | None = None) -> dict[str, int]:
    """
    User ``name``'s limits and usage on the file system holding ``path``
    (default: the user's home): ``blocks_soft``, ``blocks_hard`` (KiB),
    ``inodes_soft``, ``inodes_hard``, ``space_used`` (bytes), ``inodes_used``.
    On btrfs: the limits and usage of the home's qgroup (soft and file limits
    0, no ``inodes_used``: btrfs counts no files).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.get alice
    """
    user = _user(name)
    fs = filesystem(path or user.pw_dir)
    if not fs["quota"]:
        raise CommandExecutionError(f"no user quotas on {describe(fs)}: {fs['problem']}")
    if fs["fstype"] == BTRFS:
        group = qgroup(path or user.pw_dir)
        return {
            **dict.fromkeys(LIMITS, 0),
            # Rounded up: a limit set by hand in bytes never looks like a KiB one.
            "blocks_hard": -(-group["max_referenced"] // 1024),
            "space_used": group["referenced"],
        }
    block = _Dqblk()
    code = _quotactl(Q_GETQUOTA, fs["device"], user.pw_uid, block)
    if code:
        raise CommandExecutionError(
            f"reading the quota of {name} on {describe(fs)} failed: {os.strerror(code)}"
        )
    return {
        "blocks_soft": block.bsoftlimit,
        "blocks_hard": block.bhardlimit,
        "inodes_soft": block.isoftlimit,
        "inodes_hard": block.ihardlimit,
        "space_used": block.curspace,
        "inodes_used": block.curinodes,
    }


def set_(
    name: str,
    blocks_soft: int = 0,
    blocks_hard: int = 0,
    inodes_soft: int = 0,
    inodes_hard: int = 0,
    path: str | None = None,
) -> dict[str, int]:
    """
    Set user ``name``'s limits (space in KiB, files; 0: none) with ``setquota``
    on the file system holding ``path`` (default: the user's home); return
    them as read back.  On btrfs: the hard space limit of the home's qgroup
    (``btrfs qgroup limit``); any other limit is refused.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.set alice blocks_soft=4194304 blocks_hard=5242880
    """
    user = _user(name)
    fs = filesystem(path or user.pw_dir)
    if not fs["quota"]:
        raise CommandExecutionError(f"no user quotas on {describe(fs)}: {fs['problem']}")
    numbers = [int(v) for v in (blocks_soft, blocks_hard, inodes_soft, inodes_hard)]
    if any(n < 0 for n in numbers):
        raise CommandExecutionError(f"quota limits must not be negative: {numbers}")
    if fs["fstype"] == BTRFS:
        return _set_btrfs(name, dict(zip(LIMITS, numbers, strict=True)), path or user.pw_dir)
    cmd = ["setquota", "-u", name, *map(str, numbers), fs["mount"]]
    out = __salt__["cmd.run_all"](cmd, python_shell=False)
    if out["retcode"] != 0:
        raise CommandExecutionError(f"{' '.join(cmd)} failed: {out['stderr'] or out['stdout']}")
    now = get(name, path)
    if [now[k] for k in LIMITS] != numbers:
        raise CommandExecutionError(
            f"{' '.join(cmd)} left other limits: {[now[k] for k in LIMITS]}"
        )
    return now


def _set_btrfs(name: str, wanted: dict[str, int], home: str) -> dict[str, int]:
    """Set the hard space limit of the qgroup of ``home`` (a subvolume)."""
    others = [k for k in LIMITS if k != "blocks_hard" and wanted[k]]
    if others:
        raise CommandExecutionError(
            f"btrfs qgroups limit space only (no soft limit, no file count): {', '.join(others)}"
            " must be 0"
        )
    size = str(wanted["blocks_hard"] * 1024) if wanted["blocks_hard"] else "none"
    _btrfs(["qgroup", "limit", size, home])
    now = get(name, home)
    if now["blocks_hard"] != wanted["blocks_hard"]:
        raise CommandExecutionError(
            f"btrfs qgroup limit {size} {home} left {now['blocks_hard']} KiB"
        )
    return now


def subvolume(path: str) -> dict[str, Any]:
    """
    Whether ``path`` exists and is a btrfs subvolume (its own qgroup's).

    Returns ``exists``, ``subvolume`` and, for one, ``id`` (its qgroup is
    ``0/ID``).  A subvolume's root directory is inode 256 and its root id
    is not the top level's (5): only such a directory costs a command.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.subvolume /home/alice
    """
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return {"path": path, "exists": False, "subvolume": False}
    result: dict[str, Any] = {"path": path, "exists": True, "subvolume": False}
    if found.st_ino != SUBVOLUME_INODE or shutil.which("btrfs") is None:
        return result
    out = __salt__["cmd.run_all"](
        ["btrfs", "inspect-internal", "rootid", path], python_shell=False, ignore_retcode=True
    )
    root = out["stdout"].strip()
    if out["retcode"] == 0 and root.isdigit() and int(root) != TOPLEVEL_ID:
        result.update(subvolume=True, id=int(root))
    return result


def create_subvolume(path: str) -> dict[str, Any]:
    """
    Create ``path`` as a btrfs subvolume (with quotas on, the kernel gives it
    its qgroup ``0/ID``); return :py:func:`subvolume`'s view of it.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.create_subvolume /home/alice
    """
    if os.path.lexists(path):
        raise CommandExecutionError(f"{path} exists already")
    _btrfs(["subvolume", "create", path])
    made = subvolume(path)
    if not made["subvolume"]:
        raise CommandExecutionError(f"btrfs subvolume create {path} made no subvolume")
    return made


def qgroup(path: str) -> dict[str, Any]:
    """
    The qgroup of the btrfs subvolume ``path``: ``qgroup`` (``0/ID``),
    ``referenced`` and ``exclusive`` (bytes used), ``max_referenced`` (bytes,
    the limit; 0: none).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.qgroup /home/alice
    """
    sub = subvolume(path)
    if not sub["subvolume"]:
        raise CommandExecutionError(f"{path} is not a btrfs subvolume: it has no qgroup")
    wanted = f"0/{sub['id']}"
    for line in _btrfs(["qgroup", "show", "--raw", "-re", "-f", path]).splitlines():
        fields = line.split()
        if fields and fields[0] == wanted:
            limit = fields[3]
            return {
                "qgroup": wanted,
                "referenced": int(fields[1]),
                "exclusive": int(fields[2]),
                "max_referenced": 0 if limit == "none" else int(limit),
            }
    raise CommandExecutionError(f"btrfs qgroup show lists no qgroup {wanted} of {path}")


def quotas_on(path: str = "/home") -> dict[str, Any]:
    """
    Switch on the quotas (qgroups) of the btrfs holding ``path`` and wait for
    their first count of what is there; return :py:func:`filesystem`.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_quota.quotas_on /home
    """
    fs = filesystem(path)
    if fs["fstype"] != BTRFS:
        raise CommandExecutionError(f"{describe(fs)} is not a btrfs: it has no qgroups")
    if not fs["quota"]:
        _btrfs(["quota", "enable", fs["mount"]])
        _btrfs(["quota", "rescan", "-W", fs["mount"]])
    now = filesystem(path)
    if not now["quota"]:
        raise CommandExecutionError(f"btrfs quota enable {fs['mount']} left them off")
    return now


def _qgroups_on(mount: str) -> bool:
    """Whether the btrfs mounted at ``mount`` has its quotas (qgroups) on."""
    out = __salt__["cmd.run_all"](
        ["btrfs", "qgroup", "show", "--raw", "-f", mount], python_shell=False, ignore_retcode=True
    )
    if out["retcode"] == 0:
        return True
    if "not enabled" in out["stderr"]:
        return False
    raise CommandExecutionError(f"btrfs qgroup show {mount} failed: {out['stderr']}")


def _btrfs(args: list[str]) -> str:
    """Run ``btrfs ARGS``; return its output; raise with its message on failure."""
    out = __salt__["cmd.run_all"](["btrfs", *args], python_shell=False)
    if out["retcode"] != 0:
        raise CommandExecutionError(
            f"btrfs {' '.join(args)} failed: {out['stderr'] or out['stdout']}"
        )
    return out["stdout"]


def _user(name: str) -> pwd.struct_passwd:
    """The host's user ``name``."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise CommandExecutionError(f"no user {name!r} on this host") from None
