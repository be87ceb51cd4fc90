"""Unit tests of webarch-mail-log, which copies the accounts' lines of Exim's main log.

The program (webarch/files/programs/webarch_mail_log.py) is imported as a
module and mostly run in-process through its main() with --once on a temporary
tree (main log, accounts file, state file and homes); the tests of the
following mode run it as a subprocess.  Being run as root, the tests check the
owner, group and mode of the logs it creates.  The accounts file's parser is
webarch_progs.parse_mail_accounts (test_progs.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import webarch_mail_log
from unit.program_helpers import program, program_env

SCRIPT = program("webarch_mail_log")
GIDS = {"alice": 2001, "bob": 2002, "carol": 2003, "probe": 2004}
TS = "2026-11-28 04:42:39"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")


@pytest.fixture(scope="module")
def mod() -> ModuleType:
    """The program, imported as a module."""
    return webarch_mail_log


@dataclass
class Tree:
    """A temporary main log, accounts file, state file and home base."""

    root: Path
    accounts: dict[str, Path] = field(default_factory=dict)
    #: The group given (with --group-of) to each account's new log.
    gids: dict[str, int] = field(default_factory=lambda: dict(GIDS))

    @property
    def mainlog(self) -> Path:
        return self.root / "exim4" / "mainlog"

    @property
    def rotated(self) -> Path:
        return self.root / "exim4" / "mainlog.1"

    @property
    def accounts_file(self) -> Path:
        return self.root / "mail-accounts"

    @property
    def state(self) -> Path:
        return self.root / "lib" / "mail-log.state"

    def home(self, name: str) -> Path:
        return self.root / "home" / name

    def log(self, name: str) -> Path:
        """NAME's mail log."""
        return self.home(name) / "logs" / "mail.log"

    def add_account(self, name: str, listed: bool = True) -> Path:
        """Make NAME's root-owned 0750 HOME/logs (and list NAME unless told not to); return it."""
        logs = self.home(name) / "logs"
        logs.mkdir(parents=True)
        os.chown(logs, 0, self.gids.get(name, 0))
        logs.chmod(0o750)
        if listed:
            self.accounts[name] = self.home(name)
            self.write_accounts()
        return logs

    def write_accounts(self, extra: str = "") -> None:
        """Write the accounts file (its mtime is made to change every time)."""
        text = "# NAME HOME\n\n" + "".join(f"{n} {h}\n" for n, h in self.accounts.items())
        self.accounts_file.write_text(text + extra)
        bump_mtime(self.accounts_file)

    def append(self, data: bytes, path: Path | None = None) -> None:
        """Append ``data`` to the main log (or ``path``)."""
        with open(path or self.mainlog, "ab") as stream:
            stream.write(data)

    def argv(self, *extra: str) -> list[str]:
        """The command line of the script on this tree."""
        groups = [f"--group-of={name}={gid}" for name, gid in self.gids.items()]
        return [
            "webarch-mail-log",
            f"--mainlog={self.mainlog}",
            f"--accounts={self.accounts_file}",
            f"--state={self.state}",
            *groups,
            *extra,
        ]

    def saved(self) -> dict:
        """The state file's contents."""
        return json.loads(self.state.read_text())


_mtime = [1_700_000_000_000_000_000]


def bump_mtime(path: Path) -> None:
    """Give ``path`` an mtime it never had, so that a change is seen even within a tick."""
    _mtime[0] += 1_000_000_000
    os.utime(path, ns=(_mtime[0], _mtime[0]))


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A tree with accounts alice and bob and an empty main log."""
    t = Tree(tmp_path)
    t.mainlog.parent.mkdir()
    t.mainlog.touch()
    t.add_account("alice")
    t.add_account("bob")
    return t


def once(mod: ModuleType, tree: Tree, *extra: str) -> None:
    """Run the script in-process with --once; it must exit 0."""
    assert mod.main(tree.argv("--once", *extra)) == 0


@contextlib.contextmanager
def following(mod: ModuleType, tree: Tree) -> Iterator:
    """A started Follower of the tree's main log, polled by the test; closed at the end."""
    tree.state.parent.mkdir(exist_ok=True)
    stop = mod.progs.Stop()
    follower = mod.Follower(mod.parse_args(tree.argv()[1:]), stop, mod.new_warner())
    try:
        follower.start()
        yield follower
    finally:
        follower.close()
        stop.close()


