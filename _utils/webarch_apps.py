"""
The account model: applications installed into sites (WordPress, MediaWiki).

A site of type ``wordpress`` or ``mediawiki`` with an ``app`` block gets the
application installed on the run that finds its document root empty: the
files from Debian's package of the server's release (or an upstream release
archive), a configuration with no password in it (the database by the socket
as the account, ``unix_socket``), an admin user named after the account whose
password is mailed once (notification kind ``app-SITE``).  A site whose
document root already holds the application is never installed over.
"""

from __future__ import annotations

import re
from typing import Any

import webarch_check as check
import webarch_db as db
import webarch_paths as paths
import webarch_stats_model as stats_model
from webarch_check import REQUIRED, Derived, Key

#: The site types that have an installer, and Debian's package of each.
APP_TYPES = ("wordpress", "mediawiki")

#: Where Debian's packages put the tree that is copied into a site.
DEBIAN_TREES = {"wordpress": "/usr/share/wordpress", "mediawiki": "/var/lib/mediawiki"}

#: Debian packages a ``debian`` source needs, by site type and Debian major release
#: (WordPress's package ships no theme: its default theme's package comes too; ``php``
#: keeps apt from choosing libapache2-mod-php for WordPress's "libapache2-mod-php | php").
DEBIAN_PACKAGES = {
    "wordpress": {
        12: ("php", "wordpress", "wordpress-theme-twentytwentythree"),
        13: ("php", "wordpress", "wordpress-theme-twentytwentyfive"),
    },
    "mediawiki": {12: ("php", "mediawiki"), 13: ("php", "mediawiki")},
}

TITLE_MAX = 80

#: ``webarch:accounts:USERNAME:sites:SITE:app``: the application of a wordpress or
#: mediawiki site.
APP_KEYS = check.key_table(
    Key(
        "database",
        "database name",
        REQUIRED,
        "The database the application uses: one of the account's own ``databases``, "
        "present. The application reaches it by the socket as the account "
        "(``unix_socket``): its configuration holds no password.",
    ),
    Key(
        "title",
        "text",
        Derived("default: the site's ``server_name``"),
        f"The site's title (one line, at most {TITLE_MAX} characters), set at install.",
    ),
    Key(
        "source",
        "``debian`` or a mapping",
        "debian",
        "Where the files come from: ``debian`` (the package of the server's Debian "
        "release, copied into the site) or ``{source: URL, salt:// or absolute path of a "
        ".tar.gz, sha256: HEX}`` (an upstream release archive, checked before unpacking).",
    ),
    Key(
        "reset",
        "token",
        "",
        "A new value asks for a new admin password, generated and mailed once (like ``resets``).",
    ),
)

RESET_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,64}$")


def site_app(
    site_type: str | None, value: Any, server_name: str | None, path: list[str],
    problems: check.Problems,
) -> dict | None:  # fmt: skip
    """A site's ``app`` block, validated (None without one)."""
    if value is None:
        return None
    if site_type not in APP_TYPES:
        problems.add(path, f"only a site of type {' or '.join(APP_TYPES)} has an application")
        return None
    data, get = check.block(value, APP_KEYS, path, problems)
    database = data.get("database")
    if database is None:
        problems.add([*path, "database"], "is required: which of the account's databases")
    elif not isinstance(database, str):
        problems.add([*path, "database"], f"{check.describe(database)} is no database name")
        database = None
    title = get("title") if "title" in data else server_name
    title = check.single_line(title, [*path, "title"], problems, TITLE_MAX) if title else None
    return {
        "kind": site_type,
        "database": database,
        "title": title,
        "source": _source(get("source"), [*path, "source"], problems),
        "reset": _reset(get("reset"), [*path, "reset"], problems),
    }


def _source(value: Any, path: list[str], problems: check.Problems) -> dict | None:
    """``debian`` or an archive ``{source, sha256}``."""
    if value == "debian":
        return {"kind": "debian"}
    if isinstance(value, dict):
        archive = stats_model._archive(value, path, problems)
        return {"kind": "archive", **archive} if archive else None
    problems.add(path, f"{check.describe(value)} must be debian or {{source: ..., sha256: ...}}")
    return None


