"""Nightly snapshots: the model (``webarch:backup``, ``accounts:USERNAME:backup``), the program."""

from __future__ import annotations

import importlib.util
import os

import pytest
import webarch_backup as backup
from unit.model_helpers import host, problems
from unit.program_helpers import program

ON = {"enabled": True}


def build(model, pillar):
    return model.build_model(pillar, host(model), 12)


def mounts(built, name="alice"):
    return {m["id"]: m for m in built["accounts"][name]["chroot"]["mounts"]}


def test_off_by_default_no_mount_no_accounts(model):
    built = build(model, {"accounts": {"alice": {}}})
    assert built["backup"]["enabled"] is False and built["backup"]["accounts"] == []
    assert built["backup"]["store"] == "/var/lib/webarch-backups"
    assert built["backup"]["days"] == 30 and built["backup"]["on_calendar"] == "*-*-* 04:00:00"
    assert "backups" not in mounts(built)


def test_on_every_present_account_gets_its_days_read_only_in_its_chroot(model):
    pillar = {
        "backup": {**ON, "store": "/srv/snapshots", "days": 7, "time": "01:30"},
        "accounts": {"alice": {}, "bob": {"backup": False}, "carol": {"state": "absent"}},
    }
    built = build(model, pillar)
    assert built["backup"]["accounts"] == ["alice"]
    assert built["backup"]["on_calendar"] == "*-*-* 01:30:00"
    mount = mounts(built)["backups"]
    assert mount == {
        "id": "backups",
        "name": "/chroots/alice/home/alice/backups/files",
        "device": "/srv/snapshots/alice/days",
        "fstype": "none",
        "opts": ["bind", "ro", "nosuid", "nodev", "noexec"],
    }
    # Last: on top of the home's bind, unmounted first.
    assert built["accounts"]["alice"]["chroot"]["mounts"][-1]["id"] == "backups"
    assert "backups" not in mounts(built, "bob")
    config = built["backup"]["config"]
    assert config["accounts"] == {"alice": {"home": "/home/alice"}}
    assert config["store"] == "/srv/snapshots" and config["days"] == 7
    assert config["excludes"] == ["/backups/files/", "/tmp/"]


def test_every_problem_is_named_by_its_pillar_path(model):
    found = problems(
        model,
        {
            "backup": {
                "enabled": "yes",
                "store": "/home/store",
                "days": 0,
                "time": "25:00",
                "keep": 3,
            },
            "accounts": {"alice": {"backup": "no"}},
        },
    )
    assert "webarch:backup:enabled: must be true or false" in " ".join(found)
    assert "webarch:backup:store: '/home/store' must not be inside /home" in found
    assert any(p.startswith("webarch:backup:days:") for p in found)
    assert "webarch:backup:time: must be a time of day HH:MM, not '25:00'" in found
    assert any(p.startswith("webarch:backup:keep") or "keep" in p for p in found)
    assert any(p.startswith("webarch:accounts:alice:backup:") for p in found)


def test_the_store_is_apart_from_the_chroots_and_the_archives(model):
    for store, other in (
        ("/chroots/x", "must not be inside chroot_base /chroots"),
        ("/var/backups/webarch/s", "must not be inside archive_dir /var/backups/webarch"),
        ("/var/backups", "must not contain archive_dir /var/backups/webarch"),
        ("/srv/../etc", "must be an absolute path"),
    ):
        found = problems(model, {"backup": {**ON, "store": store}})
        assert len(found) == 1 and found[0].startswith("webarch:backup:store:"), found
        assert other in found[0], found