def read(path: Path) -> bytes:
    """The contents of ``path`` (empty if missing)."""
    return path.read_bytes() if path.exists() else b""


def ln(text: str, ts: str = TS) -> bytes:
    """A main log line."""
    return f"{ts} {text}\n".encode()


B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def b62(n: int, width: int) -> str:
    """``n`` in base 62 on ``width`` digits."""
    digits = []
    for _ in range(width):
        n, r = divmod(n, 62)
        digits.append(B62[r])
    return "".join(reversed(digits))


def mid(n: int, new: bool = False) -> str:
    """A message id: Exim 4.96's format, or 4.97's with ``new``."""
    if new:
        return f"1x{b62(n, 4)}-{b62(n, 11)}-{b62(n, 4)}"
    return f"1x{b62(n, 4)}-{b62(n, 6)}-0H"


def arrival(m: str, name: str) -> bytes:
    """The arrival of message ``m`` handed in by ``name`` over local SMTP."""
    return ln(f"{m} <= {name}@example.org U={name} P=local-esmtp S=402 id=x.{m}@example.org")


def delivered(m: str, to: str = "bob@example.net") -> bytes:
    return ln(
        f'{m} => {to} R=smarthost T=remote_smtp_smarthost H=127.0.0.1 [127.0.0.1]:2525 C="250 OK"'
    )


def completed(m: str) -> bytes:
    return ln(f"{m} Completed")


def owner(path: Path) -> tuple[int, int, int]:
    """uid, gid and permission bits of ``path``."""
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


# Routing


def test_debian_lines(mod, tree):
    """The lines seen on Debian 12 (Exim 4.96): all the account's, nothing else."""
    tree.add_account("probe")
    mine = [
        ln("1xXAGl-0000FS-15 <= probe-configured@example.org U=probe P=local-smtp S=329"),
        ln(
            "1xXAGe-0000BM-0H <= probe@webarch-image U=probe P=local-esmtp S=402 "
            "id=ca8e4c04dceebaab1f63babf4832bc70.probe-configured@example.org"
        ),
        ln("1xXAGe-0000BM-0H => /var/mail/mail <root@localhost> R=mail4root T=address_file"),
        ln("1xXAGe-0000BM-0H Completed"),
        ln("U=probe rejected MAIL <bob@webarch-image>: send limit of 2 messages per hour reached"),
        ln('SMTP protocol error in "RCPT TO:<root@localhost>" U=probe sender not yet given'),
        ln(
            "SMTP call from probe dropped: too many syntax or protocol errors (last command "
            'was "",  C=HELO,MAIL,RCPT,DATA)'
        ),
    ]
    others = [
        ln("Start queue run: pid=433"),
        ln("End queue run: pid=433"),
        ln("exim 4.96 daemon started: pid=433, -q30m, not listening for SMTP"),
        b"not an exim line at all U=probe\n",
        b"\n",
    ]
    tree.append(others[0] + mine[0] + others[1] + b"".join(mine[1:]) + b"".join(others[2:]))
    once(mod, tree, "--from-start")
    assert read(tree.log("probe")) == b"".join(mine)
    assert owner(tree.log("probe")) == (0, GIDS["probe"], 0o640)
    assert not tree.log("alice").exists()
    assert not tree.log("bob").exists()


def test_lines_follow_their_message_id(mod, tree):
    a, b, r, x = mid(1), mid(2), mid(3), mid(4)
    n = mid(5, new=True)  # Exim 4.97's longer ids
    alice = [
        arrival(a, "alice"),
        ln(f"{a} == carol@example.net R=smarthost T=remote_smtp_smarthost defer (111): "),
        delivered(a),
        ln(f"{a} -> bob2@example.net R=smarthost T=remote_smtp_smarthost H=127.0.0.1"),
        ln(f"{a} ** nobody@example.net R=smarthost T=remote_smtp_smarthost: 550 no such user"),
        arrival(n, "alice"),
        delivered(n),
        completed(n),
        completed(a),
    ]
    bob = [arrival(b, "bob"), delivered(b, "alice@example.org"), completed(b)]
    nobody = [
        arrival(r, "root"),
        delivered(r),
        completed(r),
        ln(f"{x} <= someone@example.net H=mx.example.net [192.0.2.1] P=esmtps S=1 id=y"),
        ln(f"{x} => alice <alice@host> R=local_user T=mail_spool"),
        completed(x),
        delivered(a),  # a was completed: its id is forgotten
    ]
    mixed = [alice[0], bob[0], nobody[0], alice[1], nobody[3], bob[1], *alice[2:5]]
    mixed += [nobody[1], nobody[2], *alice[5:], *bob[2:], *nobody[4:]]
    tree.append(b"".join(mixed))
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == b"".join(alice)
    assert read(tree.log("bob")) == b"".join(bob)
    assert tree.saved()["ids"] == []


