"""Unit tests of webarch-htaccess-check: its checks of PATHs and its --report.

The real program (webarch/files/programs/webarch_htaccess_check.py) runs as a
subprocess against a temporary tree (homes, log map, memo and mods-enabled
given by the environment); its pure parts are tested in-process.  --report
needs root (it is root's, and the tests check owners).
"""

from __future__ import annotations

import grp
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import webarch_htaccess as htaccess
import webarch_htaccess_check as check
import webarch_paths as paths
from unit.program_helpers import program, program_env

SCRIPT = program("webarch_htaccess_check")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (--report, chown)")

#: One .htaccess of each kind: fine, ignored lines only, a refused line.
FINE = "RewriteEngine On\n<IfModule mod_php.c>\n  php_flag engine off\n</IfModule>\n"
IGNORED = "AddHandler php-script .php\n# comment\nphp_flag display_errors off\n"
REFUSED = "Options +FollowSymlinks\nRewriteEngine On\n"
#: webarch-htaccess [YYYY-mm-dd HH:MM:SS] PATH:LINE: DIRECTIVE is ignored|refused here: WHY
REPORT_LINE = re.compile(
    r"^webarch-htaccess \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] (/\S+):(\d+): (.+?) "
    r"is (ignored|refused) here: (.+)$"
)


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the program with ``args``; mods-enabled is absent unless ``env`` says otherwise."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=program_env(**{"WEBARCH_HTACCESS_MODS_DIR": "/nonexistent", **env}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Pure parts


