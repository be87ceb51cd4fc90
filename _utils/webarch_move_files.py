"""
Moving an account between two servers: the home's files (webarch_move's module).

A home goes over in archives: :func:`tar_entries` archives some entries of a
tree, :func:`extract` unpacks an archive as sent (numeric owners), :func:`remap`
gives the old server's owners this server's ids of the same names, and
:func:`merge` moves an unpacked tree into the home the formula made, keeping
the same directory (the chroot's bind mount holds on to it) and moving aside
what it replaces (nothing is deleted; ``webarch_move.settle`` archives it).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import webarch_move as move
from webarch_move import MoveError

#: A live home is read while the account works in it: a file that changes while
#: tar reads it is no error (the copy after the suspension sends it again).
CREATE = ("tar", "--create", "--gzip", "--numeric-owner", "--acls", "--xattrs")
LIVE = ("--warning=no-file-changed", "--warning=no-file-removed", "--ignore-failed-read")
#: Beside the staged home on the new server: what its home held before the copy.
ASIDE_SUFFIX = ".before-move"
EXTRACT = ("tar", "--extract", "--gzip", "--numeric-owner", "--same-owner",
           "--same-permissions", "--acls", "--xattrs")  # fmt: skip


def tar_entries(root: str, top: str, rels: list[str], archive: str) -> None:
    """Archive the entries ``rels`` (relative to ``root/top``; ``.`` is top) alone."""
    names = [top if rel == "." else f"{top}/{rel}" for rel in rels]
    listing = archive + ".list"
    fd = os.open(listing, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"".join(os.fsencode(n) + b"\0" for n in names))
    try:
        # --directory before --files-from: tar applies it to the names after it.
        proc = subprocess.run([*CREATE, f"--file={archive}", f"--directory={root}",
                               "--no-recursion", "--null", f"--files-from={listing}"],
                              capture_output=True, text=True, check=False)  # fmt: skip
    finally:
        os.unlink(listing)
    if proc.returncode != 0:
        raise MoveError(f"tar of {root}/{top} failed: {proc.stderr.strip()}")


def walk_all(root: str) -> Iterator[str]:
    """Every path of the tree ``root``, root first."""
    for top, dirs, names in os.walk(root):
        yield top
        yield from (os.path.join(top, n) for n in names)
        yield from (os.path.join(top, d) for d in dirs if os.path.islink(os.path.join(top, d)))


def remap(root: str, ids: dict[str, dict[str, str]]) -> int:
    """Give the old server's owners this server's ids of the same names (in a tree
    just unpacked); return how many."""
    users = move.id_map(ids["users"], move.local_uid)
    groups = move.id_map(ids["groups"], move.local_gid)
    changed = 0
    for path in walk_all(root):
        info = os.lstat(path)
        uid, gid = users.get(info.st_uid, info.st_uid), groups.get(info.st_gid, info.st_gid)
        if (uid, gid) != (info.st_uid, info.st_gid):
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(info.st_mode):  # chown clears set-id bits
                os.chmod(path, stat.S_IMODE(info.st_mode))
            changed += 1
    return changed


def extract(archive: str, root: str) -> None:
    """Unpack ``archive`` into ``root`` as it was made (numeric owners, modes, ACLs)."""
    proc = subprocess.run([*EXTRACT, f"--file={archive}", f"--directory={root}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise MoveError(f"unpacking {archive} failed: {proc.stderr.strip()}")


def put_aside(path: str, aside: str) -> None:
    """Move ``path`` to ``aside`` (its parents made root 0700)."""
    os.makedirs(os.path.dirname(aside), mode=0o700, exist_ok=True)
    os.replace(path, aside)


def new_aside(root: str, name: str) -> str:
    """A new place for what a home held before a copy replaced it (webarch_move.settle)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(root, f"{name}{ASIDE_SUFFIX}-{stamp}-{os.urandom(3).hex()}")


def remove(path: str) -> None:
    """Remove a file, link or tree if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def merge(src: str, dst: str, aside: str, prune: bool = True) -> int:
    """Move the tree ``src`` into the directory ``dst`` (both root's to handle): what
    ``dst`` has as another file goes to the same place under ``aside``, and with
    ``prune`` what ``dst`` held that ``src`` has not too: ``dst`` becomes ``src``
    (without: ``src`` holds changes only).  Nothing is deleted.  ``dst`` itself
    stays the same directory (the chroot's bind mount of a home holds on to it).
    Returns how many entries went aside."""
    moved = 0
    for entry in sorted(set(os.listdir(dst)) - set(os.listdir(src)) if prune else []):
        put_aside(os.path.join(dst, entry), os.path.join(aside, entry))
        moved += 1
    for entry in sorted(os.listdir(src)):
        old, new = os.path.join(src, entry), os.path.join(dst, entry)
        info = os.lstat(old)
        if stat.S_ISDIR(info.st_mode) and os.path.isdir(new) and not os.path.islink(new):
            moved += merge(old, new, os.path.join(aside, entry), prune)
            continue
        if os.path.lexists(new):
            put_aside(new, os.path.join(aside, entry))
            moved += 1
        os.replace(old, new)
    info = os.lstat(src)
    os.lchown(dst, info.st_uid, info.st_gid)
    os.chmod(dst, stat.S_IMODE(info.st_mode))
    os.rmdir(src)
    return moved


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as JSON into the new file ``path`` (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)


def read_json(path: str) -> Any:
    """A JSON file, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
