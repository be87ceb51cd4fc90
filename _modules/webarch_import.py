"""
webarch_import: webarch pillar from the descriptions of existing servers.

``legacy`` scans this host, a legacy server (Apache mpm-itk with mod_php,
MariaDB, user crontabs, ``~/.forward``), with :py:mod:`webarch_import_legacy`.
``ansible`` converts a host_vars file of the Ansible role ``users``
(webarch-coop/ansible-role-users) with :py:mod:`webarch_import_ansible`: it
returns the pillar and the report of every field (mapped, not mapped and why,
or needing a decision), and writes the pillar to a file (0600) when asked.
Nothing on the host changes but that file.  See ``docs/migration.rst``.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from typing import Any

import webarch_import_ansible as importer
import webarch_import_legacy as legacy_import
import webarch_layout as layout
import webarch_paths as paths
import yaml
from salt.exceptions import CommandExecutionError
from webarch_import_report import DECISION, MAPPED, NOT_MAPPED, VALIDATION, Report

__virtualname__ = "webarch_import"

#: The Debian releases webarch validates for (the default when the host is none of them).
RELEASES = (12, 13)


def __virtual__() -> str:
    return __virtualname__


def _release(release: Any) -> int:
    """The release to validate for: given, or this host's when webarch supports it."""
    if release is None:
        release = __grains__.get("osmajorrelease")
    try:
        number = int(release)
    except (TypeError, ValueError):
        number = RELEASES[0]
    return number if number in RELEASES else RELEASES[0]


def _write(
    out: str, source: str, pillar: dict, report: Report, how: str = "webarch_import.ansible"
) -> None:
    """Write the pillar to ``out`` (0600, replaced atomically), its decisions as comments.

    The file starts with ``#!yaml``: a value holding ``{{`` (an ``!unsafe`` one) is
    not rendered as Jinja when Salt reads it as a pillar file.
    """
    counts = report.counts()
    head = [
        # Salt renders pillar files with Jinja by default: this one is plain YAML.
        "#!yaml",
        f"# webarch pillar converted from {os.path.basename(source)} by {how}:",
        f"# {counts[MAPPED]} fields mapped, "
        f"{counts[NOT_MAPPED]} not mapped, "
        f"{counts[DECISION] + counts[VALIDATION]} decisions.",
    ]
    decisions = [f"#   {entry.line()}" for entry in report.decisions()]
    if decisions:
        head += ["# Decide these before converging it:", *decisions]
    text = "\n".join(head) + "\n---\n" + yaml.safe_dump(pillar, sort_keys=False)
    target = os.path.abspath(out)
    partial = f"{target}.{os.getpid()}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        os.replace(partial, target)
    except BaseException:
        if os.path.lexists(partial):
            os.unlink(partial)
        raise


def ansible(path: str, out: str | None = None, release: int | None = None) -> dict:
    """
    Convert the host_vars file ``path`` of the Ansible role ``users`` to webarch
    pillar; return ``pillar``, ``report`` (a line for every field: mapped to
    which key, not mapped and why, or needing a decision, then webarch's own
    validation problems by account) and ``summary`` (the counts).  With
    ``out``, also write the pillar there (mode 0600), the decisions as
    comments on top.  ``release`` (12 or 13; default: this host's) is the
    Debian release it is validated for.  Unknown keys and malformed values
    fail, each named by its path.  Vault-encrypted values are never read.

    CLI Example:

    .. code-block:: bash

        salt-call --local webarch_import.ansible /srv/ansible/host_vars/web1.yml
        salt-call --local webarch_import.ansible host_vars/web1.yml out=/srv/pillar/web1.sls
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc}") from None
    try:
        pillar, report = importer.convert(importer.load(text, path), path, _release(release))
    except importer.ConversionError as exc:
        raise CommandExecutionError(str(exc)) from None
    if out:
        try:
            _write(out, path, pillar, report)
        except OSError as exc:
            raise CommandExecutionError(f"cannot write {out}: {exc}") from None
    return {
        "pillar": pillar,
        "report": report.lines(),
        "summary": {"source": path, "out": out, **report.counts()},
    }


# --------------------------------------------------------------------------
# A live legacy host (the reading only: the mapping is webarch_import_legacy's)
# --------------------------------------------------------------------------

SITES_ENABLED = "/etc/apache2/sites-enabled"
CRONTABS = "/var/spool/cron/crontabs"
#: The most bytes read of a file an account can write (wp-config.php, ~/.forward).
READ_MAX = 1 << 20
#: The most directory entries looked at for a PHP file in a document root.
WALK_MAX = 50000
PHP_SUFFIXES = (".php", ".phtml", ".php5", ".php7")
#: At most this many of a site's files only their owner reads are listed.
UNSERVED_MAX = 20
DB_USERS_SQL = (
    "SELECT User, Host, IFNULL(JSON_VALUE(Priv, '$.plugin'), ''), "
    "IF(IFNULL(JSON_VALUE(Priv, '$.authentication_string'), '') <> '', 1, 0), "
    "IF(JSON_VALUE(Priv, '$.plugin') = 'mysql_native_password', "
    "IFNULL(JSON_VALUE(Priv, '$.authentication_string'), ''), '') "
    "FROM mysql.global_priv ORDER BY User, Host"
)
#: What the returned pillar shows instead of a kept password's hash (the file has it).
HASH_SHOWN = "(in the out= file only)"


def _read_text(path: str) -> str | None:
    """A regular file's text (not through a symlink: an account may own it); None if none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(READ_MAX).decode("utf-8", errors="replace")