def test_modules_from_mods_enabled(tmp_path: Path) -> None:
    for name in ("rewrite.load", "rewrite.conf", "php8.2.load", "headers.load"):
        (tmp_path / name).write_text("")
    assert check.loaded_modules(str(tmp_path)) == {"rewrite", "php8.2", "headers"} | {
        "core",
        "so",
        "watchdog",
        "http",
        "log_config",
        "logio",
        "version",
        "unixd",
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check.loaded_modules(str(empty)) == htaccess.LOADED_MODULES
    assert check.loaded_modules(str(tmp_path / "missing")) == htaccess.LOADED_MODULES


def test_modules_change_the_findings(tmp_path: Path) -> None:
    text = "<IfModule mod_php.c>\nphp_flag engine off\n</IfModule>\n"
    (tmp_path / "rewrite.load").write_text("")
    assert htaccess.check(text, check.loaded_modules(str(tmp_path))) == []
    (tmp_path / "php.load").write_text("")
    findings = htaccess.check(text, check.loaded_modules(str(tmp_path)))
    assert [(f.line, f.directive, f.verdict) for f in findings] == [(2, "php_flag", "ignored")]


def test_exit_status() -> None:
    ignored = htaccess.Finding(1, "AddHandler", "ignored", "why")
    refused = htaccess.Finding(2, "Options +ExecCGI", "refused", "why")
    assert check.exit_status([]) == 0
    assert check.exit_status([ignored]) == 1
    assert check.exit_status([ignored, refused]) == 2


def test_lines_are_one_line_each_and_bounded() -> None:
    assert check.clean("a\nb\tc\x7f") == "a\\x0ab\\x09c\\x7f"
    assert len(check.clean("x" * 10_000)) == check.MAX_LINE
    findings = [htaccess.Finding(n, "Bad\nLine", "ignored", "why") for n in range(1, 60)]
    lines = check.findings_text(findings, "/s/.htaccess")
    assert len(lines) == check.MAX_FINDINGS + 1
    assert lines[0] == "/s/.htaccess:1: Bad\\x0aLine is ignored here: why"
    assert lines[-1] == "/s/.htaccess: 9 more lines not shown"


def test_accounts_of_the_log_map() -> None:
    data = b"# header\nwww.alice.example alice\nalice.example alice\nbob.example bob\nx ../etc\n"
    assert check.accounts_of_map(data) == ["alice", "bob"]


def test_readable_never_reads_a_hard_link_to_another_owners_file(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.write_text("")
    assert check.readable(mine.stat(), mine.stat().st_uid)
    os.link(mine, tmp_path / "link")
    st = mine.stat()
    assert st.st_nlink == 2
    assert check.readable(st, st.st_uid) == (st.st_uid != 0)
    assert not check.readable(st, st.st_uid + 1)
    assert not check.readable(tmp_path.stat(), tmp_path.stat().st_uid)  # a directory


def tree_of(tmp_path: Path, files: dict[str, str]) -> Path:
    """A directory holding ``files`` (relative path -> text)."""
    top = tmp_path / "top"
    for name, text in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)
    return top


def walked(top: Path, budget: int = 1000) -> list[str]:
    """The directories ``walk`` finds a .htaccess in, relative to ``top``."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [path for path, _ in check.walk(fd, "", check.Budget(budget))]
    finally:
        os.close(fd)


def test_walk_follows_no_symlink(tmp_path: Path) -> None:
    top = tree_of(tmp_path, {"a/.htaccess": FINE, "a/b/c/.htaccess": FINE, "d/x": ""})
    outside = tree_of(tmp_path / "out", {"e/.htaccess": FINE})
    (top / "link").symlink_to(outside / "e")
    (top / "d" / ".htaccess").symlink_to(outside / "e" / ".htaccess")
    assert walked(top) == ["/a", "/a/b/c"]


def test_walk_stops_at_its_budget_and_depth(tmp_path: Path) -> None:
    deep = "/".join(f"d{i}" for i in range(check.MAX_DEPTH + 2))
    top = tree_of(tmp_path, {f"{deep}/.htaccess": FINE, "a/.htaccess": FINE})
    assert walked(top) == ["/a"]
    budget = check.Budget(1)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert list(check.walk(fd, "", budget)) == []
    finally:
        os.close(fd)
    assert budget.exhausted


# webarch-htaccess-check PATH...


def test_paths_and_exit_status(tmp_path: Path) -> None:
    top = tree_of(tmp_path, {"fine/.htaccess": FINE, "ign/.htaccess": IGNORED})
    proc = run(str(top))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{top}/ign/.htaccess:1: AddHandler is ignored here: {htaccess.ignored_why('AddHandler')}",
        f"{top}/ign/.htaccess:3: php_flag is ignored here: {htaccess.ignored_why('php_flag')}",
    ]
    (top / "ref").mkdir()
    (top / "ref" / "htaccess.txt").write_text(REFUSED)  # a file is checked whatever its name
    proc = run(str(top / "fine" / ".htaccess"), str(top / "ref" / "htaccess.txt"))
    assert proc.returncode == 2
    assert proc.stdout == (
        f"{top}/ref/htaccess.txt:1: Options +FollowSymlinks is refused here: "
        f"{htaccess.REFUSED_OPTIONS['followsymlinks']}\n"
    )
    assert run(str(top / "fine")).returncode == 0
    assert run(str(top / "fine"), "-", str(tmp_path / "missing")).returncode == 3


def test_usage_errors() -> None:
    for args in ([], ["--bogus"], ["--report", "x"]):
        proc = run(*args)
        assert proc.returncode == 3
        assert "usage: webarch-htaccess-check PATH..." in proc.stderr
    assert run("--", "/nonexistent-dash").returncode == 3
    proc = run("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("Tell what of a site's .htaccess")


def test_directory_walk_through_a_symlinked_site_is_not_followed(tmp_path: Path) -> None:
    top = tree_of(tmp_path, {"real/.htaccess": REFUSED})
    (top / "link").symlink_to(top / "real")
    proc = run(str(top))
    assert proc.stdout.count("refused") == 1
    assert "/link/" not in proc.stdout


# webarch-htaccess-check --report


@dataclass
class Homes:
    """Accounts' homes, the log map, the memo and mods-enabled in a temporary tree."""

    root: Path

    @property
    def base(self) -> Path:
        return self.root / "home"

    def env(self) -> dict[str, str]:
        return {
            "WEBARCH_LOG_MAP": str(self.root / "log-map"),
            "WEBARCH_LOG_HOME_BASE": str(self.base),
            "WEBARCH_HTACCESS_MEMO": str(self.root / "state" / "memo.json"),
            "WEBARCH_HTACCESS_MODS_DIR": str(self.root / "mods-enabled"),
        }

    def add(self, account: str, uid: int) -> Path:
        """ACCOUNT's home: root-owned logs, sites owned by ``uid``; returns sites."""
        logs = self.base / account / "logs"
        logs.mkdir(parents=True)
        logs.chmod(0o750)
        sites = self.base / account / "sites"
        sites.mkdir()
        os.chown(sites, uid, 0)
        return sites

    def put(self, account: str, rel: str, text: str, uid: int) -> Path:
        """Write a .htaccess (or another file) below ACCOUNT's sites, owned by ``uid``."""
        path = self.base / account / "sites" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chown(path, uid, 0)
        return path

    def log(self, account: str) -> str:
        path = self.base / account / "logs" / "apache-error.log"
        return path.read_text() if path.exists() else ""

    def report(self) -> subprocess.CompletedProcess:
        proc = run("--report", **self.env())
        assert proc.returncode == 0, proc.stderr
        return proc


@pytest.fixture
def homes(tmp_path: Path) -> Homes:
    h = Homes(tmp_path)
    (tmp_path / "mods-enabled").mkdir()
    for module in ("rewrite", "mime", "headers"):
        (tmp_path / "mods-enabled" / f"{module}.load").write_text("")
    (tmp_path / "state").mkdir(mode=0o700)
    h.add("alice", 2001)
    h.add("bob", 2002)
    (tmp_path / "log-map").write_text(
        "www.alice.example alice\nalice.example alice\nbob.example bob\nnone.example nobody1\n"
    )
    return h


@needs_root
def test_report_writes_new_and_changed_files_once(homes: Homes) -> None:
    ign = homes.put("alice", "www/public/ht-16/.htaccess", IGNORED, 2001)
    ref = homes.put("alice", "www/public/a/b/.htaccess", REFUSED, 2001)
    homes.put("alice", "www/public/.htaccess", FINE, 2001)
    homes.put("bob", "shop/public/.htaccess", FINE, 2002)
    proc = homes.report()
    assert re.fullmatch(
        r"webarch-htaccess-check: 3 accounts, 4 \.htaccess files scanned, "
        r"2 reported \(3 lines\), \d+\.\d\d s\n",
        proc.stdout,
    ), proc.stdout
    lines = homes.log("alice").splitlines()
    found = [REPORT_LINE.match(line) for line in lines]
    assert all(found), lines
    assert sorted((m[1], int(m[2]), m[3], m[4]) for m in found if m) == [
        (str(ref), 1, "Options +FollowSymlinks", "refused"),
        (str(ign), 1, "AddHandler", "ignored"),
        (str(ign), 3, "php_flag", "ignored"),
    ]
    assert lines[-1].endswith(f":3: php_flag is ignored here: {htaccess.ignored_why('php_flag')}")
    assert homes.log("bob") == ""
    memo = Path(homes.env()["WEBARCH_HTACCESS_MEMO"])
    assert memo.stat().st_mode & 0o777 == 0o600
    assert sorted(json.loads(memo.read_text())["files"]) == sorted(
        str(path) for path in homes.base.glob("*/sites/**/.htaccess")
    )
    # Nothing new: nothing written.
    assert "0 reported" in homes.report().stdout
    assert len(homes.log("alice").splitlines()) == 3
    # Changed: written again.
    ign.write_text(IGNORED + "ForceType text/plain\n")
    assert "1 reported (3 lines)" in homes.report().stdout
    assert (
        homes.log("alice")
        .splitlines()[-1]
        .endswith(f":4: ForceType is ignored here: {htaccess.ignored_why('ForceType')}")
    )


@needs_root
def test_report_log_owner(homes: Homes) -> None:
    homes.put("alice", "www/.htaccess", IGNORED, 2001)
    os.umask(0o077)
    try:
        homes.report()
    finally:
        os.umask(0o022)
    st = (homes.base / "alice" / "logs" / "apache-error.log").stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o640 if _group("alice") else 0o600)