def test_bounce_goes_to_the_sender(mod, tree):
    a, bounce, stray = mid(1), mid(2), mid(3)
    alice = [
        arrival(a, "alice"),
        ln(f"{a} ** nobody@example.net R=smarthost T=remote_smtp_smarthost: 550 unknown user"),
        ln(f"{bounce} <= <> R={a} U=Debian-exim P=local S=2150"),
        ln(f"{bounce} => alice <alice@host> R=local_user T=mail_spool"),
        completed(bounce),
        completed(a),
    ]
    others = [
        ln(f"{stray} <= <> R={mid(9)} U=Debian-exim P=local S=2150"),
        ln(f"{stray} => root <root@host> R=local_user T=mail_spool"),
        completed(stray),
    ]
    tree.append(b"".join(alice[:3] + others + alice[3:]))
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == b"".join(alice)
    assert not tree.log("bob").exists()


def test_unknown_and_system_users_get_nothing(mod, tree):
    tree.add_account("carol", listed=False)
    (tree.root / "home" / "root" / "logs").mkdir(parents=True)
    tree.write_accounts(
        f"root {tree.root}/home/root\nDebian-exim {tree.root}/home/root\n"
        f"unknown {tree.root}/home/root\nCarol {tree.home('carol')}\n"
        f"carol relative/home\ncarol {tree.home('carol')} extra field\n"
    )
    alice = [ln("U=alice rejected RCPT <x@example.net>: relay not permitted")]
    lines = [
        ln("U=root rejected RCPT <x@example.net>: relay not permitted"),
        ln("U=Debian-exim rejected RCPT <x@example.net>: relay not permitted"),
        ln("U=carol rejected RCPT <x@example.net>: relay not permitted"),
        ln("U=unknown rejected RCPT <x@example.net>: relay not permitted"),
        ln("U=Carol rejected RCPT <x@example.net>: relay not permitted"),
        ln('SMTP protocol error in "DATA" U=carol valid RCPT command must precede DATA'),
        ln("SMTP call from root dropped: too many syntax or protocol errors"),
        arrival(mid(1), "carol"),
        delivered(mid(1)),
        arrival(mid(2), "root"),
        arrival(mid(3), "Debian-exim"),
        *alice,
    ]
    tree.append(b"".join(lines))
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == b"".join(alice)
    assert list((tree.home("carol") / "logs").iterdir()) == []
    assert list((tree.root / "home" / "root" / "logs").iterdir()) == []
    assert not tree.log("bob").exists()


