#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""Copy each hosting account's lines of Exim's main log into its ~/logs/mail.log.

Usage: see webarch-mail-log --help.

Accounts hand their mail to Exim only as local SMTP (``exim -bs`` run as the
account), so Exim tags their lines with ``U=NAME``.  This program follows
Exim's main log and appends each account's lines to HOME/logs/mail.log, HOME
and the accounts coming from the accounts file (lines "NAME HOME", re-read when
it changes).  A line belongs to an account when:

* it is the arrival (``ID <= SENDER [R=REF] U=NAME P=...``) of a message the
  account handed in: its id is remembered, and every later line that starts
  with that id goes to the same account, until the message is ``Completed``.
  A bounce Exim makes for such a message (``<= <> R=ID U=Debian-exim``) is
  the account's too;
* it has no message id (or an id not remembered) and starts with ``U=NAME``:
  Exim's rejections of the account's commands;
* it is ``SMTP call from NAME dropped: ...`` or one of the few other lines
  that name a local SMTP caller right after ``from``;
* it is ``SMTP syntax|protocol error in "COMMAND" U=NAME ...``: the command
  (chosen by the caller) comes before the ``U=`` field, so every ``" U=``
  field of the line must name the same account and no ``" H=`` field (a remote
  caller) may appear, else the line is nobody's.

Fields are taken where Exim puts them, never searched for in the text a caller
chooses (addresses, commands, headers): an account cannot get its lines into
another account's log.  root, Debian-exim and names missing from the accounts
file never get a log.

The log is opened, appended to and closed once per batch of lines, so that
logrotate may rename or truncate it: HOME/logs must be a directory of root's,
not group/world-writable, and is opened without following a symlink, like
mail.log itself; a new mail.log is root:GROUP 0640, GROUP being the account's
primary group (an account whose user is gone is skipped).

The position in the main log (its inode and the offset of the first byte not
yet processed) and the ids of the accounts' messages in flight are saved in
the state file after each batch.  At start the program resumes from the saved
position if the main log still has that inode and is long enough, or finishes
mainlog.1 first if the main log was rotated meanwhile (Debian's logrotate
renames mainlog to mainlog.1), or starts at the beginning of a main log that
was truncated; otherwise it starts at the end of the main log (at its
beginning with --from-start): old history is not copied.  While running it
notices rotation (a new inode, or a shorter file), finishes the old file and
goes on at the start of the new one.  Only complete lines are processed.

--once processes what is there and exits (0; 1 if the main log could not be
read); without it the main log is polled every --interval seconds until SIGTERM
or SIGINT, after which the state is saved and the program exits 0.  Usage
errors exit 2.  A lock next to the state file keeps two copies from working at
once (--once then exits 0 without doing anything).
--group-of NAME=GID (for tests) gives a new log of NAME the group GID instead
of NAME's primary group.

Its helpers (webarch_progs) and paths (webarch_paths) are in /usr/local/lib/webarch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pwd
import re
import stat
import sys
from collections import OrderedDict
from dataclasses import dataclass

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_paths as paths  # noqa: E402
import webarch_progs as progs  # noqa: E402

MAINLOG = "/var/log/exim4/mainlog"
ACCOUNTS = paths.MAIL_ACCOUNTS_PATH
STATE = "/var/lib/webarch-mail-log/state"
#: Seconds between two polls of the main log.
INTERVAL = 0.5
#: The name of an account's mail log in HOME/logs.
LOG_NAME = "mail.log"
#: The most message ids remembered (the oldest are forgotten first).
MAX_IDS = 100_000
#: Bytes of the main log read and processed as one batch.
CHUNK = 4 * 1024 * 1024
#: A longer incomplete line is dropped (up to its newline) instead of kept in memory.
MAX_LINE = 256 * 1024
#: Seconds between two identical complaints on stderr.
WARN_INTERVAL = 300.0

