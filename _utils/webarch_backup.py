"""
The account model: nightly snapshots of the accounts' homes (``webarch:backup``).

Each night ``webarch-backup`` (webarch-backup.service, after that night's
MariaDB dumps) copies every present account's home, with the account's own
rights, into ``STORE/USERNAME/YYYY-MM-DD`` (files unchanged since the day
before are hard links to it, rsnapshot style).  The account sees its own
days read-only at ``~/backups/files`` inside its chroot (a bind mount of
``STORE/USERNAME``); the store's top directory is root's alone.

``webarch:accounts:USERNAME:backup: false`` leaves one account out (its
existing days expire like those of a removed account).
"""

from __future__ import annotations

import re
from typing import Any

import webarch_backup_btrfs as btrfs
import webarch_check as check
import webarch_layout as layout
import webarch_paths as paths
from webarch_check import Key

#: Where the snapshots are kept by default (root's, 0711: nobody lists it).
#: (Not under STATE_DIR, which is root's 0700: each account's rsync must reach
#: its own STORE/USERNAME.)
STORE = "/var/lib/webarch-backups"
#: The time of day of the nightly run (24-hour ``HH:MM``).
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
#: Where the account sees its snapshots (relative to its home; the mount point).
MOUNT_DIR = paths.BACKUP_MOUNT_DIR
CONFIG_PATH = f"{paths.CONFIG_DIR}/backup.json"
STATUS_PATH = f"{paths.STATE_DIR}/backup-status.json"
LOG_DIR = "/var/log/webarch-backup"
LOG_PATH = f"{LOG_DIR}/backup.log"
UNIT = "webarch-backup"
#: ``STORE/USERNAME`` holds the night being written (``.partial-DATE``, never
#: in the account's view) and ``days/``, the complete days its chroot shows.
DAYS_DIR = "days"
#: A removed account's ``STORE/USERNAME`` is moved to ``STORE/.retired-USERNAME-STAMP``.
RETIRED_PREFIX = ".retired-"
#: What is not copied (rsync patterns, anchored at the home): the snapshots
#: themselves and the account's scratch space.
EXCLUDES = (f"/{MOUNT_DIR}/", "/tmp/")

#: ``webarch:backup``: the snapshots.
BACKUP_KEYS = check.key_table(
    Key(
        "enabled",
        "true or false",
        False,
        "Take a snapshot of every present account's home each night (that night's "
        "MariaDB dumps first), kept for ``days`` days in ``store`` and visible "
        "read-only to the account in its chroot at ``~/backups/files/YYYY-MM-DD/``. "
        "Off by default: the store needs room for a copy of every home plus what "
        "changes each day, which an upgrade must not take without being asked. "
        "Switched off, no new snapshot is taken and the timer is removed; the store "
        "and its days stay.",
    ),
    Key(
        "store",
        "absolute path",
        STORE,
        "Where the snapshots are kept: ``STORE/USERNAME/days/YYYY-MM-DD`` (``STORE`` "
        "root's, 0711: nobody lists it). "
        "Not inside ``/home``, ``/usr``, ``/etc``, ``/run``, ``/tmp`` and the like, nor "
        "inside ``chroot_base`` or ``archive_dir``. Best on its own file system (one "
        "filling up does not stop the sites; the snapshots are the accounts' files, so "
        "on a file system with user quotas they would count against them); it must "
        "support hard links.",
    ),
    Key(
        "days",
        "integer 1-3650",
        30,
        "How many days are kept: a night removes the days older than that, and only "
        "once its own snapshot of the account is complete.",
    ),
    Key(
        "method",
        "``auto``, ``rsync`` or ``btrfs``",
        "auto",
        "How a night is taken. ``rsync``: a copy of each home made as its account, "
        "unchanged files hard links to the day before (any file system; a night "
        "costs a look at every file). ``btrfs``: a read-only btrfs snapshot of each "
        "home, made by the kernel (a night costs what changed); it needs the homes "
        "to be btrfs subvolumes (the formula makes them so where ``quota`` is on) "
        "and the store on the same btrfs (a subvolume of it mounted at ``store``); "
        "otherwise the run fails naming this key. ``auto``: ``btrfs`` where the "
        "store is on the btrfs of the homes and quotas are on, else ``rsync`` (an "
        "older home that is no subvolume is copied with rsync).",
    ),
    Key(
        "time",
        "time of day ``HH:MM``",
        "04:00",
        "When the nightly run starts (``OnCalendar=*-*-* HH:MM:00``, persistent: a run "
        "missed while the host was down is made at boot). The night's MariaDB dumps "
        "(``webarch-db-dump``) are made first.",
    ),
)

#: The account's own key (``webarch:accounts:USERNAME:backup``).
ACCOUNT_DOC = (
    "``false`` leaves the account out of the nightly snapshots (and its chroot "
    "without ``~/backups/files``); days already taken expire after ``backup:days``."
)