def test_injected_u_field_lands_only_with_its_author(mod, tree):
    """Text an account chooses (addresses, commands, headers) cannot name another account."""
    a, remote = mid(1), mid(2)
    alice = [
        ln("U=alice rejected MAIL <x U=bob y>: send limit of 2 messages per hour reached"),
        ln("U=alice F=<a U=bob b> rejected RCPT <c U=bob d>: relay not permitted"),
        ln(
            f'{a} <= "x U=bob P=local-smtp"@example.org U=alice P=local-smtp S=1 '
            f'id=y U=bob P=z T="U=bob P=local-smtp"'
        ),
        ln(f'{a} => "U=bob z"@example.net R=smarthost T=remote_smtp_smarthost H=127.0.0.1'),
        ln(f"{a} U=bob Completed"),  # not "Completed": the id is kept
        ln('SMTP protocol error in "MAIL FROM:<a U=bob b>" U=alice sender already given'),
        ln('SMTP call from alice dropped: too many errors (last command was "x U=bob y")'),
    ]
    bob = [ln("U=bob rejected RCPT <z@example.net>: relay not permitted")]
    nobody = [
        # alice closes the quote herself: the line names two accounts, it is no one's.
        ln('SMTP protocol error in "MAIL FROM:<a" U=bob b>" U=alice sender already given'),
        ln('SMTP syntax error in "MAIL FROM:<x>" U=alice malformed: " U=bob x may not follow'),
        # root's session naming alice, a remote host's naming alice.
        ln('SMTP syntax error in "HELO a" U=alice b" U=root syntactically invalid argument'),
        ln('SMTP syntax error in "HELO a" U=alice b" H=[192.0.2.1] syntactically invalid'),
        ln('SMTP call from alice [192.0.2.1] dropped: too many errors (last command was "")'),
        ln('SMTP call from (alice) [192.0.2.1] dropped: too many errors (last command was "")'),
        ln("rejected EHLO from [192.0.2.1]: syntactically invalid argument(s): U=alice x"),
        ln("H=[192.0.2.1] U=alice rejected RCPT <x@example.org>: relay not permitted"),
        ln(f"{remote} <= x@example.net H=mx [192.0.2.1] U=alice P=esmtp S=1 id=z"),
        delivered(remote),
    ]
    tree.append(b"".join(alice[:2] + nobody[:5] + alice[2:] + bob + nobody[5:]))
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == b"".join(alice)
    assert read(tree.log("bob")) == b"".join(bob)
    assert tree.saved()["ids"] == [[a, "alice"]]


def test_line_heads(mod):
    """Time zone, milliseconds and [pid] (log_selector options) are understood."""
    router = mod.Router(mod.Accounts("/nonexistent", mod.new_warner()))
    router.accounts.entries = {b"alice": "/home/alice"}
    m = mid(7).encode()
    for head in (b"2026-11-28 04:42:39", b"2026-11-28 04:42:39.123 +0100 [4321]"):
        assert router.route(head + b" " + m + b" <= a@b U=alice P=local-smtp S=1") == b"alice"
        assert router.route(head + b" " + m + b" => x@y R=r T=t") == b"alice"
        assert router.route(head + b" " + m + b" Completed QT=1s") == b"alice"
        assert router.route(head + b" " + m + b" => x@y R=r T=t") is None
        assert router.route(head + b" U=alice rejected RCPT <x@y>: no") == b"alice"
        assert router.route(head + b" " + m + b" U=alice F=<a@b> rejected after DATA") == b"alice"
    assert router.route(b"U=alice rejected RCPT <x@y>: no") is None
    assert router.route(b"2026-11-28 04:42:39 SMTP call from alice") == b"alice"
    assert router.route(b"2026-11-28 04:42:39 SMTP call from alice [192.0.2.1]") is None
    assert (
        router.route(
            b"2026-11-28 04:42:39 unexpected disconnection while reading SMTP command "
            b"from alice D=3s"
        )
        == b"alice"
    )


def test_message_ids_are_bounded(mod):
    router = mod.Router(mod.Accounts("/nonexistent", mod.new_warner()), max_ids=3)
    router.accounts.entries = {b"alice": "/home/alice"}
    ids = [mid(n) for n in range(5)]
    for m in ids:
        assert router.route(arrival(m, "alice").rstrip(b"\n")) == b"alice"
    assert list(router.ids) == [m.encode() for m in ids[2:]]
    assert router.route(delivered(ids[0]).rstrip(b"\n")) is None
    assert router.route(delivered(ids[4]).rstrip(b"\n")) == b"alice"


# Reading: partial lines, restarts, rotation


def test_partial_line_waits_for_its_end(mod, tree):
    a = mid(1)
    first, second, third = arrival(a, "alice"), delivered(a), completed(a)
    tree.append(first + second[:20])
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == first
    assert tree.saved()["offset"] == len(first)
    tree.append(second[20:] + third[:5])
    once(mod, tree)
    assert read(tree.log("alice")) == first + second
    tree.append(third[5:])
    once(mod, tree)
    assert read(tree.log("alice")) == first + second + third
    assert tree.saved() == {
        "inode": tree.mainlog.stat().st_ino,
        "offset": len(first + second + third),
        "ids": [],
    }


