"""
The account model: the Unix side of an account (names and ids against the host's,
the home layout, the chroot and its mounts, SSH keys) and the server's own paths.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any, NamedTuple

import webarch_check as check
import webarch_paths as paths

#: System V shared memory and message queues are one namespace for the whole
#: host: chroots do not separate them, and a segment made with group/other
#: permissions is readable by every account.  Unless the pillar asks for them
#: (sysv_ipc: true), no new ones can be made (0 pages of SysV shared memory,
#: 0 message queues).  Apache, PHP-FPM, MariaDB and Exim use none.
SYSV_IPC_OFF = {"kernel.shmall": 0, "kernel.msgmni": 0}

# Server paths webarch creates must not lie in these trees (a chroot base inside
# a home would put one account's world under another's files).
FORBIDDEN_PATH_PREFIXES = (
    paths.HOME_BASE,
    "/usr",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/tmp",
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/root",
    "/srv/formula",
)

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)

SSH_COMMENT_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,198}[\x21-\x7e])?$")

# Debian's range for ordinary users (adduser.conf FIRST_UID / LAST_UID).
ID_MIN = 1000

ID_MAX = 59999

SHELLS = ("/bin/bash", "/bin/sh")

# Names no hosting account may take: Debian's system users and groups, the
# formula's own groups, and role addresses that mail to an account would hijack.
RESERVED_USERNAMES = frozenset(
    """
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup
    list irc gnats nobody nogroup messagebus sshd mysql mariadb debian-exim
    postfix _apt systemd-network systemd-resolve systemd-timesync
    systemd-journal systemd-coredump polkitd adm tty disk kmem dialout fax
    voice cdrom floppy tape sudo audio dip operator src shadow utmp video
    sasl plugdev staff users input sgx kvm render netdev crontab ssl-cert
    admin administrator hostmaster postmaster webmaster abuse security noc
    ftp www web webarch salt apache apache2 httpd nginx php php-fpm chroot
    chroots phpfpm sftponly sshonly localhost support info
    """.split()
)


class HostUsers(NamedTuple):
    """A snapshot of the host's users and groups, and webarch's registry.

    (A NamedTuple, not a dataclass: Salt's loader imports modules without
    registering them in ``sys.modules``, which dataclasses need.)
    """

    users: dict[str, int]
    groups: dict[str, int]
    managed: frozenset[str] = frozenset()
    #: A host secret (/etc/machine-id) that keys the names of the pool sockets.
    socket_key: str = ""
    #: Accounts moved away from this host: (name, where to and when).
    moved: tuple[tuple[str, str], ...] = ()

    def uid_owner(self, uid: int) -> str | None:
        """Return the name of the host user with ``uid``, if any."""
        return next((n for n, u in self.users.items() if u == uid), None)

    def gid_owner(self, gid: int) -> str | None:
        """Return the name of the host group with ``gid``, if any."""
        return next((n for n, g in self.groups.items() if g == gid), None)


def server_path(pillar: dict, key: str, default: str, problems: check.Problems) -> str | None:
    """Validate an absolute server path that webarch creates and owns."""
    return own_path(pillar.get(key, default), ["webarch", key], problems)


def own_path(value: Any, path: list[str], problems: check.Problems) -> str | None:
    """Validate the absolute path at pillar ``path`` of something webarch owns."""
    text = check.string(value, path, problems, max_len=200)
    if text is None:
        return None
    if not check.ABS_PATH_RE.fullmatch(text) or "/." in text:
        problems.add(
            path,
            f"{check.describe(text)} must be an absolute path of letters, digits, . _ - "
            "(no '..', no hidden parts, no trailing slash)",
        )
        return None
    for prefix in FORBIDDEN_PATH_PREFIXES:
        if text == prefix or text.startswith(prefix + "/"):
            problems.add(path, f"{check.describe(text)} must not be inside {prefix}")
            return None
    return text


def ssh_key_problem(key: str) -> str | None:
    """Return what is wrong with an OpenSSH public key line, or ``None``."""
    parts = key.strip().split(None, 2)
    if len(parts) < 2:
        return "must be 'TYPE BASE64 [COMMENT]' (an OpenSSH public key line)"
    key_type, blob_text = parts[0], parts[1]
    if key_type not in SSH_KEY_TYPES:
        if any(t in key for t in SSH_KEY_TYPES):
            return "must not carry options (from=, command=, ...) before the key type"
        return f"key type must be one of {', '.join(SSH_KEY_TYPES)}"
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        return "key data is not valid base64"
    if len(blob) < 4:
        return "key data is too short"
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length] != key_type.encode():
        return f"key data does not hold a {key_type} key"
    if key_type == "ssh-ed25519" and len(blob) != 51:
        return "key data is not a whole ed25519 key"
    if key_type == "ssh-rsa" and len(blob) < 275:
        return "RSA keys must have at least 2048 bits"
    if len(parts) == 3 and not SSH_COMMENT_RE.fullmatch(parts[2]):
        return "comment must be printable ASCII, at most 200 characters"
    return None


def ssh_keys(value: Any, path: list[str], problems: check.Problems) -> list[str]:
    """Validate a list of OpenSSH public keys; return them normalised."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, "must be a list of OpenSSH public keys")
        return []
    keys: list[str] = []
    for index, key in enumerate(value):
        kpath = [*path, str(index)]
        if not isinstance(key, str):
            problems.add(kpath, f"must be a string, not {type(key).__name__}")
            continue
        if "\n" in key.strip() or "\r" in key or "\x00" in key:
            problems.add(kpath, "must be one line")
            continue
        problem = ssh_key_problem(key)
        if problem:
            problems.add(kpath, problem)
            continue
        normalised = " ".join(key.strip().split(None, 2))
        if normalised.split()[1] in {k.split()[1] for k in keys}:
            problems.add(kpath, "repeats an earlier key")
            continue
        keys.append(normalised)
    return keys


