"""
Brute-force bans with fail2ban (``webarch:fail2ban``).

Four jails, each reading only what root writes and no account can: sshd's
failed password logins (SSH and SFTP) from the journal, restricted to root's
sshd processes of ``ssh.service``; and three logs Apache itself writes into
``/var/log/apache2`` (root:adm, rotated by Debian's logrotate) with a
condition that picks the failed logins, each line starting with the client's
address (``%a``), before any field a visitor or an account chooses:

- ``basic_auth``: answers 401 to a request that carried credentials;
- ``wordpress``: POSTs to ``wp-login.php`` answered 200 (WordPress answers a
  failed login with the form again, a good one with a redirect), and every
  POST to ``xmlrpc.php`` (its failures answer 200 like its successes);
- ``matomo``: POSTs to Matomo's login form (``?module=Login``) answered 403
  (Matomo's answer to a failed login; a good one redirects).

Bans go through fail2ban's own nftables action (table ``inet f2b-table``,
one set per jail), never the formula's ``inet webarch`` table: SSH bans close
port 22, web bans ports 80 and 443.  The thresholds, ban times and the allow
list come from the pillar, for all jails and per jail.
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

import webarch_check as check
from webarch_check import Key

#: fail2ban's own files, and the formula's jail file (read after Debian's).
JAIL_FILE = "/etc/fail2ban/jail.d/webarch.local"
FILTER_DIR = "/etc/fail2ban/filter.d"
#: The root-only logs Apache writes for the bans (apache-global.conf.jinja).
BAN_LOG_DIR = "/var/log/apache2"
SERVICE = "fail2ban"
#: Checks a jail file before it is put in place (webarch/files/fail2ban).
CHECK_PROGRAM = "webarch-fail2ban-check"
#: Always allowed: the host itself (fail2ban's ignoreself adds its own addresses).
LOOPBACK = ("127.0.0.1/8", "::1")

SSH_PORTS = "22"
WEB_PORTS = "80,443"


class Jail(NamedTuple):
    """One jail: what it watches and which ports a ban closes."""

    name: str  # the pillar key
    filter: str  # fail2ban's jail and filter name
    ports: str
    log: str | None  # a log file, or None: the journal
    doc: str


JAILS = (
    Jail(
        "sshd",
        "webarch-sshd",
        SSH_PORTS,
        None,
        "Failed SSH and SFTP password logins (sshd's own lines in the journal).",
    ),
    Jail(
        "basic_auth",
        "webarch-basic-auth",
        WEB_PORTS,
        f"{BAN_LOG_DIR}/webarch-ban-basic-auth.log",
        "Requests with HTTP credentials answered 401 (basic auth of the sites).",
    ),
    Jail(
        "wordpress",
        "webarch-wordpress",
        WEB_PORTS,
        f"{BAN_LOG_DIR}/webarch-ban-wordpress.log",
        "Failed WordPress logins: POSTs to ``wp-login.php`` answered 200, and every "
        "POST to ``xmlrpc.php``.",
    ),
    Jail(
        "matomo",
        "webarch-matomo",
        WEB_PORTS,
        f"{BAN_LOG_DIR}/webarch-ban-matomo.log",
        "Failed Matomo logins: POSTs to its login form answered 403.",
    ),
)
JAIL_NAMES = tuple(jail.name for jail in JAILS)

#: Bounds of the thresholds (seconds for the times).
MAXRETRY = (1, 1000)
FINDTIME = (10, 7 * 86400)
BANTIME = (10, 365 * 86400)

#: ``webarch:fail2ban``.
FAIL2BAN_KEYS = check.key_table(
    Key(
        "enabled",
        "true or false",
        True,
        "Run fail2ban with the formula's jails; ``false`` stops and disables it.",
    ),
    Key(
        "maxretry",
        f"integer {MAXRETRY[0]}-{MAXRETRY[1]}",
        6,
        "Failures from one address within ``findtime`` that ban it.",
    ),
    Key(
        "findtime",
        f"seconds {FINDTIME[0]}-{FINDTIME[1]}",
        600,
        "The window in which failures are counted.",
    ),
    Key("bantime", f"seconds {BANTIME[0]}-{BANTIME[1]}", 3600, "How long a ban lasts."),
    Key(
        "ignoreip",
        "list of IP addresses or networks",
        [],
        "Addresses never banned (``192.0.2.10``, ``2001:db8::/32``), on top of the "
        "host's own and loopback.",
    ),
    Key(
        "jails",
        "mapping",
        {},
        "Per jail (``" + "``, ``".join(JAIL_NAMES) + "``): ``enabled``, ``maxretry``, "
        "``findtime``, ``bantime`` over the values above.",
    ),
)

#: ``webarch:fail2ban:jails:JAIL``.
JAIL_KEYS = check.key_table(
    Key("enabled", "true or false", True, "``false``: this jail is off."),
    Key(
        "maxretry",
        f"integer {MAXRETRY[0]}-{MAXRETRY[1]}",
        check.Derived("default: ``fail2ban:maxretry``"),
        "This jail's own threshold.",
    ),
    Key(
        "findtime",
        f"seconds {FINDTIME[0]}-{FINDTIME[1]}",
        check.Derived("default: ``fail2ban:findtime``"),
        "This jail's own window.",
    ),
    Key(
        "bantime",
        f"seconds {BANTIME[0]}-{BANTIME[1]}",
        check.Derived("default: ``fail2ban:bantime``"),
        "This jail's own ban time.",
    ),
)

LIMITS = {"maxretry": MAXRETRY, "findtime": FINDTIME, "bantime": BANTIME}


def allow_list(value: Any, path: list[str], problems: check.Problems) -> list[str]:
    """``ignoreip``: addresses or networks (no host bits), normalised, without repeats."""
    if not isinstance(value, list):
        problems.add(path, "must be a list of IP addresses or networks")
        return []
    found: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.add([*path, str(i)], f"must be an IP address, not {check.describe(item)}")
            continue
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            problems.add([*path, str(i)], f"{check.describe(item)} is not an IP network: {exc}")
            continue
        text = (
            str(network.network_address)
            if network.prefixlen == network.max_prefixlen
            else str(network)
        )
        if text not in found:
            found.append(text)
    return found


def _thresholds(get: Any, path: list[str], problems: check.Problems, base: dict) -> dict:
    """maxretry, findtime and bantime of a block, ``base``'s where it gives none."""
    found = {}
    for key, (low, high) in LIMITS.items():
        value = get(key)
        found[key] = (
            base[key] if value is None else check.integer(value, [*path, key], problems, low, high)
        )
    return found


