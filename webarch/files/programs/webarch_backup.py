#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""Nightly snapshots of the hosting accounts' homes, read-only in their chroots.

Usage: webarch-backup [--date YYYY-MM-DD] [ACCOUNT...]

A night (root; webarch-backup.service, after webarch-db-dump.service): for
each account of /etc/webarch/backup.json (or the ACCOUNTs given), copies its
home with rsync -aH, run as the account (setpriv: its uid and gid, no other
groups, no new privileges), into STORE/ACCOUNT/.partial-DATE (STORE is root's,
0711: no account lists it; STORE/ACCOUNT is the account's, 0700), unchanged files
hard links to the newest earlier day (--link-dest); only a complete copy is
renamed to STORE/ACCOUNT/days/DATE, the directory the account's chroot shows
at ~/backups/files.  Root never reads the home: no root process follows the
account's symlinks.  The account's rsync runs outside its chroot and writes its
snapshots, so the account's own processes must not take it over: its real gid
is nogroup's (its effective and file-system gid the account's), and the kernel
makes a program started with differing real and effective ids non-dumpable:
no ptrace and no /proc/PID/mem of it by the account.  What the account's
copy cannot hold (root's owner of the logs, the web server's group of the
sites) root records in STORE/ACCOUNT/.owners/DATE.json.gz (root's, 0700),
listing the home by file descriptors with lstat only (no symlink followed);
the admin's restore (webarch_backup.restore) sets them back.  Then the days older
than the store's DAYS are removed (only once the night's copy is in place:
a failed night keeps every day).
On btrfs (backup.json's method, from webarch:backup:method) a home that is a
subvolume on the store's btrfs is not copied: the kernel snapshots it,
read-only, straight as days/DATE (webarch_backup_btrfs: ioctls on fds; no
file read, no symlink followed, owners kept), and an expired day is deleted whole.
The days of accounts no longer backed up (and of retired ones) expire the
same way.  Each account gets a line in the root-only log (duration, bytes
copied, store use) and its entry in the status file; a night with a failed
account goes on with the others, mails the admin and exits 1.

On an account's removal Salt moves STORE/ACCOUNT aside to
STORE/.retired-ACCOUNT-STAMP (so that a new account of that name never sees
its days), where its days expire like the others; it goes with its last day.

--date (tests, and catching up a night by hand): the night's date.
Environment (tests): WEBARCH_BACKUP_CONFIG.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import grp
import gzip
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_backup_btrfs as btrfs  # noqa: E402
import webarch_paths as paths  # noqa: E402
import webarch_progs as progs  # noqa: E402

CONFIG = os.environ.get("WEBARCH_BACKUP_CONFIG", f"{paths.CONFIG_DIR}/backup.json")
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
NAME_RE = paths.USERNAME_RE
DAYS = "days"
#: Root's record of each day's owners (see above); its files are DATE.json.gz.
OWNERS = ".owners"
PARTIAL = ".partial-"
RETIRED = ".retired-"
#: The real gid of the accounts' rsync (see above): a group that owns nothing.
NOGROUP = "nogroup"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: rsync: 24 is "some files vanished" (the account changed them meanwhile): a good night.
RSYNC_OK = (0, 24)
STATS_RE = re.compile(rb"^Total transferred file size: ([0-9,.]+)", re.MULTILINE)


class NightError(Exception):
    """One account's night failed (the message says why)."""


def read_config() -> dict:
    with open(CONFIG, encoding="utf-8") as handle:
        return json.load(handle)


def open_dir(name: str, dir_fd: int | None = None) -> int:
    """A directory's fd, never through a symlink."""
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def ensure_dir(name: str, dir_fd: int, uid: int, gid: int, mode: int) -> int:
    """``name`` in ``dir_fd``: a directory of ``uid:gid`` ``mode``, made if missing; its fd."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    fd = open_dir(name, dir_fd)
    info = os.fstat(fd)
    if (info.st_uid, info.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
    if stat.S_IMODE(info.st_mode) != mode:
        os.fchmod(fd, mode)
    return fd


def remove(name: str, dir_fd: int) -> None:
    """Remove a tree inside ``dir_fd`` without following any symlink in it (a
    btrfs snapshot: deleted whole)."""
    if btrfs.is_subvolume(dir_fd, name):
        btrfs.delete(dir_fd, name)
    else:
        shutil.rmtree(name, dir_fd=dir_fd)


def day_names(fd: int) -> list[str]:
    """The complete days in a ``days`` directory, oldest first."""
    return sorted(n for n in os.listdir(fd) if DATE_RE.fullmatch(n))


def entries(fd: int) -> Iterator[os.stat_result]:
    """The lstat of every entry below the directory ``fd`` (no symlink followed)."""
    for _root, dirs, files, root_fd in os.fwalk(dir_fd=fd, follow_symlinks=False):
        for name in dirs + files:
            try:
                yield os.lstat(name, dir_fd=root_fd)
            except FileNotFoundError:
                continue


def tree_bytes(fd: int) -> int:
    """Disk use of a tree (each inode once: hard-linked days count once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for info in entries(fd):
        key = (info.st_dev, info.st_ino)
        if key not in seen:
            seen.add(key)
            total += info.st_blocks * 512
    return total


def rsync_argv(
    uid: int, gid: int, nogroup: int, home: str, dest: str, link: str | None, excludes: list
) -> list:
    """rsync as the account (setpriv, non-dumpable), from its home into ``dest``."""
    return [
        "setpriv", f"--reuid={uid}", f"--rgid={nogroup}", f"--egid={gid}", "--clear-groups",
        "--no-new-privs", "--inh-caps=-all", "--",
        "nice", "-n", "10", "ionice", "-c", "3",
        "rsync", "-aH", "--no-devices", "--one-file-system", "--numeric-ids", "--stats",
        *[f"--exclude={pattern}" for pattern in excludes],
        *([f"--link-dest=../{DAYS}/{link}"] if link else []),
        f"{home}/", f"{dest}/",
    ]  # fmt: skip


def own_bytes(fd: int, name: str) -> int:
    """
    Disk use of what only the tree ``fd/name`` holds: its directories and the
    files all of whose hard links are in it (a night's new files; the files of
    an expiring day that no later day shares).  Counts one day, not the store.
    """
    links: dict[tuple[int, int], list[int]] = {}
    top = open_dir(name, fd)
    try:
        total = os.fstat(top).st_blocks * 512
        for info in entries(top):
            if stat.S_ISDIR(info.st_mode):
                total += info.st_blocks * 512
                continue
            seen = links.setdefault((info.st_dev, info.st_ino), [0, info.st_nlink, 0])
            seen[0] += 1
            seen[2] = info.st_blocks * 512
    finally:
        os.close(top)
    return total + sum(size for count, nlink, size in links.values() if count >= nlink)


def night(name: str, account: dict, config: dict, date: str, store_fd: int, previous: dict) -> dict:
    """One account's night: the copy, the rename, the expiry.  Its figures.

    The store's use is counted from the last night's (``previous``, the status
    of the account): plus this night's own bytes, minus those of the expired
    days, so a night walks one day, not all of them; counted whole when there
    is no last night to count from (or this night replaces a day).
    """
    started = time.monotonic()
    user = pwd.getpwnam(name)
    uid, gid = user.pw_uid, user.pw_gid
    # STORE/ACCOUNT: the account's (its rsync writes the night there);
    # days/: root's, the account reads it (and its chroot shows it).
    account_fd = ensure_dir(name, store_fd, uid, gid, 0o700)
    try:
        days_fd = ensure_dir(DAYS, account_fd, 0, gid, 0o750)
        if config.get("method") == "btrfs" and snapshots(account["home"], store_fd, config):
            try:
                return snapshot_night(account_fd, days_fd, account["home"], config, date, started)
            finally:
                os.close(days_fd)
        try:
            # An interrupted night's copy is never used: it starts again.
            for entry in os.listdir(account_fd):
                if entry.startswith(PARTIAL):
                    remove(entry, account_fd)
            before = day_names(days_fd)
            earlier = [d for d in before if d <= date]
            link = earlier[-1] if earlier and not btrfs.is_subvolume(days_fd, earlier[-1]) else None
            partial = f"{PARTIAL}{date}"
            dest = f"{config['store']}/{name}/{partial}"
            nogroup = grp.getgrnam(NOGROUP).gr_gid
            argv = rsync_argv(uid, gid, nogroup, account["home"], dest, link, config["excludes"])
            proc = subprocess.run(argv, capture_output=True, check=False, cwd="/")
            if proc.returncode not in RSYNC_OK:
                with contextlib.suppress(OSError):
                    remove(partial, account_fd)
                error = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
                raise NightError(f"rsync exited {proc.returncode}: {' | '.join(error)}")
            match = STATS_RE.search(proc.stdout)
            copied = int(re.sub(rb"[,.]", b"", match.group(1))) if match else 0
            record = owners_record(account["home"], uid, gid, config["excludes"])
            write_owners(account_fd, date, record)
            counted = (
                isinstance(previous.get("days_bytes"), int)
                and previous.get("days") == before
                and date not in before
            )
            days_bytes = previous["days_bytes"] + own_bytes(account_fd, partial) if counted else 0
            if date in os.listdir(days_fd):
                # The same night again: the new copy replaces the old one whole.
                old = f"{PARTIAL}old-{date}"
                os.rename(date, old, src_dir_fd=days_fd, dst_dir_fd=account_fd)
                os.rename(partial, date, src_dir_fd=account_fd, dst_dir_fd=days_fd)
                remove(old, account_fd)
            else:
                os.rename(partial, date, src_dir_fd=account_fd, dst_dir_fd=days_fd)
            if counted:
                days_bytes -= sum(
                    own_bytes(days_fd, d) for d in expiring(days_fd, date, config["days"])
                )
            expired = expire(days_fd, date, config["days"])
            drop_owners(account_fd, expired)
            days = day_names(days_fd)
            if not counted:
                days_bytes = tree_bytes(days_fd)
        finally:
            os.close(days_fd)
        used = days_bytes + owners_bytes(account_fd)
    finally:
        os.close(account_fd)
    return {
        "ok": True,
        "date": date,
        "method": "rsync",
        "duration": round(time.monotonic() - started, 3),
        "bytes_copied": copied,
        "store_bytes": used,
        "days_bytes": days_bytes,
        "days": days,
        "expired": expired,
    }


def snapshots(home: str, store_fd: int, config: dict) -> bool:
    """
    Whether the home is snapshotted (btrfs) rather than copied: it is a
    subvolume on the store's btrfs.  Where it is not, ``auto`` copies it
    with rsync and an explicit ``btrfs`` fails the account's night.
    """
    home_fd = open_dir(home)
    try:
        problem = btrfs.home_problem(home_fd, store_fd)
    finally:
        os.close(home_fd)
    if problem is not None and config.get("requested") == "btrfs":
        raise NightError(f"{btrfs.PILLAR_PATH} is btrfs, but {problem}")
    return problem is None


def snapshot_night(
    account_fd: int, days_fd: int, home: str, config: dict, date: str, started: float
) -> dict:
    """
    One account's night on btrfs: a read-only snapshot of the home made by
    the kernel straight as ``days/DATE`` (a snapshot exists whole or not at
    all: it needs no partial name, and a read-only one could not be renamed
    into ``days/``), the same night again replacing the day; then the expiry
    (each day deleted whole).  The store's use: the qgroups' exclusive bytes
    of the days (what each day alone holds), when the quotas are on.
    """
    for entry in os.listdir(account_fd):
        if entry.startswith(PARTIAL):
            remove(entry, account_fd)
    home_fd = open_dir(home)
    try:
        if date in os.listdir(days_fd):
            remove(date, days_fd)
        btrfs.snapshot(home_fd, days_fd, date)
    finally:
        os.close(home_fd)
    expired = expire(days_fd, date, config["days"])
    days = day_names(days_fd)
    used, counted = None, "not counted: the btrfs quotas (qgroups) are off"
    figures = btrfs.exclusive(config["store"])
    if figures is not None:
        ids = [btrfs.subvolume_id_of(days_fd, d) for d in days]
        used = sum(figures.get(i, 0) for i in ids if i is not None)
        counted = "the sum of the days' qgroup exclusive bytes (a day's own extents)"
    return {"ok": True, "date": date, "method": "btrfs",
            "duration": round(time.monotonic() - started, 3), "bytes_copied": None,
            "store_bytes": used, "store_counted": counted, "days_bytes": None,
            "days": days, "expired": expired}  # fmt: skip


def owners_record(home: str, uid: int, gid: int, excludes: list) -> dict[str, list[int]]:
    """
    The entries of the home (as rsync copies it: its file system, not the
    excludes) whose owner or group is not the account's: ``{PATH: [MODE,
    UID, GID]}``.  Root lists the home through directory file descriptors and
    lstat only: it never follows the account's symlinks.
    """
    skip = {pattern.strip("/") for pattern in excludes}
    entries: dict[str, list[int]] = {}
    top = open_dir(home)
    try:
        device = os.fstat(top).st_dev
        for root, dirs, files, root_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            prefix = "" if root == "." else root[2:] + "/"
            for name in [*dirs, *files]:
                try:
                    info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                path = prefix + name
                if (info.st_uid, info.st_gid) != (uid, gid):
                    entries[path] = [info.st_mode, info.st_uid, info.st_gid]
            dirs[:] = [
                d for d in dirs
                if prefix + d not in skip and _same_device(d, root_fd, device)
            ]  # fmt: skip
    finally:
        os.close(top)
    return entries


def _same_device(name: str, dir_fd: int, device: int) -> bool:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_dev == device
    except FileNotFoundError:
        return False


def write_owners(account_fd: int, date: str, entries: dict[str, list[int]]) -> None:
    """The day's record of owners, root's, in place before the day is (replaced whole)."""
    owners_fd = ensure_dir(OWNERS, account_fd, 0, 0, 0o700)
    try:
        data = gzip.compress(json.dumps({"entries": entries}, sort_keys=True).encode())
        tmp, name = f".{date}.tmp", f"{date}.json.gz"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=owners_fd)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=owners_fd, dst_dir_fd=owners_fd)
    finally:
        os.close(owners_fd)