def test_small_reads_split_lines_anywhere(mod, tree, monkeypatch):
    """Reading 7 bytes at a time gives the same logs as reading everything at once."""
    lines = []
    for n in range(30):
        m = mid(n)
        lines += [arrival(m, ("alice", "bob", "root")[n % 3]), delivered(m), completed(m)]
    tree.append(b"".join(lines))
    monkeypatch.setattr(mod, "CHUNK", 7)
    once(mod, tree, "--from-start")
    expected_alice = b"".join(x for i, x in enumerate(lines) if (i // 3) % 3 == 0)
    expected_bob = b"".join(x for i, x in enumerate(lines) if (i // 3) % 3 == 1)
    assert read(tree.log("alice")) == expected_alice
    assert read(tree.log("bob")) == expected_bob


def test_overlong_incomplete_line_is_dropped(mod, tree, monkeypatch):
    monkeypatch.setattr(mod, "MAX_LINE", 1000)
    monkeypatch.setattr(mod, "CHUNK", 300)
    good = ln("U=alice rejected RCPT <x@y>: relay not permitted")
    tree.append(good + ln("U=alice " + "x" * 5000) + good)
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == good + good


def test_first_start_skips_history(mod, tree):
    old = arrival(mid(1), "alice") + delivered(mid(1))
    tree.append(old)
    once(mod, tree)
    assert not tree.log("alice").exists()
    assert tree.saved()["offset"] == len(old)
    new = completed(mid(1)) + ln("U=alice rejected RCPT <x@y>: relay not permitted")
    tree.append(new)
    once(mod, tree)
    assert read(tree.log("alice")) == new[len(completed(mid(1))) :]


def test_unusable_or_stale_state_starts_at_the_end(mod, tree, capfd):
    tree.append(ln("U=alice rejected RCPT <a@b>: old"))
    tree.state.parent.mkdir()
    new = ln("U=alice rejected RCPT <a@b>: new")
    for bad in ("{not json", '{"inode": -1, "offset": 0}', '{"inode": 1, "offset": 0}'):
        tree.state.write_text(bad)
        once(mod, tree)
        assert not tree.log("alice").exists(), bad
        assert tree.saved()["offset"] == tree.mainlog.stat().st_size
    assert "state" in capfd.readouterr().err
    tree.append(new)
    once(mod, tree)
    assert read(tree.log("alice")) == new


def test_restart_resumes_without_duplicates_or_loss(mod, tree):
    a, b = mid(1), mid(2)
    parts = [
        arrival(a, "alice") + arrival(b, "bob"),
        ln(f"{a} == x@example.net R=smarthost T=remote_smtp_smarthost defer (111)") + delivered(b),
        delivered(a) + completed(b),
        completed(a),
    ]
    for n, part in enumerate(parts):
        tree.append(part)
        once(mod, tree, "--from-start")  # --from-start only matters without a state
        if n == 0:
            assert tree.saved()["ids"] == [[a, "alice"], [b, "bob"]]
    assert read(tree.log("alice")) == b"".join(
        [arrival(a, "alice"), parts[1].splitlines(keepends=True)[0], delivered(a), completed(a)]
    )
    assert read(tree.log("bob")) == arrival(b, "bob") + delivered(b) + completed(b)
    assert tree.saved() == {
        "inode": tree.mainlog.stat().st_ino,
        "offset": tree.mainlog.stat().st_size,
        "ids": [],
    }


def test_rotation_between_runs_loses_nothing(mod, tree):
    a = mid(1)
    before = arrival(a, "alice")
    tree.append(before)
    once(mod, tree, "--from-start")
    late = delivered(a) + ln("U=alice rejected RCPT <x@y>: relay not permitted")
    tree.append(late[:30])
    tree.mainlog.rename(tree.rotated)  # logrotate: mainlog -> mainlog.1
    tree.append(late[30:], tree.rotated)  # Exim's last lines in the old file
    after = completed(a) + ln("U=bob rejected RCPT <x@y>: relay not permitted")
    tree.append(after)  # the new mainlog
    once(mod, tree)
    once(mod, tree)
    assert read(tree.log("alice")) == before + late + completed(a)
    assert read(tree.log("bob")) == after[len(completed(a)) :]
    assert tree.saved()["inode"] == tree.mainlog.stat().st_ino
    assert tree.saved()["offset"] == tree.mainlog.stat().st_size


def test_rotation_rereads_the_old_file_before_switching(mod, tree):
    """A line Exim adds to the old file between the last read and the rotation check is kept."""
    late = ln("U=alice rejected RCPT <x@y>: late")
    with following(mod, tree) as follower:
        drain = follower._drain
        calls = []

        def drain_then_exim_writes() -> None:
            drain()
            calls.append(1)
            if len(calls) == 1:
                tree.append(late, tree.rotated)

        tree.mainlog.rename(tree.rotated)
        tree.append(ln("U=bob rejected RCPT <x@y>: new file"))
        follower._drain = drain_then_exim_writes
        follower.poll()
    assert read(tree.log("alice")) == late
    assert read(tree.log("bob")) == ln("U=bob rejected RCPT <x@y>: new file")


def test_rotation_with_incomplete_last_line(mod, tree):
    tree.append(b"")
    once(mod, tree)
    cut = ln("U=alice rejected RCPT <x@y>: first")
    tree.append(cut[:-1])  # Exim never finished this line
    tree.mainlog.rename(tree.rotated)
    tree.append(ln("U=alice rejected RCPT <x@y>: second"))
    once(mod, tree)
    assert read(tree.log("alice")) == cut + ln("U=alice rejected RCPT <x@y>: second")


def test_rotation_while_the_main_log_is_missing(mod, tree):
    once(mod, tree)
    line = ln("U=alice rejected RCPT <x@y>: relay not permitted")
    tree.append(line)
    tree.mainlog.rename(tree.rotated)  # no new mainlog yet
    once(mod, tree)
    assert read(tree.log("alice")) == line
    tree.append(line)
    once(mod, tree)
    assert read(tree.log("alice")) == line * 2


def test_truncated_main_log_is_read_from_its_start(mod, tree):
    tree.append(ln("U=alice rejected RCPT <x@y>: " + "x" * 200))
    once(mod, tree, "--from-start")
    os.truncate(tree.mainlog, 0)  # copytruncate
    short = ln("U=bob rejected RCPT <x@y>: short")
    tree.append(short)
    once(mod, tree)
    assert read(tree.log("bob")) == short


def test_truncation_is_noticed_while_running(mod, tree):
    long, short = ln("U=alice rejected RCPT <x@y>: " + "x" * 200), ln("U=bob rejected RCPT <>")
    with following(mod, tree) as follower:
        tree.append(long)
        follower.poll()
        os.truncate(tree.mainlog, 0)  # copytruncate
        tree.append(short)
        follower.poll()
        follower.poll()
    assert read(tree.log("alice")) == long
    assert read(tree.log("bob")) == short
    assert tree.saved()["offset"] == len(short)


def test_missing_main_log(mod, tree):
    tree.mainlog.unlink()
    once(mod, tree)
    assert not tree.state.exists()
    tree.append(ln("U=alice rejected RCPT <x@y>: relay not permitted"))
    once(mod, tree)  # a first start: at the end
    assert not tree.log("alice").exists()


def test_accounts_file_is_reloaded_while_running(mod, tree):
    tree.add_account("carol", listed=False)
    a = mid(1)
    with following(mod, tree) as follower:
        tree.append(ln("U=carol rejected RCPT <x@y>: one") + arrival(a, "alice"))
        follower.poll()
        tree.accounts["carol"] = tree.home("carol")
        del tree.accounts["alice"]
        tree.write_accounts()
        tree.append(ln("U=carol rejected RCPT <x@y>: two") + delivered(a))
        follower.poll()
    assert read(tree.log("carol")) == ln("U=carol rejected RCPT <x@y>: two")
    assert read(tree.log("alice")) == arrival(a, "alice")  # removed: no more lines


# Where and how logs are written


def test_unsafe_log_places_are_skipped(mod, tree):
    names = ["nologs", "symdir", "userdir", "groupw", "symlog", "fifo", "nohome", "dirlog"]
    tree.gids.update(dict.fromkeys(names, 3000))
    elsewhere = tree.root / "elsewhere"
    elsewhere.mkdir()
    target = tree.root / "precious"
    target.write_bytes(b"precious\n")
    tree.home("nologs").mkdir(parents=True)
    tree.home("symdir").mkdir(parents=True)
    (tree.home("symdir") / "logs").symlink_to(elsewhere)
    tree.add_account("userdir", listed=False)
    os.chown(tree.home("userdir") / "logs", 1234, 1234)
    tree.add_account("groupw", listed=False)
    (tree.home("groupw") / "logs").chmod(0o770)
    tree.add_account("symlog", listed=False)
    tree.log("symlog").symlink_to(target)
    tree.add_account("fifo", listed=False)
    os.mkfifo(tree.log("fifo"))
    tree.add_account("dirlog", listed=False)
    tree.log("dirlog").mkdir()
    for name in names:
        tree.accounts[name] = tree.home(name)
    tree.write_accounts()
    lines = b"".join(ln(f"U={n} rejected RCPT <x@y>: relay not permitted") for n in names)
    alice = ln("U=alice rejected RCPT <x@y>: relay not permitted")
    tree.append(lines + alice)
    once(mod, tree, "--from-start")
    assert read(tree.log("alice")) == alice
    assert list(elsewhere.iterdir()) == []
    assert target.read_bytes() == b"precious\n"
    assert tree.log("symlog").is_symlink()
    for name in ("userdir", "groupw"):
        assert list((tree.home(name) / "logs").iterdir()) == []
    assert not (tree.home("nologs") / "logs").exists()
    assert not tree.home("nohome").exists()
    assert stat.S_ISFIFO(tree.log("fifo").lstat().st_mode)


def test_new_log_owner_and_mode(mod, tree):
    users = [u for u in ("daemon", "nobody", "bin") if _user(u)]
    if not users:
        pytest.skip("no system user to look up")
    system = users[0]
    tree.add_account(system)
    tree.add_account("ghost-user")  # no such user: skipped
    assert _user("ghost-user") is None
    lines = {n: ln(f"U={n} rejected RCPT <x@y>: relay not permitted") for n in tree.accounts}
    tree.log("bob").write_bytes(b"old\n")
    os.chown(tree.log("bob"), 0, 0)
    tree.log("bob").chmod(0o600)  # an existing log keeps its owner and mode
    tree.append(b"".join(lines.values()))
    old_umask = os.umask(0o077)  # the script must not depend on the umask
    try:
        once(mod, tree, "--from-start")
    finally:
        os.umask(old_umask)
    assert owner(tree.log("alice")) == (0, GIDS["alice"], 0o640)
    assert owner(tree.log(system)) == (0, _user(system).pw_gid, 0o640)
    assert read(tree.log(system)) == lines[system]
    assert owner(tree.log("bob")) == (0, 0, 0o600)
    assert read(tree.log("bob")) == b"old\n" + lines["bob"]
    assert not tree.log("ghost-user").exists()


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


# Command line, locking, signals


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0"], b"--interval"),
        (["--interval", "nan"], b"--interval"),
        (["--interval", "soon"], b"--interval"),
        (["--group-of", "alice"], b"NAME=GID"),
        (["--group-of", "alice=-1"], b"NAME=GID"),
        (["--mainlog", ""], b"--mainlog"),
        (["--state", "/"], b"--state"),
        (["--bogus"], b"unrecognized"),
        (["extra"], b"unrecognized"),
    ],
)
def test_usage_errors(args, message):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--once", *args],
        env=program_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc
    assert message in proc.stderr
    assert b"usage:" in proc.stderr


def test_unusable_state_place_is_an_error(tree, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *tree.argv("--once")[1:], f"--state={blocker}/state"],
        env=program_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"webarch-mail-log: ")
    assert str(blocker).encode() in proc.stderr


def test_second_copy_does_nothing(mod, tree, capfd):
    tree.append(ln("U=alice rejected RCPT <x@y>: relay not permitted"))
    tree.state.parent.mkdir()
    with open(f"{tree.state}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        once(mod, tree, "--from-start")
    assert "another webarch-mail-log is running" in capfd.readouterr().err
    assert not tree.log("alice").exists()
    assert not tree.state.exists()


def start(tree: Tree, *extra: str) -> subprocess.Popen:
    """Run the script in its following mode."""
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *tree.argv(*extra)[1:]],
        env=program_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM the script; it must exit 0; return how long it took."""
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return time.monotonic() - began


def wait_for(path: Path, data: bytes, timeout: float = 15.0) -> None:
    """Wait until ``path`` holds exactly ``data``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read(path) == data:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} has {read(path)!r}, not {data!r}")


