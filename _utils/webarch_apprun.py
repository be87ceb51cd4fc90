"""
Running an application's install steps as its account (webarch_wordpress,
webarch_mediawiki): copying a tree into the site, unpacking a release archive,
running PHP in the account's chroot, and the root-only ledger of what webarch
did of each site's application.

Every file of the site is written by the account itself (``setpriv`` outside
the chroot, ``chroot --userspec`` inside it), so the account owns and can
update all of it; root only reads the source tree.  Secrets go to programs on
standard input, never on a command line.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import stat
import subprocess
from typing import Any

import webarch_mountns as mountns

#: Characters of generated keys and passwords (no quotes or backslashes: they
#: are written into PHP strings).
KEY_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#%()*+,-./:;<=>?@[]^_{|}~"
)
PATH_ENV = "/usr/local/bin:/usr/bin:/bin"


class RunError(Exception):
    """A step failed; the message says which and how (the end of its error output)."""


def random_key(length: int = 64) -> str:
    """A random key for an application's configuration (salts, secret keys)."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(length))


def ids(account: str) -> tuple[int, int]:
    """The account's uid and gid."""
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        raise RunError(f"no Unix user {account}") from None
    return entry.pw_uid, entry.pw_gid


def run(
    argv: list[str], what: str, timeout: float = 900.0, stdin: bytes | None = None,
    env: dict[str, str] | None = None, cwd: str | None = None,
) -> str:  # fmt: skip
    """Run ``argv``; its standard output, or RunError with the end of its error output."""
    try:
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, timeout=timeout, check=False, env=env,
            cwd=cwd,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RunError(f"{what}: no end within {timeout:g} s") from None
    except OSError as exc:
        raise RunError(f"{what}: {argv[0]}: {exc.strerror}") from None
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        err = (proc.stderr.decode("utf-8", "replace") or out).strip()[-800:]
        raise RunError(f"{what} failed (exit {proc.returncode}): {err}")
    return out


def account_env(app: dict) -> dict[str, str]:
    """The environment of a command run as the account."""
    return {"HOME": app["home"], "PATH": PATH_ENV, "LANG": "C.UTF-8", "USER": app["account"]}


def as_account(app: dict, argv: list[str], what: str, **kwargs: Any) -> str:
    """Run ``argv`` as the app's account outside its chroot (no privileges, no new ones)."""
    uid, gid = ids(app["account"])
    wrapped = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups",
               "--no-new-privs", "--", *argv]  # fmt: skip
    return run(wrapped, what, env=account_env(app), **kwargs)


def in_chroot(app: dict, argv: list[str], what: str, **kwargs: Any) -> str:
    """Run ``argv`` as the app's account inside its chroot (where its pool runs PHP),
    in the chroots' mount namespace (where the chroot's mounts are)."""
    uid, gid = ids(app["account"])
    wrapped = mountns.in_namespace(
        ["/usr/sbin/chroot", f"--userspec={uid}:{gid}", app["chroot"], *argv]
    )
    return run(wrapped, what, env=account_env(app), **kwargs)


def php(app: dict, script: str, what: str, *args: str, timeout: float = 900.0) -> str:
    """Run the PHP ``script`` (its text, on standard input) in the chroot, in the docroot."""
    argv = [app["php"], "-d", "display_errors=stderr", "--", *args]
    wrapped = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', app["docroot"], *argv]
    return in_chroot(app, wrapped, what, stdin=script.encode(), timeout=timeout)


def read_regular(path: str, limit: int = 1 << 22) -> bytes | None:
    """The bytes of the account's file ``path`` as root: a regular file only (not a
    link, pipe or device the account put there), at most ``limit``; None if not so."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(limit)


def is_empty(path: str) -> bool:
    """Whether ``path`` does not exist or is a directory with nothing in it."""
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False


def copy_tree(app: dict, source: str, exclude: tuple[str, ...] = ()) -> None:
    """Copy the tree ``source`` into the app's docroot, links followed (Debian's packages
    link libraries from other packages), written by the account: root only reads."""
    # The top entries, not ".": the docroot keeps its own mode (2750, www-data).
    names = sorted(name for name in os.listdir(source) if name not in exclude)
    reader = ["tar", "-C", source, "--dereference", "-cf", "-", "--", *names]
    writer = ["setpriv", *_priv(app), "--", "tar", "-C", app["docroot"], "--no-same-owner",
              "--no-same-permissions", "-xf", "-"]  # fmt: skip
    _pipe(reader, writer, f"copying {source} into {app['docroot']}", account_env(app))


def unpack(app: dict, archive: str, sha256: str) -> None:
    """Unpack a release archive (its one top directory stripped) into the app's docroot,
    after checking its SHA-256; the account unpacks."""
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise RunError(f"{archive}: sha256 {digest.hexdigest()}, not the pillar's {sha256}")
    with open(archive, "rb") as handle:
        as_account(app, ["tar", "-C", app["docroot"], "--strip-components=1", "--no-same-owner",
                         "--no-same-permissions", "-xzf", "-"],
                   f"unpacking {archive}", stdin=handle.read())  # fmt: skip


def write_as_account(app: dict, path: str, text: str, mode: int = 0o600) -> None:
    """Write ``path`` (a new file or a replacement) as the account, atomically."""
    partial = f"{path}.webarch-new"
    script = 'umask 077 && cat > "$0" && chmod "$1" "$0" && mv -f "$0" "$2"'
    as_account(app, ["/bin/sh", "-c", script, partial, f"{mode:o}", path],
               f"writing {path}", stdin=text.encode())  # fmt: skip


def read_ledger(app: dict) -> dict[str, Any]:
    """What webarch did of this site's application ({} when nothing)."""
    try:
        with open(app["ledger"], encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def write_ledger(app: dict, ledger: dict[str, Any]) -> None:
    """Record what webarch did (root 0600, atomically)."""
    os.makedirs(os.path.dirname(app["ledger"]), mode=0o700, exist_ok=True)
    partial = f"{app['ledger']}.new"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(ledger, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(partial, app["ledger"])


def _priv(app: dict) -> list[str]:
    uid, gid = ids(app["account"])
    return [f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--no-new-privs"]


def _pipe(reader: list[str], writer: list[str], what: str, env: dict[str, str]) -> None:
    """``reader | writer``; RunError with either's error output when one fails."""
    with subprocess.Popen(reader, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as first:
        second = subprocess.run(writer, stdin=first.stdout, capture_output=True, env=env,
                                check=False)  # fmt: skip
        assert first.stdout is not None and first.stderr is not None
        first.stdout.close()
        err = first.stderr.read().decode("utf-8", "replace")
        first.wait()
    if first.returncode != 0 or second.returncode != 0:
        detail = (err + second.stderr.decode("utf-8", "replace")).strip()[-800:]
        raise RunError(f"{what} failed: {detail}")