def _group(name: str) -> bool:
    """Whether group ``name`` exists here."""
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _members(name: str) -> list[str]:
    """The members of group ``name`` here (none if it does not exist)."""
    try:
        return grp.getgrnam(name).gr_mem
    except KeyError:
        return []


@needs_root
def test_report_follows_no_link(homes: Homes, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
    os.chown(secret, 0, 0)
    homes.put("alice", "www/public/placeholder", "", 2001)
    public = homes.base / "alice" / "sites" / "www" / "public"
    (public / ".htaccess").symlink_to(secret)  # a symlink
    (public / "hard").mkdir()
    os.link(secret, public / "hard" / ".htaccess")  # a hard link to root's file
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".htaccess").write_text(IGNORED)
    (public / "dir").symlink_to(outside)  # a symlinked directory
    (homes.base / "bob" / "sites").rmdir()
    (homes.base / "bob" / "sites").symlink_to(outside)  # a symlinked sites
    proc = homes.report()
    assert "0 .htaccess files scanned" in proc.stdout
    assert "secret" not in homes.log("alice") + homes.log("bob")
    assert homes.log("alice") == homes.log("bob") == ""
    assert "bob" in proc.stderr  # its sites could not be opened


@needs_root
def test_report_keeps_a_file_for_later_when_the_log_cannot_be_written(homes: Homes) -> None:
    homes.put("alice", "www/.htaccess", IGNORED, 2001)
    logs = homes.base / "alice" / "logs"
    logs.chmod(0o770)  # group-writable: refused, as webarch-log-split refuses it
    proc = homes.report()
    assert "0 reported" in proc.stdout
    assert "alice" in proc.stderr
    assert not (logs / "apache-error.log").exists()
    logs.chmod(0o750)
    assert "1 reported (2 lines)" in homes.report().stdout