#: A message id: 4.96 and older (6-6-2), 4.97 and newer (6-11-4).
ID = rb"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})"
ID_RE = re.compile(ID)
#: Date and time (optionally milliseconds, time zone and [pid]), then maybe a message id.
HEAD_RE = re.compile(
    rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{3})?(?: [-+]\d{4})?(?: \[\d+\])? (?:(" + ID + rb") )?"
)
#: An arrival of a local message: the sender (quoted local parts may hold spaces:
#: the atomic group keeps its end where it is), an optional reference (bounces),
#: then the caller's login and the protocol.  A remote arrival has H= before U=.
RECEIVED_RE = re.compile(
    rb'[<(]= (?>(?:"(?:[^"\\]|\\.)*"|[^ "])+)(?: R=(' + ID + rb"))? U=(\S+) P="
)
#: The local caller named right after "from" (a remote one is "[IP]", "NAME [IP]"...).
FROM_RE = re.compile(
    rb"(?:SMTP call"
    rb"|SMTP command timeout on(?: TLS)? connection"
    rb"|SMTP data timeout \(message abandoned\) on connection"
    rb"|unexpected disconnection while reading SMTP command"
    rb"|no MAIL in (?:TFO\*? )?SMTP connection"
    rb") from ([^ \[(]+)(?:$| (?![\[(]))"
)
SYNPROT = (b'SMTP syntax error in "', b'SMTP protocol error in "')
QUOTED_U_RE = re.compile(rb'" U=(\S*)')


def new_warner() -> progs.Warner:
    """Complaints on stderr (the journal), each kind at most once per WARN_INTERVAL."""
    return progs.Warner("webarch-mail-log", WARN_INTERVAL)


class Accounts:
    """The accounts file, re-read when it changes (its device, inode, mtime or size)."""

    def __init__(self, path: str, warner: progs.Warner) -> None:
        self.path = path
        #: NAME (as in the log) -> HOME.
        self.entries: dict[bytes, str] = {}
        self._file = progs.WatchedFile(path)
        self._warner = warner

    def refresh(self) -> None:
        """Re-read the file if it changed; a missing file means no accounts."""
        try:
            data = self._file.read_changed()
        except OSError as exc:
            self._warner.warn(f"cannot read {self.path}: {exc}", "accounts")
            return  # keep the accounts we have
        if data is None:
            return
        if self._file.missing:
            self._warner.warn(f"{self.path} is missing: no account gets lines", "accounts")
        self.entries = progs.parse_mail_accounts(data)


class Router:
    """Tells which account a line of the main log belongs to."""

    def __init__(self, accounts: Accounts, max_ids: int = MAX_IDS) -> None:
        self.accounts = accounts
        #: Message id -> account, oldest first.
        self.ids: OrderedDict[bytes, bytes] = OrderedDict()
        self.max_ids = max_ids

    def route(self, line: bytes) -> bytes | None:
        """The name of the account ``line`` (without its newline) belongs to, or None."""
        head = HEAD_RE.match(line)
        if head is None:
            return None
        pos = head.end()
        mid = head.group(1)
        if mid is not None:
            name = self.ids.get(mid)
            if name is not None:
                if line.startswith(b"Completed", pos) and line[pos + 9 : pos + 10] in (b"", b" "):
                    del self.ids[mid]
                return name
            if line.startswith(b"= ", pos + 1) and line[pos : pos + 1] in (b"<", b"("):
                return self._received(mid, line, pos)
        if line.startswith(b"U=", pos):  # host_and_ident() of a local caller, first thing
            end = line.find(b" ", pos)
            return self._known(line[pos + 2 : end if end >= 0 else len(line)])
        if mid is not None:
            return None
        if line.startswith(SYNPROT, pos):
            return self._synprot(line, pos)
        caller = FROM_RE.match(line, pos)
        return self._known(caller.group(1)) if caller else None

    def remember(self, mid: bytes, name: bytes) -> None:
        """Send the later lines of message ``mid`` to account ``name``."""
        self.ids[mid] = name
        self.ids.move_to_end(mid)
        while len(self.ids) > self.max_ids:
            self.ids.popitem(last=False)

    def _known(self, name: bytes) -> bytes | None:
        """``name`` if it is an account's."""
        return name if name in self.accounts.entries else None

    def _received(self, mid: bytes, line: bytes, pos: int) -> bytes | None:
        """The account of an arrival (remembering its id), or None."""
        arrival = RECEIVED_RE.match(line, pos)
        if arrival is None:
            return None
        ref, ident = arrival.group(1), arrival.group(2)
        name = self._known(ident)
        if name is None and ref is not None:
            name = self.ids.get(ref)  # a bounce of an account's message
        if name is not None:
            self.remember(mid, name)
        return name

    def _synprot(self, line: bytes, pos: int) -> bytes | None:
        """The account of a syntax or protocol error line, if every U= field agrees."""
        if b'" H=' in line:
            return None  # a remote caller, whatever its command says
        names = set(QUOTED_U_RE.findall(line, pos))
        return self._known(names.pop()) if len(names) == 1 else None


