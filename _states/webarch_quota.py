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
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_quota"

LIMITS = ("blocks_soft", "blocks_hard", "inodes_soft", "inodes_hard")
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
    """
    wanted = dict(zip(LIMITS, (blocks_soft, blocks_hard, inodes_soft, inodes_hard), strict=True))
    wanted = {k: int(v) for k, v in wanted.items()}
    words = ", ".join(f"{k} {_show(k, v)}" for k, v in wanted.items())
    try:
        fs = __salt__["webarch_quota.filesystem"](path)
    except CommandExecutionError as err:
        return _ret(name, False, f"Disk quota of {name}: {err}")
    where = __salt__["webarch_quota.describe"](fs)
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
    if __opts__["test"]:
        return _ret(name, None, f"Disk quota of {name} on {where} would be set: {words}", changes)
    try:
        __salt__["webarch_quota.set"](name, path=path, **wanted)
    except CommandExecutionError as err:
        return _ret(name, False, f"Disk quota of {name} on {where}: {err}")
    return _ret(name, True, f"Disk quota of {name} on {where} set: {words}", changes)