def chroot_spec(name: str, chroot_base: str, backup_store: str | None = None) -> dict:
    """
    Return the chroot of account ``name``: its path and its mounts, in order.

    The host's /usr read-only, the account's home read-write at the same path,
    the account's ~/tmp as /tmp, MariaDB's socket directory read-only and a
    /proc that shows only the account's own processes; with ``backup_store``
    (``STORE/USERNAME/days``), its snapshots read-only and inert at ~/backups/files.
    """
    root = f"{chroot_base}/{name}"
    home = f"{paths.HOME_BASE}/{name}"
    bind_ro = ["bind", "ro", "nosuid", "nodev"]
    backups = [
        # Last: on top of the home's bind (and unmounted first on removal).
        {
            "id": "backups",
            "name": f"{root}{home}/{paths.BACKUP_MOUNT_DIR}",
            "device": backup_store,
            "fstype": "none",
            "opts": [*bind_ro, "noexec"],
        }
    ]
    mounts = [
        # slave: the sendmail bind below must not propagate back to the
        # host's /usr (nor to other chroots: all binds of /usr are peers).
        {
            "id": "usr",
            "name": f"{root}/usr",
            "device": "/usr",
            "fstype": "none",
            "opts": [*bind_ro, "slave"],
        },
        {
            "id": "home",
            "name": f"{root}{home}",
            "device": home,
            "fstype": "none",
            "opts": ["bind", "nosuid", "nodev"],
        },
        {
            "id": "tmp",
            "name": f"{root}/tmp",
            "device": f"{home}/tmp",
            "fstype": "none",
            "opts": ["bind", "nosuid", "nodev"],
        },
        # /run/mysqld is made by systemd-tmpfiles after local file systems
        # are mounted: nofail drops the mount's ordering before
        # local-fs.target so that it can wait for the directory.
        {
            "id": "mysqld",
            "name": f"{root}{paths.MARIADB_SOCKET_DIR}",
            "device": paths.MARIADB_SOCKET_DIR,
            "fstype": "none",
            "opts": [
                *bind_ro,
                "noexec",
                "nofail",
                "x-systemd.after=systemd-tmpfiles-setup.service",
            ],
        },
        # Exim's submission gate: a socket owned by root that runs
        # ``exim4 -bs`` as whoever connects (webarch-mail-gate).
        {
            "id": "mail",
            "name": f"{root}{paths.MAIL_GATE_DIR}",
            "device": paths.MAIL_GATE_DIR,
            "fstype": "none",
            "opts": [
                *bind_ro,
                "noexec",
                "nofail",
                "x-systemd.after=systemd-tmpfiles-setup.service",
            ],
        },
        # sendmail in the chroot is msmtp (/usr/sbin/sendmail -> exim4):
        # Exim itself cannot run there (no setuid, no spool).
        {
            "id": "sendmail",
            "name": f"{root}/usr/sbin/exim4",
            "device": "/usr/bin/msmtp",
            "fstype": "none",
            "opts": bind_ro,
        },
        {
            "id": "proc",
            "name": f"{root}/proc",
            "device": "proc",
            "fstype": "proc",
            "opts": ["nosuid", "nodev", "noexec", "hidepid=invisible"],
        },
        *(backups if backup_store else []),
    ]
    return {"path": root, "home": home, "mounts": mounts, "unit_binds": unit_binds(mounts)}