def append_log(home: str, gid: int, data: bytes) -> None:
    """Append ``data`` to HOME/logs/mail.log (a new one is root:gid 0640)."""
    logs_fd = progs.open_logs_dir(home)
    try:
        fd, _ = progs.open_log(LOG_NAME, logs_fd, lambda: (gid, 0o640))
    finally:
        os.close(logs_fd)
    try:
        progs.write_all(fd, data)
    finally:
        os.close(fd)


class Writer:
    """Appends batches of lines to the accounts' logs."""

    def __init__(self, accounts: Accounts, groups: dict[str, int], warner: progs.Warner) -> None:
        self._accounts = accounts
        self._groups = groups
        self._warner = warner

    def group_of(self, name: str) -> int | None:
        """The group of ``name``'s new log: its primary group; None if the user is gone or root."""
        if name in self._groups:
            return self._groups[name]
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            return None
        return user.pw_gid if user.pw_uid != 0 else None

    def write(self, batch: dict[bytes, list[bytes]]) -> None:
        """Append each account's lines (without newlines) to its log."""
        for key, lines in batch.items():
            home = self._accounts.entries.get(key)
            if home is None:
                continue
            name = key.decode("ascii")
            gid = self.group_of(name)
            if gid is None:
                self._warner.warn(f"no user {name}: its mail lines are dropped", f"user {name}")
                continue
            lines.append(b"")
            try:
                append_log(home, gid, b"\n".join(lines))
            except OSError as exc:
                self._warner.warn(
                    f"cannot write {home}/logs/{LOG_NAME}, lines dropped: {exc}", f"write {name}"
                )


@dataclass
class State:
    """What the state file holds."""

    inode: int
    offset: int
    ids: list[tuple[bytes, bytes]]


def load_state(path: str, warner: progs.Warner) -> State | None:
    """The saved state, or None if there is none (or it is unusable)."""
    try:
        with open(path, "rb") as stream:
            data = json.loads(stream.read())
        inode, offset = data["inode"], data["offset"]
        if not all(type(v) is int and v >= 0 for v in (inode, offset)):
            raise ValueError("inode and offset must be non-negative integers")
        ids = [
            (mid.encode("ascii"), name.encode("ascii"))
            for mid, name in data.get("ids", [])
            if ID_RE.fullmatch(mid.encode("ascii")) and progs.is_account_name(name)
        ]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeError) as exc:
        warner.warn(f"ignoring unusable state file {path}: {exc!r}", "state")
        return None
    return State(inode, offset, ids)


def save_state(path: str, state: State) -> None:
    """Replace the state file atomically."""
    data = json.dumps(
        {
            "inode": state.inode,
            "offset": state.offset,
            "ids": [[mid.decode(), name.decode()] for mid, name in state.ids],
        },
        separators=(",", ":"),
    ).encode()
    progs.replace_file(path, data + b"\n")