@needs_root
def test_report_accounts_from_the_homes_without_a_map(homes: Homes) -> None:
    os.unlink(homes.env()["WEBARCH_LOG_MAP"])
    proc = homes.report()
    assert "using the homes" in proc.stderr
    members = _members(paths.ACCOUNT_GROUP)
    expected = sum(name in members for name in ("alice", "bob"))
    assert f": {expected} accounts," in proc.stdout


@needs_root
def test_report_budget(homes: Homes) -> None:
    homes.put("alice", "www/.htaccess", IGNORED, 2001)
    for n in range(20):
        homes.put("alice", f"www/d{n:02d}/f", "", 2001)
    proc = run("--report", **homes.env(), WEBARCH_HTACCESS_MAX_ENTRIES="5")
    assert proc.returncode == 0
    assert "alice: stopped after 5 entries" in proc.stderr


def test_report_needs_root(homes: Homes) -> None:
    if os.geteuid() == 0:
        pytest.skip("run as root")
    assert run("--report", **homes.env()).returncode == 3


def test_defaults_are_the_formulas_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WEBARCH_LOG_MAP", "WEBARCH_LOG_HOME_BASE", "WEBARCH_HTACCESS_MEMO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("WEBARCH_HTACCESS_MODS_DIR", raising=False)
    config = check.Config.from_env()
    assert config == check.Config(
        paths.LOG_MAP_PATH, paths.HOME_BASE, paths.HTACCESS_REPORT_MEMO, check.MODS_DIR
    )
    assert check.MODS_DIR.removeprefix(paths.APACHE_DIR) == "/mods-enabled"
    assert paths.HTACCESS_REPORT_MEMO.startswith(f"{paths.STATE_DIR}/")
