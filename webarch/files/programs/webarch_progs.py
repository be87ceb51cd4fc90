"""The helpers webarch's Python programs share (webarch-mail-gate, -mail-log, -log-split).

Installed by the formula into ``/usr/local/lib/webarch`` next to a copy of
``webarch_paths``; each program puts that directory first on ``sys.path``.
Standard library only: the programs run with Debian's ``/usr/bin/python3``.

What is here, one copy each:

* ``Warner``: complaints on stderr, rate-limited;
* the map files the model writes (``parse_pairs``, ``parse_mail_accounts``,
  ``WatchedFile`` to re-read one when it changes);
* appending to a log in an account's home without following a symlink the
  account could plant (``open_logs_dir``, ``open_log``, ``write_all``);
* ``replace_file``, ``locked`` and ``Stop`` for a program's own state and main loop;
* ``send_mail``: a plain mail through the host's MTA (Exim's sendmail).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import webarch_paths as paths

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Appending to a log: never through a symlink.  O_NONBLOCK: a FIFO in place
#: of a log file makes open() fail instead of hanging.
APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: Names that never get a mail log or submit mail, even if listed ("unknown"
#: is Exim's ident when it has none).
NEVER_MAIL = frozenset({"root", "Debian-exim", "unknown"})

#: An owner callable returns the group and mode of a new log file.
Owner = Callable[[], tuple[int, int]]


class Warner:
    """Complains on stderr, each kind of complaint at most once per ``interval`` seconds.

    Complaints with no ``key`` share one budget: webarch-log-split has only
    those, because Apache may connect a piped logger's stderr to the error log,
    that is to the logger itself, and rate-limiting keeps a failure from
    feeding itself.
    """

    def __init__(self, program: str, interval: float) -> None:
        self._program = program
        self._interval = interval
        self._next: dict[str, float] = {}

    def warn(self, message: str, key: str = "") -> None:
        """Write ``message`` unless a complaint of kind ``key`` was written lately."""
        now = time.monotonic()
        if self._next.get(key, 0.0) > now:
            return
        if len(self._next) > 10_000:
            self._next.clear()
        self._next[key] = now + self._interval
        with contextlib.suppress(OSError):
            os.write(2, f"{self._program}: {message}\n".encode(errors="replace"))


# --------------------------------------------------------------------------
# Map files: "KEY VALUE" lines, "#" starts a comment
# --------------------------------------------------------------------------


def parse_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """The two fields of each line of a map file; other lines are skipped."""
    pairs = []
    for raw in data.splitlines():
        fields = raw.split(b"#", 1)[0].split()
        if len(fields) == 2:
            pairs.append((fields[0], fields[1]))
    return pairs


def is_account_name(name: bytes | str) -> bool:
    """Whether ``name`` is a name webarch accepts for an account (as its pillar does)."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return paths.USERNAME_RE.fullmatch(name) is not None


def parse_mail_accounts(data: bytes) -> dict[bytes, str]:
    """The NAME -> HOME entries of the mail accounts file (MAIL_ACCOUNTS_PATH).

    The gate serves these names and webarch-mail-log copies their lines: a bad
    name, a name in NEVER_MAIL or a relative home is skipped.
    """
    entries: dict[bytes, str] = {}
    for name, home in parse_pairs(data):
        decoded = name.decode("ascii", "replace")
        if is_account_name(name) and decoded not in NEVER_MAIL and home.startswith(b"/"):
            entries[name] = os.fsdecode(home)
    return entries


class WatchedFile:
    """A small root-owned file (a map) read again only when it changed."""

    #: The signature of a missing file.
    MISSING: tuple[int, ...] = ()

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, ...] | None = None

    @property
    def missing(self) -> bool:
        """Whether the file was missing when last looked at."""
        return self._signature == self.MISSING

    def read_changed(self) -> bytes | None:
        """Its contents if it changed since the last call (b"" once it is missing), else None.

        Raises OSError when it cannot be read (the caller keeps what it has).
        The signature is the fstat() of the file read (device, inode, mtime,
        size): a file replaced meanwhile is never taken for the one read.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            if self.missing:
                return None
            self._signature = self.MISSING
            return b""
        try:
            st = os.fstat(fd)
            signature = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if signature == self._signature:
                return None
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", self.path)
            data = read_all(fd)
        finally:
            os.close(fd)
        self._signature = signature
        return data


def read_all(fd: int) -> bytes:
    """Everything left to read from ``fd``."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------