def _jail(jail: Jail, value: Any, base: dict, problems: check.Problems) -> dict:
    """One jail's settings: the server's unless it says otherwise."""
    path = ["webarch", "fail2ban", "jails", jail.name]
    data, get = check.block(value, JAIL_KEYS, path, problems)
    return {
        "name": jail.name,
        "filter": jail.filter,
        "ports": jail.ports,
        "log": jail.log,
        "enabled": bool(check.boolean(get("enabled"), [*path, "enabled"], problems)),
        **_thresholds(data.get, path, problems, base),
    }


def settings(value: Any, problems: check.Problems) -> dict:
    """``webarch:fail2ban``, validated, with each jail's settings."""
    path = ["webarch", "fail2ban"]
    _, get = check.block(value, FAIL2BAN_KEYS, path, problems)
    base = _thresholds(get, path, problems, {})
    jails_raw = check.mapping(get("jails"), [*path, "jails"], problems)
    check.check_keys(jails_raw, dict.fromkeys(JAIL_NAMES), [*path, "jails"], problems)
    jails = [_jail(jail, jails_raw.get(jail.name), base, problems) for jail in JAILS]
    return {
        "enabled": bool(check.boolean(get("enabled"), [*path, "enabled"], problems)),
        "ignoreip": allow_list(get("ignoreip"), [*path, "ignoreip"], problems),
        **base,
        "jails": jails,
    }


def jail_section(jail: dict, ignoreip: list[str]) -> list[str]:
    """The lines of one jail's section."""
    source = (
        ["backend = systemd"]
        if jail["log"] is None
        else ["backend = polling", f"logpath = {jail['log']}"]
    )
    return [
        f"[{jail['filter']}]",
        f"enabled = {'true' if jail['enabled'] else 'false'}",
        f"filter = {jail['filter']}",
        *source,
        "banaction = nftables-multiport",
        f"port = {jail['ports']}",
        "protocol = tcp",
        f"maxretry = {jail['maxretry']}",
        f"findtime = {jail['findtime']}",
        f"bantime = {jail['bantime']}",
        "ignoreself = true",
        f"ignoreip = {' '.join([*LOOPBACK, *ignoreip])}",
    ]


def jail_text(data: dict) -> str:
    """``webarch.local``: Debian's sshd jail off (it reads a file Debian 12 does not
    write), the formula's jails with their settings, nothing in [DEFAULT] (an
    admin's own jails keep theirs)."""
    lines = [
        "# Managed by Salt (webarch): brute-force bans, see README (Brute-force bans).",
        "# Jails of your own go into another file of jail.d.",
        "",
        "[sshd]",
        "enabled = false",
    ]
    for jail in data["jails"]:
        lines += ["", *jail_section(jail, data["ignoreip"])]
    return "\n".join(lines) + "\n"


def fail2ban(value: Any, problems: check.Problems) -> dict:
    """What the SLS writes: the validated settings, the jail file and the filters."""
    data = settings(value, problems)
    return {
        **data,
        "service": SERVICE,
        "jail_file": JAIL_FILE,
        "filter_dir": FILTER_DIR,
        "filters": [jail.filter for jail in JAILS],
        "logs": [jail.log for jail in JAILS if jail.log],
        "check_program": CHECK_PROGRAM,
        "text": jail_text(data),
    }
