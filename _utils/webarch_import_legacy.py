"""
Import: a live legacy host (Apache mpm-itk + mod_php, MariaDB, crontabs) to webarch pillar.

``convert(scan)`` takes what :py:func:`webarch_import.legacy` read from the
host (no I/O here) and returns the pillar (``{"webarch": {"accounts": ...}}``)
and a :py:class:`~webarch_import_report.Report`: every item read is in it, by
where it was read (``/etc/apache2/sites-enabled/alice.conf:12 Header``,
``mariadb.databases.alice_wp``, ``/var/spool/cron/crontabs/carol:4``), either
mapped (to which pillar key), not mapped (and why) or needing a decision.
The pillar is then validated by webarch's model; each problem becomes a
report line ``account NAME needs a decision: ...``.  Malformed input (a scan
of the wrong shape, an Apache file with unbalanced blocks) is collected and
raised at once (:py:class:`ConversionError`, each problem with its path).
No secret is in the scan's output: a ``wp-config.php`` is read for its
database name, user and host only; a MariaDB user's password is known only
as being there (``password: true``), never its hash.

The scan (the shape :py:func:`webarch_import.legacy` builds)::

    users:      [{name, uid, gid, group, gecos, home, shell,    # uid 1000-59999
                  in_the_way: [DIR]}]   # optional: layout dirs that are files or symlinks
    vhosts:     {PATH: TEXT}            # /etc/apache2/sites-enabled/*.conf
    docroots:   {DIR: {owner: USER|null, php: bool, wp_config: TEXT|null,
                       unserved: [PATH]}}   # optional: files only their owner reads
    crontabs:   {USER: TEXT}            # /var/spool/cron/crontabs/USER
    forwards:   {USER: TEXT}            # ~/.forward
    mariadb:    null (none found) or
                {databases: [NAME], users: [{user, host, plugin, password: bool}],
                 grants: [{user, host, grant: "GRANT ... ON `db`.* TO ..."}]}

:py:func:`docroots` gives the directories whose ``docroots`` entry the
reader must fill in (the vhosts' ``DocumentRoot``).  The Apache files are read
by :py:mod:`webarch_import_legacy_apache`, the sites mapped by
:py:mod:`webarch_import_legacy_sites`.
"""

from __future__ import annotations

import re
from typing import Any

import webarch_cron as cron
import webarch_db as db
import webarch_import_legacy_sites as sites
import webarch_import_report as report_module
import webarch_layout as layout
import webarch_paths as paths
from webarch_import_legacy_apache import SOURCE, clean_dir, docroots, parse_apache
from webarch_import_legacy_sites import Context
from webarch_import_report import ConversionError, Report, Run

__all__ = ["LAYOUT_DIRS", "ConversionError", "Report", "convert", "docroots", "parse_apache"]

SCAN_KEYS = ("users", "vhosts", "docroots", "crontabs", "forwards", "mariadb")
USER_KEYS = ("name", "uid", "gid", "group", "gecos", "home", "shell")
#: The directories of webarch's home layout below the home (webarch_layout.account_dirs).
LAYOUT_DIRS = tuple(
    d["path"].split("/", 3)[3] for d in layout.account_dirs("user") if d["id"] != "home"
)

DB_SYSTEM_USERS = ("root", "mariadb.sys", "mysql", "debian-sys-maint", "")
GRANT_RE = re.compile(r"^GRANT (?P<privs>.+?) ON (?P<db>`(?:[^`]|``)+`|\*)\.(?P<table>\S+) TO ")


# --------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------


def convert(scan: Any, release: int = 12) -> tuple[dict, Report]:
    """
    Convert what was read from a legacy host to webarch pillar and its report.

    Raises :py:class:`ConversionError` listing every malformed part of the
    scan (each with its path); else returns ``({"webarch": {"accounts": ...}},
    report)``, the pillar checked by webarch's model for ``release``.
    """
    run = Run(SOURCE)
    _check_shape(scan, run)
    if run.problems:
        raise ConversionError(SOURCE, run.problems)
    ctx = Context(scan, run)
    _accounts(ctx)
    sites.convert_sites(ctx)
    _mariadb(ctx)
    _crontabs(ctx)
    _forwards(ctx)
    if run.problems:
        raise ConversionError(SOURCE, run.problems)
    accounts = {name: ctx.accounts[name] for name in sorted(ctx.accounts)}
    pillar = {"webarch": {"accounts": accounts}}
    report_module.validate(pillar, run, release, "accounts")
    return pillar, run.report


