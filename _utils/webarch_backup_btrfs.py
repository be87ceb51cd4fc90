"""
The nightly snapshots on btrfs (``webarch:backup:method``): what a file
system is, and its snapshots, by ioctls on file descriptors (no path is
resolved through an account's tree, no symlink followed).

Used by webarch-backup (installed beside it in the program library), by
the ``webarch_backup`` execution module (the plan of the Salt run, the
restore) and by the unit tests.  Where the homes are btrfs subvolumes and the
store is on the same btrfs, a night is one read-only snapshot of each home
(``BTRFS_IOC_SNAP_CREATE_V2``: a point-in-time copy made by the kernel,
which shares every extent with the home and keeps owners and modes as they
are), made under a partial name and renamed into ``days/`` once complete; an
expired day is deleted whole (``BTRFS_IOC_SNAP_DESTROY``, CAP_SYS_ADMIN).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import stat
import subprocess

#: The pillar's choices: ``auto`` (btrfs where it can be, else rsync), or one of them.
METHODS = ("auto", "rsync", "btrfs")
#: Where the pillar gives it (named in every refusal).
PILLAR_PATH = "webarch:backup:method"
#: The inode number of every btrfs subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_INODE = 256


def _ioc(direction: int, number: int, size: int) -> int:
    """The Linux ioctl request number ``_IOC(direction, 0x94, number, size)`` of btrfs."""
    return (direction << 30) | (size << 16) | (0x94 << 8) | number


_WRITE, _READ = 1, 2


class _FsInfo(ctypes.Structure):
    """struct btrfs_ioctl_fs_info_args (1 KiB): the file system's uuid at byte 16."""

    _fields_ = [("max_id", ctypes.c_uint64), ("num_devices", ctypes.c_uint64),
                ("fsid", ctypes.c_ubyte * 16), ("rest", ctypes.c_ubyte * 992)]  # fmt: skip


class _InoLookup(ctypes.Structure):
    """struct btrfs_ioctl_ino_lookup_args (4 KiB): the subvolume id of an inode."""

    _fields_ = [("treeid", ctypes.c_uint64), ("objectid", ctypes.c_uint64),
                ("name", ctypes.c_char * 4080)]  # fmt: skip


class _VolArgs(ctypes.Structure):
    """struct btrfs_ioctl_vol_args (4 KiB): a name in a directory (and a source fd)."""

    _fields_ = [("fd", ctypes.c_int64), ("name", ctypes.c_char * 4088)]


