"""
Archive a hosting account's home before it is deleted.

When an account is removed, webarch first packs its home into a verified
tarball (``<archive_dir>/<name>-<YYYYmmddTHHMMSSZ>.tar.gz``, root:root 0600)
and only then deletes the tree, so nothing is lost.

The archive is written by GNU tar (POSIX format, numeric owners, ACLs and
extended attributes, never leaving the file system) into a ``.partial`` file,
read back with Python's :py:mod:`tarfile` and compared entry by entry with a
walk of the tree (names, types, sizes, modes, owners, link targets), fsync'ed
and only then renamed into place.  Nothing is archived or removed while
anything is mounted at or below the tree.

Unix sockets are not archived: tar cannot store them and they hold no data.
"""

from __future__ import annotations

import datetime
import gzip
import os
import re
import shutil
import stat
import subprocess
import tarfile
from typing import NamedTuple

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_archive"

MOUNTINFO_PATH = "/proc/self/mountinfo"

ARCHIVE_SUFFIX = ".tar.gz"
PARTIAL_SUFFIX = ".partial"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
TIMESTAMP_RE = r"\d{8}T\d{6}Z"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")

TAR_COMMAND = (
    "tar",
    "--create",
    "--gzip",
    "--format=posix",
    "--numeric-owner",
    "--acls",
    "--xattrs",
    "--one-file-system",
    "--file=-",
)

_OCTAL_ESCAPE_RE = re.compile(rb"\\([0-7]{3})")
_CHUNK = 1024 * 1024


class Entry(NamedTuple):
    """What verification compares of one tree entry or archive member.

    (A NamedTuple, not a dataclass: Salt's loader imports modules without
    registering them in ``sys.modules``, which dataclasses need.)
    """

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str = ""
    device: tuple[int, int] = (0, 0)


class TreeSnapshot(NamedTuple):
    """A walk of a tree: entries by archive name, and file inodes by name."""

    entries: dict[str, Entry]
    inodes: dict[str, tuple[int, int]]


def __virtual__() -> str | tuple[bool, str]:
    """Load only where GNU tar is installed."""
    if shutil.which("tar") is None:
        return (False, "webarch_archive needs GNU tar")
    return __virtualname__


# --------------------------------------------------------------------------
# Mounts
# --------------------------------------------------------------------------


def _unescape_mount_field(field: str) -> str:
    """Decode the octal escapes (``\\040`` ...) of a mountinfo field."""
    raw = _OCTAL_ESCAPE_RE.sub(lambda m: bytes([int(m.group(1), 8)]), os.fsencode(field))
    return os.fsdecode(raw)


def _parse_mountinfo(text: str) -> list[str]:
    """Return the mount points listed in the text of a mountinfo file."""
    points = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape_mount_field(fields[4]))
    return points


def _is_at_or_below(path: str, top: str) -> bool:
    """Tell whether ``path`` is ``top`` or lies below it (both normalised)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def mounts_below(path: str) -> list[str]:
    """
    Return the mount points at or below ``path``, sorted.

    ``path`` is resolved first; the mount table is read from
    ``/proc/self/mountinfo``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_archive.mounts_below /home/alice
    """
    top = os.path.realpath(path)
    with open(MOUNTINFO_PATH, "rb") as handle:
        text = os.fsdecode(handle.read())
    return sorted({p for p in _parse_mountinfo(text) if _is_at_or_below(p, top)})


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def _check_name(name: str) -> None:
    """Refuse an account name that cannot be part of an archive file name."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CommandExecutionError(f"invalid archive name {name!r}")


def _check_no_mounts(path: str) -> None:
    """Refuse when anything is mounted at or below ``path``."""
    mounts = mounts_below(path)
    if mounts:
        raise CommandExecutionError(
            f"refusing to touch {path}: mounted at or below it: {', '.join(mounts)}"
        )


def _real_directory(path: str) -> str:
    """Return the resolved ``path`` if it is a directory and not a symlink."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise CommandExecutionError(f"{path!r} is not an absolute path")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise CommandExecutionError(f"{path} does not exist") from None
    if not stat.S_ISDIR(info.st_mode):
        raise CommandExecutionError(f"{path} is not a directory")
    real = os.path.realpath(path)
    if real == "/":
        raise CommandExecutionError("refusing to touch /")
    return real


# --------------------------------------------------------------------------
# Archive names
# --------------------------------------------------------------------------


def _timestamp(now: datetime.datetime | None = None) -> str:
    """Return the UTC timestamp used in archive names."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime(TIMESTAMP_FORMAT)


