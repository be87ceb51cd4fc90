#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""
webarch-mail-gate: hand one local SMTP session to Exim as the connecting account.

Run by systemd for each connection to /run/webarch-mail/submit.sock (socket
activation with Accept=yes: the connection is standard input and output).  The
kernel tells who connected (SO_PEERCRED); only hosting accounts listed in
/etc/webarch/mail-accounts are served.  The gate then drops to that account's
uid and gid and runs ``exim4 -bs``: Exim sees an untrusted local caller, so the
envelope sender is the account's own (rewritten through /etc/email-addresses)
whatever the client says in MAIL FROM, its lines in Exim's log carry
``U=account``, and its send limit applies.  The gate reads nothing from the
client itself.

The session runs in the account's slice (``user-UID.slice``, under its limits,
beside its SSH sessions, PHP-FPM and cron jobs): the gate first runs itself
again through ``systemd-run --scope --slice=user-UID.slice``, which checks the
peer anew from the same connection, and its ``oom_score_adj`` is the accounts'.

Its helpers (webarch_progs) and paths (webarch_paths) are in /usr/local/lib/webarch.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import struct
import sys
from dataclasses import dataclass

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_paths as paths  # noqa: E402
import webarch_progs as progs  # noqa: E402

EXIM = "/usr/sbin/exim4"
#: Exim's whole environment.
EXIM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
SYSTEMD_RUN = "/usr/bin/systemd-run"
#: The accounts' processes go first when memory runs out (webarch_limits).
OOM_SCORE_ADJUST = 500
#: The answer to a client that may not submit mail here.
REFUSAL = b"554 5.7.1 not allowed to submit mail here\r\n"


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of the connection, as the kernel says."""

    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid {self.uid}, gid {self.gid}, pid {self.pid}"


def peer_of(conn: socket.socket) -> Peer:
    """The credentials of the process that connected (SO_PEERCRED)."""
    size = struct.calcsize("3i")
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    return Peer(*struct.unpack("3i", creds))


def accounts(path: str = paths.MAIL_ACCOUNTS_PATH) -> set[str]:
    """The account names allowed to submit mail (none if the file is missing).

    The file is parsed as webarch-mail-log parses it (webarch_progs): a line
    is "NAME HOME", NAME a valid account name; root and Exim's own user never
    are accounts.  Raises OSError when the file cannot be read.
    """
    data = progs.WatchedFile(path).read_changed() or b""
    return {name.decode("ascii") for name in progs.parse_mail_accounts(data)}


def refusal(peer: Peer, user: pwd.struct_passwd | None, allowed: set[str]) -> str | None:
    """Why ``peer`` (whose user is ``user``) may not submit mail, or None if it may."""
    if user is None:
        return f"{peer} has no user"
    if peer.uid == 0 or user.pw_uid == 0 or user.pw_name not in allowed:
        return f"{user.pw_name} ({peer}) is not a hosting account"
    return None


def refuse(conn: socket.socket, why: str) -> int:
    """Answer the client with a permanent SMTP error and log why; the exit status."""
    print(f"webarch-mail-gate: refused: {why}", file=sys.stderr)
    with contextlib.suppress(OSError):
        conn.sendall(REFUSAL)
    return 1


def user_of(uid: int) -> pwd.struct_passwd | None:
    """The user with ``uid``, or None."""
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def become(user: pwd.struct_passwd) -> None:
    """Drop to ``user``'s own uid and primary group, and nothing else."""
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.chdir("/")


def account_slice(uid: int) -> str:
    """The slice of the account with ``uid`` (logind's, where its limits are)."""
    return f"user-{uid}.slice"


def in_slice(uid: int, cgroup_file: str = "/proc/self/cgroup") -> bool:
    """Whether this process runs in the slice of the account with ``uid``."""
    with open(cgroup_file, encoding="utf-8") as handle:
        return any(f"/{account_slice(uid)}/" in line for line in handle)


def into_slice(uid: int) -> None:
    """Run this program again, on the same connection, in the account's slice."""
    argv = [SYSTEMD_RUN, "--quiet", "--scope", "--collect", f"--slice={account_slice(uid)}"]
    argv += ["--", sys.executable, os.path.abspath(sys.argv[0])]
    os.execve(SYSTEMD_RUN, argv, EXIM_ENV)


def under_limits() -> None:
    """Make this process (and Exim after it) the first one the OOM killer takes."""
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as handle:
        handle.write(str(OOM_SCORE_ADJUST))


def serve(conn: socket.socket) -> int:
    """Check the peer of ``conn`` and become ``exim4 -bs`` running as it; 1 if refused."""
    peer = peer_of(conn)
    user = user_of(peer.uid)
    try:
        allowed = accounts()
    except OSError as exc:
        return refuse(conn, f"cannot read {paths.MAIL_ACCOUNTS_PATH}: {exc}")
    why = refusal(peer, user, allowed)
    if why is not None or user is None:
        return refuse(conn, why or "no user")
    if not in_slice(user.pw_uid):
        into_slice(user.pw_uid)
    under_limits()
    become(user)
    os.execve(EXIM, [EXIM, "-bs"], EXIM_ENV)
    return 1  # not reached


def main() -> int:
    """Serve the connection systemd passed as standard input."""
    return serve(socket.socket(fileno=os.dup(0)))


if __name__ == "__main__":
    sys.exit(main())
