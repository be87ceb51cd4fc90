"""
The accounts' nightly snapshots (``webarch-backup``): what the store holds and
an admin's restore.

``status`` reads the status file webarch-backup writes after each night and
the days in the store.  ``restore`` copies a file or directory of a day back
into the account's home, as the account in its chroot (setpriv: its uid and
gid, no other groups; its symlinks resolve to what the chroot shows), never
by root through the account's symlinks; by default into
``~/private/restored/DATE/...`` (outside every document root) and never over an existing path unless
``overwrite=True``.  The copy keeps modes and times, and then root gives the
restored entries that were not the account's the owner, group and mode the
night recorded (the night's copy is written as the account, which cannot set
them: root records them in ``STORE/ACCOUNT/.owners/DATE.json.gz``; a btrfs
snapshot holds them itself, read by root with lstat only), through
file descriptors opened without following any symlink, never a setuid or
setgid bit on a file, and only owners a home holds (root, the account, its
group, the web server's group).
"""

from __future__ import annotations

import datetime
import grp
import gzip
import json
import os
import posixpath
import pwd
import re
import stat
import subprocess
from typing import Any

import webarch_backup as model
import webarch_backup_btrfs as btrfs
import webarch_mountns as mountns
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
#: An entry of a restored tree, opened to set its owner and mode (never a symlink's target).
ENTRY_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


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


def _nights(config: dict[str, Any]) -> dict[str, Any]:
    """The accounts' last nights, from the status file webarch-backup writes."""
    try:
        with open(config["status"], encoding="utf-8") as handle:
            return json.load(handle).get("accounts", {})
    except (OSError, ValueError, AttributeError):
        return {}


def _status_names(config: dict[str, Any]) -> set[str]:
    """The accounts with a night in the status file (one no longer backed up too)."""
    return set(_nights(config))


def status() -> dict[str, Any]:
    """
    The snapshots of every account: its days, its last night (when, how long,
    bytes copied, ok or why not) and its share of the store in bytes, with
    how it was counted (rsync days: hard links once; btrfs snapshots: the
    qgroups' exclusive bytes of the days).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_backup.status
    """
    config = _config()
    nights = _nights(config)
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
            "method": night.get("method"),
            "store_counted": night.get("store_counted", "du of the days (hard links once)"),
            "error": night.get("error"),
        }
    return {"store": config["store"], "days": config["days"], "accounts": accounts}


def plan(method: str = "auto", store: str | None = None, subvolumes: bool = False) -> dict:
    """
    The method of the nights on this host (``btrfs`` or ``rsync``) for the
    pillar's ``method`` (``auto``, ``rsync``, ``btrfs``) and ``store``, and
    ``problem``: why not, when the pillar asks for btrfs and the store is not
    on the btrfs of the homes (naming ``webarch:backup:method``), else None.
    ``subvolumes``: whether the homes are made as btrfs subvolumes (quotas on).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_backup.plan btrfs /var/lib/webarch-backups
    """
    if method not in btrfs.METHODS:
        raise CommandExecutionError(f"method must be one of {', '.join(btrfs.METHODS)}")
    store = store or model.STORE
    resolved, problem = btrfs.plan(method, store, paths.HOME_BASE, bool(subvolumes))
    return {"method": resolved, "requested": method, "store": store, "problem": problem}


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


def _as_account(
    user: pwd.struct_passwd, argv: list[str], jail: str | None = None, cwd: str = "/"
) -> str:
    """Run ``argv`` as the account (no other groups, no new privileges), in
    its chroot ``jail`` if given; its output."""
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
               "--no-new-privs", "--", *argv]  # fmt: skip
    if jail is not None:
        # The chroot's mounts are in the chroots' mount namespace.
        command = mountns.in_namespace(["chroot", jail, *command])
    proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd)
    if proc.returncode != 0:
        raise CommandExecutionError(f"{argv[0]} failed as {user.pw_name}: {proc.stderr.strip()}")
    return proc.stdout


