"""
The fleet: what must hold across the hosting servers one master drives.

Each minion's pillar is validated by the account model on that minion; what
no single minion can see is a clash between minions: an account on two
servers, or a site name (a ``server_name`` or an alias) served by two.
``clashes`` finds them all from the pillars the master compiles for each
minion (``_runners/webarch_fleet.py``), each named by its minions and
pillar paths, before a highstate changes anything.
"""

from __future__ import annotations

from typing import Any

ACCOUNTS = ["webarch", "accounts"]


def _present_accounts(pillar: Any) -> dict[str, dict]:
    """The accounts of one minion's pillar that are not marked absent (malformed: none)."""
    webarch = pillar.get("webarch") if isinstance(pillar, dict) else None
    accounts = webarch.get("accounts") if isinstance(webarch, dict) else None
    if not isinstance(accounts, dict):
        return {}
    return {
        str(name): data if isinstance(data, dict) else {}
        for name, data in accounts.items()
        if not (isinstance(data, dict) and data.get("state") == "absent")
    }


def _site_names(account: dict) -> list[tuple[str, str]]:
    """``(pillar path below the account, host name)`` of every site name of an account."""
    sites = account.get("sites")
    found: list[tuple[str, str]] = []
    if not isinstance(sites, dict):
        return found
    for site, data in sorted(sites.items(), key=lambda kv: str(kv[0])):
        if not isinstance(data, dict) or data.get("state") == "absent":
            continue
        if isinstance(data.get("server_name"), str):
            found.append((f"sites:{site}:server_name", data["server_name"].lower()))
        aliases = data.get("aliases")
        for index, alias in enumerate(aliases if isinstance(aliases, list) else []):
            if isinstance(alias, str):
                found.append((f"sites:{site}:aliases:{index}", alias.lower()))
    return found


def clashes(pillars: dict[str, Any]) -> list[str]:
    """
    Every account present on more than one minion, and every site name used
    on more than one, as lines naming each minion and pillar path; sorted.
    """
    accounts: dict[str, list[tuple[str, str]]] = {}
    names: dict[str, list[tuple[str, str]]] = {}
    for minion in sorted(pillars):
        for name, account in sorted(_present_accounts(pillars[minion]).items()):
            path = ":".join([*ACCOUNTS, name])
            accounts.setdefault(name, []).append((minion, path))
            for below, host_name in _site_names(account):
                names.setdefault(host_name, []).append((minion, f"{path}:{below}"))
    return [
        *_lines("account {} is on {} servers: {}", accounts),
        *_lines("site name {} is served by {} servers: {}", names),
    ]


def _lines(form: str, places: dict[str, list[tuple[str, str]]]) -> list[str]:
    """A line for each key found on more than one minion, with every minion and path."""
    lines = []
    for key, found in sorted(places.items()):
        minions = {minion for minion, _ in found}
        if len(minions) > 1:
            where = "; ".join(f"{minion} {path}" for minion, path in found)
            lines.append(form.format(key, len(minions), where))
    return lines