# Logs in the accounts' homes
# --------------------------------------------------------------------------


def check_logs_dir(fd: int) -> None:
    """Refuse a logs directory the account could write to (it must be root's, not g/o+w)."""
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise PermissionError(errno.EPERM, "logs directory is not root's or is writable")


def open_logs_dir(home: str) -> int:
    """Open HOME/logs: no symlink at HOME nor at logs, which must pass check_logs_dir.

    (webarch-mail-log used to follow a symlink at HOME itself; webarch-log-split
    did not.  The homes are root's, but not following is the safer of the two.)
    """
    parent, name = os.path.split(os.path.normpath(home))
    if not name:
        raise OSError(errno.EINVAL, "not a home directory", home)
    fds: list[int] = []
    try:
        fds.append(os.open(parent, DIR_FLAGS))
        fds.append(os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fds[-1]))
        logs = os.open("logs", DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)
    try:
        check_logs_dir(logs)
    except BaseException:
        os.close(logs)
        raise
    return logs


def open_or_create(name: str, dir_fd: int) -> tuple[int, bool]:
    """Open ``name`` in ``dir_fd`` for appending; the flag tells whether it was created."""
    for _ in range(3):
        try:
            return os.open(name, APPEND_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd), True
        except FileExistsError:
            pass
        try:
            return os.open(name, APPEND_FLAGS, dir_fd=dir_fd), False
        except FileNotFoundError:
            continue  # removed in between: create it again
    raise OSError(errno.EAGAIN, "log file keeps appearing and vanishing", name)


def set_owner(fd: int, gid: int, mode: int) -> None:
    """Make the new file ``fd`` root:gid with ``mode`` (root-only 0600 if chown fails).

    (webarch-mail-log used to fail the write instead, which left the new file
    root 0600 all the same, and lost the lines: the lines are kept now.)
    """
    try:
        os.fchown(fd, 0, gid)
    except OSError:
        mode = 0o600
    os.fchmod(fd, mode)


def open_log(name: str, dir_fd: int, owner: Owner) -> tuple[int, os.stat_result]:
    """Open the regular file ``name`` in ``dir_fd``; a new one gets ``owner()``'s group and mode."""
    fd, created = open_or_create(name, dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        if created:
            set_owner(fd, *owner())
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (a short write is followed by the rest, not lost)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --------------------------------------------------------------------------
# A program's own state and main loop
# --------------------------------------------------------------------------


def replace_file(path: str, data: bytes) -> None:
    """Replace ``path`` atomically by a root-only file holding ``data``."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: str, wait: bool) -> Iterator[bool]:
    """Hold the lock ``path`` (root-only, as its new directory); False if busy and not ``wait``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class Stop:
    """A clean stop of a program's main loop: set by SIGTERM or SIGINT; wakes a sleeping wait()."""

    def __init__(self) -> None:
        self.requested = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM and SIGINT; ignore SIGHUP (the programs' map files need no signal)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._saved[signum] = signal.signal(signum, self._handler)
        self._saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def close(self) -> None:
        """Restore the signal handlers and close the pipe."""
        for signum, handler in self._saved.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        os.close(self._read)
        os.close(self._write)

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` or until a stop is requested."""
        if self.requested:
            return
        select.select([self._read], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            os.read(self._read, 64)

    def _handler(self, signum: int, frame: object) -> None:
        """Request the stop (the main loop finishes its work and exits)."""
        self.requested = True
        with contextlib.suppress(OSError):
            os.write(self._write, b"x")


SENDMAIL = "/usr/sbin/sendmail"


def send_mail(sender: str, to: str, subject: str, text: str) -> str | None:
    """Mail ``text`` from ``sender`` to ``to`` through the host's MTA.

    None when the MTA took it, else why it refused it.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    proc = subprocess.run([SENDMAIL, "-oi", "-f", sender, "--", to],
                          input=message.as_bytes(), capture_output=True, check=False)  # fmt: skip
    return None if proc.returncode == 0 else f"the MTA refused the mail: {proc.stderr[:300]!r}"