def _reset(value: Any, path: list[str], problems: check.Problems) -> str:
    """A reset token (an int is taken as its digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value != "" and (not isinstance(value, str) or not RESET_TOKEN_RE.fullmatch(value)):
        problems.add(path, f"{check.describe(value)} must be 1-64 letters, digits or . _ : + -")
        return ""
    return value


def find_app(model: dict, account: str, site: str, kind: str) -> tuple[dict | None, str]:
    """The app of ``account``'s site ``site`` if it is a ``kind``; else None and why not."""
    app = model["accounts"].get(account, {}).get("apps", {}).get(site)
    if app is None:
        return None, f"{account}'s site {site!r} has no application (app block)"
    if app["kind"] != kind:
        return None, f"{account}'s site {site!r} runs {app['kind']}, not {kind}"
    return app, ""


def notify_kind(site: str) -> str:
    """The password notification kind of a site's application admin."""
    return f"app-{site}"


def check_account(account: dict, path: list[str], problems: check.Problems) -> None:
    """The apps' databases are the account's own, present ones; an app needs an email."""
    present = account["mariadb"]["present"]
    for name, site in account["sites"].items():
        app = site.get("app")
        if not app:
            continue
        apath = [*path, "sites", name, "app"]
        if app["database"] and app["database"] not in present:
            problems.add(
                [*apath, "database"],
                f"{app['database']!r} is not one of the account's present databases "
                f"({', '.join(present) or 'none'})",
            )
        if not account["email"]:
            problems.add(apath, "needs the account's email: the admin password is sent there")


def account_apps(account: dict, major: int, php_binary: str) -> dict[str, dict]:
    """What the SLS and the modules need of each application of a present account."""
    found = {}
    for name, site in account["sites"].items():
        app = site.get("app")
        if not app:
            continue
        kind = app["kind"]
        found[name] = {
            **app,
            "account": account["name"],
            "site": name,
            "email": account["email"],
            "admin": account["name"],
            "url": f"https://{site['server_name']}",
            "docroot": site["docroot"],
            "root": site["root"],
            "chroot": account["chroot"]["path"],
            "home": account["home"],
            "php": php_binary,
            "socket": paths.MARIADB_SOCKET,
            "tree": DEBIAN_TREES[kind],
            "packages": list(DEBIAN_PACKAGES[kind].get(major, ())),
            "notify_kind": notify_kind(name),
            "ledger": f"{paths.APPS_DIR}/{account['name']}-{name}.json",
        }
    return found


def add_notify_kinds(account: dict) -> None:
    """Each application's admin password: a notification kind ``app-SITE`` of the account
    (marker ``~/.notify_app-SITE``, its reset token from the ``app`` block); none while
    the account is suspended (its applications wait: webarch_app.installed ``held``)."""
    notify = account["notify"]
    for app in account.get("apps", {}).values():
        kind = app["notify_kind"]
        app["marker"] = f"{account['home']}/.notify_{kind}"
        notify["spool"].append(paths.notify_spool(account["name"], kind))
        if account["suspended"]:
            # Installed, and its password mailed, once the account is served.
            continue
        notify["kinds"][kind] = {"token": app["reset"], "marker": app["marker"]}
        notify["tokens"][kind] = app["reset"]


def removed_sites(account: str, home: str, sites: list[dict], archive_dir: str) -> list[dict]:
    """What removing each of ``account``'s sites switched to absent takes: the tree
    to archive (as ``ACCOUNT.SITE``), the application's database to dump first, and
    the files of its application that go with it (ledger, marker, spooled password)."""
    removed = []
    for site in sites:
        name = site["name"]
        app = site.get("app") or {}
        kind = notify_kind(name)
        removed.append(
            {
                "name": name,
                "root": site["root"],
                "archive_name": f"{account}.{name}",
                "archive_dir": archive_dir,
                "dump_dir": db.dump_dir(archive_dir),
                # Root's, in the root-owned home: the site is moved there first.
                "stage_dir": f"{home}/.webarch-removing",
                "databases": [app["database"]] if app.get("database") else [],
                "leftovers": [
                    f"{paths.APPS_DIR}/{account}-{name}.json",
                    f"{home}/.notify_{kind}",
                    paths.notify_spool(account, kind),
                ],
            }
        )
    return removed


def debian_packages(accounts: dict[str, dict]) -> list[str]:
    """The Debian packages the present accounts' ``debian`` apps need."""
    wanted: list[str] = []
    for account in accounts.values():
        for app in account.get("apps", {}).values():
            if app["source"] and app["source"]["kind"] == "debian":
                wanted += [p for p in app["packages"] if p not in wanted]
    return wanted