def backup_settings(value: Any, server_paths: dict, problems: check.Problems) -> dict:
    """``webarch:backup``: validated and defaulted (``server_paths``: chroot_base, archive_dir)."""
    path = ["webarch", "backup"]
    _data, get = check.block(value, BACKUP_KEYS, path, problems)
    enabled = check.boolean(get("enabled"), [*path, "enabled"], problems)
    store = _store(get("store"), server_paths, [*path, "store"], problems)
    days = check.integer(get("days"), [*path, "days"], problems, 1, 3650)
    method = get("method")
    if method not in btrfs.METHODS:
        choices = ", ".join(btrfs.METHODS)
        problems.add([*path, "method"], f"must be one of {choices}, not {check.describe(method)}")
        method = None
    time = get("time")
    if not isinstance(time, str) or not TIME_RE.fullmatch(time):
        problems.add([*path, "time"], f"must be a time of day HH:MM, not {check.describe(time)}")
        time = None
    return {
        "enabled": bool(enabled),
        "store": store,
        "days": days,
        "method": method,
        "time": time,
        "on_calendar": f"*-*-* {time}:00" if time else None,
    }


def _store(value: Any, server_paths: dict, path: list[str], problems: check.Problems) -> str | None:
    """The store: an absolute path outside the homes, the chroots and the archives."""
    text = layout.own_path(value, path, problems)
    if text is None:
        return None
    for key in ("chroot_base", "archive_dir"):
        other = server_paths.get(key)
        if not isinstance(other, str) or not other:
            continue
        if text == other or text.startswith(other + "/"):
            problems.add(path, f"must not be inside {key} {other}")
            return None
        if other.startswith(text + "/"):
            problems.add(path, f"must not contain {key} {other}")
            return None
    return text


def account_backup(data: dict, server: dict, path: list[str], problems: check.Problems) -> bool:
    """Whether the account's home is snapshotted (``webarch:accounts:USERNAME:backup``)."""
    wanted = check.boolean(data.get("backup", True), [*path, "backup"], problems)
    return bool(server["backup"]["enabled"] and wanted)


def account_store(name: str, server: dict) -> str | None:
    """``STORE/USERNAME/days``: the account's days, its chroot's mount (None: no store)."""
    store = server["backup"]["store"]
    return f"{store}/{name}/{DAYS_DIR}" if store else None


def backup(server: dict, present: list[dict]) -> dict:
    """What backup.sls renders: the store, the accounts, the program's config."""
    settings = server["backup"]
    accounts = sorted(a["name"] for a in present if a["backup"]) if settings["enabled"] else []
    by_name = {a["name"]: a for a in present}
    return {
        **settings,
        "accounts": accounts,
        "unit": UNIT,
        "config_path": CONFIG_PATH,
        "status_path": STATUS_PATH,
        "log_path": LOG_PATH,
        "log_dir": LOG_DIR,
        "days_dir": DAYS_DIR,
        "retired_prefix": RETIRED_PREFIX,
        "mount_dir": MOUNT_DIR,
        # /etc/webarch/backup.json, read by webarch-backup (root).
        "config": {
            "store": settings["store"],
            "days": settings["days"],
            # The pillar's; backup.sls puts the method of the host in "method".
            "requested": settings["method"],
            "method": settings["method"],
            "excludes": list(EXCLUDES),
            "admin_email": server["admin_email"],
            "from": server["notify"]["from"],
            "status": STATUS_PATH,
            "log": LOG_PATH,
            "accounts": {n: {"home": by_name[n]["home"]} for n in accounts},
        },
    }


#: ``STORE/USERNAME/OWNERS/DATE.json.gz`` (root's, 0700): what the day's copy
#: (written as the account) cannot hold: the entries of the home whose owner
#: or group is not the account's (root's logs, the web server's group of the
#: sites), as ``{"entries": {PATH: [MODE, UID, GID]}}``, PATH relative to the home.
OWNERS_DIR = ".owners"
#: The mode bits a restore never gives a file back (a root pass must not make
#: a setuid program out of a file the account could swap in meanwhile).
ID_BITS = 0o6000


def owners_under(entries: dict[str, list[int]], relative: str) -> list[tuple[str, list[int]]]:
    """
    The recorded entries of ``relative`` and below, each with its path from
    ``relative``'s parent (``www/index.php`` for ``sites/www``), deepest first
    (a directory is set after what is in it).
    """
    parent = relative.rpartition("/")[0]
    cut = len(parent) + 1 if parent else 0
    found = [
        (path[cut:], value)
        for path, value in entries.items()
        if path == relative or path.startswith(relative + "/")
    ]
    return sorted(found, key=lambda item: (-item[0].count("/"), item[0]))


def restored_attrs(
    recorded: list[int] | tuple[int, int, int], owners: set[int], groups: set[int]
) -> tuple[int, int | None, int | None]:
    """
    What a restore sets on a restored entry from the night's record: the
    permission bits (never setuid or setgid on anything but a directory), and
    the owner and group when they are ones the home may hold (root, the
    account, its group, the web server's group); ``None`` leaves the
    account's.
    """
    mode, uid, gid = recorded
    bits = mode & 0o7777
    if (mode & 0o170000) != 0o040000:
        bits &= ~ID_BITS
    return bits, uid if uid in owners else None, gid if gid in groups else None