def test_following_across_rotation(tree):
    a = mid(1)
    proc = start(tree, "--interval=0.05", "--from-start")
    try:
        first = arrival(a, "alice") + ln("U=bob rejected RCPT <x@y>: one")
        tree.append(first)
        wait_for(tree.log("alice"), arrival(a, "alice"))
        tree.append(delivered(a)[:25])
        time.sleep(0.2)  # polled: the incomplete line waits
        tree.mainlog.rename(tree.rotated)
        tree.append(delivered(a)[25:], tree.rotated)
        time.sleep(0.2)  # still reading the old file while there is no new one
        tree.append(completed(a) + ln("U=bob rejected RCPT <x@y>: two"))
        wait_for(tree.log("alice"), arrival(a, "alice") + delivered(a) + completed(a))
        wait_for(
            tree.log("bob"),
            ln("U=bob rejected RCPT <x@y>: one") + ln("U=bob rejected RCPT <x@y>: two"),
        )
    finally:
        stop(proc)
    assert tree.saved() == {
        "inode": tree.mainlog.stat().st_ino,
        "offset": tree.mainlog.stat().st_size,
        "ids": [],
    }


def test_sigterm_wakes_and_saves_state(mod, tree):
    """SIGTERM ends a long sleep at once; what came after the last poll is read by the next run."""
    a = mid(1)
    tree.append(arrival(a, "alice"))
    proc = start(tree, "--interval=60", "--from-start")
    try:
        wait_for(tree.log("alice"), arrival(a, "alice"))
        time.sleep(0.2)
        tree.append(delivered(a))  # the script sleeps: read by the next run
    finally:
        took = stop(proc)
    assert took < 10
    saved = tree.saved()
    assert saved["inode"] == tree.mainlog.stat().st_ino
    # Unless a very slow first poll saw it too, the delivery was left for the next run.
    assert saved["offset"] in (len(arrival(a, "alice")), tree.mainlog.stat().st_size)
    assert saved["ids"] == [[a, "alice"]]
    tree.append(completed(a))
    once(mod, tree)
    assert read(tree.log("alice")) == arrival(a, "alice") + delivered(a) + completed(a)


