"""
The account model: Matomo (``webarch:matomo`` and the ``matomo`` switches of
accounts and sites).

One Matomo per server, installed into a site of type ``matomo`` of an ordinary
hosting account (its chroot, its pool, its database by unix_socket), or the
Matomo of another server named by URL.  Every present account with an email
address gets a Matomo user (login = account name) that sees exactly its own
sites; every site of such an account gets a Matomo website.  What the SLS
files render from is :py:func:`matomo`'s result, ``webarch.matomo``.
"""

from __future__ import annotations

import re
from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import OPTIONAL, REQUIRED, Derived, Key

#: Matomo's own time zone names (``Europe/Paris``), or UTC with an offset.
TIMEZONE_RE = re.compile(
    r"^(UTC([+-]([0-9]|1[0-4])(\.5|\.75)?)?|[A-Z][A-Za-z_-]+(/[A-Za-z0-9_+-]+){1,2})$"
)
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
#: A release archive: salt://, an https URL or an absolute path on the minion.
ARCHIVE_SOURCE_RE = re.compile(r"^(salt://[^\s]+|https://[^\s]+|/[^\s]+)\.(tar\.gz|tgz)$")
#: The login of webarch's own Matomo superuser (its token drives the API).  A
#: reserved username: no account can take it.
API_LOGIN = "webarch"
#: Logins the superuser for people may take: reserved usernames, so that no
#: account's Matomo user is ever one of them.
RESERVED_LOGINS = frozenset({"admin", "administrator", "hostmaster", "webmaster"})
RESET_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,64}$")
#: The names Matomo's GeoIP2 provider looks for in misc/ (plugins/GeoIp2).
GEOIP_NAME_RE = re.compile(
    r"^(GeoIP2-City(-Africa|-Asia-Pacific|-Europe|-North-America|-South-America)?"
    r"|GeoIP2-(Country|Enterprise)|GeoLite2-(City|Country)"
    r"|DBIP-(City|City-Lite|Country|Country-Lite|Enterprise)"
    r"|dbip-(city|country)-lite-[0-9]{4}-[0-9]{2})\.mmdb$"
)

#: ``webarch:matomo``.
MATOMO_KEYS = check.key_table(
    Key(
        "enabled",
        "true or false",
        True,
        "``false``: webarch leaves Matomo alone (no install, no users, no websites).",
    ),
    Key(
        "instance",
        "``ACCOUNT/SITE``",
        Derived("default: the one site of type ``matomo``"),
        "The site of type ``matomo`` that runs this server's Matomo, in that account's "
        "chroot and PHP-FPM pool. Needed only when several sites have that type.",
    ),
    Key(
        "archive",
        "mapping",
        OPTIONAL,
        "The Matomo release to install: ``source`` (``salt://``, an ``https`` URL or an "
        "absolute path on the minion, ending ``.tar.gz``) and its ``sha256``. Required "
        "with a local instance; checked before anything is unpacked.",
    ),
    Key(
        "database",
        "database name",
        Derived("default: the instance account's only database"),
        "The instance account's database that Matomo uses (over the socket, by "
        "unix_socket: no password).",
    ),
    Key(
        "url",
        "https URL",
        OPTIONAL,
        "Another server's Matomo to register this server's accounts and sites with "
        "(instead of a local instance), with ``token_file``.",
    ),
    Key(
        "token_file",
        "absolute path",
        paths.MATOMO_TOKEN_PATH,
        "The root-only file holding the API token (a superuser's) for ``url``. A local "
        "instance makes its own.",
    ),
    Key("timezone", "time zone", "UTC", "The time zone of new Matomo websites."),
    Key(
        "superuser",
        "login",
        "admin",
        "The login of the instance's superuser for people (a reserved username: no "
        "account can take it). Its password is generated and mailed once to "
        "``admin_email`` (none without it).",
    ),
    Key(
        "superuser_reset",
        "token",
        "",
        "A new value (a date, a counter) has a new superuser password generated and mailed.",
    ),
    Key(
        "geoip_db",
        "absolute path",
        OPTIONAL,
        "A GeoIP2, GeoLite2 or DB-IP ``.mmdb`` database on the minion, named as Matomo "
        "looks for it (``GeoLite2-City.mmdb``, ``DBIP-City-Lite.mmdb``, ...): copied into "
        "the instance's ``misc/`` and made its geolocation. Matomo never downloads one.",
    ),
    Key(
        "archive_minutes",
        "integer 5-1440",
        60,
        "How often ``core:archive`` builds the reports (a timer, as the instance's "
        "account, in its chroot; browsers never trigger archiving).",
    ),
)

