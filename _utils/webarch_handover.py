"""A moving account's hand-over: what the narrow steps of the downtime change (issue 20).

A move (docs/fleet.rst) suspends the account on the old server and serves it on
the new one.  Whole ``state.apply`` runs took 3 s each inside the downtime;
``_modules/webarch_handover.py`` does only what must change then, from facts
rendered before (:func:`facts`, the Apache site file).  Pure parts here.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import webarch_paths as paths

#: The ready files (``NAME.conf``, ``NAME.json``): root's only.
READY_DIR = f"{paths.STATE_DIR}/move-ready"
#: The Apache site file template, as webarch/apache.sls renders it.
SITE_TEMPLATE = "salt://webarch/files/templates/apache-account.conf.jinja"


def variant_pillar(pillar: Any, name: str, suspended: bool) -> dict:
    """The ``webarch`` pillar with account ``name`` suspended (``suspended``), or as it is."""
    data = copy.deepcopy(pillar) if isinstance(pillar, dict) else {}
    accounts = data.get("accounts")
    entry = accounts.get(name) if isinstance(accounts, dict) else None
    if suspended and isinstance(entry, dict):
        entry["suspended"] = True
    return data


def site_file_context(model: dict, account: dict) -> dict:
    """The context of the account's Apache site file (webarch/apache.sls passes the same)."""
    return {
        "account": account,
        "override_list": model["apache"]["htaccess_directives"],
        "allow_override": model["apache"]["allow_override"],
        "auth_dir": model["apache"]["auth_dir"],
        "paths": model["paths"],
    }


def facts(model: dict, name: str) -> dict:
    """What ``hold`` and ``serve`` of the module need of account ``name``."""
    account = model["accounts"][name]
    pool = account["pool"]
    return {
        # Its entry of /etc/webarch/cron.json (none: suspended).
        "cron": model["cron"]["data"]["accounts"].get(name),
        "name": account["name"],
        "home": account["home"],
        "suspended": account["suspended"],
        "staged": f"{paths.APACHE_STAGING_DIR}/{account['apache']['site']}.conf",
        "socket_unit": pool["socket_unit"],
        "unit": pool["unit"],
        "socket_wants": f"{paths.SYSTEMD_DIR}/sockets.target.wants/{pool['socket_unit']}",
        "socket_template": f"{paths.SYSTEMD_DIR}/{paths.FPM_UNIT}.socket",
    }


def cron_with(config: dict, name: str, entry: dict | None) -> dict:
    """``/etc/webarch/cron.json`` with the account's ``entry``, or without it (none:
    a suspended account runs no job)."""
    accounts = {k: v for k, v in config.get("accounts", {}).items() if k != name}
    if entry is not None:
        accounts[name] = entry
    return {**config, "accounts": accounts}


def cron_text(config: dict) -> str:
    """``/etc/webarch/cron.json`` as Salt's ``file.serialize`` writes it."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def mail_lines(text: str, name: str, home: str, allowed: bool) -> str:
    """The mail gate's accounts file with the account's line (``allowed``) or without."""
    lines = text.splitlines()
    head = [line for line in lines if line.startswith("#")]
    rest = {line.split(" ", 1)[0]: line for line in lines if line and not line.startswith("#")}
    rest.pop(name, None)
    if allowed:
        rest[name] = f"{name} {home}"
    return "".join(f"{line}\n" for line in head + [rest[k] for k in sorted(rest)])