def _jail(account: str, home: str, date: str) -> str | None:
    """The account's chroot when it shows the day (then the restore runs in it), else None."""
    jail = paths.chroot(account)
    shown = f"{jail}{home}/{model.MOUNT_DIR}/{date}"
    proc = subprocess.run(mountns.in_namespace(["test", "-d", shown]), check=False)
    return jail if proc.returncode == 0 else None


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
    store = config["store"]
    fds: list[int] = []
    try:
        fds.append(os.open(store, DIR_FLAGS))
        for part in (account, DAYS, date):
            try:
                fds.append(os.open(part, DIR_FLAGS, dir_fd=fds[-1]))
            except FileNotFoundError as exc:
                raise CommandExecutionError(f"{account} has no snapshot of {date}") from exc
        _check_parents(fds[-1], relative, date)
        # Everything the account does here runs in its chroot when that shows
        # the day (a symlink of its own then resolves to what its chroot
        # shows, never to the host), with its rights only.
        jail = _jail(account, home, date)
        exists = _as_account(
            user, ["sh", "-c", 'test -e "$1" || test -L "$1"; echo $?', "-", destination], jail
        )
        if exists.strip() == "0" and not overwrite:
            raise CommandExecutionError(
                f"{destination} exists: give overwrite=True to copy over it"
            )
        _as_account(user, ["mkdir", "-p", "--", target], jail)
        rsync = ["rsync", "-aH", "--no-devices", "--numeric-ids", "--"]
        if jail is not None:
            day = f"{home}/{model.MOUNT_DIR}/{date}"
            _as_account(user, [*rsync, f"{day}/{relative}", f"{target}/"], jail)
        else:
            # Outside the chroot (a day it no longer shows): ./PATH inside the
            # day, whose directories root checked above; the store (0711)
            # lists nothing else to the account.
            day = f"{store}/{account}/{DAYS}/{date}"
            _as_account(user, [*rsync, f"./{relative}", f"{target}/"], cwd=day)
        owners = {0, user.pw_uid}
        groups = {0, user.pw_gid, grp.getgrnam(paths.WEB_USER).gr_gid}
        if btrfs.subvolume_id(fds[-1]) is not None:
            # A snapshot holds its owners and modes itself.
            recorded = _snapshot_owners(fds[-1], relative, user.pw_uid, user.pw_gid)
        else:
            recorded = _owners(fds[1], date)
        fixed = _restore_attrs(recorded, relative, target, owners, groups)
    finally:
        for fd in fds:
            os.close(fd)
    return {
        "account": account,
        "date": date,
        "source": relative,
        "restored": destination,
        "attributes_set": fixed,
    }


def _check_parents(day_fd: int, relative: str, date: str) -> None:
    """Refuse a path whose directories in the day are not all real directories."""
    try:
        os.close(_open_dirs(relative.split("/")[:-1], day_fd))
    except OSError as exc:
        raise CommandExecutionError(
            f"{relative} of {date}: {exc.strerror} (a directory of the path is missing, "
            "or is a symlink: give the path it points to)"
        ) from exc