ARCHIVE_KEYS = check.key_table(
    Key("source", "archive source", REQUIRED, "Where the release archive is."),
    Key("sha256", "hex digest", REQUIRED, "Its SHA-256, checked before unpacking."),
)

#: ``webarch:accounts:USERNAME:matomo`` and ``...:sites:SITE:matomo``.
SWITCH_DOC = (
    "``true`` (default): a Matomo user for the account (its sites: a Matomo website "
    "each); ``false``: none (a user webarch made is removed, websites and their data "
    "stay); on a site, ``absent`` also deletes its Matomo website and data."
)


def _instance(
    value: Any, accounts: dict[str, dict], path: list[str], problems: check.Problems
) -> tuple[dict, dict] | None:
    """The account and site of the local instance, or None."""
    sites = [
        (account, site)
        for account in accounts.values()
        if account["state"] == "present"
        for site in account["sites"].values()
        if site["type"] == "matomo"
    ]
    if value is None:
        if len(sites) > 1:
            names = ", ".join(f"{a['name']}/{s['name']}" for a, s in sites)
            problems.add(path, f"several sites of type matomo ({names}): say which one")
            return None
        return sites[0] if sites else None
    for account, site in sites:
        if value == f"{account['name']}/{site['name']}":
            return account, site
    problems.add(path, f"{check.describe(value)} is not ACCOUNT/SITE of a present matomo site")
    return None


def _archive(value: Any, path: list[str], problems: check.Problems) -> dict | None:
    before = len(problems.items)
    data, _ = check.block(value, ARCHIVE_KEYS, path, problems)
    source, sha256 = data.get("source"), data.get("sha256")
    for key, got, regex, what in (
        ("source", source, ARCHIVE_SOURCE_RE, "salt://, https:// or /path, ending .tar.gz"),
        ("sha256", sha256, SHA256_RE, "64 lower-case hex digits"),
    ):
        if got is None:
            problems.add([*path, key], "is required")
        elif not isinstance(got, str) or not regex.fullmatch(got):
            problems.add([*path, key], f"{check.describe(got)} must be {what}")
    return {"source": source, "sha256": sha256} if len(problems.items) == before else None


def _database(value: Any, account: dict, path: list[str], problems: check.Problems) -> str:
    present = account["mariadb"]["present"]
    if value is None:
        if len(present) != 1:
            problems.add(
                path,
                f"say which of {account['name']}'s databases Matomo uses"
                if present
                else f"Matomo needs a database: give account {account['name']} one",
            )
            return ""
        return present[0]
    if value not in present:
        problems.add(path, f"{check.describe(value)} is no present database of {account['name']}")
        return ""
    return str(value)


def _superuser(get: Any, server: dict, problems: check.Problems) -> dict | None:
    """The instance's superuser for people, or None (no admin_email)."""
    path = ["webarch", "matomo"]
    login, reset = get("superuser"), get("superuser_reset")
    if not isinstance(login, str) or login not in RESERVED_LOGINS:
        names = ", ".join(sorted(RESERVED_LOGINS))
        problems.add([*path, "superuser"], f"{check.describe(login)} must be one of {names}")
    if not isinstance(reset, str) or not RESET_RE.fullmatch(reset or "x"):
        problems.add([*path, "superuser_reset"], f"{check.describe(reset)} is not a token")
    if not server["admin_email"]:
        return None
    return {"login": login, "email": server["admin_email"], "reset": reset}


def _geoip(value: Any, local: dict, problems: check.Problems) -> dict | None:
    """Where the GeoIP database comes from and goes (the instance's misc/), or None."""
    if value is None:
        return None
    name = value.rsplit("/", 1)[-1] if isinstance(value, str) else ""
    path = ["webarch", "matomo", "geoip_db"]
    if not isinstance(value, str) or not check.ABS_PATH_RE.fullmatch(value):
        problems.add(path, f"{check.describe(value)} is not an absolute path")
    elif not GEOIP_NAME_RE.fullmatch(name):
        known = "GeoLite2-City.mmdb, DBIP-City-Lite.mmdb, GeoIP2-City.mmdb, ..."
        problems.add(path, f"{name!r} is not a name Matomo looks for ({known})")
    misc = f"{local['docroot']}/misc"
    return {"source": value, "dir": misc, "path": f"{misc}/{name}"}


