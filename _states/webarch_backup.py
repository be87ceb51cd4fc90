"""
The method of the accounts' nightly snapshots (``webarch:backup:method``),
thin over ``webarch_backup.plan``.

.. code-block:: yaml

    webarch-backup-method:
      webarch_backup.method:
        - name: /var/lib/webarch-backups   # the store
        - method: btrfs                    # auto, rsync or btrfs
        - subvolumes: true                 # the homes are made as subvolumes

It changes nothing: it fails, naming the pillar path, when the pillar asks for
btrfs snapshots and the store is not on the btrfs of the homes (in test mode
too), so that nothing that needs the method is written.
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_backup"


def __virtual__() -> str:
    return __virtualname__


def method(name: str, method: str = "auto", subvolumes: bool = False) -> dict[str, Any]:
    """
    Ensure the nights can be taken as ``method`` asks with the store ``name``.

    name
        The store (``webarch:backup:store``).
    method
        ``auto``, ``rsync`` or ``btrfs`` (``webarch:backup:method``).
    subvolumes
        Whether the homes are made as btrfs subvolumes (quotas on).
    """
    ret: dict[str, Any] = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        plan = __salt__["webarch_backup.plan"](method, name, subvolumes)
    except CommandExecutionError as err:
        return {**ret, "result": False, "comment": str(err)}
    if plan["problem"]:
        return {**ret, "result": False, "comment": plan["problem"]}
    how = "btrfs snapshots" if plan["method"] == "btrfs" else "rsync copies (hard-linked days)"
    return {**ret, "comment": f"Nightly snapshots into {name}: {how} (method {method})"}
