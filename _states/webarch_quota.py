"""
Disk quota states of the hosting accounts, thin over the ``webarch_quota``
execution module.

.. code-block:: yaml

    webarch-alice-quota:
      webarch_quota.limits:
        - name: alice
        - path: /home/alice
        - blocks_soft: 4194304     # KiB (4G); 0: no limit
        - blocks_hard: 5242880
        - inodes_soft: 0
        - inodes_hard: 0

The limits are set (``setquota``) only when they differ from the file
system's.  Where the file system holding ``path`` has no user quotas on, the
state fails and names it: never a silent pass.

On btrfs the home is a subvolume and its qgroup holds the hard space limit,
the only one btrfs has: a soft or file limit fails the state, naming where the
pillar gives it (``sources``).  Two more states prepare btrfs, and do nothing
elsewhere:

.. code-block:: yaml

    webarch-quota-homes:
      webarch_quota.enabled:
        - name: /home              # btrfs: its quotas (qgroups) switched on

    webarch-alice-home-subvolume:
      webarch_quota.home:
        - name: /home/alice        # btrfs: made a subvolume when it is new
        - chroot: /chroots/alice   # named in the how-to for an older plain home
"""

from __future__ import annotations

from typing import Any

import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_quota"

LIMITS = ("blocks_soft", "blocks_hard", "inodes_soft", "inodes_hard")
#: What a btrfs qgroup cannot limit.
NOT_ON_BTRFS = ("blocks_soft", "inodes_soft", "inodes_hard")
BTRFS = "btrfs"
UNITS = (("T", 1 << 30), ("G", 1 << 20), ("M", 1 << 10), ("K", 1))


def __virtual__() -> str:
    return __virtualname__


def _show(key: str, value: int) -> str:
    """A limit in words: space in its largest whole unit, ``none`` for 0."""
    if value == 0:
        return "none"
    if key.startswith("inodes"):
        return str(value)
    unit, size = next((u, s) for u, s in UNITS if value % s == 0)
    return f"{value // size}{unit}"


def _ret(name: str, result: bool | None, comment: str, changes: dict | None = None) -> dict:
    return {"name": name, "result": result, "changes": changes or {}, "comment": comment}