def drop_owners(account_fd: int, days: list[str]) -> None:
    """Remove the records of owners of expired ``days``."""
    if not days:
        return
    try:
        owners_fd = open_dir(OWNERS, account_fd)
    except FileNotFoundError:
        return
    try:
        for day in days:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{day}.json.gz", dir_fd=owners_fd)
    finally:
        os.close(owners_fd)


def owners_bytes(account_fd: int) -> int:
    """Disk use of the account's records of owners (a file a day)."""
    try:
        fd = open_dir(OWNERS, account_fd)
    except FileNotFoundError:
        return 0
    try:
        return tree_bytes(fd)
    finally:
        os.close(fd)


def expiring(days_fd: int, date: str, keep: int) -> list[str]:
    """The days older than ``keep`` days before ``date``."""
    cutoff = (datetime.date.fromisoformat(date) - datetime.timedelta(days=keep)).isoformat()
    return [d for d in day_names(days_fd) if d <= cutoff]


def expire(days_fd: int, date: str, keep: int) -> list[str]:
    """Remove the days older than ``keep`` days before ``date``; the removed ones."""
    gone = expiring(days_fd, date, keep)
    for day in gone:
        remove(day, days_fd)
    return gone


def expire_others(store_fd: int, wanted: set[str], date: str, keep: int) -> list[str]:
    """Expire the days of accounts not backed up (any more): left-overs go when empty."""
    lines = []
    for entry in sorted(os.listdir(store_fd)):
        plain = NAME_RE.fullmatch(entry) is not None
        if entry in wanted or not (plain or entry.startswith(RETIRED)):
            continue
        try:
            account_fd = open_dir(entry, store_fd)
        except OSError:
            continue
        try:
            try:
                days_fd = open_dir(DAYS, account_fd)
            except FileNotFoundError:
                days_fd = None
            if days_fd is not None:
                try:
                    gone = expire(days_fd, date, keep)
                    left = day_names(days_fd)
                finally:
                    os.close(days_fd)
                drop_owners(account_fd, gone)
            else:
                gone, left = [], []
        finally:
            os.close(account_fd)
        if gone:
            lines.append(f"{entry}: expired {', '.join(gone)}")
        # A retired account's store goes with its last day; a plain one (no
        # longer backed up) stays while its chroot may still mount it.
        if entry.startswith(RETIRED) and not left:
            remove(entry, store_fd)
            lines.append(f"{entry}: removed (no day left)")
    return lines


