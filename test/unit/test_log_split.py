"""Unit tests of webarch-log-split, the per-account splitter of Apache's piped logs.

The real program (webarch/files/programs/webarch_log_split.py) runs as a
subprocess with its map, home base and fallback directory in a temporary tree;
lines are fed through its stdin.  Its pure parts are tested in-process.  Being
run as root, the tests check file owners too.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import webarch_log_split
import webarch_paths as paths
from unit.program_helpers import program, program_env

SCRIPT = program("webarch_log_split")
MAX_LINE = 16 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


@dataclass
class Tree:
    """A temporary home base, fallback directory and map file."""

    home: Path
    fallback: Path
    map: Path
    #: The command that starts the .htaccess report: none unless a test sets one.
    report_command: str = ""

    def env(self) -> dict[str, str]:
        """The environment that points the script at this tree."""
        return program_env(
            WEBARCH_LOG_MAP=str(self.map),
            WEBARCH_LOG_HOME_BASE=str(self.home),
            WEBARCH_LOG_FALLBACK_DIR=str(self.fallback),
            WEBARCH_LOG_REPORT_COMMAND=self.report_command,
        )

    def add_account(self, account: str) -> Path:
        """Create ACCOUNT's home and root:root 0750 logs directory; return the latter."""
        logs = self.home / account / "logs"
        logs.mkdir(parents=True)
        os.chown(logs, 0, 0)
        logs.chmod(0o750)
        return logs

    def log(self, account: str, kind: str = "access") -> Path:
        """ACCOUNT's log of ``kind``."""
        return self.home / account / "logs" / f"apache-{kind}.log"

    def other(self, kind: str = "access") -> Path:
        """The fallback log of ``kind``."""
        return self.fallback / f"webarch-other-{kind}.log"

    def write_map(self, text: str) -> None:
        """Replace the map file's contents."""
        self.map.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A tree with accounts alice and bob and a map of their sites."""
    t = Tree(home=tmp_path / "home", fallback=tmp_path / "fallback", map=tmp_path / "log-map")
    t.fallback.mkdir()
    t.add_account("alice")
    t.add_account("bob")
    t.write_map(
        "# vhost account\n\nalice.example alice\nwww.alice.example alice  # second site\n"
        "bob.example bob\nevil.example ../etc\nroot.example Root\n"
    )
    return t


def run(tree: Tree, data: bytes, kind: str = "access") -> subprocess.CompletedProcess:
    """Run the script over ``data`` until EOF; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), kind],
        input=data,
        env=tree.env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def start(tree: Tree, kind: str = "access") -> subprocess.Popen:
    """Start the script, its stdin a pipe to write to."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), kind],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tree.env(),
    )


def feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write ``data`` to the running script."""
    assert proc.stdin
    proc.stdin.write(data)
    proc.stdin.flush()


def finish(proc: subprocess.Popen) -> None:
    """Close the script's stdin and check it exits 0."""
    assert proc.stdin
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""


