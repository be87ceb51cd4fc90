"""
The accounts' nightly snapshots (``webarch-backup``): what the store holds and
an admin's restore.

``status`` reads the status file webarch-backup writes after each night and
the days in the store.  ``restore`` copies a file or directory of a day back
into the account's home, as the account (setpriv: its uid and gid, no other
groups), never by root through the account's symlinks; by default into
``~/private/restored/DATE/...`` (outside every document root) and never over an existing path unless
``overwrite=True``.  The copy keeps modes and times; everything in it is the
account's (a snapshot is written as the account, so root's files in the home,
such as the logs, come back as the account's).
"""

from __future__ import annotations

import datetime
import json
import os
import posixpath
import pwd
import re
import subprocess
from typing import Any

import webarch_backup as model
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_backup"

CONFIG = model.CONFIG_PATH
DAYS = model.DAYS_DIR
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
NAME_RE = paths.USERNAME_RE
#: Where a restore goes by default (relative to the home; the account's, outside the sites).
RESTORED = "private/restored"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def __virtual__() -> str:
    return __virtualname__


def _config() -> dict[str, Any]:
    try:
        with open(CONFIG, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandExecutionError(f"backups are not set up ({CONFIG}: {exc})") from exc


def _days(store: str, name: str) -> list[str]:
    try:
        return sorted(d for d in os.listdir(f"{store}/{name}/{DAYS}") if DATE_RE.fullmatch(d))
    except OSError:
        return []


def status() -> dict[str, Any]:
    """
    The snapshots of every account: its days, its last night (when, how long,
    bytes copied, ok or why not) and its share of the store (bytes, hard links
    counted once).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_backup.status
    """
    config = _config()
    try:
        with open(config["status"], encoding="utf-8") as handle:
            nights = json.load(handle).get("accounts", {})
    except (OSError, ValueError):
        nights = {}
    accounts = {}
    for name in sorted(set(config["accounts"]) | set(nights)):
        night = nights.get(name, {})
        accounts[name] = {
            "backed_up": name in config["accounts"],
            "days": _days(config["store"], name),
            "last_ok": night.get("ok"),
            "last_date": night.get("date"),
            "last_run": night.get("last_run"),
            "duration": night.get("duration"),
            "bytes_copied": night.get("bytes_copied"),
            "store_bytes": night.get("store_bytes"),
            "error": night.get("error"),
        }
    return {"store": config["store"], "days": config["days"], "accounts": accounts}


def _relative(path: str, home: str) -> str:
    """``path`` (absolute in the home, or relative to it), normalised and relative."""
    if path.startswith("/"):
        if path != home and not path.startswith(home + "/"):
            raise CommandExecutionError(f"{path} is not in {home}")
        path = path[len(home) :]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise CommandExecutionError(f"{path!r}: give a file or directory of the home, no '..'")
    return "/".join(parts)


def _as_account(user: pwd.struct_passwd, argv: list[str], cwd: str = "/") -> str:
    """Run ``argv`` as the account (no other groups, no new privileges); its output."""
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
               "--no-new-privs", "--", *argv]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    if proc.returncode != 0:
        raise CommandExecutionError(f"{argv[0]} failed as {user.pw_name}: {proc.stderr.strip()}")
    return proc.stdout


def restore(
    account: str, path: str, date: str, target: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """
    Copy ``path`` (a file or directory of the account's home, absolute or
    relative to it) as it was on ``date`` (YYYY-MM-DD) back into the home, as
    the account.  It goes to ``target/BASENAME``: ``target`` is a directory
    of the home, ``~/private/restored/DATE/DIRNAME`` by default (made if missing).
    An existing ``target/BASENAME`` is left alone unless ``overwrite=True``
    (then the day's version is copied over it; nothing else is deleted).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_backup.restore alice sites/www/index.php 2026-12-04
        salt '*' webarch_backup.restore alice sites/www 2026-12-04 target=/home/alice overwrite=True
    """
    if not isinstance(account, str) or not NAME_RE.fullmatch(account):
        raise CommandExecutionError(f"{account!r} is not an account name")
    date = str(date)
    if not DATE_RE.fullmatch(date):
        raise CommandExecutionError(f"{date!r} is not a date YYYY-MM-DD")
    datetime.date.fromisoformat(date)
    config = _config()
    if account not in config["accounts"] and account not in _status_names(config):
        raise CommandExecutionError(f"{account} has no snapshots")
    try:
        user = pwd.getpwnam(account)
    except KeyError as exc:
        raise CommandExecutionError(f"{account} is no user on this host") from exc
    home = config["accounts"].get(account, {}).get("home") or user.pw_dir
    relative = _relative(str(path), home)
    if target is None:
        parent = posixpath.dirname(relative)
        target = (
            posixpath.join(home, RESTORED, date, parent) if parent else f"{home}/{RESTORED}/{date}"
        )
    target = posixpath.normpath(str(target))
    if target != home and not target.startswith(home + "/"):
        raise CommandExecutionError(f"target {target} is not in {home}")
    destination = posixpath.join(target, posixpath.basename(relative))
    # Checked as the account: its symlinks resolve with its rights only.
    exists = _as_account(
        user, ["sh", "-c", 'test -e "$1" || test -L "$1"; echo $?', "-", destination]
    )
    if exists.strip() == "0" and not overwrite:
        raise CommandExecutionError(f"{destination} exists: give overwrite=True to copy over it")
    store = config["store"]
    fds: list[int] = []
    try:
        fds.append(os.open(store, DIR_FLAGS))
        for part in (account, DAYS, date):
            try:
                fds.append(os.open(part, DIR_FLAGS, dir_fd=fds[-1]))
            except FileNotFoundError as exc:
                raise CommandExecutionError(f"{account} has no snapshot of {date}") from exc
        _as_account(user, ["mkdir", "-p", "--", target])
        # rsync reads ./PATH inside the day (checked above by root without
        # following links), as the account: a symlink in the day resolves with
        # its rights only, and the store (0711) lists nothing to it.
        day = f"{store}/{account}/{DAYS}/{date}"
        _as_account(
            user,
            ["rsync", "-aH", "--no-devices", "--numeric-ids", "--", f"./{relative}", f"{target}/"],
            cwd=day,
        )
    finally:
        for fd in fds:
            os.close(fd)
    return {"account": account, "date": date, "source": relative, "restored": destination}


def _status_names(config: dict[str, Any]) -> set[str]:
    try:
        with open(config["status"], encoding="utf-8") as handle:
            return set(json.load(handle).get("accounts", {}))
    except (OSError, ValueError):
        return set()
