"""
webarch_app states: a site's application installed (WordPress, MediaWiki).

Thin over the ``webarch_app`` execution module: ``installed`` asks what there
is, installs into an empty document root (or finishes an interrupted install),
and never touches an application that is already there, whoever installed it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_app"

NAMES = {"wordpress": "WordPress", "mediawiki": "MediaWiki"}

#: What install() still does, from each state status() reports.
TO_DO = {
    "empty": ["copy", "configure", "install"],
    "copied": ["configure", "install"],
    "configured": ["install"],
}


def __virtual__() -> str:
    return __virtualname__


def installed(
    name: str, account: str, site: str, kind: str, marker: str = "", held: bool = False
) -> dict[str, Any]:
    """The application of ``account``'s site ``site`` is installed in ``name`` (its docroot).

    An install gives the admin a throwaway password: ``marker`` (the admin password
    notification's marker) is then removed, so that a new password is made and mailed.
    ``held`` (the account is suspended): an empty docroot stays empty until a run
    serves the account (a moved account's copy comes into it meanwhile).
    """
    ret: dict[str, Any] = {"name": name, "changes": {}, "result": True, "comment": ""}
    app = NAMES.get(kind, kind)
    try:
        status = __salt__["webarch_app.status"](account, site)
    except CommandExecutionError as exc:
        return {**ret, "result": False, "comment": f"{app}: {exc}"}
    state = status["state"]
    if state == "installed":
        version = status.get("version") or "(version unknown)"
        ret["comment"] = f"{app} {version} is installed in {name}: left as it is"
        return ret
    if state not in TO_DO:
        ret["result"] = False
        ret["comment"] = (
            f"{app} is not installed: {name} holds other files ({status.get('detail', state)}); "
            "nothing was copied or changed"
        )
        return ret
    if held:
        ret["comment"] = (
            f"{app} is not installed in {name} yet: the account is suspended "
            "(the first run that serves it installs it)"
        )
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"install": TO_DO[state]}
        ret["comment"] = f"{app} would be installed in {name}: {', '.join(TO_DO[state])}"
        return ret
    try:
        done = __salt__["webarch_app.install"](account, site)
    except CommandExecutionError as exc:
        return {**ret, "result": False, "comment": f"{app} install failed: {exc}"}
    if "install" in done["steps"] and marker:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker)  # the admin's password: a new one is mailed
    ret["changes"] = {"installed": app, "version": done.get("version"), "steps": done["steps"]}
    ret["comment"] = f"{app} {done.get('version') or ''} installed in {name}".replace("  ", " ")
    return ret
