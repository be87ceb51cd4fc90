"""
The webarch account model: ``build_model(pillar, host)``.

Reads the ``webarch`` pillar (server-wide settings plus ``accounts`` keyed by
username, each with ``sites`` keyed by site name), merges the defaults,
validates the whole of it and returns normalised data that every SLS file of
the formula renders from.  Each concern has its own module (``webarch_server``
for the server-wide keys, ``webarch_web``, ``webarch_php``, ``webarch_db``,
``webarch_mail``, ``webarch_layout``), with its keys next to their validators;
this one puts them together.

Validation collects every problem before it reports: each one names its pillar
path (``webarch:accounts:alice:sites:www:server_name``) and what is wrong.
When anything is wrong, :py:class:`~webarch_check.ModelError` lists them all.

A pure function: the pillar and a snapshot of the host's users and groups come
in as plain arguments, so it is unit-tested without Salt.
"""

from __future__ import annotations

from typing import Any

import webarch_apps as apps
import webarch_backup as backup
import webarch_check as check
import webarch_cron_model as cron_model
import webarch_db as db
import webarch_layout as layout
import webarch_limits as limits
import webarch_mail as mail
import webarch_net as net
import webarch_paths as paths
import webarch_php as php
import webarch_quota as quota
import webarch_stats_model as stats
import webarch_web as web
from webarch_check import OPTIONAL, Derived, Key, ModelError
from webarch_layout import HostUsers
from webarch_server import SERVER_KEYS, server_settings

#: What build_model takes and raises, for its callers.
__all__ = ["HostUsers", "ModelError", "build_model"]


#: ``webarch:accounts:USERNAME``: one hosting account.
ACCOUNT_KEYS = check.key_table(
    Key(
        "state",
        check.one_of(check.STATES),
        "present",
        "Switching an account that webarch created to ``absent`` kills its processes, "
        f"unmounts its chroot (and drops its mounts from ``{paths.CHROOT_FSTAB}``), "
        "archives its home to ``archive_dir`` (``USER-YYYYmmddTHHMMSSZ.tar.gz``, verified "
        "against the home before anything is deleted), then removes the home, the chroot, the key "
        "file, the user and its group, and any of its generated passwords still waiting "
        "to be mailed. If archiving fails, nothing is removed. An absent account whose "
        "user webarch did not create is left alone.",
    ),
    Key(
        "suspended",
        "true or false",
        False,
        'Suspend the whole account: its sites answer 503 "This site is suspended.", SSH '
        "and SFTP are refused (the user expires, its processes end), its cron jobs and "
        "PHP-FPM stop, the mail gate refuses its mail; its data stays. A WordPress or "
        "MediaWiki site not installed yet waits (with its admin password) for the run "
        "that serves the account. ``false`` resumes.",
    ),
    Key(
        "fullname",
        "display name",
        Derived("default: the username"),
        "The GECOS field: no quotes, colons, commas, backslashes, ``= < >`` or control "
        "characters, at most 100 characters.",
    ),
    Key(
        "email",
        "email address",
        OPTIONAL,
        "Contact address of the account holder: generated passwords are mailed there. "
        "Without one, no password is generated.",
    ),
    Key(
        "uid",
        f"integer {layout.ID_MIN}-{layout.ID_MAX}",
        OPTIONAL,
        "Pin the user id (unique). Left out, the system picks.",
    ),
    Key(
        "gid",
        f"integer {layout.ID_MIN}-{layout.ID_MAX}",
        OPTIONAL,
        "Pin the group id (unique). Left out, the system picks.",
    ),
    Key("adopt", "true or false", False, layout.ADOPT_DOC),
    Key("shell", check.one_of(layout.SHELLS), layout.SHELLS[0], "The login shell."),
    Key(
        "ssh_keys",
        "list of OpenSSH public keys",
        [],
        "OpenSSH public keys (``ssh-ed25519``, ``ecdsa-sha2-*``, ``sk-*``, or ``ssh-rsa`` "
        "of 2048 bits or more), one line each, without options. They log the account in "
        "over SSH and SFTP, into its chroot. They are written to "
        f"``{paths.SSH_AUTHORIZED_KEYS_DIR}/USERNAME`` (root-owned: the account cannot "
        "add keys of its own).",
    ),
    Key(
        "ssh_password",
        "true or false",
        False,
        "Also allow SSH/SFTP logins with the account's password. With an ``email``, "
        "webarch generates the password and mails it (once); without one, set it by hand.",
    ),
    Key(
        "db_password",
        "true or false",
        False,
        "Let the account's MariaDB user log in with a password as well as by its Unix "
        "user (``unix_socket OR mysql_native_password``, unix_socket first, so "
        "applications still need none). Generated and mailed; needs ``email``.",
    ),
    Key(
        "db_password_hash",
        "mysql_native_password hash (``*`` and 40 hex digits)",
        None,
        "Keep an existing password of the account's MariaDB user (an account moved from "
        "another server: its applications keep their password): ``unix_socket OR "
        "mysql_native_password`` with this hash, nothing mailed; not with ``db_password``.",
    ),
    Key("resets", "mapping", {}, "Ask for new generated passwords."),
    Key(
        "cron",
        "mapping",
        {},
        "The account's cron jobs, ``JOB: {schedule, command, enabled}``, run as the "
        "account in its chroot (see `Cron`_).",
    ),
    Key("mail", "mapping", {}, "The account's own mail."),
    Key("outbound", "mapping", {}, "The account's outbound connections (``deny_other``)."),
    Key("limits", "mapping", {}, "The account's own limits over ``limits`` (see `Limits`_)."),
    Key(
        "php",
        "mapping",
        {},
        "The account's PHP-FPM pool: it runs as the account, in its chroot. Every key is optional.",
    ),
    Key(
        "databases",
        "mapping",
        {},
        "MariaDB databases, ``NAME: {state: present}`` (or empty, which means present) "
        "or ``NAME: {state: absent}``. Names are 1 to 64 of ``a-z``, ``0-9``, ``_``, "
        "unique on the server, start with the account's prefix (``alice_``, "
        "``carol_stats_``; see ``mariadb:require_prefix``) and are never ``mysql``, "
        "``sys`` or the schemas. A database left out of the pillar is kept as it is. "
        "See `MariaDB`_ for what happens to a database marked absent or left out.",
    ),
    Key(
        "db_privileges",
        "list of privileges",
        list(db.DB_PRIVILEGES_DEFAULT),
        "The account's privileges on each of its databases: a subset of the default "
        "may be given. Server-wide and delegating privileges (``GRANT OPTION``, ``ALL``, "
        "``FILE``, ``SUPER``, ``PROCESS``, ...) are refused, and so is ``DELETE "
        "HISTORY`` (with all the others it reads back as ``ALL PRIVILEGES``, which "
        "saltext-mysql's grant state cannot match).",
    ),
    Key(
        "sites",
        "mapping",
        {},
        "The account's sites, keyed by site name: 1 to 63 lower-case letters, digits "
        "and inner hyphens, which also names the directory ``~/sites/SITE``.",
    ),
    Key("matomo", "true or false", True, stats.SWITCH_DOC.split("; on a site")[0] + "."),
    Key("quota", "mapping", {}, "The account's disk quota, over ``quota:defaults``."),
    Key("backup", "true or false", True, backup.ACCOUNT_DOC),
)