def _check_shape(scan: Any, run: Run) -> None:
    """The scan's shape: every problem an error with its path."""
    if not isinstance(scan, dict):
        run.error([], f"the scan must be a mapping, not {type(scan).__name__}")
        return
    for key in sorted(set(scan) - set(SCAN_KEYS)):
        run.error([str(key)], f"unknown key of the scan (known: {', '.join(SCAN_KEYS)})")
    users = scan.get("users", [])
    if not isinstance(users, list):
        run.error(["users"], f"must be a list, not {type(users).__name__}")
    else:
        for index, user in enumerate(users):
            upath = ["users", str(index)]
            if not isinstance(user, dict) or set(user) - {"in_the_way"} != set(USER_KEYS):
                run.error(upath, f"must be a mapping of {', '.join(USER_KEYS)}[, in_the_way]")
            elif not isinstance(user.get("in_the_way", []), list) or not all(
                isinstance(p, str) and p in LAYOUT_DIRS for p in user.get("in_the_way", [])
            ):
                run.error([*upath, "in_the_way"], f"must be a list of {', '.join(LAYOUT_DIRS)}")
            elif not all(isinstance(user[k], int) for k in ("uid", "gid")):
                run.error(upath, "uid and gid must be integers")
            elif not all(isinstance(user[k], str) for k in ("name", "group", "home", "shell")):
                run.error(upath, "name, group, home and shell must be strings")
    for key in ("vhosts", "crontabs", "forwards"):
        value = scan.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            run.error([key], "must be a mapping of names to texts")
    roots = scan.get("docroots", {})
    if not isinstance(roots, dict) or not all(
        isinstance(v, dict)
        and set(v) - {"unserved"} == {"owner", "php", "wp_config"}
        and isinstance(v.get("unserved", []), list)
        for v in roots.values()
    ):
        run.error(
            ["docroots"],
            "must be a mapping of directories to {owner, php, wp_config[, unserved]}",
        )
    mariadb = scan.get("mariadb")
    if mariadb is not None and (
        not isinstance(mariadb, dict)
        or set(mariadb) != {"databases", "users", "grants"}
        or not all(isinstance(mariadb[k], list) for k in mariadb)
    ):
        run.error(["mariadb"], "must be null or {databases, users, grants}, each a list")
    elif mariadb is not None:
        for index, name in enumerate(mariadb["databases"]):
            if not isinstance(name, str):
                run.error(["mariadb", "databases", str(index)], "must be a database name")
        for key, keys in (
            ("users", {"user", "host", "plugin", "password"}),
            ("grants", {"user", "host", "grant"}),
        ):
            for index, row in enumerate(mariadb[key]):
                # A user's password_hash is there when it has a mysql_native_password one.
                if not isinstance(row, dict) or set(row) - {"password_hash"} != keys:
                    run.error(
                        ["mariadb", key, str(index)],
                        f"must be a mapping of {', '.join(sorted(keys))}",
                    )


# --------------------------------------------------------------------------
# Accounts (the Unix users)
# --------------------------------------------------------------------------