def unit_binds(mounts: list[dict]) -> dict[str, list[str]]:
    """The chroot's mounts as systemd's ``BindReadOnlyPaths=`` (``ro``) and
    ``BindPaths=`` (``rw``) items, for a unit that makes them in a mount namespace
    of its own (the mounts are in the chroots' namespace: webarch_mountns).

    ``/proc`` is the unit's own (``ProtectProc=invisible``: the account's
    processes only), read-only; a ``nofail`` mount's source may be missing (``-``).
    """
    binds: dict[str, list[str]] = {"ro": [], "rw": []}
    for mount in mounts:
        source = "/proc" if mount["fstype"] == "proc" else mount["device"]
        item = ("-" if "nofail" in mount["opts"] else "") + f"{source}:{mount['name']}"
        binds["ro" if "ro" in mount["opts"] or source == "/proc" else "rw"].append(item)
    return binds


def account_dirs(name: str) -> list[dict]:
    """Return the standard layout of an account's home, in creation order."""
    home = f"{paths.HOME_BASE}/{name}"
    layout = [
        # id, path, owner, group, mode.  The home and logs are root's: the
        # account cannot change them.  The web server reads the sites through
        # their group (setgid: new files keep it).
        ("home", home, "root", name, "0750"),
        ("sites", f"{home}/sites", name, paths.WEB_USER, "2750"),
        ("logs", f"{home}/logs", "root", name, "0750"),
        ("tmp", f"{home}/tmp", name, name, "0700"),
        ("private", f"{home}/private", name, name, "0700"),
        ("ssh", f"{home}/.ssh", name, name, "0700"),
    ]
    return [
        {"id": i, "path": path, "user": user, "group": group, "mode": mode}
        for i, path, user, group, mode in layout
    ]


#: The ``adopt`` key's documentation (webarch_model's account table).
ADOPT_DOC = (
    "Take over the existing Unix user of this name, which webarch did not create (a "
    "server of the old platform, scanned by ``webarch_import.legacy``): needs ``uid`` "
    "equal to the user's, and ``gid`` equal to its group's when set. The user keeps its "
    "uid, group and every file; its home gets webarch's layout (the home root's, "
    "``~/sites``, ``~/logs``, ``~/tmp``, ``~/private``, ``~/.ssh``: each made or its "
    "owner and mode set, nothing in them deleted or rewritten; a layout path that is a "
    "file or a symlink fails the run). From the first run on the user is webarch's, like "
    "one it created (``state: absent`` archives and removes it). Without ``adopt`` such "
    "a user is refused."
)