@contextlib.contextmanager
def locked(fd: int) -> Iterator[None]:
    """One night at a time (the store's own lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit("webarch-backup: another night is running") from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def open_store(config: dict) -> int:
    """The store: a directory of root's that nobody else lists or writes (0711, by Salt)."""
    fd = open_dir(config["store"])
    info = os.fstat(fd)
    if info.st_uid != 0 or stat.S_IMODE(info.st_mode) & 0o066:
        os.close(fd)
        raise SystemExit(f"webarch-backup: {config['store']} is not root's alone (0711)")
    return fd


def append_log(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_status(path: str) -> dict[str, dict]:
    """The accounts' entries of the status file (none when it is missing or unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            accounts = json.load(handle).get("accounts", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return accounts if isinstance(accounts, dict) else {}


def write_status(path: str, results: dict[str, dict]) -> None:
    """Merge this night's results into the status file (root-only, replaced whole)."""
    accounts = read_status(path)
    for name, result in results.items():
        # A failed night keeps the figures of the last good one.
        accounts[name] = {**accounts.get(name, {}), **result}
    status = {"accounts": accounts, "finished": now()}
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(status, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mail_admin(config: dict, date: str, failures: dict[str, str]) -> None:
    """Tell the admin which accounts' night failed (through the host's MTA)."""
    admin = config.get("admin_email")
    if not admin:
        return
    sender = config.get("from") or f"root@{os.uname().nodename}"
    text = "\n".join(f"  {name}: {why}" for name, why in sorted(failures.items()))
    refused = progs.send_mail(
        sender,
        admin,
        f"Backup of {date} failed for {len(failures)} account(s)",
        f"The nightly snapshots of {date} failed for:\n\n{text}\n\n"
        "Their earlier days are kept. The other accounts' snapshots were taken.\n"
        f"Details: {config['log']}\n",
    )
    if refused:
        print(f"webarch-backup: {refused}", file=sys.stderr)


def run_night(date: str, only: list[str]) -> int:
    config = read_config()
    accounts = config["accounts"]
    unknown = [n for n in only if n not in accounts]
    if unknown:
        print(f"webarch-backup: not backed up: {', '.join(unknown)}", file=sys.stderr)
        return 2
    os.umask(0o077)
    store_fd = open_store(config)
    last = read_status(config["status"])
    results: dict[str, dict] = {}
    failures: dict[str, str] = {}
    with locked(store_fd):
        for name in only or sorted(accounts):
            started = time.monotonic()
            try:
                previous = last.get(name, {}) if last.get(name, {}).get("ok") else {}
                result = night(name, accounts[name], config, date, store_fd, previous)
            except (NightError, OSError, KeyError) as exc:
                why = str(exc) if isinstance(exc, NightError) else f"{type(exc).__name__}: {exc}"
                failures[name] = why
                results[name] = {"ok": False, "date": date, "error": why, "failed_at": now(),
                                 "duration": round(time.monotonic() - started, 3)}  # fmt: skip
                line = f"{now()} {name} {date}: FAILED after {results[name]['duration']}s: {why}"
            else:
                result["last_run"] = now()
                results[name] = result
                copied = result["bytes_copied"]
                line = (
                    f"{now()} {name} {date}: ok in {result['duration']}s, "
                    + ("btrfs snapshot" if copied is None else f"{copied} bytes copied")
                    + f", store {result['store_bytes']} bytes, {len(result['days'])} day(s)"
                )
            append_log(config["log"], line)
            print(line)
        if not only:
            for line in expire_others(store_fd, set(accounts), date, config["days"]):
                append_log(config["log"], f"{now()} {line}")
                print(line)
        write_status(config["status"], results)
    if failures:
        mail_admin(config, date, failures)
        return 1
    return 0


def main(argv: list[str]) -> int:
    date = datetime.date.today().isoformat()
    if argv[:1] == ["--date"] and len(argv) >= 2:
        date, argv = argv[1], argv[2:]
        try:
            datetime.date.fromisoformat(date)
        except ValueError:
            argv = ["--help"]
        if not DATE_RE.fullmatch(date):
            argv = ["--help"]
    if any(not NAME_RE.fullmatch(a) for a in argv):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 3
    return run_night(date, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