def _accounts(ctx: Context) -> None:
    run = ctx.run
    for user in ctx.scan.get("users", []):
        name = user["name"]
        path = ["passwd", name]
        if not paths.USERNAME_RE.fullmatch(name) or name in layout.RESERVED_USERNAMES:
            run.decide(path, "not a name webarch gives an account: rename the user first")
            continue
        ctx.users[name] = user
        account: dict[str, Any] = {}
        ctx.accounts[name] = account
        if layout.ID_MIN <= user["uid"] <= layout.ID_MAX:
            account["uid"] = user["uid"]
            # This existing user is the account: converging takes it over in place.
            account["adopt"] = True
            run.mapped(
                [*path, "uid"],
                f"accounts:{name}:uid and adopt: true (the user is adopted: its uid, "
                "group and files kept)",
            )
        else:
            run.decide(
                [*path, "uid"],
                f"outside {layout.ID_MIN}-{layout.ID_MAX}: webarch "
                "picks a new uid (chown the files)",
            )
        if user["group"] == name:
            account["gid"] = user["gid"]
            run.mapped([*path, "gid"], f"accounts:{name}:gid (the group {name}, kept)")
        else:
            run.decide(
                [*path, "gid"],
                f"the primary group is not named {name}: webarch's "
                "group is named after the account (chgrp the files)",
            )
        fullname = (user.get("gecos") or "").split(",")[0].strip()
        if fullname:
            account["fullname"] = fullname
            run.mapped([*path, "gecos"], f"accounts:{name}:fullname")
        else:
            run.mapped([*path, "gecos"], f"accounts:{name}:fullname (empty: the default)")
        if user["shell"] in layout.SHELLS:
            account["shell"] = user["shell"]
            run.mapped([*path, "shell"], f"accounts:{name}:shell")
        else:
            run.decide(
                [*path, "shell"],
                f"webarch accounts log in with "
                f"{' or '.join(layout.SHELLS)}: the account gets {layout.SHELLS[0]}",
            )
        home = clean_dir(user["home"])
        for part in user.get("in_the_way", []):
            run.decide(
                [*path, "home", part],
                f"~/{part} is a file or a symlink where webarch's home layout has a "
                "directory: move it away before converging (the run fails on it)",
            )
        if home == paths.home(name):
            run.mapped([*path, "home"], f"the home {home} (adopted where it is)")
        else:
            run.decide(
                [*path, "home"],
                f"webarch's home is {paths.home(name)}: move the files "
                "there (a verified copy) before converging",
            )


# --------------------------------------------------------------------------
# MariaDB
# --------------------------------------------------------------------------


def _grant_db(text: str) -> tuple[str, list[str]] | None:
    """``(database pattern, privileges)`` of a database-level GRANT line; None for others."""
    match = GRANT_RE.match(text)
    if not match or match.group("db") == "*" or match.group("table") != "*":
        return None
    name = match.group("db")[1:-1].replace("``", "`")
    privileges = [" ".join(p.split()).upper() for p in match.group("privs").split(",")]
    return name, privileges


def _db_matches(pattern: str, name: str) -> bool:
    """Whether a grant's database name (``\\_`` literal, ``_`` and ``%`` wildcards) is ``name``."""
    regex = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            regex += re.escape(pattern[index + 1])
            index += 2
            continue
        regex += "." if char == "_" else ".*" if char == "%" else re.escape(char)
        index += 1
    return re.fullmatch(regex, name) is not None


def _mariadb(ctx: Context) -> None:
    run, scan = ctx.run, ctx.scan
    mariadb = scan.get("mariadb")
    if mariadb is None:
        run.skip(["mariadb"], "no MariaDB server found: no database to carry")
        return
    owners: dict[str, dict[str, list[str]]] = {name: {} for name in mariadb["databases"]}
    for index, grant in enumerate(mariadb["grants"]):
        who = f"{grant.get('user')}@{grant.get('host')}"
        path = ["mariadb", "grants", who, str(index)]
        parsed = _grant_db(str(grant.get("grant", "")))
        if grant.get("user") in DB_SYSTEM_USERS:
            run.skip(path, "a grant of the MariaDB server's own user: webarch keeps its own")
            continue
        if parsed is None:
            text = str(grant.get("grant", ""))
            usage = " ON *.* " in text and text.startswith("GRANT USAGE ")
            if usage and grant.get("user") in ctx.accounts and grant.get("host") == "localhost":
                run.mapped(path, f"the MariaDB user {who} (its login; see mariadb.users)")
            elif usage:
                run.skip(path, f"the login of {who}, which is not carried (see mariadb.users)")
            else:
                run.decide(
                    path,
                    "not a grant on a whole database (server-wide, a table, a "
                    "routine or a proxy): webarch grants on an account's own databases "
                    "only; it is not carried",
                )
            continue
        pattern, privileges = parsed
        matched = [name for name in owners if _db_matches(pattern, name)]
        for name in matched:
            owners[name].setdefault(str(grant["user"]), []).extend(privileges)
        if not matched:
            run.skip(path, "a grant on no existing database: nothing to carry")
        elif grant.get("host") != "localhost":
            run.decide(
                path, f"webarch's account user is NAME@localhost: {who}'s grant is not carried"
            )
        else:
            run.mapped(path, "the database's account (see mariadb.databases)")
    for name in sorted(owners):
        _database(name, owners[name], ctx)
    for user in mariadb["users"]:
        _db_user(user, ctx)