def _has_php(root: str) -> bool:
    """Whether the tree holds a PHP file (symlinks not followed, at most WALK_MAX entries)."""
    seen = 0
    for _, dirs, files in os.walk(root):
        if any(name.endswith(PHP_SUFFIXES) for name in files):
            return True
        seen += len(dirs) + len(files)
        if seen > WALK_MAX:
            return False
    return False


def _unserved(root: str, web_gid: int) -> list[str]:
    """Files (not PHP: the account's pool reads those) and directories under ``root``
    that only their owner can read: mpm-itk served them as the account, webarch's
    Apache reads them as the web server (others, or the group www-data).  At most
    UNSERVED_MAX, symlinks not followed, at most WALK_MAX entries looked at."""
    found: list[str] = []
    seen = 0
    for top, dirs, files in os.walk(root):
        for name, need in [(d, 0o1) for d in dirs] + [
            (f, 0o4) for f in files if not f.endswith(PHP_SUFFIXES)
        ]:
            try:
                info = os.stat(f"{top}/{name}", follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                continue
            group_ok = info.st_gid == web_gid and info.st_mode & (need << 3)
            if not info.st_mode & need and not group_ok:
                found.append(f"{top}/{name}")
        seen += len(dirs) + len(files)
        if seen > WALK_MAX or len(found) >= UNSERVED_MAX:
            break
    return found[:UNSERVED_MAX]


def _docroot(root: str) -> dict:
    """Owner, PHP files and wp-config.php (or the one WordPress reads one level up)."""
    try:
        info = os.stat(root, follow_symlinks=False)
        owner = pwd.getpwuid(info.st_uid).pw_name if stat.S_ISDIR(info.st_mode) else None
    except (OSError, KeyError):
        return {"owner": None, "php": False, "wp_config": None}
    wp_config = _read_text(f"{root}/wp-config.php")
    parent = os.path.dirname(root)
    if wp_config is None and not os.path.exists(f"{parent}/wp-settings.php"):
        wp_config = _read_text(f"{parent}/wp-config.php")
    try:
        web_gid = grp.getgrnam(paths.WEB_USER).gr_gid
    except KeyError:
        web_gid = -1
    return {"owner": owner, "php": _has_php(root), "wp_config": wp_config,
            "unserved": _unserved(root, web_gid)}  # fmt: skip


def _in_the_way(home: str) -> list[str]:
    """The directories of webarch's home layout that are files or symlinks in ``home``."""
    return [
        part
        for part in legacy_import.LAYOUT_DIRS
        if os.path.islink(f"{home}/{part}")
        or (os.path.lexists(f"{home}/{part}") and not os.path.isdir(f"{home}/{part}"))
    ]


def _users() -> list[dict]:
    found = []
    for entry in sorted(pwd.getpwall(), key=lambda e: e.pw_uid):
        if not layout.ID_MIN <= entry.pw_uid <= layout.ID_MAX:
            continue
        try:
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            group = str(entry.pw_gid)
        found.append({"name": entry.pw_name, "uid": entry.pw_uid, "gid": entry.pw_gid,
                      "group": group, "gecos": entry.pw_gecos, "home": entry.pw_dir,
                      "shell": entry.pw_shell,
                      "in_the_way": _in_the_way(entry.pw_dir)})  # fmt: skip
    return found


def _literal(text: str) -> str:
    """A string literal for SQL."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _mariadb_rows(sql: str) -> list[list[str]]:
    """Rows of ``sql`` run as root by the socket (tab-separated fields, raw)."""
    proc = subprocess.run(
        ["mariadb", f"--socket={paths.MARIADB_SOCKET}", "--user=root", "--batch",
         "--skip-column-names", "--raw", "-e", sql],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise CommandExecutionError(f"MariaDB refused {sql!r}: {proc.stderr.strip()}")
    return [line.split("\t") for line in proc.stdout.splitlines()]


def _mariadb() -> dict | None:
    """Databases, users (whether each has a password; a mysql_native_password
    hash, which only the pillar file gets) and grants."""
    if not shutil.which("mariadb") or not os.path.exists(paths.MARIADB_SOCKET):
        return None
    databases = [row[0] for row in _mariadb_rows("SELECT SCHEMA_NAME FROM "
                                                 "information_schema.SCHEMATA")]  # fmt: skip
    users, grants = [], []
    for user, host, plugin, password, digest in _mariadb_rows(DB_USERS_SQL):
        row = {"user": user, "host": host, "plugin": plugin, "password": password == "1"}
        if digest:
            row["password_hash"] = digest  # kept in the pillar file, never returned
        users.append(row)
        for (line,) in _mariadb_rows(f"SHOW GRANTS FOR {_literal(user)}@{_literal(host)}"):
            # Never the hash of IDENTIFIED BY PASSWORD '...' (only whether it is there).
            grants.append({"user": user, "host": host, "grant": line.split(" IDENTIFIED ")[0]})
    return {"databases": databases, "users": users, "grants": grants}


def _scan() -> dict:
    """What this host holds, in the shape webarch_import_legacy.convert reads."""
    vhosts = {}
    for path in sorted(glob.glob(f"{SITES_ENABLED}/*.conf")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            vhosts[path] = handle.read()
    users = _users()
    crontabs = {}
    if os.path.isdir(CRONTABS):
        for name in sorted(os.listdir(CRONTABS)):
            text = _read_text(f"{CRONTABS}/{name}")
            if text is not None:
                crontabs[name] = text
    forwards = {}
    for user in users:
        text = _read_text(f"{user['home']}/.forward")
        if text is not None:
            forwards[user["name"]] = text
    return {
        "users": users,
        "vhosts": vhosts,
        "docroots": {root: _docroot(root) for root in legacy_import.docroots(vhosts)},
        "crontabs": crontabs,
        "forwards": forwards,
        "mariadb": _mariadb(),
    }


def _without_hashes(pillar: dict) -> dict:
    """``pillar`` with every kept password hash replaced (a result goes to the job cache)."""
    accounts = {
        name: {**account, "db_password_hash": HASH_SHOWN}
        if account.get("db_password_hash")
        else account
        for name, account in pillar["webarch"]["accounts"].items()
    }
    return {**pillar, "webarch": {**pillar["webarch"], "accounts": accounts}}


def legacy(out: str | None = None, release: int | None = None) -> dict:
    """
    Scan this host, a legacy server (Apache mpm-itk with mod_php, MariaDB, user
    crontabs, ``~/.forward``), and turn it into webarch pillar: the accounts
    (users of uid 1000-59999, their uid, gid, shell, home), their sites (from
    ``/etc/apache2/sites-enabled/*.conf``: names, aliases, document root, the
    user each runs as, redirects, headers, PHP settings; WordPress found by its
    ``wp-config.php``), databases (by who has grants on them, read as root by
    the socket), crontab jobs and ``~/.forward`` addresses.  Returns ``pillar``,
    ``report`` (a line for every item read: mapped to which key, not mapped and
    why, or needing a decision; then webarch's validation problems by account)
    and ``summary`` (the counts and the seconds the scan took).  With ``out``,
    also write the pillar there (mode 0600), the decisions as comments on top.
    Nothing on the host changes but that file.  A MariaDB user's
    mysql_native_password hash is kept (``db_password_hash``: applications keep
    their password) in that file only: the result shows it as
    ``(in the out= file only)``; no password is read.  ``release`` (12 or 13;
    default: this host's) is the Debian release it is validated for.

    CLI Example:

    .. code-block:: bash

        salt-call --local webarch_import.legacy
        salt-call --local webarch_import.legacy out=/root/webarch-pillar.sls release=12
    """
    start = time.monotonic()
    try:
        scan = _scan()
        pillar, report = legacy_import.convert(scan, _release(release))
    except (OSError, legacy_import.ConversionError) as exc:
        raise CommandExecutionError(str(exc)) from None
    source = socket.gethostname()
    if out:
        try:
            _write(out, source, pillar, report, "webarch_import.legacy")
        except OSError as exc:
            raise CommandExecutionError(f"cannot write {out}: {exc}") from None
    return {
        "pillar": _without_hashes(pillar),
        "report": report.lines(),
        "summary": {
            "source": source,
            "out": out,
            **report.counts(),
            "seconds": round(time.monotonic() - start, 2),
        },
    }