def _open_dirs(names: list[str], fd: int) -> int:
    """The directory ``fd/names...``, every step opened without following a symlink."""
    fd = os.dup(fd)
    try:
        for name in names:
            new = os.open(name, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd


def _set_attrs(
    dir_fd: int, name: str, recorded: list[int], owners: set[int], groups: set[int]
) -> bool:
    """Give the restored ``dir_fd/name`` its recorded owner and mode; whether it changed."""
    if stat.S_ISLNK(recorded[0]):
        return _set_link_owner(dir_fd, name, recorded, owners, groups)
    try:
        fd = os.open(name, ENTRY_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False  # a symlink, a socket, or gone: the account changed it meanwhile
    try:
        info = os.fstat(fd)
        if stat.S_IFMT(info.st_mode) != stat.S_IFMT(recorded[0]):
            return False
        bits, uid, gid = model.restored_attrs(recorded, owners, groups)
        changed = False
        if (uid is not None and uid != info.st_uid) or (gid is not None and gid != info.st_gid):
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            changed = True
        if stat.S_IMODE(os.fstat(fd).st_mode) != bits:
            os.fchmod(fd, bits)
            changed = True
        return changed
    finally:
        os.close(fd)


def _set_link_owner(
    dir_fd: int, name: str, recorded: list[int], owners: set[int], groups: set[int]
) -> bool:
    """A symlink's owner and group (lchown: never its target); whether it changed."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    _bits, uid, gid = model.restored_attrs(recorded, owners, groups)
    if not stat.S_ISLNK(info.st_mode) or (
        (uid is None or uid == info.st_uid) and (gid is None or gid == info.st_gid)
    ):
        return False
    os.chown(name, -1 if uid is None else uid, -1 if gid is None else gid, dir_fd=dir_fd,
             follow_symlinks=False)  # fmt: skip
    return True


def _owners(account_fd: int, date: str) -> dict[str, list[int]]:
    """The night's record of owners (root's), or none for a day without one."""
    try:
        owners_fd = os.open(model.OWNERS_DIR, DIR_FLAGS, dir_fd=account_fd)
    except FileNotFoundError:
        return {}
    try:
        fd = os.open(
            f"{date}.json.gz", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=owners_fd
        )
    except FileNotFoundError:
        return {}
    finally:
        os.close(owners_fd)
    with os.fdopen(fd, "rb") as handle:
        return json.loads(gzip.decompress(handle.read()))["entries"]


def _snapshot_owners(day_fd: int, relative: str, uid: int, gid: int) -> dict[str, list[int]]:
    """
    The entries of ``relative`` (and below) in a btrfs snapshot whose owner or
    group is not the account's, as a night's record has them: ``{PATH: [MODE,
    UID, GID]}``.  Root lists them through directory file descriptors and
    lstat only (no symlink followed; the snapshot is read-only).
    """
    parent, _, name = relative.rpartition("/")
    prefix = f"{parent}/" if parent else ""
    found: dict[str, list[int]] = {}
    dir_fd = _open_dirs(parent.split("/") if parent else [], day_fd)
    try:
        top = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        items = [(relative, top)]
        if stat.S_ISDIR(top.st_mode):
            start = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
            try:
                for root, dirs, files, root_fd in os.fwalk(
                    ".", dir_fd=start, follow_symlinks=False
                ):
                    below = f"{prefix}{name}/" + ("" if root == "." else root[2:] + "/")
                    items += [(below + n, os.stat(n, dir_fd=root_fd, follow_symlinks=False))
                              for n in [*dirs, *files]]  # fmt: skip
            finally:
                os.close(start)
    finally:
        os.close(dir_fd)
    for path, info in items:
        if (info.st_uid, info.st_gid) != (uid, gid):
            found[path] = [info.st_mode, info.st_uid, info.st_gid]
    return found


def _restore_attrs(
    entries: dict[str, list[int]], relative: str, target: str, owners: set[int], groups: set[int]
) -> int:
    """
    Root's pass over a restored tree: each restored entry the night recorded
    gets its owner, group and mode back (children first, so that a read-only
    directory is set last).  The tree is walked by file descriptors, never
    through a symlink: the account may change its copy meanwhile, and then
    gets at most its own entries back as root's.  The number of entries changed.
    """
    top = os.open("/", DIR_FLAGS)
    try:
        target_fd = _open_dirs([p for p in target.split("/") if p], top)
    except OSError:
        return 0
    finally:
        os.close(top)
    fixed = 0
    try:
        for path, recorded in model.owners_under(entries, relative):
            parent, _, name = path.rpartition("/")
            try:
                dir_fd = _open_dirs(parent.split("/") if parent else [], target_fd)
            except OSError:
                continue
            try:
                fixed += _set_attrs(dir_fd, name, recorded, owners, groups)
            finally:
                os.close(dir_fd)
    finally:
        os.close(target_fd)
    return fixed