def archive_path(name: str, archive_dir: str) -> str:
    """
    Return the path an archive of ``name`` made now would get.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_archive.archive_path alice /var/backups/webarch
    """
    _check_name(name)
    return os.path.join(archive_dir, f"{name}-{_timestamp()}{ARCHIVE_SUFFIX}")


def latest_archive(name: str, archive_dir: str) -> str | None:
    """
    Return the newest archive of ``name`` in ``archive_dir``, or ``None``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_archive.latest_archive alice /var/backups/webarch
    """
    _check_name(name)
    pattern = re.compile(rf"^{re.escape(name)}-{TIMESTAMP_RE}{re.escape(ARCHIVE_SUFFIX)}$")
    try:
        names = os.listdir(archive_dir)
    except FileNotFoundError:
        return None
    matches = sorted(n for n in names if pattern.match(n))
    return os.path.join(archive_dir, matches[-1]) if matches else None


# --------------------------------------------------------------------------
# Walking the tree
# --------------------------------------------------------------------------


def _kind(mode: int) -> str | None:
    """Return the entry kind verification uses, ``None`` for sockets."""
    kinds = (
        (stat.S_ISDIR, "dir"),
        (stat.S_ISREG, "file"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
    )
    return next((kind for test, kind in kinds if test(mode)), None)


def _tree_entry(path: str, info: os.stat_result, kind: str) -> Entry:
    """Describe one walked entry."""
    device = (0, 0)
    if kind in ("chardev", "blockdev"):
        device = (os.major(info.st_rdev), os.minor(info.st_rdev))
    return Entry(
        kind=kind,
        mode=0 if kind == "symlink" else stat.S_IMODE(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
        size=info.st_size if kind == "file" else 0,
        target=os.readlink(path) if kind == "symlink" else "",
        device=device,
    )


def _walk(path: str, arcname: str, root_dev: int, snapshot: TreeSnapshot) -> None:
    """Record ``path`` (archived as ``arcname``) and, for a directory, below it."""
    info = os.lstat(path)
    kind = _kind(info.st_mode)
    if kind is None:
        return
    if info.st_dev != root_dev:
        raise CommandExecutionError(f"{path} is on another file system")
    snapshot.entries[arcname] = _tree_entry(path, info, kind)
    if kind == "file":
        snapshot.inodes[arcname] = (info.st_dev, info.st_ino)
    if kind == "dir":
        for child in sorted(os.listdir(path)):
            _walk(os.path.join(path, child), f"{arcname}/{child}", root_dev, snapshot)


def _snapshot(path: str) -> TreeSnapshot:
    """Walk the tree at ``path`` without following symlinks."""
    snapshot = TreeSnapshot(entries={}, inodes={})
    _walk(path, os.path.basename(path), os.lstat(path).st_dev, snapshot)
    return snapshot


# --------------------------------------------------------------------------
# Reading the archive back
# --------------------------------------------------------------------------

_MEMBER_KINDS = {
    tarfile.DIRTYPE: "dir",
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "chardev",
    tarfile.BLKTYPE: "blockdev",
}


def _member_entry(member: tarfile.TarInfo) -> Entry:
    """Describe one archive member (a hard link as kind ``hardlink``)."""
    kind = _MEMBER_KINDS.get(member.type, f"unknown type {member.type!r}")
    return Entry(
        kind=kind,
        mode=0 if kind == "symlink" else stat.S_IMODE(member.mode),
        uid=member.uid,
        gid=member.gid,
        size=member.size if kind == "file" else 0,
        target=member.linkname if kind in ("symlink", "hardlink") else "",
        device=(member.devmajor, member.devminor) if kind in ("chardev", "blockdev") else (0, 0),
    )


def _read_members(archive: str) -> list[tuple[str, Entry]]:
    """Read the member list of a gzipped tarball, checking the gzip CRC too."""
    try:
        with gzip.open(archive, "rb") as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                members = [(m.name.rstrip("/"), _member_entry(m)) for m in tar]
            while stream.read(_CHUNK):
                pass
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise CommandExecutionError(f"cannot read {archive} back: {exc}") from exc
    return members


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


def _hardlink_problem(name: str, entry: Entry, snapshot: TreeSnapshot) -> str | None:
    """Check a hard-link member against the tree."""
    expected = snapshot.entries.get(name)
    if expected is None or expected.kind != "file":
        return f"{name}: archived as a hard link but is not a regular file"
    if snapshot.inodes.get(entry.target) != snapshot.inodes[name]:
        return f"{name}: archived as a hard link to {entry.target}, which is another file"
    if expected._replace(size=0) != entry._replace(kind="file", target=""):
        return f"{name}: archived {entry} but the tree has {expected}"
    return None


def _member_problem(name: str, entry: Entry, snapshot: TreeSnapshot) -> str | None:
    """Return what differs between one archive member and the tree, if anything."""
    if entry.kind == "hardlink":
        return _hardlink_problem(name, entry, snapshot)
    expected = snapshot.entries.get(name)
    if expected is None:
        return f"{name}: in the archive but not in the tree"
    if expected != entry:
        return f"{name}: archived {entry} but the tree has {expected}"
    return None


def _verify(archive: str, snapshot: TreeSnapshot) -> int:
    """Compare the archive with the tree; return its member count or raise."""
    members = _read_members(archive)
    names = [name for name, _ in members]
    problems = [p for n, e in members if (p := _member_problem(n, e, snapshot))]
    if len(set(names)) != len(names):
        problems.append("the archive holds duplicate members")
    missing = sorted(set(snapshot.entries) - set(names))
    problems += [f"{n}: in the tree but not in the archive" for n in missing]
    if problems:
        shown = "; ".join(sorted(problems)[:10])
        raise CommandExecutionError(
            f"verification of {archive} failed ({len(problems)} problems): {shown}"
        )
    return len(members)


# --------------------------------------------------------------------------
# Writing the archive
# --------------------------------------------------------------------------


def _ensure_archive_dir(archive_dir: str) -> None:
    """Create ``archive_dir`` root:root 0700 if it is missing."""
    if os.path.isdir(archive_dir):
        return
    os.makedirs(archive_dir, mode=0o700)
    if os.geteuid() == 0:
        os.chown(archive_dir, 0, 0)
    os.chmod(archive_dir, 0o700)


def _open_partial(partial: str) -> int:
    """Create the ``.partial`` file exclusively, root:root 0600."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    if os.geteuid() == 0:
        os.fchown(fd, 0, 0)
    os.fchmod(fd, 0o600)
    return fd


def _run_tar(path: str, fd: int) -> None:
    """Write a gzipped tarball of ``path`` (as ``<basename>/...``) to ``fd``."""
    command = [*TAR_COMMAND, "-C", os.path.dirname(path), "--", os.path.basename(path)]
    proc = subprocess.run(command, stdout=fd, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        raise CommandExecutionError(f"tar of {path} failed ({proc.returncode}): {message}")


def _fsync_dir(path: str) -> None:
    """Flush a directory's entries to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_verified(path: str, partial: str) -> int:
    """Tar ``path`` into ``partial``, verify and fsync it; return its member count."""
    fd = _open_partial(partial)
    try:
        _run_tar(path, fd)
        count = _verify(partial, _snapshot(path))
        os.fsync(fd)
    finally:
        os.close(fd)
    return count


def archive_dir_tree(name: str, path: str, archive_dir: str) -> dict:
    """
    Archive the directory ``path`` into ``archive_dir`` and verify the archive.

    The archive is ``<archive_dir>/<name>-<YYYYmmddTHHMMSSZ>.tar.gz`` (root:root
    0600; ``archive_dir`` is created root:root 0700 if missing) and holds
    ``<basename of path>/...``.  Refuses when ``path`` is not a directory, when
    anything is mounted at or below it, or when the archive does not match the
    tree (then no archive is left behind).

    Returns ``{"archive": path, "files": entries archived, "bytes": size}``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_archive.archive_dir_tree alice /home/alice /var/backups/webarch
    """
    _check_name(name)
    real = _real_directory(path)
    _check_no_mounts(real)
    if not os.path.isabs(archive_dir):
        raise CommandExecutionError(f"archive_dir {archive_dir!r} is not an absolute path")
    if _is_at_or_below(os.path.realpath(archive_dir), real):
        raise CommandExecutionError(f"archive_dir {archive_dir} lies inside {path}")
    _ensure_archive_dir(archive_dir)
    final = archive_path(name, archive_dir)
    if os.path.lexists(final):
        raise CommandExecutionError(f"{final} already exists")
    partial = final + PARTIAL_SUFFIX
    try:
        count = _write_verified(real, partial)
    except BaseException:
        if os.path.lexists(partial):
            os.unlink(partial)
        raise
    os.rename(partial, final)
    _fsync_dir(archive_dir)
    return {"archive": final, "files": count, "bytes": os.path.getsize(final)}


# --------------------------------------------------------------------------
# Removing the tree
# --------------------------------------------------------------------------


def remove_tree(path: str) -> None:
    """
    Delete the directory tree at ``path``; a missing ``path`` is not an error.

    Refuses when anything is mounted at or below ``path`` or when ``path`` is
    not a directory (a symlink included).  Symlinks inside are removed, never
    followed.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_archive.remove_tree /home/alice
    """
    if isinstance(path, str) and os.path.isabs(path) and not os.path.lexists(path):
        return
    real = _real_directory(path)
    _check_no_mounts(real)
    shutil.rmtree(real)