def _account(
    name: Any, data: Any, server: dict, problems: check.Problems, socket_key: str = ""
) -> dict:
    """Validate one account (not its relations to others) and normalise it."""
    path = ["webarch", "accounts", str(name)]
    if not isinstance(name, str) or not paths.USERNAME_RE.fullmatch(name):
        problems.add(path, f"username must match {paths.USERNAME_RE.pattern}")
    data = check.mapping(data, path, problems)
    check.check_keys(data, ACCOUNT_KEYS, path, problems)
    # The concern modules read the account's keys with their defaults filled in.
    data = check.with_defaults(data, ACCOUNT_KEYS)
    name = str(name)
    state = check.choice(data["state"], [*path, "state"], problems, check.STATES)
    uid = (
        check.integer(data["uid"], [*path, "uid"], problems, layout.ID_MIN, layout.ID_MAX)
        if "uid" in data
        else None
    )
    gid = (
        check.integer(data["gid"], [*path, "gid"], problems, layout.ID_MIN, layout.ID_MAX)
        if "gid" in data
        else None
    )
    email = check.email(data["email"], [*path, "email"], problems) if "email" in data else None
    ssh_password = check.boolean(data["ssh_password"], [*path, "ssh_password"], problems)
    sites_raw = check.mapping(data["sites"], [*path, "sites"], problems)
    every_site = {
        str(site): web.site_settings(
            name, str(site), site_data, [*path, "sites", str(site)], problems, server["waf"]
        )
        for site, site_data in sorted(sites_raw.items(), key=lambda kv: str(kv[0]))
    }
    suspended = check.boolean(data["suspended"], [*path, "suspended"], problems)
    sites = {
        k: {**v, "suspended": True} if suspended else v
        for k, v in every_site.items()
        if v["state"] != "absent"
    }
    php_settings = php.account_php(data["php"], paths.home(name), [*path, "php"], problems)
    account_limits = limits.account_limits(name, data["limits"], server, php_settings, problems)
    backed_up = backup.account_backup(data, server, path, problems)
    return {
        "name": name,
        "state": state,
        "suspended": suspended,
        "fullname": check.display_name(data["fullname"], [*path, "fullname"], problems)
        if "fullname" in data
        else name,
        "email": email,
        "uid": uid,
        "gid": gid,
        "adopt": check.boolean(data["adopt"], [*path, "adopt"], problems),
        "shell": check.choice(data["shell"], [*path, "shell"], problems, layout.SHELLS),
        "group": name,
        "home": paths.home(name),
        "dirs": layout.account_dirs(name),
        "ssh": {
            "keys": layout.ssh_keys(data["ssh_keys"], [*path, "ssh_keys"], problems),
            "password": ssh_password,
            "authorized_keys": paths.authorized_keys(name),
        },
        "chroot": layout.chroot_spec(
            name,
            server["chroot_base"] or paths.CHROOT_BASE,
            backup.account_store(name, server) if backed_up else None,
        ),
        "backup": backed_up,
        "php": php_settings,
        "limits": account_limits,
        "limits_units": limits.units(account_limits),
        "pool": {
            "name": name,
            "socket": php.pool_socket(name, socket_key),
            "listen": php.adopted_listen(php.pool_socket(name, socket_key)),
            "file": paths.fpm_pool_file(name),
            "old_file": paths.fpm_old_pool_file(server["php_version"], name),
            "unit": paths.fpm_unit(name),
            "service": paths.fpm_unit(name).removesuffix(".service"),
            "socket_unit": paths.fpm_unit(name).removesuffix(".service") + ".socket",
            "error_log": paths.account_log(name, "php-error.log"),
            "slow_log": paths.account_log(name, "php-slow.log"),
        },
        "sites": sites,
        # Sites switched to absent: archived (files and database), then deleted.
        "sites_removed": apps.removed_sites(
            name,
            paths.home(name),
            [v for v in every_site.values() if v["state"] == "absent"],
            server["archive_dir"],
        ),
        "matomo": check.boolean(data["matomo"], [*path, "matomo"], problems),
        # The account's Apache site: one file with a virtual host per site.
        "apache": {"site": paths.apache_site(name), "file": paths.apache_site_file(name)},
        "mariadb": db.account_mariadb(name, data, server, problems),
        "mail": mail.account_mail(name, data, server, problems),
        "outbound": net.account_outbound(name, data["outbound"], server, problems),
        "notify": mail.account_notify(name, data, email, ssh_password, problems),
        "quota": quota.account_quota(data, server, path, problems),
        # Where its soft and file limits come from: btrfs has none (its state names them).
        "quota_from": quota.limit_sources(data, server, path),
        "cron": cron_model.account_cron(
            name, data, paths.chroot(name, server["chroot_base"] or paths.CHROOT_BASE), problems
        ),
    }