def _database(name: str, owners: dict[str, list[str]], ctx: Context) -> None:
    run, path = ctx.run, ["mariadb", "databases", name]
    if name in db.DB_NAMES_RESERVED:
        run.skip(path, "a database of the MariaDB server itself: webarch keeps its own")
        return
    if not owners:
        run.decide(
            path,
            "no user has a grant on it: left out of the pillar (webarch keeps a "
            "database left out as it is); name the account it belongs to",
        )
        return
    accounts = [user for user in owners if user in ctx.accounts]
    prefixed = [user for user in accounts if name.startswith(db.db_prefix(user))]
    owner = (
        accounts[0]
        if len(accounts) == 1 and len(owners) == 1
        else (prefixed[0] if len(prefixed) == 1 else None)
    )
    if owner is None:
        run.decide(
            path,
            f"granted to {', '.join(sorted(owners))}: webarch gives a database to "
            "one account; left out of the pillar (kept as it is): put it in one "
            "account's databases",
        )
        return
    account = ctx.accounts[owner]
    account.setdefault("databases", {})[name] = None
    run.mapped(path, f"accounts:{owner}:databases:{name}")
    for other in sorted(set(owners) - {owner}):
        run.decide(
            [*path, other],
            f"also granted to {other}: webarch's grants are the owning "
            f"account's only ({owner}); {other} loses its access",
        )
    privileges = set(owners[owner])
    if privileges & {"ALL", "ALL PRIVILEGES"}:
        run.mapped(
            [*path, owner],
            f"accounts:{owner}:db_privileges (ALL: webarch's default "
            "list, without server-wide and delegating privileges)",
        )
        return
    refused = sorted(privileges - set(db.DB_PRIVILEGES_KNOWN))
    kept = [p for p in db.DB_PRIVILEGES_KNOWN if p in privileges]
    if refused:
        run.skip([*path, owner], f"{', '.join(refused)}: never an account's in webarch")
    old = account.get("db_privileges")
    if kept and old is None:
        account["db_privileges"] = kept
        run.mapped([*path, owner], f"accounts:{owner}:db_privileges")
    elif kept and set(old) != set(kept):
        account["db_privileges"] = [p for p in db.DB_PRIVILEGES_KNOWN if p in set(old) | privileges]
        run.decide(
            [*path, owner],
            f"{owner}'s privileges differ between its databases: "
            "webarch's are the account's, on each: the union is kept",
        )
    elif kept:
        run.mapped([*path, owner], f"accounts:{owner}:db_privileges")


def _db_user(user: dict, ctx: Context) -> None:
    run, name, host = ctx.run, str(user.get("user")), str(user.get("host"))
    path = ["mariadb", "users", f"{name}@{host}"]
    if name in DB_SYSTEM_USERS:
        run.skip(path, "a user of the MariaDB server itself: webarch keeps its own")
        return
    if name not in ctx.accounts:
        run.decide(
            path,
            f"no account is named {name}: webarch's MariaDB users are its "
            "accounts'; it is left as it is (its grants are not carried)",
        )
        return
    if host != "localhost":
        run.decide(path, f"webarch's account user is {name}@localhost: this one is left as it is")
        return
    if not user.get("password"):
        run.mapped(path, f"accounts:{name} (its MariaDB user, by unix_socket)")
        return
    used = " that wp-config.php uses" if name in ctx.wp_passwords else ""
    digest = user.get("password_hash")
    if isinstance(digest, str) and db.PASSWORD_HASH_RE.fullmatch(digest.upper()):
        ctx.accounts[name]["db_password_hash"] = digest.upper()
        run.mapped(
            path,
            f"accounts:{name}:db_password_hash (its password{used} kept: unix_socket OR "
            "mysql_native_password)",
        )
        return
    run.decide(
        path,
        (
            f"it has a password{used} that is no mysql_native_password hash: webarch can keep "
            f"only such a one (db_password_hash). After converging, {name} logs in by "
            f"unix_socket, which a site running as {name} over the socket passes whatever "
            "password it sends; for clients that log in by password, give it a new one "
            "(db_password: true) or set db_password_hash"
        ),
    )


