"""
Import: the peer's Ansible ``host_vars`` (role ``users`` of webarch-coop) to webarch pillar.

``convert(host_vars, source)`` takes the parsed file (``load`` reads its YAML,
``!vault`` values as :py:data:`VAULT` markers, ``!unsafe`` strings as plain
text) and returns the pillar (``{"webarch": {"accounts": ...}}``) and a
:py:class:`Report`: every field of the input is in it, by its path
(``users.alice.users_apache_virtual_hosts.www.users_apache_robots``), either
mapped (to which pillar key), not mapped (and why), or needing a decision.
Jinja expressions and vault values are never guessed: each is a decision.
Unknown keys and malformed values are collected and raised at once
(:py:class:`ConversionError`, each naming its path).  The pillar is then
validated by webarch's own model; each problem it has becomes a report line
``account NAME needs a decision: ...``.  No value of the input is ever
written into a report line (passwords and keys stay out of it).

The sites (``users_apache_virtual_hosts``) are mapped by
:py:mod:`webarch_import_ansible_sites`, the report kept by :py:mod:`webarch_import_report`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import webarch_import_ansible_sites as sites
import webarch_import_report as report_module
import webarch_layout as layout
import webarch_paths as paths
import yaml
from webarch_import_report import (
    MAPPED,
    NOT_MAPPED,
    UNREAD,
    VAULT,
    ConversionError,
    Entry,
    Report,
    Run,
    dict_items,
)

__all__ = ["VAULT", "ConversionError", "Entry", "Report", "convert", "load"]


class Unsafe(str):
    """An ``!unsafe`` string: Ansible never templates it (literal, even with ``{{``)."""

    __slots__ = ()


class _Loader(yaml.SafeLoader):
    """YAML as Ansible reads host_vars: ``!vault`` and ``!unsafe`` known."""


_Loader.add_constructor("!vault", lambda loader, node: VAULT)
_Loader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def load(text: str, source: str) -> Any:
    """Parse a host_vars file (``source`` names it in errors)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConversionError(source, [f"{source}: not readable YAML: {exc}"]) from None


#: A user name the peer (and Debian's useradd) accepts.
PEER_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PEER_DB_RE = re.compile(r"^[a-z0-9_]{1,64}$")
QUOTA_RE = re.compile(r"^([1-9][0-9]{0,12})\s*([KMGT])i?B?$")
QUOTA_BYTES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
CRON_KEYS = ("name", "job", "minute", "hour", "day", "month", "weekday", "special_time")
CRON_ALL_KEYS = (*CRON_KEYS, "state", "disabled")
SPECIAL_TIMES = {
    "@annually": "@yearly", "@yearly": "@yearly", "@monthly": "@monthly",
    "@weekly": "@weekly", "@daily": "@daily", "@hourly": "@hourly",
}  # fmt: skip
#: A ``%`` cron reads as a newline (``\\%`` is a literal one).
CRON_PERCENT_RE = re.compile(r"(?<!\\)%")
SCRIPT_SCHEDULES = {
    "users_daily_scripts": ("daily", "@daily"),
    "users_hourly_scripts": ("hourly", "@hourly"),
    "users_minutely_scripts": ("minutely", "* * * * *"),
}
#: Groups of the peer that switch features on: what webarch does instead.
FEATURE_GROUPS = {
    "chroot": (MAPPED, "every webarch account is chrooted (SSH, SFTP, PHP, cron)"),
    "phpfpm": (MAPPED, "every webarch account has its own PHP-FPM pool"),
    "sftponly": (
        NOT_MAPPED,
        "webarch gives every account both SSH and SFTP, in its chroot",
    ),
    "sshonly": (NOT_MAPPED, "webarch gives every account both SSH and SFTP, in its chroot"),
}
#: Paths open_basedir always allows in webarch (besides the home).
BASEDIR_ALWAYS = ("/tmp", "/usr/share/php")

#: Account keys of the peer that webarch has no place for, and why.
ACCOUNT_NOT_MAPPED = {
    "users_home_owner": "webarch owns the home itself (root:USER, mode 0750)",
    "users_home_group": "webarch owns the home itself (root:USER, mode 0750)",
    "users_home_mode": "webarch owns the home itself (root:USER, mode 0750)",
    "users_group_members": "no other user joins an account's group in webarch (isolation)",
    "users_editor": "no per-account editor setting in webarch (the account's dotfiles stay)",
    "users_muttrc": "webarch writes no ~/.muttrc (an existing one stays in the home)",
    "users_forward": "webarch writes no ~/.forward (an existing one stays in the home)",
    "users_generate_ssh_key": "webarch generates no key pair for an account",
    "users_skel": "webarch makes new homes from its own layout",
    "users_system": "webarch accounts are never system users",
    "users_private_dirs_mode": "webarch sets the mode of ~/private itself",
    "users_matomo_notify_passwd": "webarch mails every account with an email its Matomo "
    "password once, by itself",
    "users_phpfpm_version": "webarch runs the PHP of the server's Debian release",
    "users_phpfpm_pm_max_spare_servers": "webarch's pool has no spare-server settings",
    "users_phpfpm_pm_min_spare_servers": "webarch's pool has no spare-server settings",
    "users_phpfpm_pm_start_servers": "webarch's pool has no spare-server settings",
    "users_phpfpm_slowlog_terminate_timeout": "webarch sets the pool's slow log itself",
    "users_phpfpm_extensions": "webarch's pools run .php files only",
    "users_phpfpm_sendmail_path": "webarch sets PHP's sendmail_path to its mail gate",
    "users_cron_tmpdir_clean": "webarch has no ~/tmp cleaning job (add a cron job if wanted)",
    "users_cron_tmpdir_max_age_days": "webarch has no ~/tmp cleaning job",
    "users_daily_scripts_test_ignore_fail_regex": "webarch mails every failed cron run",
    "users_hourly_scripts_test_ignore_fail_regex": "webarch mails every failed cron run",
    "users_minutely_scripts_test_ignore_fail_regex": "webarch mails every failed cron run",
    "users_apache_cgi_extensions": "webarch has no CGI",
    "users_apache_cgi_extension_match": "webarch has no CGI",
    "users_apache_php_proxy_timeout": "webarch wires each site to its pool itself "
    "(see php:request_terminate_timeout)",
}


def convert(host_vars: Any, source: str, release: int = 12) -> tuple[dict, Report]:
    """
    Convert a parsed host_vars file to webarch pillar and its report.

    Raises :py:class:`ConversionError` listing every unknown key and malformed
    value (each with its path); else returns ``({"webarch": {"accounts":
    ...}}, report)``, the pillar checked by webarch's model for ``release``.
    """
    run = Run(source)
    if not isinstance(host_vars, dict):
        run.error([], f"must be a mapping of variables, not {type(host_vars).__name__}")
        raise ConversionError(source, run.problems)
    host_vars = run.readable(host_vars, [])
    accounts: dict[str, dict] = {}
    for key in host_vars:
        if key != "users":
            run.skip(
                [str(key)],
                "not an account: a server-level variable; webarch's server keys "
                "are set by hand (docs/migration.rst)",
            )
    users = host_vars.get("users")
    if "users" in host_vars and users is None:
        users = {}
        run.mapped(["users"], "accounts (none)")
    if "users" in run.unread:
        run.error(["users"], "is not readable (Jinja or vault): nothing to convert")
    elif "users" not in host_vars:
        run.error(["users"], "is required: the accounts, keyed by user name")
    elif not isinstance(users, dict):
        run.error(["users"], f"must be a mapping of accounts, not {type(users).__name__}")
    else:
        for name, data in users.items():
            account = _account(name, data, ["users", str(name)], run)
            if account is not None:
                accounts[str(name)] = account
    if run.problems:
        raise ConversionError(source, run.problems)
    pillar = {"webarch": {"accounts": accounts}}
    report_module.validate(pillar, run, release, "users")
    return pillar, run.report


def _account(name: Any, data: Any, path: list[str], run: Run) -> dict | None:
    """One account of ``users:``; ``None`` when it is left out."""
    if not isinstance(name, str) or not PEER_USERNAME_RE.fullmatch(name):
        run.error(path, "is not a user name (a-z, 0-9, _ and -, a letter or _ first)")
        return None
    if not data:
        data = {}
        run.mapped(path, f"account {name} (no fields: the defaults)")
    if not isinstance(data, dict):
        run.error(path, f"must be a mapping of users_* keys, not {type(data).__name__}")
        return None
    state = data.get("users_state", "present")
    if state not in ("present", "absent", "ignore"):
        run.error([*path, "users_state"], "must be present, absent or ignore")
        return None
    if state == "ignore":
        run.skip(
            path,
            "users_state ignore: the peer leaves this account alone; left out of the "
            "pillar (webarch leaves a Unix user it did not create alone)",
        )
        return None
    account: dict[str, Any] = {}
    if "users_state" in data:
        account["state"] = state
        run.mapped(
            [*path, "users_state"],
            "state"
            if state == "present"
            else "state absent (webarch archives the home, then "
            "removes the account, only if webarch created it)",
        )
    home = paths.home(name)
    peer_home = data.get("users_home")
    peer_home = peer_home.rstrip("/") if isinstance(peer_home, str) and peer_home != "/" else home
    ctx = {"name": name, "home": home, "homes": list(dict.fromkeys([home, peer_home]))}
    for key, value in data.items():
        kpath = [*path, str(key)]
        if key == "users_state":
            continue
        if key in ACCOUNT_NOT_MAPPED:
            run.skip(kpath, ACCOUNT_NOT_MAPPED[key])
        elif key in ACCOUNT_FIELDS:
            ACCOUNT_FIELDS[key](value, kpath, account, run, ctx)
        elif key in SCRIPT_SCHEDULES:
            _scripts(key, value, kpath, account, run)
        else:
            run.error(kpath, "unknown key of the peer's account")
    enabled = data.get("users_apache_virtual_hosts_enabled", True)
    if enabled is False:
        for site in account.get("sites", {}).values():
            site["suspended"] = True
    return account


def _identity(target: str, kind: str) -> Callable[..., None]:
    """A field copied to the account's key ``target`` (a string or a bool)."""

    def handle(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
        if kind == "bool" and not isinstance(value, bool):
            run.error(path, "must be true or false")
        elif kind == "str" and not isinstance(value, str):
            run.error(path, f"must be a string, not {type(value).__name__}")
        elif value == "":
            run.mapped(path, f"no {target} (empty)")
        else:
            account[target] = value
            run.mapped(path, target)

    return handle


def _shell(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, str):
        run.error(path, f"must be a string, not {type(value).__name__}")
    elif value in layout.SHELLS:
        account["shell"] = value
        run.mapped(path, "shell")
    else:
        run.decide(
            path,
            f"webarch accounts log in with {' or '.join(layout.SHELLS)}: choose one "
            "(the shell is left at the default /bin/bash)",
        )


def _home(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, str):
        run.error(path, f"must be a string, not {type(value).__name__}")
    elif value.rstrip("/") == ctx["home"]:
        run.mapped(path, f"the home {ctx['home']} (always there in webarch)")
    else:
        run.decide(
            path,
            f"webarch's home is {ctx['home']}: move the files there (a verified copy) "
            "before converging",
        )


def _group(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, str):
        run.error(path, f"must be a string, not {type(value).__name__}")
    elif value == ctx["name"]:
        run.mapped(path, "the account's group (named after it in webarch)")
    else:
        run.skip(path, "webarch's group of an account is always named after it")


def _groups(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    for index, group in _items(value, path, run, str):
        reason = FEATURE_GROUPS.get(group)
        if reason is None:
            run.skip([*path, index], "webarch accounts belong to no other group (isolation)")
        elif reason[0] == MAPPED:
            run.mapped([*path, index], reason[1])
        else:
            run.skip([*path, index], reason[1])


def _ssh_keys(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    keys = []
    for index, key in _items(value, path, run, str):
        if re.match(r"^[a-z][a-z0-9+.-]*://", key):
            run.decide(
                [*path, index],
                "a URL: webarch takes the keys themselves; fetch them and list them in ssh_keys",
            )
        else:
            keys.append(key.strip())
            run.mapped([*path, index], "ssh_keys")
    if keys:
        account["ssh_keys"] = keys


def _quota(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    match = QUOTA_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        run.error(path, "must be a size like 500M or 1G")
        return
    size = int(match.group(1)) * QUOTA_BYTES[match.group(2)]
    quota = account.setdefault("quota", {})
    quota.setdefault("blocks_hard", _kib(size // 1024))
    quota.setdefault("blocks_soft", _kib(size // 1125))
    quota.setdefault("inodes_hard", size // 5120)
    quota.setdefault("inodes_soft", size // 5625)
    run.mapped(path, "quota (the peer's split: blocks_hard, blocks_soft, inodes_hard, inodes_soft)")


def _kib(kib: int) -> str | int:
    """A KiB count as webarch's size (the largest exact unit)."""
    if kib == 0:
        return 0
    for unit, shift in (("T", 30), ("G", 20), ("M", 10)):
        if kib % (1 << shift) == 0:
            return f"{kib >> shift}{unit}"
    return f"{kib}K"


def _quota_limit(target: str) -> Callable[..., None]:
    """``users_quota_{block,inode}_{soft,hard}limit`` (KiB blocks, inodes): over users_quota."""

    def handle(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            run.error(path, "must be a whole number (KiB for blocks, files for inodes)")
            return
        account.setdefault("quota", {})[target] = (
            _kib(value) if target.startswith("blocks") else value
        )
        run.mapped(path, f"quota:{target}")

    return handle


def _databases(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    found = {}
    for index, name in _items(value, path, run, str):
        if not PEER_DB_RE.fullmatch(name):
            run.error([*path, index], "is not a database name (a-z, 0-9 and _)")
        else:
            found[name] = None
            run.mapped([*path, index], f"databases:{name}")
    if found:
        account["databases"] = found


def _privileges(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    found = []
    for index, name in _items(value, path, run, str):
        if name.upper() == "GRANT":
            run.skip([*path, index], "webarch never lets an account grant its privileges")
        else:
            found.append(" ".join(name.upper().split()))
            run.mapped([*path, index], "db_privileges")
    if found:
        account["db_privileges"] = found


def _php(target: str, kind: type) -> Callable[..., None]:
    """A PHP-FPM setting copied to ``php:target``."""

    def handle(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            run.error(path, f"must be {'true or false' if kind is bool else kind.__name__}")
            return
        account.setdefault("php", {})[target] = value
        run.mapped(path, f"php:{target}")

    return handle


def _admin_flags(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    for index, item in _items(value, path, run, dict):
        ipath = [*path, index]
        if set(item) - {"name", "value"} or not {"name", "value"} <= set(item):
            run.error(ipath, "must be {name, value}")
        elif not isinstance(item["name"], str) or not isinstance(item["value"], bool):
            run.error(ipath, "name must be a string and value true or false")
        else:
            account.setdefault("php", {}).setdefault("admin_flags", {})[item["name"]] = item[
                "value"
            ]
            run.mapped(ipath, f"php:admin_flags:{item['name']}")


def _disable_functions(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    names = [name for _, name in _items(value, path, run, str)]
    account.setdefault("php", {})["disable_functions"] = names
    run.mapped(path, "php:disable_functions (it replaces webarch's default list)")


def _open_basedir(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    extra = []
    for index, item in _items(value, path, run, str):
        clean = item.rstrip("/") or "/"
        if clean in (ctx["home"], *BASEDIR_ALWAYS):
            run.mapped([*path, index], "php:open_basedir (always allowed when it is on)")
        else:
            extra.append(clean)
            run.mapped([*path, index], "php:open_basedir")
    account.setdefault("php", {})["open_basedir"] = extra or True


def _local_infile(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, bool):
        run.error(path, "must be true or false")
        return
    account.setdefault("php", {}).setdefault("admin_flags", {})["mysqli.allow_local_infile"] = value
    run.mapped(path, "php:admin_flags:mysqli.allow_local_infile")


def _sendmail_from(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, str):
        run.error(path, f"must be a string, not {type(value).__name__}")
        return
    account.setdefault("mail", {})["sender"] = value
    run.mapped(path, "mail:sender (webarch fixes the envelope sender to it)")


def _cron_jobs(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    jobs = account.setdefault("cron", {})
    for index, item in dict_items(value, path, run, CRON_ALL_KEYS, ("name", "job")):
        ipath = [*path, index]
        if not isinstance(item["name"], str) or not isinstance(item["job"], str):
            run.error(ipath, "name and job must be strings")
            continue
        if item.get("state", "present") == "absent":
            run.skip(ipath, "an absent job: nothing to carry")
            continue
        special = item.get("special_time")
        if special is not None:
            if special not in SPECIAL_TIMES:
                run.decide(ipath, "special_time has no webarch schedule (@reboot): job left out")
                continue
            schedule = SPECIAL_TIMES[special]
        else:
            fields = [item.get(k, "*") for k in ("minute", "hour", "day", "month", "weekday")]
            schedule = " ".join(str(f) for f in fields)
        if CRON_PERCENT_RE.search(item["job"]):
            run.decide(
                ipath,
                "its command holds a % that cron makes a newline (the rest is the job's input): "
                "job left out; write the command webarch should run",
            )
            continue
        job = {"schedule": schedule, "command": item["job"].replace("\\%", "%")}
        if item.get("disabled") is True:
            job["enabled"] = False
        slug = _unique(_slug(item["name"]), jobs)
        jobs[slug] = job
        run.mapped(ipath, f"cron:{slug}")
    if not jobs:
        del account["cron"]


def _scripts(key: str, value: Any, path: list[str], account: dict, run: Run) -> None:
    """``users_{daily,hourly,minutely}_scripts``: one cron job per command line."""
    word, schedule = SCRIPT_SCHEDULES[key]
    jobs = account.setdefault("cron", {})
    for index, command in _items(value, path, run, str):
        slug = _unique(f"{word}-{int(index) + 1}", jobs)
        jobs[slug] = {"schedule": schedule, "command": command}
        run.mapped([*path, index], f"cron:{slug} (run by /bin/sh; the peer's by bash)")
    if not jobs:
        del account["cron"]


def _slug(name: str) -> str:
    """A webarch job name from the peer's free-text one."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:36].strip("-")
    return slug if slug and slug[0].isalpha() else f"job-{slug}".rstrip("-")


def _unique(name: str, taken: dict) -> str:
    """``name``, or ``name-2``, ``name-3`` ... not in ``taken``."""
    found, number = name, 1
    while found in taken:
        number += 1
        found = f"{name}-{number}"
    return found


def _items(value: Any, path: list[str], run: Run, kind: type) -> list[tuple[str, Any]]:
    """The readable items of a list, each of ``kind`` (else an error), with their index."""
    if not isinstance(value, list):
        run.error(path, f"must be a list, not {type(value).__name__}")
        return []
    found = []
    for index, item in enumerate(value):
        if item is UNREAD:
            continue
        if not isinstance(item, kind) or isinstance(item, bool) != (kind is bool):
            run.error([*path, str(index)], f"must be a {kind.__name__}, not {type(item).__name__}")
        else:
            found.append((str(index), item))
    return found


def _sites(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not value:
        run.mapped(path, "sites (none)")
        return
    if not isinstance(value, dict):
        run.error(path, f"must be a mapping of sites, not {type(value).__name__}")
        return
    found = {}
    for key, data in value.items():
        site = sites.convert_site(str(key), data, [*path, str(key)], run, ctx)
        if site is not None:
            found[str(key)] = site
    if found:
        account["sites"] = found


def _sites_enabled(value: Any, path: list[str], account: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, bool):
        run.error(path, "must be true or false")
    elif value:
        run.mapped(path, "the sites (served)")
    else:
        run.mapped(path, "sites:*:suspended (webarch answers 503 where the peer served nothing)")


#: Account keys of the peer that webarch maps, by handler.
ACCOUNT_FIELDS: dict[str, Callable[..., None]] = {
    "users_name": _identity("fullname", "str"),
    "users_email": _identity("email", "str"),
    "users_shell": _shell,
    "users_home": _home,
    "users_group": _group,
    "users_groups": _groups,
    "users_ssh_public_keys": _ssh_keys,
    "users_notify_passwd": _identity("ssh_password", "bool"),
    "users_mariadb_notify_passwd": _identity("db_password", "bool"),
    "users_matomo_account": _identity("matomo", "bool"),
    "users_quota": _quota,
    "users_quota_block_softlimit": _quota_limit("blocks_soft"),
    "users_quota_block_hardlimit": _quota_limit("blocks_hard"),
    "users_quota_inode_softlimit": _quota_limit("inodes_soft"),
    "users_quota_inode_hardlimit": _quota_limit("inodes_hard"),
    "users_mariadb_databases": _databases,
    "users_mariadb_database_privileges": _privileges,
    "users_phpfpm_pm": _php("pm", str),
    "users_phpfpm_max_children": _php("max_children", int),
    "users_phpfpm_request_terminate_timeout": _php("request_terminate_timeout", int),
    "users_phpfpm_admin_flags": _admin_flags,
    "users_phpfpm_disable_functions": _disable_functions,
    "users_phpfpm_open_basedir": _open_basedir,
    "users_phpfpm_mysqli_allow_local_infile": _local_infile,
    "users_phpfpm_sendmail_from": _sendmail_from,
    "users_cron_jobs": _cron_jobs,
    "users_apache_virtual_hosts": _sites,
    "users_apache_virtual_hosts_enabled": _sites_enabled,
}