def _check_unique(accounts: dict[str, dict], problems: check.Problems) -> None:
    """Report ids and host names used more than once across all accounts."""
    seen: dict[tuple[str, Any], str] = {}
    for name, account in accounts.items():
        for key in ("uid", "gid"):
            value = account[key]
            if value is None:
                continue
            other = seen.setdefault((key, value), name)
            if other != name:
                problems.add(
                    ["webarch", "accounts", name, key],
                    f"{value} is also the {key} of account {other!r}",
                )
        for site_name, site in account["sites"].items():
            spath = ["webarch", "accounts", name, "sites", site_name]
            names = [("server_name", site["server_name"])] + [
                (f"aliases:{i}", a) for i, a in enumerate(site["aliases"])
            ]
            for key, host_name in names:
                if host_name is None:
                    continue
                where = f"{name}:sites:{site_name}"
                other = seen.setdefault(("host", host_name), where)
                if other != where:
                    problems.add(
                        spath + key.split(":"),
                        f"{host_name} is already used by {other}",
                    )
                elif key != "server_name" and host_name == site["server_name"]:
                    problems.add(spath + key.split(":"), "repeats the server_name")


def _only(value: Any, accounts: dict[str, dict], problems: check.Problems) -> list[str] | None:
    """The accounts a targeted run is limited to (pillar ``webarch_only``), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(["webarch_only"], "must be a list of account names")
        return None
    for name in value:
        if name not in accounts:
            problems.add(
                ["webarch_only"], f"{check.describe(name)} is not an account in the pillar"
            )
    return sorted(set(value) & set(accounts))


#: Where a job puts the ``webarch`` pillar it compiled afresh (``__context__`` is
#: shared by the modules of one job): ``webarch.config()`` reads it instead of the
#: pillar of the minion daemon's start (webarch_notify.send sets it: the modules
#: that put a password in place read the model too).
FRESH_PILLAR_CONTEXT = "webarch.fresh_pillar"


def build_model(pillar: Any, host: HostUsers, osmajorrelease: int = 12, only: Any = None) -> dict:
    """
    Validate the ``webarch`` pillar against ``host`` and return the model.

    ``only`` (the ``webarch_only`` pillar given at apply time) limits the
    per-account states to those accounts; the server-wide files still list
    every account.  Raises :py:class:`webarch_check.ModelError` listing every problem found.
    """
    problems = check.Problems()
    pillar = check.mapping(pillar, ["webarch"], problems)
    check.check_keys(pillar, SERVER_KEYS, ["webarch"], problems)
    server = server_settings(pillar, problems, osmajorrelease)
    reserved = layout.RESERVED_USERNAMES | frozenset(server["reserved_usernames"])
    raw_accounts = check.mapping(pillar.get("accounts"), ["webarch", "accounts"], problems)
    accounts = {
        str(name): _account(name, data, server, problems, host.socket_key)
        for name, data in sorted(raw_accounts.items(), key=lambda kv: str(kv[0]))
    }
    present = [a for a in accounts.values() if a["state"] == "present"]
    for account in present:
        layout.check_host_clashes(account, host, reserved, problems)
        apps.check_account(account, ["webarch", "accounts", account["name"]], problems)
        account["apps"] = apps.account_apps(
            account, osmajorrelease, f"/usr/bin/php{server['php_version']}"
        )
        apps.add_notify_kinds(account)
    _check_unique(accounts, problems)
    db.check_unique_databases(accounts, problems)
    layout.check_server_paths(server, problems)
    targets = _only(only, accounts, problems)
    matomo = stats.matomo(pillar.get("matomo"), server, accounts, problems)
    if matomo["local"] and accounts[matomo["local"]["account"]]["suspended"]:
        problems.add(
            ["webarch", "accounts", matomo["local"]["account"], "suspended"],
            "this account runs the server's Matomo: move Matomo to another account first",
        )
    if problems.items:
        # Group the problems by account (stable: each account's keep their order).
        raise ModelError(sorted(problems.items, key=lambda p: p.split(":", 3)[:3]))
    present_names = {a["name"] for a in present}  # suspended ones keep all but what runs
    active = [a for a in present if not a["suspended"]]
    suspended = {a["name"] for a in present if a["suspended"]}
    managed_after = sorted((set(host.managed) & set(host.users)) | present_names)
    wanted = set(accounts) if targets is None else set(targets)
    return {
        **server,
        "accounts": accounts,
        # The accounts whose own states this run renders (all, or webarch_only).
        "present": sorted(present_names & wanted),
        "all_present": sorted(present_names),
        "only": targets,
        # Added to the requisites of the server-wide services: a run limited by
        # webarch_only checks a service only when a state it watches changed
        # (a full run checks every service is running and enabled).
        "service_onchanges": [] if targets is None else ["onchanges"],
        "ssh_password_accounts": sorted(a["name"] for a in present if a["ssh"]["password"]),
        "log_map": web.log_map(present),
        "php_fpm_modules_off": list(php.PHP_FPM_MODULES_OFF),
        "php_fpm": php.fpm(server["php_version"]),
        "apache": web.apache(server, present),
        "waf": web.waf(present, osmajorrelease),
        "account_group": paths.ACCOUNT_GROUP,
        "mail_accounts": mail.mail_accounts(present, active),
        "notify_accounts": sorted(
            a["name"] for a in present if a["notify"]["kinds"] and a["name"] in wanted
        ),
        "db_dumps": db.db_dumps(server, present),
        "cron": cron_model.cron_file(active, server["notify"]["from"]),
        "firewall": net.firewall(present),
        "pam_limits": limits.pam_file(present),
        "limits_oom_score_adjust": limits.OOM_SCORE_ADJUST,
        "php_masters": php.masters(sorted((present_names - suspended) & wanted)),
        "suspended": sorted(suspended),
        # The users this run expires (suspended) or un-expires (the others).
        "expiry": {
            "expired": sorted(suspended & wanted),
            "open": sorted((present_names - suspended) & wanted),
        },
        "matomo": matomo,
        "quota": quota.quota(server, present),
        "backup": backup.backup(server, present),
        "app_packages": apps.debian_packages(accounts),
        "absent": sorted(set(accounts) - present_names),
        # Absent accounts whose Unix user webarch made: archived, then removed.
        "remove": sorted((set(accounts) - present_names) & set(host.managed) & wanted),
        "registry": {
            "path": paths.REGISTRY_PATH,
            "names": managed_after,
            "lines": [paths.REGISTRY_HEADER, *managed_after],
        },
        # Every host path the SLS files use (webarch_paths, lower-case names).
        "paths": paths.published(),
    }