# --------------------------------------------------------------------------
# The program (webarch/files/programs/webarch_backup.py): expiry and figures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prog():
    """The program, loaded under its own name (_utils has a webarch_backup too)."""
    spec = importlib.util.spec_from_file_location("webarch_backup_prog", program("webarch_backup"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_days(path, *days):
    for day in days:
        (path / day).mkdir(parents=True)
        (path / day / "file").write_text(day)


def test_a_night_expires_only_the_days_past_their_time(prog, tmp_path):
    make_days(tmp_path, "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-05")
    (tmp_path / "notes").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert prog.expire(fd, "2026-12-05", 3) == ["2026-12-01", "2026-12-02"]
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2026-12-03", "2026-12-04", "2026-12-05", "notes"]  # fmt: skip


def test_accounts_no_longer_backed_up_expire_and_retired_ones_go_with_their_last_day(
    prog, tmp_path
):
    make_days(tmp_path / "alice" / "days", "2026-11-01")
    make_days(tmp_path / "bob" / "days", "2026-11-01", "2026-12-04")
    make_days(tmp_path / ".retired-carol-20261101T000000Z" / "days", "2026-11-02")
    (tmp_path / "lost+found").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        lines = prog.expire_others(fd, {"alice"}, "2026-12-05", 30)
    finally:
        os.close(fd)
    assert lines == [
        ".retired-carol-20261101T000000Z: expired 2026-11-02",
        ".retired-carol-20261101T000000Z: removed (no day left)",
        "bob: expired 2026-11-01",
    ]
    # alice's own night expires her days; bob's store stays with his last day.
    assert (tmp_path / "alice" / "days" / "2026-11-01").is_dir()
    assert [p.name for p in (tmp_path / "bob" / "days").iterdir()] == ["2026-12-04"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice", "bob", "lost+found"]


def test_hard_linked_days_count_once(prog, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "big").write_bytes(b"x" * (1 << 20))
    os.link(tmp_path / "a" / "big", tmp_path / "b" / "big")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        used = prog.tree_bytes(fd)
    finally:
        os.close(fd)
    assert 1 << 20 <= used < (1 << 20) + (1 << 16)


def test_rsync_runs_as_the_account_and_links_to_the_day_before(prog):
    argv = prog.rsync_argv(2001, 2002, 65534, "/home/alice", "/s/alice/.partial-D",
                           "2026-12-04", ["/backups/files/", "/tmp/"])  # fmt: skip
    # Real gid nogroup, effective gid the account's: the kernel makes rsync non-dumpable.
    assert argv[:7] == ["setpriv", "--reuid=2001", "--rgid=65534", "--egid=2002",
                        "--clear-groups", "--no-new-privs", "--inh-caps=-all"]  # fmt: skip
    assert "--link-dest=../days/2026-12-04" in argv and "--one-file-system" in argv
    assert "--exclude=/backups/files/" in argv and "--exclude=/tmp/" in argv
    assert argv[-2:] == ["/home/alice/", "/s/alice/.partial-D/"]


@pytest.mark.parametrize("args", [["--date", "2026-13-01"], ["--date", "yesterday"], ["Alice"]])
def test_bad_arguments_are_refused(prog, args):
    assert prog.main(args) == 3


def test_owners_under_gives_a_subtree_from_its_parent_deepest_first() -> None:
    entries = {
        "logs": [0o40750, 0, 1001],
        "logs/access.log": [0o100640, 0, 1001],
        "sites": [0o42750, 1001, 33],
        "sites/www": [0o42750, 1001, 33],
        "sites/www/a/index.php": [0o100640, 1001, 33],
        "sites/wwwx": [0o42750, 1001, 33],
    }
    assert backup.owners_under(entries, "sites/www") == [
        ("www/a/index.php", [0o100640, 1001, 33]),
        ("www", [0o42750, 1001, 33]),
    ]
    assert [p for p, _ in backup.owners_under(entries, "logs")] == ["logs/access.log", "logs"]
    assert backup.owners_under(entries, "private") == []


def test_restored_attrs_never_set_setuid_or_setgid_on_a_file() -> None:
    owners, groups = {0, 1001}, {0, 1001, 33}
    assert backup.restored_attrs((0o104755, 0, 0), owners, groups) == (0o755, 0, 0)
    assert backup.restored_attrs((0o102755, 1001, 33), owners, groups) == (0o755, 1001, 33)
    # A directory keeps its setgid bit (the sites' group for new files).
    assert backup.restored_attrs((0o42750, 1001, 33), owners, groups) == (0o2750, 1001, 33)


def test_restored_attrs_leave_owners_a_home_does_not_hold() -> None:
    owners, groups = {0, 1001}, {0, 1001, 33}
    assert backup.restored_attrs((0o100600, 1002, 1002), owners, groups) == (0o600, None, None)


def test_a_nights_own_bytes_leave_out_what_it_shares_and_add_up_to_the_whole(prog, tmp_path):
    """The store's use counted night by night (the last total, plus the new day's
    own bytes, minus the expired day's) equals counting every day."""
    days = tmp_path / "days"
    (days / "d1").mkdir(parents=True)
    (days / "d1" / "kept").write_bytes(b"k" * (256 << 10))
    (days / "d1" / "old").write_bytes(b"o" * (128 << 10))
    fd = os.open(days, os.O_RDONLY | os.O_DIRECTORY)
    try:
        total = prog.tree_bytes(fd)
        (days / "d2").mkdir()
        os.link(days / "d1" / "kept", days / "d2" / "kept")
        (days / "d2" / "new").write_bytes(b"n" * (64 << 10))
        os.link(days / "d2" / "new", days / "d2" / "new-again")  # a hard link in the home
        new = prog.own_bytes(fd, "d2")
        assert (64 << 10) <= new < (64 << 10) + (16 << 10)
        total += new
        freed = prog.own_bytes(fd, "d1")  # d2 is in place: only "old" is d1's alone
        assert (128 << 10) <= freed < (128 << 10) + (16 << 10)
        total -= freed
        prog.remove("d1", fd)
        assert total == prog.tree_bytes(fd)
    finally:
        os.close(fd)