class Follower:
    """Reads the main log from the saved position on, across rotations."""

    def __init__(self, args: argparse.Namespace, stop: progs.Stop, warner: progs.Warner) -> None:
        self.mainlog: str = args.mainlog
        self.state_path: str = args.state
        self.from_start: bool = args.from_start
        self.stop = stop
        self.warner = warner
        self.accounts = Accounts(args.accounts, warner)
        self.router = Router(self.accounts)
        self.writer = Writer(self.accounts, args.group_of, warner)
        self.fd: int | None = None
        self.inode = 0
        self.read_pos = 0  # where the next read starts
        self.partial = b""  # the incomplete last line read
        self.skipping = False  # dropping an overlong line up to its newline
        self.lines = 0  # lines processed
        self._saved: tuple[int, int] | None = None
        self._ids_changed = False

    # Positioning

    def start(self) -> None:
        """Open the main log (or mainlog.1) where processing should go on, and save that."""
        self.accounts.refresh()
        self._position(load_state(self.state_path, self.warner))
        self.save()

    def _position(self, state: State | None) -> None:
        """Open the file to read and set the offset to read from, as ``state`` says."""
        if state is not None:
            for mid, name in state.ids:
                self.router.remember(mid, name)
        current = self._open(self.mainlog)
        if state is not None:
            if current is not None and current[1].st_ino == state.inode:
                size = current[1].st_size
                self._use(current, state.offset if state.offset <= size else 0)  # 0: truncated
                return
            rotated = self._open(f"{self.mainlog}.1")
            if rotated is not None:
                if rotated[1].st_ino == state.inode and state.offset <= rotated[1].st_size:
                    self._use(rotated, state.offset)  # poll() goes on with the new main log
                    if current is not None:
                        os.close(current[0])
                    return
                os.close(rotated[0])
            if current is not None:
                self.warner.warn("saved position not found: starting at the end", "start")
        if current is None:
            self.warner.warn(f"no {self.mainlog} yet: will read it from its start", "start")
            return
        self._use(current, 0 if self.from_start else current[1].st_size)

    def _open(self, path: str) -> tuple[int, os.stat_result] | None:
        """``path`` opened for reading with its fstat(), or None if it cannot be opened."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.warner.warn(f"cannot open {path}: {exc}", f"open {path}")
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self.warner.warn(f"{path} is not a regular file", f"open {path}")
            return None
        return fd, st

    def _use(self, opened: tuple[int, os.stat_result], offset: int) -> None:
        """Read ``opened`` from ``offset`` on (closing the file read so far)."""
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.inode = opened[0], opened[1].st_ino
        self.read_pos, self.partial, self.skipping = offset, b"", False

    # Reading

    def poll(self) -> None:
        """Process what was added to the main log, following a rotation."""
        self.accounts.refresh()
        self._drain()
        if self.stop.requested:
            return
        try:
            st = os.stat(self.mainlog)
        except OSError:
            return  # rotated and not made again yet: keep the file we have
        if self.fd is None or st.st_ino != self.inode:
            opened = self._open(self.mainlog)
            if opened is None:
                return
            self._drain()  # the rest of the old file
            if self.stop.requested:
                os.close(opened[0])
                return
            self._finish_partial()
            self._use(opened, 0)
            self.save()
            self._drain()
        elif self.fd is not None and os.fstat(self.fd).st_size < self.read_pos:
            self.read_pos, self.partial, self.skipping = 0, b"", False  # truncated: start again
            self.save()
            self._drain()

    def _drain(self) -> None:
        """Process the current file up to its end, a batch per CHUNK."""
        while self.fd is not None and not self.stop.requested:
            data = os.pread(self.fd, CHUNK, self.read_pos)
            if not data:
                return
            self.read_pos += len(data)
            self._consume(data)

    def _consume(self, data: bytes) -> None:
        """Process the complete lines of ``partial + data``; keep the incomplete rest."""
        if self.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return
            data, self.skipping = data[newline + 1 :], False
        buf = self.partial + data if self.partial else data
        end = buf.rfind(b"\n")
        self.partial = buf[end + 1 :]
        if len(self.partial) > MAX_LINE:
            self.partial, self.skipping = b"", True
            self.warner.warn(f"dropped a line longer than {MAX_LINE} bytes", "long")
        if end >= 0:
            self._process(buf[:end].split(b"\n"))

    def _finish_partial(self) -> None:
        """Process the incomplete last line of a file that will not grow any more."""
        if self.partial:
            line, self.partial = self.partial, b""
            self._process([line])
        self.skipping = False

    def _process(self, lines: list[bytes]) -> None:
        """Route ``lines``, append them to the accounts' logs, save the state."""
        batch: dict[bytes, list[bytes]] = {}
        route = self.router.route
        for line in lines:
            name = route(line)
            if name is not None:
                if name in batch:
                    batch[name].append(line)
                else:
                    batch[name] = [line]
        # Ids are only remembered or forgotten by lines that go to an account.
        self._ids_changed = self._ids_changed or bool(batch)
        self.lines += len(lines)
        self.writer.write(batch)
        self.save()

    # State

    def position(self) -> tuple[int, int]:
        """The inode and offset of the first byte not yet processed."""
        return self.inode, self.read_pos - len(self.partial)

    def save(self) -> None:
        """Save the state if it changed (there is none to save before a main log was opened)."""
        if self.fd is None:
            return
        position = self.position()
        if position == self._saved and not self._ids_changed:
            return
        state = State(position[0], position[1], list(self.router.ids.items()))
        try:
            save_state(self.state_path, state)
        except OSError as exc:
            self.warner.warn(f"cannot save {self.state_path}: {exc}", "save")
            return
        self._saved, self._ids_changed = position, False

    def close(self) -> None:
        """Save the state and close the main log."""
        self.save()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def group_entry(text: str) -> tuple[str, int]:
    """An argparse type: NAME=GID."""
    name, sep, gid = text.partition("=")
    if not sep or not progs.is_account_name(name) or not gid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=GID, got {text!r}")
    return name, int(gid)


