#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""The chroots' mount namespace: pin it and mount the chroots in it.

Usage: webarch-chroots start BASE
       webarch-chroots exec [--or-host] -- COMMAND [ARG...]

start (root; webarch-chroots.service, at boot): makes /run/webarch/ns and
the chroot base BASE private bind mounts, pins a new mount namespace at
/run/webarch/ns/chroots (its mounts' propagation unchanged: the host's
mounts still reach it; its copy of BASE is private: the chroots' mounts stay
out of PID 1's namespace) and mounts there every line of
/etc/webarch/chroots.fstab that is not mounted yet.  Idempotent.  Prints
what it did; a line that cannot be mounted is printed and the others are
still mounted (exit 1 only if the namespace itself cannot be made).

exec (root): runs COMMAND in the namespace.  --or-host: in the host's
namespace if the chroots' is not there (sshd: the host's admins keep their
logins; an account's login then fails, its chroot being empty).
"""

from __future__ import annotations

import os
import sys

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_mountns as mountns  # noqa: E402


def start(base: str) -> int:
    """Pin the namespace and mount the fstab's lines; 1 if the namespace failed."""
    try:
        for line in mountns.setup(base):
            print(line)
    except RuntimeError as err:
        print(f"webarch-chroots: {err}", file=sys.stderr)
        return 1
    mounted, failures = mountns.mount_all(base)
    print(f"mounted {len(mounted)} chroot mounts from {mountns.FSTAB}")
    for failure in failures:
        print(f"webarch-chroots: not mounted: {failure}", file=sys.stderr)
    return 0


def run(args: list[str]) -> int:
    """exec: replace this process by the command, in the namespace if it is there."""
    or_host = args[:1] == ["--or-host"]
    args = args[1:] if or_host else args
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    if mountns.pinned(mountns.host_mounts()):
        argv = mountns.in_namespace(args)
    elif or_host:
        print(f"webarch-chroots: {mountns.NS} missing: {args[0]} runs in the host's namespace",
              file=sys.stderr)  # fmt: skip
        argv = args
    else:
        print(f"webarch-chroots: {mountns.NS} missing (systemctl start webarch-chroots)",
              file=sys.stderr)  # fmt: skip
        return 1
    os.execvp(argv[0], argv)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "start":
        return start(argv[1])
    if argv[:1] == ["exec"]:
        return run(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
