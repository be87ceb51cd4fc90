"""
Moving an account from one server of a fleet to another: the pure parts.

The orchestration ``webarch.orch.move`` (docs/fleet.rst) takes its request
from the pillar key ``webarch_move`` (``account``, ``from``, ``to``, optional
``switch_cmd``); :func:`request` validates it, naming each bad pillar path.
:func:`move_clashes` is the fleet check of a move: the account must be
present in the pillars of both servers, and nothing else may clash.

What is compared: :func:`tree_manifest` walks a home (path, type, owner and
group names, mode, size, SHA-256 of each file or a link's target);
:func:`compare` lists what differs between two manifests.  Owners are kept
by name: the account's uid may differ between the servers, so the unpacking
side maps the old server's ids onto its own (:func:`id_map`).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import stat
import time
from collections.abc import Callable
from typing import Any

import webarch_fleet as fleet
import webarch_paths as paths

KEY = "webarch_move"
#: Where each side keeps the artifacts of a move (root 0700).
MOVE_DIR = f"{paths.STATE_DIR}/move"
#: The directory next to the homes where a home is staged (same file system).
STAGE_NAME = ".webarch-move"
#: webarch-log-split checks an open log for rotation at most this often (its
#: CHECK_INTERVAL): once a home is staged away, lines may still reach its open logs
#: for that long, then go to the fallback log.  pack waits a little longer.
LOG_SPLIT_CHECK_S = 0.25
STAGE_SETTLE_S = LOG_SPLIT_CHECK_S + 0.5
#: The saltenv the master serves the artifacts from, to the target only.
SALTENV = "webarch-move"
#: The notification kinds whose secret moves with the account (the shadow hash,
#: an application's admin in its database); the others are issued again on ``to``.
MOVED_KINDS = re.compile(r"^(ssh|app-[a-z0-9-]+)$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
MINION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_CHUNK = 1024 * 1024
#: A file whose ctime is this close to a walk's start (or after it) is read again
#: by the next walk even if its stat is the same: a change made in the same clock
#: tick as the first walk's look at it may not have moved its ctime (the racily
#: clean entries of git's index).
RACY_NS = 2_000_000_000


class MoveError(Exception):
    """A move stops: the message says why."""


def request(data: Any) -> dict[str, str]:
    """The validated ``webarch_move`` pillar: account, from, to, switch_cmd ('' if none)."""
    if not isinstance(data, dict):
        raise MoveError(f"{KEY}: a mapping with account, from and to is needed, not {data!r}")
    problems = []
    for key, pattern in (("account", NAME_RE), ("from", MINION_RE), ("to", MINION_RE)):
        value = data.get(key)
        if not isinstance(value, str) or not pattern.match(value):
            problems.append(f"{KEY}:{key}: {value!r} is not a valid {key} name")
    switch = data.get("switch_cmd", "")
    if not isinstance(switch, str):
        problems.append(f"{KEY}:switch_cmd: a shell command (a string), not {switch!r}")
    unknown = sorted(set(data) - {"account", "from", "to", "switch_cmd"})
    if unknown:
        problems.append(f"{KEY}: unknown keys {unknown}")
    if not problems and data["from"] == data["to"]:
        problems.append(f"{KEY}:to: the same server as {KEY}:from ({data['to']})")
    if problems:
        raise MoveError("; ".join(problems))
    return {"account": data["account"], "from": data["from"], "to": data["to"],
            "switch_cmd": switch}  # fmt: skip


def checked_name(name: Any) -> str:
    """``name`` if it is a valid account name (a file name on the servers), else MoveError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise MoveError(f"{name!r} is not a valid account name")
    return name


def move_clashes(pillars: dict[str, Any], account: str, source: str, target: str) -> list[str]:
    """The fleet check of a move: the account present on both servers (else a line),
    and every clash of the fleet once the account has left ``source``."""
    problems = []
    for role, minion in (("from", source), ("to", target)):
        if minion not in pillars:
            problems.append(f"{KEY}:{role}: no minion {minion} among {sorted(pillars)}")
        elif account not in fleet._present_accounts(pillars[minion]):
            path = ":".join([*fleet.ACCOUNTS, account])
            problems.append(f"account {account} is not present in {minion}'s pillar ({path})")
    if problems:
        return problems
    after = dict(pillars)
    webarch = dict(pillars[source]["webarch"])
    webarch["accounts"] = {k: v for k, v in webarch["accounts"].items() if k != account}
    after[source] = {**pillars[source], "webarch": webarch}
    return fleet.clashes(after)


def switch_env(req: dict[str, str], sites: list[str]) -> dict[str, str]:
    """The environment of the switch command (besides the master's own)."""
    return {
        "WEBARCH_MOVE_ACCOUNT": req["account"],
        "WEBARCH_MOVE_FROM": req["from"],
        "WEBARCH_MOVE_TO": req["to"],
        "WEBARCH_MOVE_SITES": " ".join(sites),
    }


def site_names(pillar: Any, account: str) -> list[str]:
    """The host names of the account's present sites in one minion's pillar."""
    data = fleet._present_accounts(pillar).get(account, {})
    return sorted({name for _path, name in fleet._site_names(data)})


def pending_moved(entries: Any) -> list[str]:
    """The kinds of :data:`MOVED_KINDS` whose password is issued but not mailed yet."""
    if not isinstance(entries, dict):
        return []
    return sorted(
        kind
        for kind, entry in entries.items()
        if MOVED_KINDS.match(kind) and isinstance(entry, dict) and entry.get("state") == "pending"
    )


