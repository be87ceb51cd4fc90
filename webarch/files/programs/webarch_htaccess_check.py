#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""Tell what of a site's .htaccess files this server ignores or refuses.

Usage: webarch-htaccess-check PATH...
       webarch-htaccess-check --report

With PATHs (anyone, in an account's chroot too): each PATH is a .htaccess file
(any name), or a directory searched for files named .htaccess; symlinks met
in the search are never followed, nor other file systems entered.  One line
per line of a file that will not work as written:

    PATH:LINE: DIRECTIVE is ignored here: WHY
    PATH:LINE: Options +WORD is refused here: WHY

"ignored": Apache skips the line with a warning, the rest of the file works.
"refused": Apache answers 500 for every request in that directory.  WHY says
what to write instead.  Exit status: 0 nothing found, 1 ignored lines only,
2 at least one refused line, 3 a usage error or a PATH that could not be read
(said on stderr; the other PATHs are still checked).

--report (root; run by webarch-htaccess-report.service, hourly and when
webarch-log-split sees Apache ignore a .htaccess line): searches every
account's sites (HOME/sites, the accounts of the log map; of the home base,
members of the accounts' group, when the map cannot be read) the same way,
and appends the findings of each .htaccess file that is new or changed since
the last report (its inode, size and mtime are remembered in a root-only JSON
file) to that account's HOME/logs/apache-error.log, one line each:

    webarch-htaccess [YYYY-mm-dd HH:MM:SS] PATH:LINE: DIRECTIVE is ignored here: WHY

The account's log is opened as webarch-log-split opens it (no symlink at
HOME, HOME/logs or the log; HOME/logs root's and not group/world-writable).
A file is read only if it is a regular file that has a single link or is owned
by the account (HOME/sites' owner): never a hard link to someone else's file.
At most 1 MiB of a file is read, 1,000,000 directory entries looked at per
account (or per PATH) and 40 levels searched.  Prints one summary line (the
accounts, files scanned, files reported, seconds); exit status 0, or 1 when
the memo could not be saved (3 on a usage error or when not run as root).

The modules Apache loads are the *.load files of /etc/apache2/mods-enabled
(plus the built-in ones) where that directory is readable, else the list of
webarch_htaccess.  The policy and the checker are webarch_htaccess's, in
/usr/local/lib/webarch with webarch_progs and webarch_paths.

Environment (for tests): WEBARCH_LOG_MAP and WEBARCH_LOG_HOME_BASE (as for
webarch-log-split), WEBARCH_HTACCESS_MEMO (the memo file),
WEBARCH_HTACCESS_MODS_DIR (mods-enabled), WEBARCH_HTACCESS_MAX_ENTRIES.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_htaccess as htaccess  # noqa: E402
import webarch_paths as paths  # noqa: E402
import webarch_progs as progs  # noqa: E402

PROGRAM = "webarch-htaccess-check"
#: The first field of the report's lines in an account's error log.
TAG = "webarch-htaccess"
HTACCESS = ".htaccess"
#: The account log the report appends to (webarch-log-split's error log).
ACCOUNT_LOG = "apache-error.log"
MODS_DIR = f"{paths.APACHE_DIR}/mods-enabled"
#: Compiled into Debian's apache2 (apache2 -l): never in mods-enabled.
BUILTIN_MODULES = frozenset({"core", "so", "watchdog", "http", "log_config", "logio", "version",
                             "unixd"})  # fmt: skip

#: The most bytes of one .htaccess file read (Apache reads more; no site needs it).
MAX_READ = 1 << 20
#: The most directory entries looked at per account (--report) or per PATH.
MAX_ENTRIES = 1_000_000
#: The deepest directory searched, in levels below the top.
MAX_DEPTH = 40
#: The most findings written per file, and the longest line written.
MAX_FINDINGS = 50
MAX_LINE = 2048

EXIT_IGNORED, EXIT_REFUSED, EXIT_ERROR = 1, 2, 3
DIR_FLAGS = progs.DIR_FLAGS | os.O_NOFOLLOW | os.O_NONBLOCK
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Control characters (newlines above all) are written escaped.
ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def loaded_modules(mods_dir: str) -> frozenset[str]:
    """The modules Apache loads: mods-enabled's *.load and the built-ins, else the policy's list."""
    try:
        names = {n[: -len(".load")] for n in os.listdir(mods_dir) if n.endswith(".load")}
    except OSError:
        names = set()
    return frozenset(names) | BUILTIN_MODULES if names else htaccess.LOADED_MODULES


def clean(text: str) -> str:
    """``text`` on one line: control characters escaped, at most MAX_LINE characters."""
    text = text.translate(ESCAPES)
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def findings_text(findings: list[htaccess.Finding], path: str) -> list[str]:
    """One cleaned line per finding (at most MAX_FINDINGS, then how many more)."""
    lines = [clean(f.text(path)) for f in findings[:MAX_FINDINGS]]
    if len(findings) > MAX_FINDINGS:
        lines.append(clean(f"{path}: {len(findings) - MAX_FINDINGS} more lines not shown"))
    return lines


def exit_status(findings: list[htaccess.Finding]) -> int:
    """2 if any line is refused, 1 if some are ignored, else 0."""
    if any(f.verdict == "refused" for f in findings):
        return EXIT_REFUSED
    return EXIT_IGNORED if findings else 0


def read_text(fd: int) -> str:
    """At most MAX_READ bytes of the open file ``fd``, as text."""
    chunks, left = [], MAX_READ
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@dataclass
class Budget:
    """How many directory entries a search may still look at."""

    left: int
    exhausted: bool = False

    def spend(self, n: int) -> bool:
        """Count ``n`` entries; False once the budget is spent."""
        self.left -= n
        if self.left < 0:
            self.exhausted = True
        return not self.exhausted


def _scan(fd: int, budget: Budget) -> tuple[list[str], bool]:
    """The subdirectories of ``fd`` (no symlinks) and whether it holds a .htaccess file."""
    subdirs, found, count = [], False, 0
    with os.scandir(fd) as entries:
        for entry in entries:
            count += 1
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            elif entry.name == HTACCESS and entry.is_file(follow_symlinks=False):
                found = True
    budget.spend(count)
    subdirs.sort()
    return subdirs, found


def walk(fd: int, path: str, budget: Budget, depth: int = 0) -> Iterator[tuple[str, int]]:
    """(directory path, its descriptor) of each directory below ``fd`` that holds a .htaccess.

    Symlinks are never followed, other file systems never entered; the
    descriptor is only valid until the next item.
    """
    try:
        subdirs, found = _scan(fd, budget)
        dev = os.fstat(fd).st_dev
    except OSError:
        return
    if found:
        yield path, fd
    if depth >= MAX_DEPTH:
        return
    for name in subdirs:
        if budget.exhausted:
            return
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue
        try:
            if os.fstat(child).st_dev == dev:
                yield from walk(child, f"{path}/{name}", budget, depth + 1)
        finally:
            os.close(child)


# --------------------------------------------------------------------------
# webarch-htaccess-check PATH...
# --------------------------------------------------------------------------


def check_fd(fd: int, path: str, modules: frozenset[str]) -> list[htaccess.Finding]:
    """Check the open file ``fd``, printing its findings as ``path``."""
    findings = htaccess.check(read_text(fd), modules)
    for line in findings_text(findings, path):
        print(line)
    return findings


def check_path(path: str, modules: frozenset[str]) -> tuple[list[htaccess.Finding], bool]:
    """Check a PATH argument: its findings, and whether all of it could be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        sys.stderr.write(f"{PROGRAM}: {path}: {exc.strerror}\n")
        return [], False
    findings: list[htaccess.Finding] = []
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return check_fd(fd, path, modules), True
        if not stat.S_ISDIR(mode):
            sys.stderr.write(f"{PROGRAM}: {path}: not a file or directory\n")
            return [], False
        budget = Budget(max_entries())
        top = path.rstrip("/") or "/"
        for directory, dir_fd in walk(fd, top if top != "/" else "", budget):
            name = f"{directory}/{HTACCESS}"
            try:
                file_fd = os.open(HTACCESS, FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                sys.stderr.write(f"{PROGRAM}: {name}: {exc.strerror}\n")
                continue
            try:
                findings += check_fd(file_fd, name, modules)
            finally:
                os.close(file_fd)
        if budget.exhausted:
            sys.stderr.write(f"{PROGRAM}: {path}: stopped after {max_entries()} entries\n")
            return findings, False
        return findings, True
    except OSError as exc:
        sys.stderr.write(f"{PROGRAM}: {path}: {exc.strerror}\n")
        return findings, False
    finally:
        os.close(fd)


def check_paths(targets: list[str]) -> int:
    """Check each PATH, print the findings; the exit status."""
    modules = loaded_modules(os.environ.get("WEBARCH_HTACCESS_MODS_DIR", MODS_DIR))
    status = 0
    complete = True
    for target in targets:
        findings, read = check_path(target, modules)
        status = max(status, exit_status(findings))
        complete = complete and read
    return status if complete else EXIT_ERROR


# --------------------------------------------------------------------------
# webarch-htaccess-check --report
# --------------------------------------------------------------------------


def max_entries() -> int:
    """The search budget (WEBARCH_HTACCESS_MAX_ENTRIES for tests)."""
    try:
        return int(os.environ.get("WEBARCH_HTACCESS_MAX_ENTRIES", MAX_ENTRIES))
    except ValueError:
        return MAX_ENTRIES


@dataclass(frozen=True)
class Config:
    """Where the report finds the accounts, their homes and its memo."""

    map_path: str = paths.LOG_MAP_PATH
    home_base: str = paths.HOME_BASE
    memo_path: str = paths.HTACCESS_REPORT_MEMO
    mods_dir: str = MODS_DIR

    @classmethod
    def from_env(cls) -> Config:
        """The configuration, with the environment's overrides."""
        env = os.environ.get
        return cls(
            map_path=env("WEBARCH_LOG_MAP", paths.LOG_MAP_PATH),
            home_base=env("WEBARCH_LOG_HOME_BASE", paths.HOME_BASE),
            memo_path=env("WEBARCH_HTACCESS_MEMO", paths.HTACCESS_REPORT_MEMO),
            mods_dir=env("WEBARCH_HTACCESS_MODS_DIR", MODS_DIR),
        )


def accounts_of_map(data: bytes) -> list[str]:
    """The accounts of the log map's lines (vhost account)."""
    return sorted(
        {a.decode("ascii") for _, a in progs.parse_pairs(data) if progs.is_account_name(a)}
    )


def accounts(config: Config) -> list[str]:
    """The accounts whose sites are searched: the log map's, else the home base's members
    of the accounts' group."""
    try:
        with open(config.map_path, "rb") as file:
            return accounts_of_map(file.read())
    except OSError as exc:
        sys.stderr.write(f"{PROGRAM}: {config.map_path}: {exc.strerror}: using the homes\n")
    try:
        members = set(grp.getgrnam(paths.ACCOUNT_GROUP).gr_mem)
        names = os.listdir(config.home_base)
    except (KeyError, OSError):
        return []
    return sorted(n for n in names if n in members and progs.is_account_name(n))


def account_owner(account: str) -> tuple[int, int]:
    """Group and mode of a new account log, as webarch-log-split gives them."""
    try:
        return grp.getgrnam(account).gr_gid, 0o640
    except KeyError:
        return 0, 0o600


def load_memo(path: str) -> dict[str, list[int]]:
    """The memo: PATH -> [mtime_ns, size, inode]; empty when missing or unreadable."""
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.get("files", {}).items() if isinstance(v, list)}


def save_memo(path: str, memo: dict[str, list[int]]) -> None:
    """Replace the memo file (root 0600)."""
    data = json.dumps({"files": memo}, sort_keys=True, separators=(",", ":")).encode()
    progs.replace_file(path, data + b"\n")


@dataclass
class Report:
    """One run of the report: what was seen, what was written."""

    config: Config
    modules: frozenset[str]
    old: dict[str, list[int]]
    memo: dict[str, list[int]] = field(default_factory=dict)
    scanned: int = 0
    reported: int = 0
    lines: int = 0
    problems: list[str] = field(default_factory=list)

    def account(self, account: str) -> None:
        """Search ``account``'s sites; append the new findings to its error log."""
        home = f"{self.config.home_base}/{account}"
        try:
            sites_fd = open_sites(self.config.home_base, account)
            uid = os.fstat(sites_fd).st_uid  # the account's: sites is ACCOUNT:www-data
        except FileNotFoundError:
            return  # no home or no sites yet
        except OSError as exc:
            self.problems.append(f"{account}: {home}/sites: {exc.strerror}")
            return
        pending: list[tuple[str, list[int], list[str]]] = []
        budget = Budget(max_entries())
        try:
            for directory, dir_fd in walk(sites_fd, f"{home}/sites", budget):
                self._file(directory, dir_fd, uid, pending)
        finally:
            os.close(sites_fd)
        if budget.exhausted:
            self.problems.append(f"{account}: stopped after {max_entries()} entries")
            prefix = f"{home}/sites/"
            self.memo.update((k, v) for k, v in self.old.items() if k.startswith(prefix))
        if pending:
            self._write(account, home, pending)

    def _file(self, directory: str, dir_fd: int, uid: int, pending: list) -> None:
        """Check one .htaccess if it is new or changed; queue its lines for the account's log."""
        path = f"{directory}/{HTACCESS}"
        try:
            fd = os.open(HTACCESS, FILE_FLAGS, dir_fd=dir_fd)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if not readable(st, uid):
                return
            self.scanned += 1
            signature = [st.st_mtime_ns, st.st_size, st.st_ino]
            if self.old.get(path) == signature:
                self.memo[path] = signature
                return
            findings = htaccess.check(read_text(fd), self.modules)
        except OSError:
            return
        finally:
            os.close(fd)
        if not findings:
            self.memo[path] = signature
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        lines = [f"{TAG} [{stamp}] {text}" for text in findings_text(findings, path)]
        pending.append((path, signature, lines))

    def _write(self, account: str, home: str, pending: list) -> None:
        """Append the queued lines to the account's log (a file's lines in one write)."""
        try:
            logs_fd = progs.open_logs_dir(home)
            try:
                fd, _ = progs.open_log(ACCOUNT_LOG, logs_fd, lambda: account_owner(account))
            finally:
                os.close(logs_fd)
        except OSError as exc:
            self.problems.append(f"{account}: {home}/logs/{ACCOUNT_LOG}: {exc.strerror}")
            return  # not remembered: reported once the log can be written
        try:
            for path, signature, lines in pending:
                data = "".join(f"{line}\n" for line in lines).encode("utf-8", "backslashreplace")
                progs.write_all(fd, data)
                self.memo[path] = signature
                self.reported += 1
                self.lines += len(lines)
        except OSError as exc:
            self.problems.append(f"{account}: {home}/logs/{ACCOUNT_LOG}: {exc.strerror}")
        finally:
            os.close(fd)


def readable(st: os.stat_result, uid: int) -> bool:
    """Whether the report may read a file: a regular file with one link, or the account's own
    (a hard link to another owner's file, /etc/shadow say, never is)."""
    return stat.S_ISREG(st.st_mode) and (st.st_nlink == 1 or st.st_uid == uid != 0)


def open_sites(home_base: str, account: str) -> int:
    """HOME/sites, opened without following a symlink at HOME or sites."""
    base = os.open(home_base, progs.DIR_FLAGS)
    try:
        home = os.open(account, DIR_FLAGS, dir_fd=base)
    finally:
        os.close(base)
    try:
        return os.open("sites", DIR_FLAGS, dir_fd=home)
    finally:
        os.close(home)


def report() -> int:
    """Report the new and changed .htaccess files of every account; the exit status."""
    if os.geteuid() != 0:
        sys.stderr.write(f"{PROGRAM}: --report needs root\n")
        return EXIT_ERROR
    began = time.monotonic()
    config = Config.from_env()
    with progs.locked(f"{config.memo_path}.lock", wait=False) as mine:
        if not mine:
            print(f"{PROGRAM}: another report is running")
            return 0
        run = Report(config, loaded_modules(config.mods_dir), load_memo(config.memo_path))
        names = accounts(config)
        for account in names:
            run.account(account)
        status = 0
        try:
            save_memo(config.memo_path, run.memo)
        except OSError as exc:
            run.problems.append(f"{config.memo_path}: {exc.strerror}")
            status = 1
    for problem in run.problems:
        sys.stderr.write(f"{PROGRAM}: {problem}\n")
    print(
        f"{PROGRAM}: {len(names)} accounts, {run.scanned} .htaccess files scanned, "
        f"{run.reported} reported ({run.lines} line{'' if run.lines == 1 else 's'}), "
        f"{time.monotonic() - began:.2f} s"
    )
    return status


def main(argv: list[str] | None = None) -> int:
    """Run with the command line ``argv``."""
    args = (sys.argv if argv is None else argv)[1:]
    if args in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if args == ["--report"]:
        return report()
    targets = args[1:] if args[:1] == ["--"] else args
    if not targets or (targets is args and any(a.startswith("-") for a in args)):
        sys.stderr.write(f"usage: {PROGRAM} PATH...\n       {PROGRAM} --report\n")
        return EXIT_ERROR
    try:
        return check_paths(targets)
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