def _adoption(account: dict, host: HostUsers, path: list[str], problems: check.Problems) -> bool:
    """Whether ``account`` adopts its existing unmanaged user; report a mismatch."""
    name = account["name"]
    if not account.get("adopt") or name in host.managed:
        return False
    uid, gid = host.users.get(name), host.groups.get(name)
    if uid is None and gid is None:
        return False
    ok = True
    if uid is not None and account["uid"] != uid:
        given = "" if account["uid"] is None else f", not {account['uid']}"
        problems.add(
            [*path, "uid"],
            f"must be {uid} to adopt the existing user {name!r} (adopt: true keeps its "
            f"uid and files){given}",
        )
        ok = False
    if gid is not None and account["gid"] is not None and account["gid"] != gid:
        problems.add(
            [*path, "gid"],
            f"must be {gid} (the existing group {name!r}) to adopt it, not {account['gid']}",
        )
        ok = False
    return ok


def check_host_clashes(
    account: dict, host: HostUsers, reserved: frozenset[str], problems: check.Problems
) -> None:
    """Report clashes of a present account with the host's users and groups."""
    name = account["name"]
    path = ["webarch", "accounts", name]
    if name in reserved:
        problems.add(path, f"username {name!r} is reserved")
        return
    moved = dict(host.moved).get(name)
    if moved is not None:
        problems.add(
            [*path, "state"],
            f"{name} was moved to another server ({moved}): set state: absent here to "
            f"remove this copy (its archive is kept), or delete {paths.MOVED_DIR}/{name} "
            "to serve it here again",
        )
    managed = name in host.managed or _adoption(account, host, path, problems)
    uid = host.users.get(name)
    if uid is not None and not ID_MIN <= uid <= ID_MAX:
        problems.add(path, f"username {name!r} is a system user on this host (uid {uid})")
    elif uid is not None and not managed:
        problems.add(
            path,
            f"username {name!r} clashes with existing user (uid {uid}) that webarch "
            "does not manage (adopt: true, with its uid, takes it over)",
        )
    gid = host.groups.get(name)
    if gid is not None and not ID_MIN <= gid <= ID_MAX:
        problems.add(path, f"group {name!r} is a system group on this host (gid {gid})")
    elif gid is not None and uid is None and not managed:
        problems.add(
            path,
            f"group {name!r} already exists on this host (gid {gid}) and webarch "
            "does not manage it (adopt: true takes it over)",
        )
    for key, wanted, owner in (
        ("uid", account["uid"], host.uid_owner),
        ("gid", account["gid"], host.gid_owner),
    ):
        holder = owner(wanted) if wanted is not None else None
        if holder is not None and holder != name and holder in host.managed:
            problems.add(
                [*path, key],
                f"{wanted} is webarch's account {holder!r} on this host: an account cannot "
                "be renamed (its user, home, chroot, pool, databases and sites carry its "
                f"name). To move it: add {name!r} without this {key}, copy {holder}'s files "
                f"and databases into it, then set {holder}: {{state: absent}} (archived first)",
            )
        elif holder is not None and holder != name:
            problems.add([*path, key], f"{wanted} is already used by {holder!r} on this host")


def check_server_paths(server: dict, problems: check.Problems) -> None:
    """Report server paths nested in one another."""
    chroots, archives = server["chroot_base"], server["archive_dir"]
    if not chroots or not archives:
        return
    if chroots == archives or archives.startswith(chroots + "/"):
        problems.add(["webarch", "archive_dir"], f"must not be inside chroot_base {chroots}")
    elif chroots.startswith(archives + "/"):
        problems.add(["webarch", "chroot_base"], f"must not be inside archive_dir {archives}")
