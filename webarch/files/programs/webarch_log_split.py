#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""Split Apache's global piped logs into one log per hosting account.

Usage: webarch-log-split access|error

Apache writes every access (or error) line of every vhost to this program's
stdin; the first field of each line is the vhost's canonical ServerName (%v).
The map file (/etc/webarch/log-map, lines "SERVERNAME ACCOUNT") tells which
account a vhost belongs to; the line, vhost field included, is appended to
/home/ACCOUNT/logs/apache-KIND.log.  Lines of unknown vhosts, and lines that
cannot be written where they belong, go to /var/log/apache2/webarch-other-KIND.log.

Apache keeps one pipe per kind, so its descriptors do not grow with the number
of sites; this program keeps at most MAX_OPEN log files open (LRU) and reopens
a file when it was rotated (moved away or truncated).  The map is re-read when
it changes.  The program never follows a symlink an account could plant: the
account's home and logs directory are opened without following symlinks, the
logs directory must be root's and not group/world-writable, and the log file
is opened with O_NOFOLLOW and must be a regular file.

The helpers it shares with webarch-mail-log (webarch_progs) and the formula's
paths (webarch_paths) are imported from /usr/local/lib/webarch.

Environment (for tests): WEBARCH_LOG_MAP, WEBARCH_LOG_HOME_BASE and
WEBARCH_LOG_FALLBACK_DIR override the map file, /home and /var/log/apache2.
"""

from __future__ import annotations

import grp
import os
import signal
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_paths as paths  # noqa: E402
import webarch_progs as progs  # noqa: E402

#: The longest line written, newline included; the rest of a longer line is dropped.
MAX_LINE = 16 * 1024
#: The most log files open at once.
MAX_OPEN = 64
#: Seconds between two checks of the map file, or of one log file for rotation.
CHECK_INTERVAL = 1.0
#: Seconds a log file that could not be opened is not retried (its lines go to the fallback).
RETRY_DELAY = 1.0
#: Seconds between two complaints on stderr.
WARN_INTERVAL = 60.0

KINDS = ("access", "error")
#: Where Apache's own logs are: the fallback logs go there.
APACHE_LOG_DIR = "/var/log/apache2"

#: An opener returns an open descriptor and its fstat().
Opener = Callable[[], tuple[int, os.stat_result]]


@dataclass(frozen=True)
class Config:
    """Where the map, the accounts' homes and the fallback logs are."""

    kind: str
    map_path: str
    home_base: str
    fallback_dir: str

    @classmethod
    def from_env(cls, kind: str) -> Config:
        """The configuration for ``kind``, with the environment's overrides."""
        return cls(
            kind=kind,
            map_path=os.environ.get("WEBARCH_LOG_MAP", paths.LOG_MAP_PATH),
            home_base=os.environ.get("WEBARCH_LOG_HOME_BASE", paths.HOME_BASE),
            fallback_dir=os.environ.get("WEBARCH_LOG_FALLBACK_DIR", APACHE_LOG_DIR),
        )

    def account_path(self, account: str) -> str:
        """The path of ``account``'s log of this kind."""
        return f"{self.home_base}/{account}/logs/{self.account_name()}"

    def account_name(self) -> str:
        """The file name of an account's log of this kind."""
        return f"apache-{self.kind}.log"

    def fallback_path(self) -> str:
        """The path of the log of lines that belong to no account."""
        return f"{self.fallback_dir}/{self.fallback_name()}"

    def fallback_name(self) -> str:
        """The file name of the fallback log of this kind."""
        return f"webarch-other-{self.kind}.log"


def new_warner() -> progs.Warner:
    """Complaints on stderr: one budget for all (see progs.Warner)."""
    return progs.Warner("webarch-log-split", WARN_INTERVAL)


def parse_map(data: bytes) -> dict[bytes, str]:
    """The vhost -> account entries of map file contents (bad lines are skipped)."""
    return {
        vhost.lower(): account.decode("ascii")
        for vhost, account in progs.parse_pairs(data)
        if progs.is_account_name(account)
    }


class LogMap:
    """The vhost -> account map, re-read when its file changes."""

    def __init__(self, path: str) -> None:
        self._file = progs.WatchedFile(path)
        self._entries: dict[bytes, str] = {}
        self._next_check = 0.0

    def refresh(self, now: float) -> None:
        """Re-read the file if it changed, at most once per CHECK_INTERVAL."""
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        try:
            data = self._file.read_changed()
        except OSError:
            return  # keep the map we have
        if data is not None:
            self._entries = parse_map(data)  # b"": the file is gone, so is the map

    def account(self, vhost: bytes) -> str | None:
        """The account of ``vhost`` (lower-cased), or None."""
        return self._entries.get(vhost)


def first_field(line: bytes) -> bytes:
    """The vhost field of a log line, lower-cased (empty when the line starts with a space)."""
    end = line.find(b" ")
    return (line[:end] if end >= 0 else line.rstrip(b"\r\n")).lower()


def account_owner(account: str) -> tuple[int, int]:
    """Group and mode of a new account log: root:ACCOUNT 0640, or root:root 0600."""
    try:
        return grp.getgrnam(account).gr_gid, 0o640
    except KeyError:
        return 0, 0o600


def fallback_owner() -> tuple[int, int]:
    """Group and mode of a new fallback log: root:adm 0640 like Debian's Apache logs."""
    try:
        return grp.getgrnam("adm").gr_gid, 0o640
    except KeyError:
        return 0, 0o640