def interval(text: str) -> float:
    """An argparse type: seconds between polls, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {text!r}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options of ``argv`` (without the program name); exits 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="webarch-mail-log",
        description="Copy each hosting account's lines of Exim's main log into its "
        "HOME/logs/mail.log.",
    )
    parser.add_argument("--mainlog", default=MAINLOG, help=f"Exim's main log ({MAINLOG})")
    parser.add_argument("--accounts", default=ACCOUNTS, help=f"NAME HOME lines ({ACCOUNTS})")
    parser.add_argument("--state", default=STATE, help=f"progress file ({STATE})")
    parser.add_argument(
        "--interval", type=interval, default=INTERVAL, help=f"seconds between polls ({INTERVAL})"
    )
    parser.add_argument("--once", action="store_true", help="process what is there, then exit")
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="without a saved position, start at the beginning of the main log, not its end",
    )
    parser.add_argument(
        "--group-of",
        type=group_entry,
        action="append",
        default=[],
        metavar="NAME=GID",
        help="group of NAME's new log instead of NAME's primary group (for tests)",
    )
    args = parser.parse_args(argv)
    for option in ("mainlog", "accounts", "state"):
        value = getattr(args, option)
        if not value or "\0" in value:
            parser.error(f"--{option.replace('_', '-')} must be a path")
    if os.path.isdir(args.state):
        parser.error(f"--state {args.state} is a directory")
    args.group_of = dict(args.group_of)
    return args


def run(args: argparse.Namespace, stop: progs.Stop, warner: progs.Warner) -> int:
    """Follow the main log as ``args`` say; 0 when done or stopped."""
    with progs.locked(f"{args.state}.lock", wait=not args.once) as got_lock:
        if not got_lock:
            warner.warn("another webarch-mail-log is running: nothing to do", "lock")
            return 0
        follower = Follower(args, stop, warner)
        status = 0
        try:
            follower.start()
            while True:
                try:
                    follower.poll()
                except OSError as exc:  # keep going: the next poll may succeed
                    warner.warn(f"error reading {args.mainlog}: {exc}", "poll")
                    status = 1
                if args.once or stop.requested:
                    break
                status = 0
                stop.wait(args.interval)
        finally:
            follower.close()
    return status


def main(argv: list[str] | None = None) -> int:
    """Run with the command line ``argv``; 2 on a usage error, 1 on a fatal error."""
    args = parse_args((sys.argv if argv is None else argv)[1:])
    warner = new_warner()
    stop = progs.Stop()
    stop.install()
    try:
        return run(args, stop, warner)
    except OSError as exc:
        sys.stderr.write(f"webarch-mail-log: {exc}\n")
        return 1
    finally:
        stop.close()


if __name__ == "__main__":
    sys.exit(main())