# --------------------------------------------------------------------------
# Crontabs and mail forwards
# --------------------------------------------------------------------------


def _crontabs(ctx: Context) -> None:
    for user, text in sorted(ctx.scan.get("crontabs", {}).items()):
        base = f"/var/spool/cron/crontabs/{user}"
        account = ctx.account_of(user)
        if account is None:
            ctx.run.decide([base], f"{user} is no account: its crontab is not carried")
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                _cron_line(line, [f"{base}:{number}"], user, account, ctx)


ENV_LINE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")
#: A ``%`` cron reads as a newline (``\\%`` is a literal one).
CRON_PERCENT_RE = re.compile(r"(?<!\\)%")


def _cron_line(line: str, path: list[str], user: str, account: dict, ctx: Context) -> None:
    run = ctx.run
    env = ENV_LINE_RE.match(line)
    if env:
        variable = env.group(1)
        reason = {
            "MAILTO": "webarch mails a failed run to the account's email",
            "SHELL": "webarch runs every job with /bin/sh -c",
        }.get(variable)
        if reason:
            run.skip(path, reason)
        else:
            run.decide(
                path,
                f"{variable}: webarch's jobs take no environment lines: set it in "
                "each command that needs it",
            )
        return
    words = line.split()
    if words[0] == "@reboot":
        run.decide(
            path, "@reboot has no webarch schedule: job left out (a timer or a service of its own?)"
        )
        return
    count = 1 if words[0].startswith("@") else 5
    if len(words) <= count:
        run.decide(path, "not a crontab line (schedule and command): left out")
        return
    schedule = " ".join(words[:count])
    rest = line.strip()
    for word in words[:count]:
        rest = rest[rest.index(word) + len(word) :]
    command = rest.strip()
    if CRON_PERCENT_RE.search(command):
        run.decide(
            path,
            "its command holds a % that cron makes a newline (the rest is the job's "
            "input): job left out; write the command webarch should run",
        )
        return
    command = command.replace("\\%", "%")
    try:
        cron.on_calendar(schedule)
        cron.check_command(command)
    except cron.CronError as exc:
        run.decide(path, f"not a webarch job ({exc}): left out")
        return
    jobs = account.setdefault("cron", {})
    name = sites.unique(f"crontab-{path[0].rpartition(':')[2]}", jobs)
    jobs[name] = {"schedule": schedule, "command": command}
    run.mapped(path, f"accounts:{user}:cron:{name} (run by /bin/sh in the account's chroot)")


def _forwards(ctx: Context) -> None:
    for user, text in sorted(ctx.scan.get("forwards", {}).items()):
        home = ctx.users[user]["home"] if user in ctx.users else f"~{user}"
        path = [f"{home}/.forward"]
        account = ctx.account_of(user)
        if account is None:
            ctx.run.decide(path, f"{user} is no account: not carried")
            continue
        lines = [ln.strip() for ln in text.splitlines()]
        targets = [
            t for ln in lines if ln and not ln.startswith("#") for t in re.split(r"[,\s]+", ln) if t
        ]
        if len(targets) == 1 and re.fullmatch(r"[^\s|/\\\"@]+@[^\s@]+", targets[0]):
            account["email"] = targets[0]
            ctx.run.mapped(path, f"accounts:{user}:email (the file stays in the home)")
        elif not targets:
            ctx.run.skip(path, "empty: nothing to carry")
        else:
            ctx.run.decide(
                path,
                "not one address (several, a local copy, a pipe or a file): "
                "webarch's email is one address; the file stays in the home; set "
                "email by hand",
            )
