"""
Per-account chroots: the skeleton that the bind mounts hang on.

A chroot (``/chroots/USER``) holds no copy of the system: ``/usr`` is the
host's, bind-mounted read-only (the ``webarch_mount`` states of the formula, in
the chroots' own mount namespace: ``webarch_mountns``), and ``/bin``, ``/lib``,
``/sbin`` are the merged-/usr links.  What this module builds is the rest, all
owned by root so that the account cannot change it:

* the mount points, ``/dev`` with only null, zero, full, random, urandom and
  tty, and ``/var/tmp`` pointing at the account's ``/tmp``;
* an ``/etc`` of its own: ``passwd`` and ``group`` listing only root, the web
  server user and the account itself, and what programs need (name service,
  hosts, resolver, time zone, CA bundle, alternatives, PHP CLI settings, a
  shell profile), copied from the host on every run so updates reach it.

:py:func:`plan` compares the wanted skeleton with what is on disk and
:py:func:`apply` makes the difference, never touching a mounted mount point.
Salt sees the skeleton from the host's namespace, where the mount points are
plain directories (the chroots' mounts are in their namespace only); the
chroot base is bind-mounted into that namespace, so what is built here is
what the chroots show.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from pathlib import Path
from typing import Any, NamedTuple

import webarch_mountns as mountns
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_chroot"

#: Character devices of every chroot's /dev: name -> (major, minor).
DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
#: Top-level links of a merged-/usr system, kept where the host has them.
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

#: Host files copied into every chroot's /etc when the host has them.
ETC_COPIES = (
    "bash.bashrc",
    "debian_version",
    "environment",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "mime.types",
    "nanorc",
    "protocols",
    "resolv.conf",
    "services",
    "timezone",
    "ssh/ssh_config",
    "ssl/certs/ca-certificates.crt",
    "ssl/openssl.cnf",
)
#: Host symlinks reproduced in every chroot's /etc (their targets are in /usr).
ETC_LINKS = ("localtime", "os-release")

NSSWITCH = """\
# Written by webarch: this chroot knows only its own files.
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
"""

PROFILE = """\
# Written by webarch: the login environment inside the account's chroot.
PATH="/usr/local/bin:/usr/bin:/bin"
export PATH
umask 027
# The home itself belongs to root: keep the shell history in ~/private.
HISTFILE="$HOME/private/.bash_history"
export HISTFILE
if [ "${PS1-}" ] && [ "${BASH-}" ] && [ "$BASH" != "/bin/sh" ]; then
  [ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
  PS1='\\u@\\h:\\w\\$ '
fi
"""

SHELLS = "# Written by webarch.\n/bin/sh\n/usr/bin/sh\n/bin/bash\n/usr/bin/bash\n"


class Entry(NamedTuple):
    """One wanted file system object of a chroot (path relative to its root)."""

    kind: str  # dir, file, link, chr, mountpoint
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    data: Any = None  # file: bytes; link: target; chr: (major, minor)


# --------------------------------------------------------------------------
# What a chroot should hold
# --------------------------------------------------------------------------


def _passwd_line(entry: pwd.struct_passwd, shell: str | None = None) -> str:
    """Format one /etc/passwd line."""
    return ":".join(
        [
            entry.pw_name,
            "x",
            str(entry.pw_uid),
            str(entry.pw_gid),
            entry.pw_gecos,
            entry.pw_dir,
            shell or entry.pw_shell,
        ]
    )


def _identity_files(name: str, web_user: str) -> dict[str, bytes]:
    """passwd and group listing only root, the web server user and the account."""
    account = pwd.getpwnam(name)
    web = pwd.getpwnam(web_user)
    passwd = [
        "root:x:0:0:root:/root:/usr/sbin/nologin",
        _passwd_line(web, "/usr/sbin/nologin"),
        _passwd_line(account),
    ]
    groups = {0: "root", web.pw_gid: grp.getgrgid(web.pw_gid).gr_name}
    # The account's own groups (its primary group and webarch's account group),
    # listed without members.
    for gid in os.getgrouplist(name, account.pw_gid):
        groups[gid] = grp.getgrgid(gid).gr_name
    group = [f"{gname}:x:{gid}:" for gid, gname in sorted(groups.items())]
    return {
        "etc/passwd": ("\n".join(passwd) + "\n").encode(),
        "etc/group": ("\n".join(group) + "\n").encode(),
    }


def _hosts_file() -> bytes:
    """A hosts file with localhost and this server's own name."""
    fqdn = socket.getfqdn()
    short = socket.gethostname().split(".")[0]
    names = " ".join(dict.fromkeys([fqdn, short]))
    return (
        "# Written by webarch.\n"
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{names}\n"
        "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    ).encode()


def _host_etc(host_etc: Path) -> dict[str, Entry]:
    """Files and links of the host's /etc that every chroot gets a copy of."""
    wanted: dict[str, Entry] = {}
    for rel in ETC_COPIES:
        source = host_etc / rel
        if source.is_file():
            wanted[f"etc/{rel}"] = Entry("file", 0o644, data=source.read_bytes())
    for rel in ETC_LINKS:
        source = host_etc / rel
        if source.is_symlink():
            wanted[f"etc/{rel}"] = Entry("link", data=os.readlink(source))
    alternatives = host_etc / "alternatives"
    if alternatives.is_dir():
        wanted["etc/alternatives"] = Entry("dir")
        for link in sorted(alternatives.iterdir()):
            if link.is_symlink():
                wanted[f"etc/alternatives/{link.name}"] = Entry("link", data=os.readlink(link))
    wanted.update(_php_cli_etc(host_etc))
    return wanted


def _php_cli_etc(host_etc: Path) -> dict[str, Entry]:
    """The PHP CLI settings of every installed PHP version (links resolved)."""
    wanted: dict[str, Entry] = {}
    for cli in sorted(host_etc.glob("php/*/cli")):
        rel = cli.relative_to(host_etc)
        wanted[f"etc/{rel.parent.parent}"] = Entry("dir")
        wanted[f"etc/{rel.parent}"] = Entry("dir")
        wanted[f"etc/{rel}"] = Entry("dir")
        ini = cli / "php.ini"
        if ini.is_file():
            wanted[f"etc/{rel}/php.ini"] = Entry("file", 0o644, data=ini.read_bytes())
        confd = cli / "conf.d"
        if confd.is_dir():
            wanted[f"etc/{rel}/conf.d"] = Entry("dir")
            for item in sorted(confd.iterdir()):
                if item.is_file() and item.suffix == ".ini":
                    data = item.read_bytes()
                    wanted[f"etc/{rel}/conf.d/{item.name}"] = Entry("file", 0o644, data=data)
    return wanted


def _wanted_entries(
    name: str,
    home: str,
    web_user: str = "www-data",
    host_root: str = "/",
    files: dict[str, str] | None = None,
) -> dict[str, Entry]:
    """Return every object the chroot of ``name`` should hold, by relative path.

    ``files`` adds root-owned 0644 files under etc/ (e.g. ``{"etc/msmtprc": text}``).
    """
    host = Path(host_root)
    account = pwd.getpwnam(name)
    wanted: dict[str, Entry] = {
        "": Entry("dir"),
        "usr": Entry("mountpoint"),
        "home": Entry("dir"),
        home.lstrip("/"): Entry("mountpoint", 0o750, 0, account.pw_gid),
        "tmp": Entry("mountpoint", 0o1777),
        "proc": Entry("mountpoint", 0o555),
        "run": Entry("dir"),
        paths.MARIADB_SOCKET_DIR.lstrip("/"): Entry("mountpoint"),
        paths.MAIL_GATE_DIR.lstrip("/"): Entry("mountpoint"),
        "var": Entry("dir"),
        "var/tmp": Entry("link", data="/tmp"),
        # Old paths (PHP's default MariaDB socket is /var/run/mysqld/...).
        "var/run": Entry("link", data="/run"),
        "dev": Entry("dir"),
        "etc": Entry("dir"),
        "etc/ssh": Entry("dir"),
        "etc/ssl": Entry("dir"),
        "etc/ssl/certs": Entry("dir"),
    }
    for link in USR_LINKS:
        target = host / link
        if target.is_symlink():
            wanted[link] = Entry("link", data=os.readlink(target))
    for dev, numbers in DEVICES.items():
        wanted[f"dev/{dev}"] = Entry("chr", 0o666, data=numbers)
    for dev, target in DEV_LINKS.items():
        wanted[f"dev/{dev}"] = Entry("link", data=target)
    wanted.update(_host_etc(host / "etc"))
    generated = {
        **_identity_files(name, web_user),
        "etc/nsswitch.conf": NSSWITCH.encode(),
        "etc/hosts": _hosts_file(),
        "etc/hostname": (socket.gethostname() + "\n").encode(),
        "etc/profile": PROFILE.encode(),
        "etc/shells": SHELLS.encode(),
    }
    for rel, data in generated.items():
        wanted[rel] = Entry("file", 0o644, data=data)
    for rel, text in (files or {}).items():
        if not rel.startswith("etc/") or ".." in rel.split("/") or rel in wanted:
            raise CommandExecutionError(f"chroot file {rel!r} must be a new file under etc/")
        wanted[rel] = Entry("file", 0o644, data=text.encode())
    return wanted


# --------------------------------------------------------------------------
# Comparing and applying
# --------------------------------------------------------------------------


def _mount_points() -> set[str]:
    """Every mount point of this mount namespace."""
    points = set()
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            raw = line.split()[4]
            points.add(raw.encode().decode("unicode_escape"))
    return points


def _differs(path: Path, want: Entry, mounted: bool) -> bool:
    """Tell whether ``path`` on disk differs from ``want``."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return True
    if want.kind == "mountpoint":
        # A mounted mount point shows the mounted tree: never judge or touch it.
        return not (mounted or stat.S_ISDIR(info.st_mode))
    kinds = {"dir": stat.S_ISDIR, "file": stat.S_ISREG, "link": stat.S_ISLNK, "chr": stat.S_ISCHR}
    if not kinds[want.kind](info.st_mode):
        return True
    if want.kind == "link":
        return os.readlink(path) != want.data
    if (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) != (want.mode, want.uid, want.gid):
        return True
    if want.kind == "chr":
        return (os.major(info.st_rdev), os.minor(info.st_rdev)) != want.data
    if want.kind == "file":
        return info.st_size != len(want.data) or path.read_bytes() != want.data
    return False


def _extras(root: Path, wanted: dict[str, Entry], mounts: set[str]) -> list[str]:
    """Objects in the chroot's etc/ and dev/ that nobody asked for."""
    extras = []
    for top in ("etc", "dev"):
        base = root / top
        if not base.is_dir() or base.is_symlink() or str(base) in mounts:
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for entry in dirnames + filenames:
                rel = str((Path(dirpath) / entry).relative_to(root))
                if rel not in wanted:
                    extras.append(rel)
            dirnames[:] = [d for d in dirnames if str(Path(dirpath) / d) not in mounts]
    return sorted(extras)


def plan(
    name: str, path: str, home: str, web_user: str = "www-data", files: dict | None = None
) -> dict:
    """
    Return what building the chroot of ``name`` at ``path`` would change.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_chroot.plan alice /chroots/alice /home/alice
    """
    root = Path(path)
    wanted = _wanted_entries(name, home, web_user, files=files)
    mounts = _mount_points()
    changes: dict[str, list[str]] = {"create": [], "update": [], "remove": []}
    for rel, want in sorted(wanted.items()):
        target = root / rel if rel else root
        if _differs(target, want, str(target) in mounts):
            exists = os.path.lexists(target)
            changes["update" if exists else "create"].append("/" + rel)
    changes["remove"] = ["/" + rel for rel in _extras(root, wanted, mounts)]
    return {key: value for key, value in changes.items() if value}


def _remove(target: Path) -> None:
    """Remove a file, link, device or (recursively, within etc/dev) directory."""
    if target.is_dir() and not target.is_symlink():
        for child in sorted(target.iterdir(), reverse=True):
            _remove(child)
        target.rmdir()
    else:
        target.unlink()


def _make(target: Path, want: Entry) -> None:
    """Create or correct one object (never a mounted mount point)."""
    if os.path.lexists(target) and want.kind != "mountpoint":
        info = target.lstat()
        same_kind = (want.kind == "dir" and stat.S_ISDIR(info.st_mode)) or (
            want.kind == "file" and stat.S_ISREG(info.st_mode)
        )
        if not same_kind:
            _remove(target)
    if want.kind in ("dir", "mountpoint"):
        if not target.is_dir():
            target.mkdir(mode=0o700)
            os.chown(target, want.uid, want.gid)
            os.chmod(target, want.mode)
        elif want.kind == "dir":
            os.chown(target, want.uid, want.gid, follow_symlinks=False)
            os.chmod(target, want.mode)
    elif want.kind == "link":
        os.symlink(want.data, target)
    elif want.kind == "chr":
        os.mknod(target, stat.S_IFCHR | want.mode, os.makedev(*want.data))
        os.chown(target, want.uid, want.gid)
        os.chmod(target, want.mode)
    elif want.kind == "file":
        partial = target.with_name(f".{target.name}.webarch-new")
        with open(partial, "wb") as handle:
            handle.write(want.data)
        os.chown(partial, want.uid, want.gid)
        os.chmod(partial, want.mode)
        os.replace(partial, target)


def apply(
    name: str, path: str, home: str, web_user: str = "www-data", files: dict | None = None
) -> dict:
    """
    Build or repair the chroot skeleton of ``name`` at ``path``; return the changes.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_chroot.apply alice /chroots/alice /home/alice
    """
    root = Path(path)
    if not root.parent.is_dir():
        root.parent.mkdir(mode=0o755, parents=True)
    changes = plan(name, path, home, web_user, files)
    wanted = _wanted_entries(name, home, web_user, files=files)
    mounts = _mount_points()
    for rel in changes.get("remove", []):
        _remove(root / rel.lstrip("/"))
    for rel in changes.get("create", []) + changes.get("update", []):
        rel = rel.lstrip("/")
        target = root / rel if rel else root
        if str(target) not in mounts:
            _make(target, wanted[rel])
    left = plan(name, path, home, web_user, files)
    if left:
        raise CommandExecutionError(f"chroot {path} still differs after building: {left}")
    return changes


def mounts(path: str) -> list[str]:
    """
    Return the mount points at or below ``path``, deepest first: the host's and
    those of the chroots' mount namespace.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_chroot.mounts /chroots/alice
    """
    prefix = path.rstrip("/")
    points = _mount_points() | {m.target for m in mountns.ns_mounts()}
    found = [m for m in points if m == prefix or m.startswith(prefix + "/")]
    return sorted(found, key=lambda m: (-m.count("/"), m))


def remove(path: str) -> bool:
    """
    Remove the chroot skeleton at ``path``; refuse while anything is mounted in it.

    Returns True if something was removed.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_chroot.remove /chroots/alice
    """
    left = mounts(path)
    if left:
        raise CommandExecutionError(f"refusing to remove {path}: still mounted: {left}")
    root = Path(path)
    if not os.path.lexists(root):
        return False
    _remove(root)
    return True