def open_account_log(config: Config, account: str) -> tuple[int, os.stat_result]:
    """Open ``account``'s log, following no symlink below the home base."""
    logs_fd = progs.open_logs_dir(f"{config.home_base}/{account}")
    try:
        return progs.open_log(config.account_name(), logs_fd, lambda: account_owner(account))
    finally:
        os.close(logs_fd)


def open_fallback_log(config: Config) -> tuple[int, os.stat_result]:
    """Open the log of lines that belong to no account."""
    dir_fd = os.open(config.fallback_dir, progs.DIR_FLAGS)
    try:
        return progs.open_log(config.fallback_name(), dir_fd, fallback_owner)
    finally:
        os.close(dir_fd)


@dataclass(slots=True)
class OpenLog:
    """An open log file, as it was when last checked."""

    fd: int
    dev: int
    ino: int
    size: int
    next_check: float


class LogFiles:
    """At most ``limit`` open log files (least recently used closed first), reopened on rotation."""

    def __init__(self, limit: int = MAX_OPEN) -> None:
        self._open: OrderedDict[str, OpenLog] = OrderedDict()
        self._failed: dict[str, float] = {}
        self._limit = limit

    def write(self, path: str, opener: Opener, line: bytes, now: float) -> bool:
        """Append ``line`` to ``path`` in one write(); False if it could not be done."""
        fd = self._get(path, opener, now)
        if fd is None:
            return False
        try:
            progs.write_all(fd, line)
        except OSError:
            self._close(path)
            self._failed[path] = now + RETRY_DELAY
            return False
        return True

    def close_all(self) -> None:
        """Close every open file."""
        while self._open:
            os.close(self._open.popitem()[1].fd)

    def _get(self, path: str, opener: Opener, now: float) -> int | None:
        """The descriptor of ``path``, (re)opened as needed; None if it cannot be opened."""
        entry = self._open.get(path)
        if entry is not None:
            if now < entry.next_check or self._current(path, entry, now):
                self._open.move_to_end(path)
                return entry.fd
            self._close(path)
        if self._failed.get(path, 0.0) > now:
            return None
        try:
            fd, st = opener()
        except OSError:
            self._remember_failure(path, now)
            return None
        self._failed.pop(path, None)
        self._open[path] = OpenLog(fd, st.st_dev, st.st_ino, st.st_size, now + CHECK_INTERVAL)
        while len(self._open) > self._limit:
            os.close(self._open.popitem(last=False)[1].fd)
        return fd

    @staticmethod
    def _current(path: str, entry: OpenLog, now: float) -> bool:
        """Whether ``path`` is still the open file and was not truncated (rotation check)."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != (entry.dev, entry.ino) or st.st_size < entry.size:
            return False
        entry.size, entry.next_check = st.st_size, now + CHECK_INTERVAL
        return True

    def _close(self, path: str) -> None:
        """Close ``path`` if it is open."""
        entry = self._open.pop(path, None)
        if entry is not None:
            os.close(entry.fd)

    def _remember_failure(self, path: str, now: float) -> None:
        """Do not retry opening ``path`` for RETRY_DELAY."""
        if len(self._failed) > 4096:
            self._failed.clear()
        self._failed[path] = now + RETRY_DELAY


class Splitter:
    """Routes each line to its account's log or to the fallback log."""

    def __init__(self, config: Config, warner: progs.Warner) -> None:
        self._config = config
        self._map = LogMap(config.map_path)
        self._files = LogFiles()
        self._warner = warner

    def handle(self, line: bytes) -> None:
        """Write one complete line (ending with a newline) where it belongs."""
        now = time.monotonic()
        self._map.refresh(now)
        account = self._map.account(first_field(line))
        if account is not None and self._write_account(account, line, now):
            return
        if not self._files.write(
            self._config.fallback_path(), lambda: open_fallback_log(self._config), line, now
        ):
            self._warner.warn(f"cannot write {self._config.fallback_path()}: lines are lost")

    def close(self) -> None:
        """Close every log file."""
        self._files.close_all()

    def _write_account(self, account: str, line: bytes, now: float) -> bool:
        """Append ``line`` to ``account``'s log; False if it cannot be done."""
        return self._files.write(
            self._config.account_path(account),
            lambda: open_account_log(self._config, account),
            line,
            now,
        )


def read_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of ``stream``, each ending with a newline and at most MAX_LINE bytes long."""
    while line := stream.readline(MAX_LINE):
        if not line.endswith(b"\n"):
            if len(line) >= MAX_LINE:
                skip_rest_of_line(stream)
            line = line[: MAX_LINE - 1] + b"\n"
        yield line


def skip_rest_of_line(stream: BinaryIO) -> None:
    """Read and drop the rest of an overlong line."""
    while True:
        rest = stream.readline(MAX_LINE)
        if not rest or rest.endswith(b"\n"):
            return


def main(argv: list[str] | None = None) -> int:
    """Split stdin until EOF; 2 on a usage error."""
    argv = sys.argv if argv is None else argv
    if len(argv) != 2 or argv[1] not in KINDS:
        sys.stderr.write("usage: webarch-log-split access|error\n")
        return 2
    # Map reloads need no signal; do not let a stray HUP/USR1 kill the logger.
    for signum in (signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    warner = new_warner()
    splitter = Splitter(Config.from_env(argv[1]), warner)
    try:
        with open(0, "rb", buffering=64 * 1024, closefd=False) as stdin:
            for line in read_lines(stdin):
                try:
                    splitter.handle(line)
                except Exception as exc:  # never die: a dead logger loses every site's lines
                    warner.warn(f"unexpected error, line dropped: {exc!r}")
    except KeyboardInterrupt:
        pass
    finally:
        splitter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
