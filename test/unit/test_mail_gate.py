"""Unit tests of webarch-mail-gate, which hands a local SMTP session to Exim as its account.

The checks run in-process on a socketpair (the kernel's SO_PEERCRED then names
this test process); dropping privileges and exec'ing Exim are replaced by
recorders.  One test runs the real program as systemd does, its standard input
the connection.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import webarch_mail_gate as gate
import webarch_paths as paths
from unit.program_helpers import program, program_env

#: Stand-ins for pwd entries (a pwd.struct_passwd made by hand upsets CPython 3.11's
#: garbage collector under pytest: "SystemError ... in tp_clear").
ALICE = SimpleNamespace(pw_name="alice", pw_uid=2001, pw_gid=2001)
ROOT = SimpleNamespace(pw_name="root", pw_uid=0, pw_gid=0)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The gate's end of a connection and the client's."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        yield ours, theirs


def test_default_accounts_file_is_the_models() -> None:
    assert gate.accounts.__defaults__ == (paths.MAIL_ACCOUNTS_PATH,)


def test_accounts(tmp_path: Path) -> None:
    path = tmp_path / "mail-accounts"
    path.write_text(
        "# Managed by Salt (webarch): ACCOUNT HOME\nalice /home/alice\ncarol-stats /home/c\n"
        "root /root\nDebian-exim /var/spool/exim4\nBad /home/Bad\nmallory\n"
        "eve /home/eve # a comment\n"
    )
    assert gate.accounts(str(path)) == {"alice", "carol-stats", "eve"}


def test_no_accounts_file_means_no_accounts(tmp_path: Path) -> None:
    assert gate.accounts(str(tmp_path / "missing")) == set()


def test_unreadable_accounts_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        gate.accounts(str(tmp_path))  # a directory


def test_peer_of_a_socketpair_is_this_process(pair: tuple[socket.socket, socket.socket]) -> None:
    assert gate.peer_of(pair[0]) == gate.Peer(os.getpid(), os.getuid(), os.getgid())


@pytest.mark.parametrize(
    ("uid", "user", "allowed", "why"),
    [
        (2001, ALICE, {"alice"}, None),
        (2001, ALICE, {"bob"}, "alice (uid 2001, gid 2001, pid 7) is not a hosting account"),
        (0, ALICE, {"alice"}, "alice (uid 0, gid 2001, pid 7) is not a hosting account"),
        (
            0,
            ROOT,
            {"root"},
            "root (uid 0, gid 2001, pid 7) is not a hosting account",
        ),
        (4242, None, {"alice"}, "uid 4242, gid 2001, pid 7 has no user"),
    ],
)
def test_refusal(uid: int, user: SimpleNamespace | None, allowed: set[str], why: str) -> None:
    assert gate.refusal(gate.Peer(7, uid, 2001), user, allowed) == why


def test_refuse_answers_554_and_logs(
    pair: tuple[socket.socket, socket.socket], capsys: pytest.CaptureFixture
) -> None:
    assert gate.refuse(pair[0], "because") == 1
    assert pair[1].recv(1024) == gate.REFUSAL
    assert gate.REFUSAL.startswith(b"554 ")
    assert capsys.readouterr().err == "webarch-mail-gate: refused: because\n"


class Recorder:
    """Stands in for become() and os.execve()."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def become(self, user: SimpleNamespace) -> None:
        self.calls.append(("become", user.pw_name))

    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        self.calls.append(("execve", path, argv, env))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(gate, "become", rec.become)
    monkeypatch.setattr(gate.os, "execve", rec.execve)
    monkeypatch.setattr(gate, "under_limits", lambda: rec.calls.append(("under_limits",)))
    return rec


@pytest.fixture
def alice_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    """alice (uid 2001, a listed account) is the peer of the connection."""
    monkeypatch.setattr(gate, "peer_of", lambda conn: gate.Peer(7, 2001, 2001))
    monkeypatch.setattr(gate, "user_of", lambda uid: ALICE if uid == 2001 else None)
    monkeypatch.setattr(gate, "accounts", lambda: {"alice"})


@pytest.mark.usefixtures("alice_connects")
def test_serve_runs_exim_as_a_listed_account(
    pair: tuple[socket.socket, socket.socket],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate, "in_slice", lambda uid: uid == 2001)
    gate.serve(pair[0])
    assert recorder.calls == [
        ("under_limits",),
        ("become", "alice"),
        ("execve", "/usr/sbin/exim4", ["/usr/sbin/exim4", "-bs"], gate.EXIM_ENV),
    ]


@pytest.mark.usefixtures("alice_connects")
def test_serve_outside_the_slice_runs_itself_again_in_it(
    pair: tuple[socket.socket, socket.socket],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first pass only moves into alice's slice (its execve replaces the process)."""
    monkeypatch.setattr(gate, "in_slice", lambda uid: False)
    gate.serve(pair[0])
    path, argv, env = recorder.calls[0][1:]
    assert path == gate.SYSTEMD_RUN == argv[0]
    assert argv[1:5] == ["--quiet", "--scope", "--collect", "--slice=user-2001.slice"]
    assert argv[5] == "--" and argv[6] == sys.executable
    assert env == gate.EXIM_ENV


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        ("0::/user.slice/user-2001.slice/run-r1.scope\n", True),
        ("1:name=systemd:/user.slice/user-2001.slice/run-r1.scope\n0::/\n", True),
        ("0::/system.slice/system-webarch\\x2dmail.slice/webarch-mail@1.service\n", False),
        ("0::/user.slice/user-20011.slice/session-3.scope\n", False),
    ],
)
def test_in_slice(tmp_path: Path, text: str, inside: bool) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(text)
    assert gate.in_slice(2001, str(cgroup)) is inside


def test_serve_refuses_an_unlisted_peer(
    pair: tuple[socket.socket, socket.socket],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate, "peer_of", lambda conn: gate.Peer(7, 2001, 2001))
    monkeypatch.setattr(gate, "user_of", lambda uid: ALICE)
    monkeypatch.setattr(gate, "accounts", lambda: {"bob"})
    assert gate.serve(pair[0]) == 1
    assert pair[1].recv(1024) == gate.REFUSAL
    assert recorder.calls == []


def test_serve_refuses_when_the_accounts_file_is_unreadable(
    pair: tuple[socket.socket, socket.socket],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreadable() -> set[str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gate, "peer_of", lambda conn: gate.Peer(7, 2001, 2001))
    monkeypatch.setattr(gate, "user_of", lambda uid: ALICE)
    monkeypatch.setattr(gate, "accounts", unreadable)
    assert gate.serve(pair[0]) == 1
    assert pair[1].recv(1024) == gate.REFUSAL
    assert recorder.calls == []


def test_the_program_refuses_root(pair: tuple[socket.socket, socket.socket]) -> None:
    """The real program, its standard input the connection (systemd's Accept=yes)."""
    if os.geteuid() != 0:
        pytest.skip("the peer must be root")
    ours, theirs = pair
    proc = subprocess.run(
        [sys.executable, str(program("webarch_mail_gate"))],
        stdin=ours,
        env=program_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert b"refused: root (uid 0" in proc.stderr
    assert theirs.recv(1024) == gate.REFUSAL