# Speed


def test_throughput(mod, tree, capsys):
    """Not a pass/fail check of speed: prints lines per second for a large log."""
    accounts = [f"site{i:02d}" for i in range(40)]
    for n, name in enumerate(accounts):
        tree.gids[name] = 5000 + n
        tree.add_account(name)
    expected: dict[str, list[bytes]] = {name: [] for name in accounts}
    out: list[bytes] = []
    for n in range(60_000):
        m = mid(n)
        name = accounts[n % len(accounts)]
        if n % 5 == 4:  # someone else's message, a remote one, a queue run
            out += [arrival(m, "root"), delivered(m), completed(m)]
            out.append(ln(f"{mid(n + 10**6)} <= x@example.net H=mx [192.0.2.1] P=esmtp S=9"))
            out.append(ln("Start queue run: pid=433"))
            continue
        mine = [arrival(m, name), delivered(m), completed(m)]
        mine.append(ln(f"U={name} rejected MAIL <{name}@example.org>: send limit reached"))
        out += mine
        expected[name] += mine
    data = b"".join(out)
    tree.append(data)
    began = time.perf_counter()
    once(mod, tree, "--from-start")
    elapsed = time.perf_counter() - began
    with capsys.disabled():
        print(
            f"\nwebarch-mail-log: {len(out)} lines ({len(data) / 1e6:.1f} MB) in {elapsed:.2f} s "
            f"= {len(out) / elapsed:,.0f} lines/s"
        )
    for name in accounts:
        assert read(tree.log(name)) == b"".join(expected[name]), name
    assert tree.saved() == {"inode": tree.mainlog.stat().st_ino, "offset": len(data), "ids": []}
