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

.htaccess files (error logs only).  After a line of an account's log in which
Apache refuses a .htaccess line (``PATH: Option FollowSymLinks not allowed
here``: 500 for that directory), the program writes what the account must
change, once per file and hint per HINT_INTERVAL seconds:

    VHOST webarch: PATH: Options +WORD is refused here: WHAT TO WRITE INSTEAD

A line Apache ignores (AH02295 "forbidden by AllowOverride", AH02296 "Unknown
directive") is logged by Apache with no vhost nor file: it goes to the
fallback log, each distinct message at most once per HINT_INTERVAL seconds
(a line then says how many were not written), and it starts
webarch-htaccess-report.service (in the background, a failure changes nothing
here; at most once per HINT_INTERVAL seconds, a start asked for meanwhile is
made when that time is over), which writes each account's ignored lines, with
their files, into its own error log.

The helpers it shares with webarch-mail-log (webarch_progs), the formula's
paths (webarch_paths) and the .htaccess policy (webarch_htaccess) are
imported from /usr/local/lib/webarch.

Environment (for tests): WEBARCH_LOG_MAP, WEBARCH_LOG_HOME_BASE and
WEBARCH_LOG_FALLBACK_DIR override the map file, /home and /var/log/apache2;
WEBARCH_LOG_REPORT_COMMAND the command that starts the report (split like a
shell's words; empty: none).
"""

from __future__ import annotations

import grp
import os
import shlex
import signal
import subprocess
import sys
import threading
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

try:
    import webarch_htaccess as htaccess
except ImportError:  # an older library beside a newer program: no hints, the logs go on
    htaccess = None

#: The longest line written, newline included; the rest of a longer line is dropped.
MAX_LINE = 16 * 1024
#: The most log files open at once.
MAX_OPEN = 64
#: Seconds between two checks of the map file, or of one log file for rotation.
CHECK_INTERVAL = 0.25
#: Seconds a log file that could not be opened is not retried (its lines go to the fallback).
RETRY_DELAY = 1.0
#: Seconds between two complaints on stderr.
WARN_INTERVAL = 60.0

#: Seconds between two hints for the same refused .htaccess line, two copies of
#: the same ignored-line warning in the fallback log, two starts of the report.
HINT_INTERVAL = 60.0
#: Apache's warnings for a .htaccess line it ignores (AllowOverride Nonfatal).
IGNORED_CODES = (b"AH02295: ", b"AH02296: ")
#: Starts webarch-htaccess-check --report (it writes the ignored lines into the accounts' logs).
REPORT_COMMAND = ("systemctl", "start", "--no-block", f"{paths.HTACCESS_REPORT_UNIT}.service")

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
    report_command: tuple[str, ...] = REPORT_COMMAND

    @classmethod
    def from_env(cls, kind: str) -> Config:
        """The configuration for ``kind``, with the environment's overrides."""
        return cls(
            kind=kind,
            map_path=os.environ.get("WEBARCH_LOG_MAP", paths.LOG_MAP_PATH),
            home_base=os.environ.get("WEBARCH_LOG_HOME_BASE", paths.HOME_BASE),
            fallback_dir=os.environ.get("WEBARCH_LOG_FALLBACK_DIR", APACHE_LOG_DIR),
            report_command=report_command(),
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


def report_command() -> tuple[str, ...]:
    """The command that starts the report: REPORT_COMMAND, or WEBARCH_LOG_REPORT_COMMAND's
    words (none if it is empty or cannot be split)."""
    text = os.environ.get("WEBARCH_LOG_REPORT_COMMAND")
    if text is None:
        return REPORT_COMMAND
    try:
        return tuple(shlex.split(text))
    except ValueError:
        return ()


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


def ignored_message(line: bytes) -> bytes | None:
    """The message of Apache's warning for an ignored .htaccess line (from its code on), or None."""
    for code in IGNORED_CODES:
        start = line.find(code)
        if start >= 0:
            return line[start : start + 256].rstrip(b"\r\n")
    return None


def now_stamp() -> str:
    """The time as Apache's error lines give it (%{cu}t)."""
    now = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"


def dropped_line(message: bytes, dropped: int) -> bytes:
    """The fallback log's line that says how many copies of ``message`` were not written."""
    head = f" [{now_stamp()}] [webarch:notice] [pid {os.getpid()}] webarch-log-split: "
    tail = (
        f" not written in {HINT_INTERVAL:.0f} s "
        "(webarch-htaccess-report writes them into the accounts' logs)\n"
    )
    return b'%s%d more of "%s"%s' % (head.encode(), dropped, message, tail.encode())


class Htaccess:
    """What the splitter adds to the error logs about .htaccess files (see the module's doc)."""

    def __init__(self, command: tuple[str, ...], warner: progs.Warner) -> None:
        self._command = command
        self._warner = warner
        self._hinted: dict[str, float] = {}  # hint -> time until which it is not repeated
        self._ignored: dict[bytes, list[float]] = {}  # message -> [until, copies dropped]
        self._next_due = 0.0
        # The report's start: its earliest next time, the child (reaped later), and the
        # timer thread of a start put off (the only other thread; all under the lock).
        self._lock = threading.Lock()
        self._next_report = 0.0
        self._child: subprocess.Popen | None = None
        self._timer: threading.Timer | None = None

    def hint(self, line: bytes, now: float) -> bytes | None:
        """The hint line to write after an account's ``line``, if it is a refusal."""
        if b".htaccess: " not in line or htaccess is None:
            return None
        hint = htaccess.refusal_hint(line.decode("utf-8", "replace"))
        if hint is None or self._hinted.get(hint, 0.0) > now:
            return None
        if len(self._hinted) >= 4096:
            self._hinted = {k: t for k, t in self._hinted.items() if t > now}
            if len(self._hinted) >= 4096:
                self._hinted.clear()
        self._hinted[hint] = now + HINT_INTERVAL
        vhost = line[: line.find(b" ")]
        return vhost + b" " + hint.encode("utf-8", "backslashreplace") + b"\n"

    def keep(self, line: bytes, now: float) -> bool:
        """Whether a line of no account goes to the fallback log (False: dropped and counted).

        An ignored-line warning also starts the report.
        """
        message = ignored_message(line)
        if message is None:
            return True
        self._start_report(now)
        entry = self._ignored.get(message)
        if entry is not None and entry[0] > now:
            entry[1] += 1
            return False
        if len(self._ignored) >= 1024:
            return True  # no more room to count: written
        self._ignored[message] = [now + HINT_INTERVAL, 0]
        return True

    def due(self, now: float, final: bool = False) -> list[bytes]:
        """The fallback lines that say what was dropped, once its interval is over (``final``:
        all of them)."""
        if now < self._next_due and not final:
            return []
        self._next_due = now + CHECK_INTERVAL
        lines = []
        for message, (until, dropped) in list(self._ignored.items()):
            if until <= now or final:
                del self._ignored[message]
                if dropped:
                    lines.append(dropped_line(message, int(dropped)))
        return lines

    def close(self) -> None:
        """Forget a start put off (the next program, or the hourly timer, will start it)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _start_report(self, now: float) -> None:
        """Start the report in the background, at most once per HINT_INTERVAL: a start asked
        for meanwhile is put off until then (a timer thread), never dropped."""
        if not self._command:
            return
        with self._lock:
            if self._child is not None and self._child.poll() is not None:
                self._child = None
            if now < self._next_report or self._child is not None:
                if self._timer is None:
                    timer = threading.Timer(max(self._next_report - now, 1.0), self._put_off_start)
                    timer.daemon = True
                    try:
                        timer.start()
                    except RuntimeError as exc:  # no thread: the hourly timer will do
                        self._warner.warn(f"cannot put off the .htaccess report: {exc}")
                    else:
                        self._timer = timer
                return
            self._next_report = now + HINT_INTERVAL
            try:
                self._child = subprocess.Popen(
                    self._command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    close_fds=True,
                    start_new_session=True,
                )
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                self._warner.warn(f"cannot start the .htaccess report: {exc}")

    def _put_off_start(self) -> None:
        """The timer thread: the start put off is due."""
        with self._lock:
            self._timer = None
        try:
            self._start_report(time.monotonic())
        except Exception as exc:  # a thread's exception would only be printed: say it once
            self._warner.warn(f"cannot start the .htaccess report: {exc!r}")


class Splitter:
    """Routes each line to its account's log or to the fallback log."""

    def __init__(self, config: Config, warner: progs.Warner) -> None:
        self._config = config
        self._map = LogMap(config.map_path)
        self._files = LogFiles()
        self._warner = warner
        self._htaccess = Htaccess(config.report_command, warner) if config.kind == "error" else None

    def handle(self, line: bytes) -> None:
        """Write one complete line (ending with a newline) where it belongs."""
        now = time.monotonic()
        self._map.refresh(now)
        extra = self._htaccess
        if extra is not None:
            for notice in extra.due(now):
                self._write_fallback(notice, now)
        account = self._map.account(first_field(line))
        if account is not None and self._write_account(account, line, now):
            if extra is not None and (hint := extra.hint(line, now)) is not None:
                self._write_account(account, hint, now)
            return
        if extra is None or extra.keep(line, now):
            self._write_fallback(line, now)

    def close(self) -> None:
        """Write what is left to say, close every log file."""
        if self._htaccess is not None:
            self._htaccess.close()
            for notice in self._htaccess.due(time.monotonic(), final=True):
                self._write_fallback(notice, time.monotonic())
        self._files.close_all()

    def _write_fallback(self, line: bytes, now: float) -> None:
        """Append ``line`` to the fallback log (a complaint if it cannot be done)."""
        if not self._files.write(
            self._config.fallback_path(), lambda: open_fallback_log(self._config), line, now
        ):
            self._warner.warn(f"cannot write {self._config.fallback_path()}: lines are lost")

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
