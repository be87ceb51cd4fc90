"""
An account's limits in systemd: its slice and its PHP-FPM's drop-ins.

.. code-block:: yaml

    webarch-alice-limits:
      webarch_limits.applied:
        - name: alice
        - slice_properties: {CPUQuota: 100%, MemoryMax: 1073741824, TasksMax: 128}
        - service_properties: {LimitNPROC: 128, LimitDATA: 1073741824}

The slice is ``user-UID.slice`` (logind's, holding the account's SSH and SFTP
sessions); the account's PHP-FPM (``webarch-php@NAME.service``) is put in it.
A changed slice takes effect at once (systemd reloads); a changed service
drop-in restarts the PHP-FPM if it runs (its limits are its processes').
"""

from __future__ import annotations

from typing import Any

import webarch_paths as paths

__virtualname__ = "webarch_limits"


def __virtual__() -> str:
    """Always available."""
    return __virtualname__


def applied(name: str, slice_properties: dict, service_properties: dict) -> dict[str, Any]:
    """Account ``name``'s slice and PHP-FPM service have these properties."""
    ret: dict[str, Any] = {"name": name, "result": True, "comment": "", "changes": {}}
    try:
        wanted = __salt__["webarch_limits.files"](name, slice_properties, service_properties)
    except Exception:  # no user yet (test mode of a first run)
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"The limits of {name} would be set once its user exists."
            ret["changes"] = {"limits": "would be set"}
            return ret
        raise
    todo = __salt__["webarch_limits.differing"](wanted)
    if not todo:
        ret["comment"] = f"The limits of {name} are in place."
        return ret
    unit = paths.fpm_unit(name)
    restart = any(unit in path for path in todo) and __salt__["webarch_limits.php_running"](name)
    changes: dict[str, Any] = {path: "updated" for path in todo}
    if restart:
        changes["restarted"] = unit
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"The limits of {name} would change."
        ret["changes"] = changes
        return ret
    __salt__["webarch_limits.write"](wanted)
    if restart:
        __salt__["webarch_limits.restart_php"](name)
    ret["comment"] = f"The limits of {name} changed."
    ret["changes"] = changes
    return ret
