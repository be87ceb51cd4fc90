"""
webarch_fleet: checks across the hosting servers of one master.

``check`` compiles each targeted minion's pillar on the master (no minion
needs to be up) and reports every clash between them: an account on two
servers, a site name served by two.  Run it before a highstate of the fleet;
it fails (exit code 1) when it finds one.
"""

from __future__ import annotations

from typing import Any

import salt.utils.minions
import webarch_fleet as fleet

__virtualname__ = "webarch_fleet"


def __virtual__() -> str:
    return __virtualname__


def check(tgt: str = "*", tgt_type: str = "glob") -> dict[str, Any]:
    """
    Every clash between the targeted minions' pillars (accounts present on
    two minions, site names served by two), each with its minions and pillar
    paths; ``ok`` is false and ``retcode`` (salt-run's exit code) 1 when
    there is one.

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.check
        salt-run webarch_fleet.check tgt='web*'
    """
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    minions = sorted(found["minions"])
    pillars = {minion: __salt__["pillar.show_pillar"](minion) for minion in minions}
    lines = fleet.clashes(pillars)
    retcode = 1 if lines else 0
    # success of the job's return event; salt-run exits with the return's retcode.
    __context__["retcode"] = retcode
    return {"ok": not lines, "minions": minions, "clashes": lines, "retcode": retcode}