def limits(
    name: str,
    path: str,
    blocks_soft: int = 0,
    blocks_hard: int = 0,
    inodes_soft: int = 0,
    inodes_hard: int = 0,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """
    Ensure user ``name`` has exactly these quota limits on the file system holding ``path``.

    name
        The account (Unix user).
    path
        Its home: the limits apply on the file system that holds it.
    blocks_soft, blocks_hard
        Space limits in KiB; 0 is no limit.
    inodes_soft, inodes_hard
        Limits of the number of files; 0 is no limit.
    sources
        Where the pillar gives each soft and file limit (named when btrfs cannot have it).
    """
    wanted = dict(zip(LIMITS, (blocks_soft, blocks_hard, inodes_soft, inodes_hard), strict=True))
    wanted = {k: int(v) for k, v in wanted.items()}
    words = ", ".join(f"{k} {_show(k, v)}" for k, v in wanted.items())
    try:
        fs = __salt__["webarch_quota.filesystem"](path)
    except CommandExecutionError as err:
        return _ret(name, False, f"Disk quota of {name}: {err}")
    where = __salt__["webarch_quota.describe"](fs)
    if fs["fstype"] == BTRFS:
        return _btrfs_limits(name, path, wanted, sources or {}, fs, where)
    if not fs["quota"]:
        return _ret(
            name,
            False,
            f"Disk quota of {name} cannot be applied: the file system holding {path}, "
            f"{where}, has no user quotas: {fs['problem']}. Switch them on there, or "
            "set webarch:quota:enabled to false.",
        )
    if not __salt__["user.info"](name):
        if __opts__["test"]:
            changes = {k: {"old": "none", "new": _show(k, v)} for k, v in wanted.items() if v}
            return _ret(name, None, f"User {name} does not exist yet: {words} on {where}", changes)
        return _ret(name, False, f"User {name} does not exist: no quota set")
    try:
        have = __salt__["webarch_quota.get"](name, path)
    except CommandExecutionError as err:
        return _ret(name, False, str(err))
    changes = {
        k: {"old": _show(k, have[k]), "new": _show(k, v)} for k, v in wanted.items() if have[k] != v
    }
    if not changes:
        return _ret(name, True, f"Disk quota of {name} on {where} is as wanted: {words}")
    return _set(name, path, wanted, changes, words, where)


def _set(
    name: str, path: str, wanted: dict[str, int], changes: dict, words: str, where: str
) -> dict[str, Any]:
    """Set the limits that differ (``changes``), or say they would be set (test=True)."""
    if __opts__["test"]:
        return _ret(name, None, f"Disk quota of {name} on {where} would be set: {words}", changes)
    try:
        __salt__["webarch_quota.set"](name, path=path, **wanted)
    except CommandExecutionError as err:
        return _ret(name, False, f"Disk quota of {name} on {where}: {err}")
    return _ret(name, True, f"Disk quota of {name} on {where} set: {words}", changes)


def _btrfs_limits(
    name: str, path: str, wanted: dict[str, int], sources: dict[str, str], fs: dict, where: str
) -> dict[str, Any]:
    """The limits state on btrfs: the hard space limit of the home's qgroup."""
    words = f"blocks_hard {_show('blocks_hard', wanted['blocks_hard'])}"
    asked = [k for k in NOT_ON_BTRFS if wanted[k]]
    if asked:
        given = "; ".join(f"{sources.get(k, k)} is {_show(k, wanted[k])}" for k in asked)
        return _ret(
            name,
            False,
            f"Disk quota of {name} cannot be applied on {where}: a btrfs qgroup limits "
            f"space only, with no soft limit, grace period or file count, and {given}: "
            "give blocks_hard alone (set those to 0 or leave them out).",
        )
    home = __salt__["webarch_quota.subvolume"](path)
    pending = []
    if not fs["quota"]:
        pending.append(f"its quotas (qgroups) are off ({fs['problem']})")
    if not home["exists"]:
        pending.append(f"{path} does not exist yet")
    elif not home["subvolume"]:
        return _ret(
            name,
            False,
            f"Disk quota of {name} cannot be applied: {path} on {where} is a plain "
            "directory, not a subvolume, so no qgroup limits it (see the state "
            f"webarch-{name}-home-subvolume for how to convert it).",
        )
    if pending:
        if __opts__["test"]:
            changes = {
                "blocks_hard": {"old": "none", "new": _show("blocks_hard", wanted["blocks_hard"])}
            }
            return _ret(
                name,
                None,
                f"Disk quota of {name} would be set on {where} ({'; '.join(pending)}): {words}",
                changes if wanted["blocks_hard"] else {},
            )
        return _ret(name, False, f"Disk quota of {name} on {where}: {'; '.join(pending)}")
    try:
        have = __salt__["webarch_quota.get"](name, path)
    except CommandExecutionError as err:
        return _ret(name, False, f"Disk quota of {name} on {where}: {err}")
    if have["blocks_hard"] == wanted["blocks_hard"]:
        return _ret(name, True, f"Disk quota of {name} on {where} is as wanted: {words}")
    changes = {
        "blocks_hard": {
            "old": _show("blocks_hard", have["blocks_hard"]),
            "new": _show("blocks_hard", wanted["blocks_hard"]),
        }
    }
    return _set(name, path, wanted, changes, words, where)


def enabled(name: str) -> dict[str, Any]:
    """
    Ensure the quotas of the file system holding ``name`` (the homes) are on,
    where the formula can switch them on: on btrfs, its qgroups (``btrfs quota
    enable``).  Elsewhere user quotas are the mount's (``usrquota``): nothing
    to do here, and each account's ``limits`` state checks them.

    name
        The directory of the homes (``/home``).
    """
    try:
        fs = __salt__["webarch_quota.filesystem"](name)
    except CommandExecutionError as err:
        return _ret(name, False, f"Disk quotas of {name}: {err}")
    where = __salt__["webarch_quota.describe"](fs)
    if fs["fstype"] != BTRFS:
        return _ret(
            name,
            True,
            f"{where} is not a btrfs: its user quotas are switched on by its mount "
            "(usrquota), and each account's quota state checks them",
        )
    if fs["quota"]:
        return _ret(name, True, f"The quotas (qgroups) of {where} are on")
    changes = {"qgroups": {"old": "off", "new": "on"}}
    if __opts__["test"]:
        return _ret(name, None, f"The quotas (qgroups) of {where} would be switched on", changes)
    try:
        __salt__["webarch_quota.quotas_on"](name)
    except CommandExecutionError as err:
        return _ret(name, False, f"Switching on the quotas (qgroups) of {where} failed: {err}")
    return _ret(name, True, f"The quotas (qgroups) of {where} were off: switched on", changes)


def home(name: str, chroot: str = "") -> dict[str, Any]:
    """
    Ensure the home ``name`` is a btrfs subvolume (its qgroup limits it) where
    the homes are on btrfs: a new home is created as one.  An existing plain
    directory is not moved (its files are in use: logins, PHP, the chroot's
    binds): the state fails and says how to convert it.  Elsewhere nothing
    to do.

    name
        The home (``/home/alice``).
    chroot
        The account's chroot, whose binds of the home the how-to names.
    """
    try:
        fs = __salt__["webarch_quota.filesystem"](name)
    except CommandExecutionError as err:
        return _ret(name, False, f"Home {name}: {err}")
    where = __salt__["webarch_quota.describe"](fs)
    if fs["fstype"] != BTRFS:
        return _ret(name, True, f"{where} is not a btrfs: the home is a plain directory")
    try:
        found = __salt__["webarch_quota.subvolume"](name)
    except CommandExecutionError as err:
        return _ret(name, False, f"Home {name}: {err}")
    if found["subvolume"]:
        return _ret(name, True, f"Home {name} is a btrfs subvolume (qgroup 0/{found['id']})")
    if found["exists"]:
        return _ret(name, False, convert_howto(name, where, chroot))
    changes = {"subvolume": {"old": None, "new": name}}
    if __opts__["test"]:
        return _ret(name, None, f"Home {name} would be created as a subvolume of {where}", changes)
    try:
        made = __salt__["webarch_quota.create_subvolume"](name)
    except CommandExecutionError as err:
        return _ret(name, False, f"Home {name}: {err}")
    return _ret(
        name,
        True,
        f"Home {name} created as a subvolume of {where} (qgroup 0/{made['id']})",
        changes,
    )


def convert_howto(home: str, where: str, chroot: str) -> str:
    """Why a plain-directory home on btrfs fails, and the commands that convert it."""
    # The binds are in the chroots' mount namespace (webarch_mountns).
    binds = f" (nsenter --mount={paths.CHROOT_NS} findmnt -R {chroot})" if chroot else ""
    return (
        f"Home {home} on {where} is a plain directory, not a subvolume: no qgroup can "
        "limit it, and webarch does not move an account's files by itself. Convert it "
        "while the account is idle (no logins, its PHP pool stopped): unmount the "
        f"chroot's binds of it{binds}, then "
        f"btrfs subvolume create {home}.new && "
        f"cp -a --reflink=always {home}/. {home}.new/ && "
        f"diff -r {home} {home}.new && "
        f"mv {home} {home}.old && mv {home}.new {home}; "
        f"run the state again (it mounts the binds back) and remove {home}.old."
    )
