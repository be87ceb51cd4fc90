"""
The account model: the accounts' outbound network (``webarch:outbound`` and
``webarch:accounts:USERNAME:outbound``).

Mail leaves only through the host's Exim, which fixes the envelope sender:
an account's own connections to SMTP ports (25, 465, 587) anywhere are
refused.  Other outbound connections are open unless ``deny_other`` (server
default, per-account override) refuses every new connection an account opens
except on loopback.  One nftables table, ``inet webarch``, matched on the
socket owner's uid (``meta skuid``), loaded by ``webarch-firewall.service``;
the host's own rules, if any, are left alone.
"""

from __future__ import annotations

from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import Key

SMTP_PORTS = (25, 465, 587)
TABLE = "webarch"

#: ``webarch:outbound``: the server's defaults.
OUTBOUND_KEYS = check.key_table(
    Key(
        "deny_other",
        "true or false",
        False,
        "Refuse every new outbound connection the accounts open (their PHP, SSH "
        "sessions, cron jobs), except on loopback; ``false``: only SMTP (ports "
        f"{', '.join(map(str, SMTP_PORTS))}) is refused, whatever this says. "
        "An account's ``outbound:deny_other`` overrides it.",
    ),
)

#: ``webarch:accounts:USERNAME:outbound``.
ACCOUNT_OUTBOUND_KEYS = check.key_table(
    Key(
        "deny_other",
        "true or false",
        check.Derived("default: ``outbound:deny_other``"),
        "This account's own setting.",
    ),
)


def server_outbound(value: Any, problems: check.Problems) -> dict:
    """``webarch:outbound``, validated."""
    path = ["webarch", "outbound"]
    _, get = check.block(value, OUTBOUND_KEYS, path, problems)
    return {"deny_other": bool(check.boolean(get("deny_other"), [*path, "deny_other"], problems))}


def account_outbound(name: str, value: Any, server: dict, problems: check.Problems) -> dict:
    """An account's ``outbound``: the server's default unless it says otherwise."""
    path = ["webarch", "accounts", name, "outbound"]
    data, _ = check.block(value, ACCOUNT_OUTBOUND_KEYS, path, problems)
    deny = server["outbound"]["deny_other"]
    if "deny_other" in data:
        deny = bool(check.boolean(data["deny_other"], [*path, "deny_other"], problems))
    return {"deny_other": deny}


def _uid_set(name: str, users: list[str]) -> list[str]:
    """An nftables set of user names (none: no elements line, which nft refuses empty)."""
    elements = [f"    elements = {{ {', '.join(users)} }}"] if users else []
    return [f"  set {name} {{", "    type uid", *elements, "  }"]


def ruleset(accounts: list[dict]) -> str:
    """The ``inet webarch`` table for the present accounts (replaced as a whole, atomically)."""
    names = sorted(a["name"] for a in accounts)
    denied = sorted(a["name"] for a in accounts if a["outbound"]["deny_other"])
    ports = ", ".join(map(str, SMTP_PORTS))
    lines = [
        "#!/usr/sbin/nft -f",
        "# Managed by Salt (webarch): the hosting accounts' outbound connections.",
        "# Mail only through the host's Exim; everything else open unless denied.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        *_uid_set("accounts", names),
        *_uid_set("denied", denied),
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        '    oifname "lo" accept',
        f"    meta skuid @accounts tcp dport {{ {ports} }} counter reject with tcp reset",
        "    meta skuid @denied ct state new counter reject",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def firewall(accounts: list[dict]) -> dict:
    """What the SLS writes and loads."""
    return {
        "path": paths.FIREWALL_CONF,
        "unit": paths.FIREWALL_UNIT,
        "table": TABLE,
        "text": ruleset(accounts),
    }
