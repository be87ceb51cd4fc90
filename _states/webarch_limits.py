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
A changed slice takes effect when systemd reloads: once for all accounts, by
``webarch-units-reload`` (webarch/limits.sls), not here.  A changed service
drop-in restarts the PHP-FPM if it runs (its limits are its processes'): then
this state reloads systemd itself first.
"""

from __future__ import annotations

import os
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
    __salt__["webarch_limits.write"](wanted, reload=restart)
    if restart:
        __salt__["webarch_limits.restart_php"](name)
    ret["comment"] = f"The limits of {name} changed."
    ret["changes"] = changes
    return ret


def absent(name: str) -> dict[str, Any]:
    """A removed account ``name``'s slice keeps none of its limits."""
    ret: dict[str, Any] = {"name": name, "result": True, "comment": "", "changes": {}}
    found = [p for p in __salt__["webarch_limits.slice_dropins"](name) if os.path.exists(p)]
    if not found:
        ret["comment"] = f"No limits of {name} are left."
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"The limits of {name} would be removed."
        ret["changes"] = {path: "would be removed" for path in found}
        return ret
    removed = __salt__["webarch_limits.remove"](name)
    ret["comment"] = f"The limits of {name} were removed."
    ret["changes"] = {path: "removed" for path in removed}
    return ret