def _local(account: dict, site: dict, data: dict, server: dict, problems: check.Problems) -> dict:
    """What the SLS files need to install and run the local instance."""
    path = ["webarch", "matomo"]
    if "archive" not in data:
        problems.add([*path, "archive"], "is required: the Matomo release archive to install")
    archive = _archive(data.get("archive"), [*path, "archive"], problems)
    name = account["name"]
    docroot = site["docroot"]
    return {
        "account": name,
        "site": site["name"],
        "server_name": site["server_name"],
        "url": f"https://{site['server_name']}/",
        "docroot": docroot,
        "config": f"{docroot}/config/config.ini.php",
        "socket": account["pool"]["socket"],
        "fpm_unit": account["pool"]["unit"],
        "chroot": account["chroot"]["path"],
        "home": account["home"],
        "php": f"/usr/bin/php{server['php_version']}",
        "database": _database(data.get("database"), account, [*path, "database"], problems),
        "archive": archive,
        "trusted_hosts": [site["server_name"], *site["aliases"]],
        # Matomo wants each user's own address: not admin_email (the superuser's).
        "email": f"{API_LOGIN}-matomo@{server['hostname'] or 'localhost'}",
        "timer": paths.matomo_archive_unit(name),
    }


def _wanted(accounts: dict[str, dict], timezone: str, skip: str) -> dict[str, dict]:
    """What Matomo should hold, by login, in :py:func:`webarch_stats.plan`'s form."""
    wanted: dict[str, dict] = {}
    for name, account in accounts.items():
        if not account["matomo"] or not account["email"]:
            continue
        sites = {}
        for site_name, site in account["sites"].items():
            if not site["matomo"] or f"{name}/{site_name}" == skip:
                continue
            sites[site_name] = {
                "name": site["server_name"],
                "urls": [f"https://{h}" for h in [site["server_name"], *site["aliases"]]],
                "timezone": timezone,
                "absent": site["matomo"] == "absent",
            }
        wanted[name] = {
            "email": account["email"],
            "absent": account["state"] != "present",
            "sites": sites,
        }
    return wanted


def _check_emails(wanted: dict[str, dict], local: dict | None, problems: check.Problems) -> None:
    """Matomo refuses a user whose email another user has."""
    owners: dict[str, str] = {}
    superuser = (local or {}).get("superuser")
    if superuser:
        owners[superuser["email"].lower()] = "the Matomo superuser (admin_email)"
    for name, want in sorted(wanted.items()):
        if want["absent"]:
            continue
        email = want["email"].lower()
        if email in owners:
            problems.add(
                ["webarch", "accounts", name, "email"],
                f"is also the address of {owners[email]}: Matomo needs one address per "
                "user (set matomo: false on one of them)",
            )
        else:
            owners[email] = f"account {name}"


def matomo(value: Any, server: dict, accounts: dict[str, dict], problems: check.Problems) -> dict:
    """``webarch.matomo``: the instance (local or remote) and what it should hold.

    Also gives each account with a Matomo user its ``matomo`` notification kind.
    """
    path = ["webarch", "matomo"]
    data, get = check.block(value, MATOMO_KEYS, path, problems)
    enabled = check.boolean(get("enabled"), [*path, "enabled"], problems)
    timezone = get("timezone")
    if not isinstance(timezone, str) or not TIMEZONE_RE.fullmatch(timezone):
        problems.add([*path, "timezone"], f"{check.describe(timezone)} is not a time zone name")
        timezone = "UTC"
    url = get("url")
    if url is not None and (not isinstance(url, str) or check.url_problem(url)
                            or not url.startswith("https://")):  # fmt: skip
        problems.add([*path, "url"], f"{check.describe(url)} must be an https URL")
    found = _instance(get("instance"), accounts, [*path, "instance"], problems)
    if found and url is not None:
        problems.add([*path, "url"], "a server has its own Matomo (a matomo site) or another's")
    # Without a webarch:matomo block a matomo site is only its Apache preset.
    local = _local(*found, data, server, problems) if found and enabled and value else None
    if local:
        local["superuser"] = _superuser(get, server, problems)
        local["geoip"] = _geoip(get("geoip_db"), local, problems)
    on = bool(enabled and (local or url))
    skip = f"{local['account']}/{local['site']}" if local else ""
    wanted = _wanted(accounts, timezone, skip) if on else {}
    _check_emails(wanted, local, problems)
    for name, want in wanted.items():
        if not want["absent"]:
            notify = accounts[name]["notify"]
            notify["kinds"]["matomo"] = {
                "token": notify["tokens"]["matomo"],
                "marker": f"{accounts[name]['home']}/{paths.NOTIFY_MARKERS['matomo']}",
            }
    return {
        "on": on,
        "local": local,
        "url": local["url"] if local else url,
        "token_file": get("token_file"),
        "timezone": timezone,
        "archive_minutes": check.integer(
            get("archive_minutes"), [*path, "archive_minutes"], problems, 5, 1440
        ),
        "api_login": API_LOGIN,
        "wanted": wanted,
        "users": sorted(n for n, w in wanted.items() if not w["absent"]),
    }