def wait_for(path: Path, data: bytes, timeout: float = 10.0) -> None:
    """Wait until ``path`` contains ``data``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and data in path.read_bytes():
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never got {data!r}")


def read(path: Path) -> bytes:
    """The contents of ``path`` (empty if missing)."""
    return path.read_bytes() if path.exists() else b""


def access(vhost: str, n: int, path: str = "/") -> bytes:
    """An access log line of ``vhost``."""
    return (
        f'{vhost} 192.0.2.{n} - - [01/Jan/2025:00:00:00 +0000] "GET {path}{n} HTTP/1.1" '
        f'200 123 "-" "curl/8" 42\n'
    ).encode()


def expected_owner(account: str) -> tuple[int, int]:
    """The group and mode the script must give a new log of ``account``."""
    try:
        return grp.getgrnam(account).gr_gid, 0o640
    except KeyError:
        return 0, 0o600


def test_lines_go_to_their_accounts(tree: Tree) -> None:
    a1, a2 = access("alice.example", 1), access("www.alice.example", 2)
    b1, u1 = access("bob.example", 3), access("unknown.example", 4)
    e1, r1 = access("evil.example", 5), access("root.example", 6)
    run(tree, a1 + b1 + u1 + a2 + e1 + r1 + access("ALICE.Example", 7))
    assert read(tree.log("alice")) == a1 + a2 + access("ALICE.Example", 7)
    assert read(tree.log("bob")) == b1
    assert read(tree.other()) == u1 + e1 + r1
    assert not (tree.home / "etc").exists()


def test_new_log_owner_and_mode(tree: Tree) -> None:
    tree.add_account("nogroup")  # an account named after a group that exists
    tree.write_map("alice.example alice\nng.example nogroup\n")
    os.umask(0o077)  # the script must not depend on the umask
    try:
        run(tree, access("alice.example", 1) + access("ng.example", 2))
    finally:
        os.umask(0o022)
    for account in ("alice", "nogroup"):
        st = tree.log(account).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, *expected_owner(account))
    assert expected_owner("nogroup")[1] == 0o640
    assert not tree.other().exists()


def test_error_log_and_odd_first_fields(tree: Tree) -> None:
    mine = b"alice.example [Wed Jan 01 00:00:00.000000 2025] [core:error] [pid 1:tid 2] x\n"
    others = [
        b"- [Wed Jan 01 00:00:00.000000 2025] [mpm_event:notice] [pid 1:tid 2] AH00489\n",
        b" [Wed Jan 01 00:00:00.000000 2025] [core:notice] [pid 1:tid 2] empty vhost\n",
        b"host.example [Wed Jan 01 00:00:00.000000 2025] [core:notice] main server\n",
        b"\n",
        b"[no vhost at all]\n",
    ]
    run(tree, mine + b"".join(others) + b"bob.example last line without newline", kind="error")
    assert read(tree.log("alice", "error")) == mine
    assert read(tree.log("bob", "error")) == b"bob.example last line without newline\n"
    assert read(tree.other("error")) == b"".join(others)
    assert not tree.log("alice").exists()


def test_symlinked_log_is_not_followed(tree: Tree) -> None:
    target = tree.fallback.parent / "target"
    target.write_bytes(b"precious\n")
    tree.log("bob").symlink_to(target)
    b1, a1 = access("bob.example", 1), access("alice.example", 2)
    run(tree, b1 + a1)
    assert target.read_bytes() == b"precious\n"
    assert tree.log("bob").is_symlink()
    assert read(tree.other()) == b1
    assert read(tree.log("alice")) == a1


def test_symlinked_or_writable_logs_dir_is_refused(tree: Tree) -> None:
    elsewhere = tree.fallback.parent / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(tree.home / "alice" / "logs")
    (tree.home / "alice" / "logs").symlink_to(elsewhere)
    (tree.home / "bob" / "logs").chmod(0o770)
    shutil.rmtree(tree.home / "carol", ignore_errors=True)
    tree.write_map("alice.example alice\nbob.example bob\ncarol.example carol\n")
    lines = access("alice.example", 1) + access("bob.example", 2) + access("carol.example", 3)
    run(tree, lines)
    assert list(elsewhere.iterdir()) == []
    assert not tree.log("bob").exists()
    assert read(tree.other()) == lines  # carol has no home at all


def test_bad_utf8_and_overlong_lines(tree: Tree) -> None:
    bad = b"alice.example \xff\xfe\xc3( not utf-8 \x00\n"
    long = b"alice.example " + b"x" * (100 * 1024) + b"\n"
    after = access("alice.example", 3)
    run(tree, bad + long + after + b"\xff\xfe" + b"y" * (40 * 1024) + b"\n" + after)
    lines = read(tree.log("alice")).splitlines(keepends=True)
    assert lines[0] == bad
    assert lines[1] == long[: MAX_LINE - 1] + b"\n"
    assert lines[2:] == [after, after]
    other = read(tree.other())
    assert len(other) == MAX_LINE
    assert other.startswith(b"\xff\xfe")


def test_map_is_reloaded_while_running(tree: Tree) -> None:
    proc = start(tree)
    try:
        feed(proc, access("carol.example", 1))
        wait_for(tree.other(), access("carol.example", 1))
        tree.add_account("carol")
        tree.write_map("carol.example carol\n")
        time.sleep(1.1)
        feed(proc, access("carol.example", 2) + access("alice.example", 3))
    finally:
        finish(proc)
    assert read(tree.log("carol")) == access("carol.example", 2)
    assert read(tree.other()) == access("carol.example", 1) + access("alice.example", 3)


def test_rotation_by_rename(tree: Tree) -> None:
    log = tree.log("alice")
    proc = start(tree)
    try:
        feed(proc, access("alice.example", 1))
        wait_for(log, access("alice.example", 1))
        log.rename(log.with_suffix(".log.1"))
        time.sleep(1.1)
        feed(proc, access("alice.example", 2))
        wait_for(log, access("alice.example", 2))
        feed(proc, access("alice.example", 3))
    finally:
        finish(proc)
    assert read(log.with_suffix(".log.1")) == access("alice.example", 1)
    assert read(log) == access("alice.example", 2) + access("alice.example", 3)
    st = log.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, *expected_owner("alice"))


def test_rotation_by_copytruncate(tree: Tree) -> None:
    log = tree.log("alice")
    proc = start(tree)
    try:
        feed(proc, access("alice.example", 1) * 10)
        wait_for(log, access("alice.example", 1) * 10)
        shutil.copyfile(log, log.with_suffix(".log.1"))
        os.truncate(log, 0)
        feed(proc, access("alice.example", 2))
        time.sleep(1.1)
        feed(proc, access("alice.example", 3))
    finally:
        finish(proc)
    assert read(log.with_suffix(".log.1")) == access("alice.example", 1) * 10
    assert read(log) == access("alice.example", 2) + access("alice.example", 3)  # no hole


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_open_files_are_bounded(tree: Tree) -> None:
    accounts = [f"acct{i:03d}" for i in range(100)]
    for account in accounts:
        tree.add_account(account)
    tree.write_map("".join(f"{a}.example {a}\n" for a in accounts))
    proc = start(tree)
    peak = 0
    try:
        for rnd in range(3):
            for account in accounts:
                feed(proc, access(f"{account}.example", rnd))
                if account.endswith("7"):
                    peak = max(peak, open_fds(proc.pid))
            wait_for(tree.log(accounts[-1]), access(f"{accounts[-1]}.example", rnd))
            peak = max(peak, open_fds(proc.pid))
    finally:
        finish(proc)
    assert peak <= 64 + 10, peak  # + stdio, 3 directories and the new file mid-open
    for account in accounts:
        assert read(tree.log(account)) == b"".join(
            access(f"{account}.example", rnd) for rnd in range(3)
        )
    assert not tree.other().exists()


def test_parse_map_keeps_valid_entries_only() -> None:
    data = (
        b"# vhost account\n\nWWW.Alice.Example alice\nbob.example bob  # comment\n"
        b"evil.example ../etc\nroot.example Root\nthree.example bob x\nlone.example\n"
        b"\xff.example carol\n"
    )
    assert webarch_log_split.parse_map(data) == {
        b"www.alice.example": "alice",
        b"bob.example": "bob",
        b"\xff.example": "carol",
    }


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (b"Alice.Example 1.2.3.4 - -\n", b"alice.example"),
        (b"alice.example\n", b"alice.example"),
        (b" alice.example x\n", b""),
    ],
)
def test_first_field(line: bytes, field: bytes) -> None:
    assert webarch_log_split.first_field(line) == field


def test_defaults_are_the_formulas_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "WEBARCH_LOG_MAP",
        "WEBARCH_LOG_HOME_BASE",
        "WEBARCH_LOG_FALLBACK_DIR",
        "WEBARCH_LOG_REPORT_COMMAND",
    ):
        monkeypatch.delenv(name, raising=False)
    config = webarch_log_split.Config.from_env("error")
    assert (config.map_path, config.home_base) == (paths.LOG_MAP_PATH, paths.HOME_BASE)
    assert config.account_path("alice") == f"{paths.HOME_BASE}/alice/logs/apache-error.log"
    assert config.fallback_path() == "/var/log/apache2/webarch-other-error.log"
    assert config.report_command == (
        "systemctl",
        "start",
        "--no-block",
        f"{paths.HTACCESS_REPORT_UNIT}.service",
    )
    monkeypatch.setenv("WEBARCH_LOG_REPORT_COMMAND", "sh -c 'echo a b'")
    assert webarch_log_split.Config.from_env("error").report_command == ("sh", "-c", "echo a b")
    monkeypatch.setenv("WEBARCH_LOG_REPORT_COMMAND", "")
    assert webarch_log_split.Config.from_env("error").report_command == ()


def test_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "bogus"],
        env=program_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert b"usage" in proc.stderr


def test_throughput(tree: Tree) -> None:
    """Not a pass/fail check: prints lines per second for 100k lines over 10 accounts."""
    accounts = [f"site{i}" for i in range(10)]
    for account in accounts:
        tree.add_account(account)
    tree.write_map("".join(f"{a}.example {a}\n" for a in accounts))
    n = 100_000
    data = b"".join(access(f"{accounts[i % 10]}.example", i) for i in range(n))
    began = time.perf_counter()
    run(tree, data)
    elapsed = time.perf_counter() - began
    print(f"\nwebarch-log-split: {n} lines in {elapsed:.2f} s = {n / elapsed:,.0f} lines/s")
    assert sum(len(read(tree.log(a)).splitlines()) for a in accounts) == n


# .htaccess files: hints after refusals, ignored-line warnings, the report

#: Apache's lines, as measured on a test host (issue 22).
REFUSAL = (
    b"www.alice.example [2026-12-05 05:41:51.545426] [core:alert] [pid 3192:tid 1396] "
    b"[client 127.0.0.1:36164] /home/alice/sites/www/public/ht-11/.htaccess: "
    b"Option FollowSymlinks not allowed here\n"
)
HINT = (
    b"www.alice.example webarch: /home/alice/sites/www/public/ht-11/.htaccess: "
    b"Options FollowSymlinks is refused here: "
    + webarch_log_split.htaccess.REFUSED_OPTIONS["followsymlinks"].encode()
    + b"\n"
)
IGNORED_PHP = (
    b" [2026-12-05 05:37:39.518417] [core:warn] [pid 2421:tid 139689637791424] [client "
    b"AH02296: Unknown directive php_flag perhaps misspelled or defined by a module not "
    b"included in the server configuration\n"
)
IGNORED_HANDLER = (
    b" [2026-12-05 05:37:36.876943] [core:warn] [pid 2421:tid 139689570518720] [client "
    b"AH02295: AddHandler in .htaccess forbidden by AllowOverride\n"
)


def test_refusal_gets_a_hint_once_per_interval(tree: Tree) -> None:
    other = REFUSAL.replace(b"ht-11", b"ht-13")
    removetype = REFUSAL.replace(b"Option FollowSymlinks not allowed", b"RemoveType not allowed")
    run(tree, REFUSAL + REFUSAL + other + removetype + REFUSAL, kind="error")
    assert read(tree.log("alice", "error")) == (
        REFUSAL
        + HINT
        + REFUSAL
        + other
        + HINT.replace(b"ht-11", b"ht-13")
        + removetype
        + b"www.alice.example webarch: /home/alice/sites/www/public/ht-11/.htaccess: "
        b"RemoveType is refused here\n" + REFUSAL
    )
    assert not tree.other("error").exists()


def test_no_hints_in_access_logs_nor_for_lines_of_no_account(tree: Tree) -> None:
    access_line = b"alice.example " + REFUSAL.split(b" ", 1)[1]
    run(tree, access_line, kind="access")
    assert read(tree.log("alice")) == access_line
    stray = REFUSAL.replace(b"www.alice.example", b"unknown.example")
    run(tree, stray, kind="error")
    assert read(tree.other("error")) == stray


def test_ignored_lines_are_written_once_per_interval_and_counted(tree: Tree) -> None:
    lines = IGNORED_PHP * 3 + IGNORED_HANDLER + IGNORED_PHP + IGNORED_HANDLER
    run(tree, lines, kind="error")
    other = read(tree.other("error")).splitlines(keepends=True)
    assert other[:2] == [IGNORED_PHP, IGNORED_HANDLER]
    assert len(other) == 4
    assert re.fullmatch(
        rb" \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\] \[webarch:notice\] \[pid \d+\] "
        rb'webarch-log-split: 3 more of "AH02296: Unknown directive php_flag perhaps misspelled '
        rb'or defined by a module not included in the server configuration" not written in '
        rb"60 s \(webarch-htaccess-report writes them into the accounts' logs\)\n",
        other[2],
    ), other[2]
    assert b'1 more of "AH02295: AddHandler in .htaccess forbidden by AllowOverride"' in other[3]


def test_ignored_lines_start_the_report_at_most_once(tree: Tree) -> None:
    started = tree.fallback.parent / "started"
    tree.report_command = f"sh -c 'echo started >>{started}'"
    run(tree, IGNORED_PHP + IGNORED_HANDLER * 2 + REFUSAL + IGNORED_PHP, kind="error")
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert started.read_text() == "started\n"
    run(tree, access("alice.example", 1), kind="access")  # never from access logs
    time.sleep(0.2)
    assert started.read_text() == "started\n"


@pytest.mark.parametrize(
    "command", ["/nonexistent/systemctl start x", "false", "sleep 30", "'unbalanced"]
)
def test_a_failing_report_changes_nothing(tree: Tree, command: str) -> None:
    tree.report_command = command
    proc = start(tree, kind="error")
    try:
        feed(proc, IGNORED_PHP)
        wait_for(tree.other("error"), IGNORED_PHP)
        time.sleep(0.3)
        feed(proc, REFUSAL)
        wait_for(tree.log("alice", "error"), REFUSAL + HINT)
    finally:
        finish(proc)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (IGNORED_PHP, IGNORED_PHP[IGNORED_PHP.index(b"AH02296") : -1]),
        (IGNORED_HANDLER, b"AH02295: AddHandler in .htaccess forbidden by AllowOverride"),
        (REFUSAL, None),
        (b" x AH02295: " + b"y" * 1000 + b"\n", b"AH02295: " + b"y" * 247),
    ],
)
def test_ignored_message(line: bytes, message: bytes | None) -> None:
    assert webarch_log_split.ignored_message(line) == message


def test_hint_logic_in_process() -> None:
    extra = webarch_log_split.Htaccess((), webarch_log_split.new_warner())
    assert extra.hint(REFUSAL, 0.0) == HINT
    assert extra.hint(REFUSAL, 59.9) is None
    assert extra.hint(REFUSAL, 60.0) == HINT
    assert extra.hint(access("www.alice.example", 1), 0.0) is None
    assert extra.keep(access("x", 1), 0.0)
    assert extra.keep(IGNORED_PHP, 0.0)
    assert not extra.keep(IGNORED_PHP, 30.0)
    assert extra.due(30.0) == []
    assert len(extra.due(61.0)) == 1  # the count, once the interval is over
    assert extra.keep(IGNORED_PHP, 61.0)
    assert extra.due(62.0, final=True) == []


def test_a_start_put_off_is_made_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webarch_log_split, "HINT_INTERVAL", 1.0)
    started = tmp_path / "started"
    command = ("sh", "-c", f"echo started >>{started}")
    extra = webarch_log_split.Htaccess(command, webarch_log_split.new_warner())
    try:
        now = time.monotonic()
        for _ in range(5):  # the first starts it, the others put off one start
            extra.keep(IGNORED_PHP, now)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and read(started).count(b"started") < 2:
            time.sleep(0.05)
        time.sleep(1.5)
        assert read(started) == b"started\n" * 2
    finally:
        extra.close()