def moved_ledger(entries: Any) -> dict[str, dict]:
    """The account's notification ledger entries that move with it (sent ones of
    :data:`MOVED_KINDS`)."""
    if not isinstance(entries, dict):
        return {}
    return {
        kind: entry
        for kind, entry in entries.items()
        if MOVED_KINDS.match(kind) and isinstance(entry, dict) and entry.get("state") == "sent"
    }


# --------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------


def sha256_file(path: str) -> str:
    """The SHA-256 of a file (read without following a symlink)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _name(table: Callable[[int], Any], number: int) -> str:
    try:
        return str(table(number)[0])
    except KeyError:
        return str(number)


def _entry(path: str, info: os.stat_result) -> list:
    mode = info.st_mode
    kind, size, digest = "o", 0, ""
    if stat.S_ISDIR(mode):
        kind = "d"
    elif stat.S_ISREG(mode):
        kind, size, digest = "f", info.st_size, sha256_file(path)
    elif stat.S_ISLNK(mode):
        kind, digest = "l", os.readlink(path)
    user = _name(pwd.getpwuid, info.st_uid)
    group = _name(grp.getgrgid, info.st_gid)
    return [kind, user, group, f"{stat.S_IMODE(mode):04o}", size, digest]


def stat_key(info: os.stat_result) -> list[int]:
    """What says a file is still the one a manifest saw: inode, size, mtime, ctime
    (no one but the kernel sets ctime), mode, owner and group."""
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode,
            info.st_uid, info.st_gid]  # fmt: skip


def _trusted(known: dict[str, Any] | None, rel: str, key: list[int]) -> list | None:
    """``known``'s entry of ``rel`` if the file is unchanged since it was walked: the
    same stat key, and a ctime older than that walk by :data:`RACY_NS` (a change in
    the walk's own clock tick may leave ctime as it was)."""
    if not known or known.get("stat", {}).get(rel) != key:
        return None
    if key[3] >= known["started_ns"] - RACY_NS:
        return None
    return known["files"].get(rel)


def tree_manifest(root: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every entry below ``root`` (``.`` is root itself) as [type, user, group, mode,
    size, sha256 or link target], sockets left out; the numeric ids seen (``ids``:
    users and groups, id -> name) for :func:`id_map`; each entry's :func:`stat_key`
    (``stat``) and when the walk started (``started_ns``).

    ``known``: an earlier manifest of the same tree: a file unchanged since (see
    :func:`_trusted`) keeps its entry instead of being read again; ``read`` lists
    the entries that were not taken from it (what a move sends again)."""
    started = time.time_ns()
    files: dict[str, list] = {}
    keys: dict[str, list[int]] = {}
    read: list[str] = []
    users: dict[str, str] = {}
    groups: dict[str, str] = {}
    for top, dirs, names in os.walk(root):
        for name in [".", *dirs, *names] if top == root else [*dirs, *names]:
            path = root if name == "." else os.path.join(top, name)
            info = os.lstat(path)
            if stat.S_ISSOCK(info.st_mode):
                continue
            rel = os.path.relpath(path, root)
            key = stat_key(info)
            entry = _trusted(known, rel, key) if stat.S_ISREG(info.st_mode) else None
            if entry is None:
                entry = _entry(path, info)
                read.append(rel)
            users[str(info.st_uid)], groups[str(info.st_gid)] = entry[1], entry[2]
            files[rel], keys[rel] = entry, key
    return {"files": files, "ids": {"users": users, "groups": groups}, "stat": keys,
            "started_ns": started, "read": read}  # fmt: skip


def delta(before: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What a move sends after its pre-copy: (``send``: the entries of ``now`` read
    again, i.e. new or changed files and every directory and link, parents first;
    ``gone``: the entries of ``before`` that are no more, or are of another type,
    deepest first).  ``now`` was walked with ``known=before``."""
    old, new = before.get("files", {}), now["files"]
    gone = [rel for rel in old if rel not in new or old[rel][0] != new[rel][0]]
    return sorted(now["read"]), sorted(gone, key=lambda r: (-r.count("/"), r))


def compare(source: dict[str, Any], target: dict[str, Any], limit: int = 20) -> list[str]:
    """What differs between two manifests' ``files`` and ``tables`` (at most ``limit``
    lines, and a count of the rest)."""
    lines = []
    fields = ("type", "user", "group", "mode", "size", "sha256/target")
    for part in ("files", "tables"):
        old, new = source.get(part, {}), target.get(part, {})
        for key in sorted(set(old) | set(new)):
            if key not in new:
                lines.append(f"{part}: {key} is missing on the new server")
            elif key not in old:
                lines.append(f"{part}: {key} is on the new server only")
            elif old[key] != new[key]:
                if part == "files":
                    pairs = zip(fields, old[key], new[key], strict=True)
                    diff = [f"{f} {a!r} -> {b!r}" for f, a, b in pairs if a != b]
                else:
                    diff = [f"checksum {old[key]!r} -> {new[key]!r}"]
                lines.append(f"{part}: {key}: {', '.join(diff)}")
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    return lines


def id_map(ids: dict[str, str], lookup: Callable[[str], int | None]) -> dict[int, int]:
    """Old numeric id -> this server's id of the same name (names unknown here keep theirs)."""
    found = {}
    for number, name in ids.items():
        local = lookup(name)
        if local is not None and local != int(number):
            found[int(number)] = local
    return found


def local_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def local_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