class _VolArgsV2(ctypes.Structure):
    """struct btrfs_ioctl_vol_args_v2 (4 KiB): a snapshot's source, flags and name."""

    _fields_ = [("fd", ctypes.c_int64), ("transid", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("unused", ctypes.c_uint64 * 4),
                ("name", ctypes.c_char * 4040)]  # fmt: skip


FS_INFO = _ioc(_READ, 31, ctypes.sizeof(_FsInfo))
INO_LOOKUP = _ioc(_READ | _WRITE, 18, ctypes.sizeof(_InoLookup))
SNAP_CREATE_V2 = _ioc(_WRITE, 23, ctypes.sizeof(_VolArgsV2))
SNAP_DESTROY = _ioc(_WRITE, 15, ctypes.sizeof(_VolArgs))
#: BTRFS_SUBVOL_RDONLY: the snapshot is read-only from its first moment.
RDONLY = 1 << 1


def fsid(fd: int) -> str | None:
    """The uuid of the btrfs holding the open file ``fd``, or None (not a btrfs)."""
    args = _FsInfo()
    try:
        fcntl.ioctl(fd, FS_INFO, args)
    except OSError:
        return None
    return bytes(args.fsid).hex()


def subvolume_id(fd: int) -> int | None:
    """The id of the btrfs subvolume whose root directory ``fd`` is, or None."""
    if os.fstat(fd).st_ino != SUBVOLUME_INODE:
        return None
    args = _InoLookup(treeid=0, objectid=SUBVOLUME_INODE)
    try:
        fcntl.ioctl(fd, INO_LOOKUP, args)
    except OSError:
        return None
    return int(args.treeid)


def subvolume_id_of(dir_fd: int, name: str) -> int | None:
    """The subvolume id of ``dir_fd/name`` (not following a symlink), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)  # fmt: skip
    except OSError:
        return None
    try:
        return subvolume_id(fd)
    finally:
        os.close(fd)


def _name(name: str) -> bytes:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a name in a directory")
    return name.encode()


def snapshot(source_fd: int, dir_fd: int, name: str) -> None:
    """A read-only snapshot of the subvolume ``source_fd`` as ``dir_fd/name``."""
    args = _VolArgsV2(fd=source_fd, flags=RDONLY, name=_name(name))
    fcntl.ioctl(dir_fd, SNAP_CREATE_V2, args)


def delete(dir_fd: int, name: str) -> None:
    """Delete the subvolume ``dir_fd/name`` whole (the kernel frees it in the background)."""
    fcntl.ioctl(dir_fd, SNAP_DESTROY, _VolArgs(fd=0, name=_name(name)))


def is_subvolume(dir_fd: int, name: str) -> bool:
    """Whether ``dir_fd/name`` is a btrfs subvolume's root (not following a symlink)."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if info.st_ino != SUBVOLUME_INODE or not stat.S_ISDIR(info.st_mode):
        return False
    return subvolume_id_of(dir_fd, name) is not None


def existing(path: str) -> str:
    """``path``, or its nearest existing ancestor (a store not made yet)."""
    while not os.path.lexists(path) and path not in ("/", ""):
        path = os.path.dirname(path)
    return path or "/"


def path_fsid(path: str) -> str | None:
    """The btrfs uuid of ``path`` (or its nearest existing ancestor), or None."""
    try:
        fd = os.open(existing(path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fsid(fd)
    finally:
        os.close(fd)


def plan(method: str, store: str, homes: str, subvolumes: bool) -> tuple[str, str | None]:
    """
    The method of the nights, ``btrfs`` or ``rsync``, and why not btrfs when
    the pillar asks for it and it cannot be (else None).  btrfs needs the
    store on the btrfs of the homes (``homes``), and (for ``auto``) homes
    made as subvolumes (``subvolumes``: the formula makes them so where its
    quotas are on).
    """
    if method == "rsync":
        return "rsync", None
    home_fs, store_fs = path_fsid(homes), path_fsid(store)
    if home_fs is not None and home_fs == store_fs and (subvolumes or method == "btrfs"):
        return "btrfs", None
    if method == "auto":
        return "rsync", None
    if home_fs is None:
        why = f"{homes} is not on a btrfs"
    elif store_fs is None:
        why = f"the store {store} is not on a btrfs"
    else:
        why = f"the store {store} is on another btrfs than {homes}"
    return "rsync", (
        f"{PILLAR_PATH} is btrfs, but {why}: btrfs snapshots need the store on the "
        f"btrfs of the homes (a subvolume of it mounted at {store}); set {PILLAR_PATH} "
        "to auto or rsync, or move the store"
    )


def home_problem(home_fd: int, store_fd: int) -> str | None:
    """Why a home cannot be snapshotted into the store (None: it can)."""
    if subvolume_id(home_fd) is None:
        return "the home is not a btrfs subvolume"
    if fsid(home_fd) != fsid(store_fd):
        return "the home is not on the btrfs of the store"
    return None


QGROUP_RE = re.compile(r"^0/([0-9]+)\s+([0-9]+)\s+([0-9]+)\b", re.MULTILINE)


def exclusive(path: str) -> dict[int, int] | None:
    """
    The exclusive bytes of every subvolume of the btrfs holding ``path``
    (``btrfs qgroup show --raw``: what deleting that subvolume alone would
    free), by subvolume id; None when its quotas (qgroups) are off.
    """
    proc = subprocess.run(["btrfs", "qgroup", "show", "--raw", path],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        return None
    return {int(m.group(1)): int(m.group(3)) for m in QGROUP_RE.finditer(proc.stdout)}
