"""Unit tests of webarch_progs, the helpers webarch's Python programs share."""

from __future__ import annotations

import errno
import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest
import webarch_progs as progs
from unit.program_helpers import PROGRAMS

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (root-owned directories)")


def test_imported_from_the_checkout() -> None:
    # Not a stale copy installed in /usr/local/lib/webarch on this machine.
    assert Path(progs.__file__).resolve() == PROGRAMS / "webarch_progs.py"


# Warner


def test_warner_rate_limits_each_kind(capfd: pytest.CaptureFixture) -> None:
    warner = progs.Warner("prog", 60.0)
    warner.warn("one")
    warner.warn("two")  # same (shared) budget: dropped
    warner.warn("three", "other")
    warner.warn("four", "other")
    assert capfd.readouterr().err == "prog: one\nprog: three\n"


def test_warner_speaks_again_after_its_interval(capfd: pytest.CaptureFixture) -> None:
    warner = progs.Warner("prog", 0.0)
    warner.warn("one")
    warner.warn("two")
    assert capfd.readouterr().err == "prog: one\nprog: two\n"


# Map files


def test_parse_pairs() -> None:
    data = b"# header\n\n a b # comment\nc d e\nlone\n#x y\nf\tg\n"
    assert progs.parse_pairs(data) == [(b"a", b"b"), (b"f", b"g")]


@pytest.mark.parametrize("name", ["ab", "alice", "carol-stats", "a" + "b" * 30, b"bob"])
def test_account_names(name: str | bytes) -> None:
    assert progs.is_account_name(name)


@pytest.mark.parametrize(
    "name",
    ["a", "Alice", "-bob", "1bob", "a" + "b" * 31, "bob\n", "../etc", "b\xf6b", b"\xffbob", ""],
)
def test_not_account_names(name: str | bytes) -> None:
    assert not progs.is_account_name(name)


def test_parse_mail_accounts() -> None:
    entries = progs.parse_mail_accounts(
        b"# comment\n\n alice /home/alice  # trailing comment\nbob /home/bob\n"
        b"root /root\nDebian-exim /var/spool/exim4\nunknown /home/unknown\nBob /home/Bob\n"
        b"x /home/x\neve home/eve\nmallory /home/m extra\n../etc /etc\ncarol\n"
    )
    assert entries == {b"alice": "/home/alice", b"bob": "/home/bob"}


def test_watched_file_is_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "map"
    watched = progs.WatchedFile(str(path))
    assert watched.read_changed() == b""  # missing: no entries
    assert watched.missing
    assert watched.read_changed() is None  # still missing: nothing new
    path.write_bytes(b"a b\n")
    assert watched.read_changed() == b"a b\n"
    assert not watched.missing
    assert watched.read_changed() is None
    path.write_bytes(b"a b\nc d\n")
    assert watched.read_changed() == b"a b\nc d\n"
    replacement = tmp_path / "new"
    replacement.write_bytes(b"e f\n")
    replacement.replace(path)  # a new inode
    assert watched.read_changed() == b"e f\n"
    path.unlink()
    assert watched.read_changed() == b""


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_watched_file_must_be_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    if kind == "fifo":
        os.mkfifo(path)  # would block a plain open()
    else:
        path.mkdir()
    with pytest.raises(OSError) as info:
        progs.WatchedFile(str(path)).read_changed()
    assert info.value.errno == errno.EINVAL


# Logs in the accounts' homes


def make_home(base: Path, name: str = "alice", mode: int = 0o750) -> Path:
    """BASE/NAME/logs, root's with ``mode``; returns the home."""
    logs = base / name / "logs"
    logs.mkdir(parents=True)
    os.chown(logs, 0, 0)
    logs.chmod(mode)
    return base / name


@needs_root
def test_open_logs_dir(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    fd = progs.open_logs_dir(str(home) + "/")
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(home / "logs"))
    finally:
        os.close(fd)


@needs_root
@pytest.mark.parametrize("where", ["home", "logs"])
def test_open_logs_dir_follows_no_symlink(tmp_path: Path, where: str) -> None:
    real = make_home(tmp_path, "real")
    if where == "home":
        (tmp_path / "alice").symlink_to(real)
    else:
        (tmp_path / "alice").mkdir()
        (tmp_path / "alice" / "logs").symlink_to(real / "logs")
    with pytest.raises(OSError) as info:
        progs.open_logs_dir(str(tmp_path / "alice"))
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)


@needs_root
def test_open_logs_dir_refuses_a_writable_or_foreign_dir(tmp_path: Path) -> None:
    home = make_home(tmp_path, mode=0o770)
    with pytest.raises(PermissionError):
        progs.open_logs_dir(str(home))
    (home / "logs").chmod(0o750)
    os.chown(home / "logs", 1234, 0)
    with pytest.raises(PermissionError):
        progs.open_logs_dir(str(home))


def test_open_logs_dir_needs_a_home() -> None:
    with pytest.raises(OSError) as info:
        progs.open_logs_dir("/")
    assert info.value.errno == errno.EINVAL


@needs_root
def test_open_log_creates_with_owner_and_keeps_existing(tmp_path: Path) -> None:
    dir_fd = os.open(tmp_path, progs.DIR_FLAGS)
    try:
        fd, st = progs.open_log("new.log", dir_fd, lambda: (4321, 0o640))
        os.close(fd)
        assert stat.S_ISREG(st.st_mode)
        made = os.stat(tmp_path / "new.log")
        assert (made.st_uid, made.st_gid, stat.S_IMODE(made.st_mode)) == (0, 4321, 0o640)
        fd, _ = progs.open_log("new.log", dir_fd, lambda: pytest.fail("not a new file"))
        progs.write_all(fd, b"line\n")
        os.close(fd)
    finally:
        os.close(dir_fd)
    assert (tmp_path / "new.log").read_bytes() == b"line\n"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dir"])
def test_open_log_refuses_what_is_no_regular_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    path = tmp_path / "x.log"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)  # no reader: open() must fail at once, not hang
    else:
        path.mkdir()
    dir_fd = os.open(tmp_path, progs.DIR_FLAGS)
    try:
        with pytest.raises(OSError):
            progs.open_log("x.log", dir_fd, lambda: (0, 0o640))
    finally:
        os.close(dir_fd)
    assert target.read_bytes() == b""


def test_set_owner_falls_back_to_root_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(errno.EPERM, "no")

    path = tmp_path / "f"
    path.write_bytes(b"")
    monkeypatch.setattr(progs.os, "fchown", refused)
    fd = os.open(path, os.O_RDWR)
    try:
        progs.set_owner(fd, 1234, 0o640)
    finally:
        os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_all_goes_on_after_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr(progs.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        progs.write_all(fd, b"0123456789")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"0123456789"


# A program's own state and main loop


def test_replace_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old")
    progs.replace_file(str(path), b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_locked(tmp_path: Path) -> None:
    lock = str(tmp_path / "sub" / "x.lock")
    with progs.locked(lock, wait=False) as first:
        assert first
        assert stat.S_IMODE(os.stat(tmp_path / "sub").st_mode) == 0o700
        with progs.locked(lock, wait=False) as second:
            assert not second
    with progs.locked(lock, wait=False) as again:
        assert again


def test_stop_on_sigterm() -> None:
    stop = progs.Stop()
    stop.install()
    try:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
        began = time.monotonic()
        timer.start()
        stop.wait(30)  # woken by the signal, not the timeout
        timer.join()
        assert stop.requested
        stop.wait(30)  # returns at once
        assert time.monotonic() - began < 10
    finally:
        stop.close()
    assert signal.getsignal(signal.SIGTERM) is not stop._handler
