"""Nightly snapshots on btrfs: the pillar's method, the plan, the ioctls' numbers."""

from __future__ import annotations

import os

import formula
import pytest
import webarch_backup_btrfs as btrfs
from unit.model_helpers import problems


def test_the_method_is_auto_by_default_and_goes_into_the_programs_config(model):
    from unit.test_model_backup import build

    built = build(model, {"backup": {"enabled": True}, "accounts": {"alice": {}}})
    assert built["backup"]["method"] == "auto"
    assert built["backup"]["config"]["requested"] == "auto"
    chosen = build(model, {"backup": {"enabled": True, "method": "btrfs"}, "accounts": {}})
    assert chosen["backup"]["config"]["requested"] == "btrfs"


def test_an_unknown_method_is_named_by_its_pillar_path(model):
    found = problems(model, {"backup": {"enabled": True, "method": "zfs"}})
    assert "webarch:backup:method: must be one of auto, rsync, btrfs, not 'zfs'" in found


def test_the_ioctl_numbers_are_the_kernels():
    # linux/btrfs.h: _IOR(0x94, 31, 1024), _IOWR(0x94, 18, 4096), _IOW(0x94, 23, 4096),
    # _IOW(0x94, 15, 4096).
    assert btrfs.FS_INFO == 0x8400941F
    assert btrfs.INO_LOOKUP == 0xD0009412
    assert btrfs.SNAP_CREATE_V2 == 0x50009417
    assert btrfs.SNAP_DESTROY == 0x5000940F


@pytest.fixture
def fs(monkeypatch):
    """path_fsid answering from a table (the homes on one btrfs)."""
    table = {"/home": "aa", "/var/lib/webarch-backups": "aa", "/srv/other": "bb"}
    monkeypatch.setattr(btrfs, "path_fsid", table.get)
    return table


def test_plan_auto_takes_btrfs_only_with_the_store_on_the_homes_btrfs_and_subvolumes(fs):
    store = "/var/lib/webarch-backups"
    assert btrfs.plan("auto", store, "/home", True) == ("btrfs", None)
    assert btrfs.plan("auto", store, "/home", False) == ("rsync", None)
    assert btrfs.plan("auto", "/srv/other", "/home", True) == ("rsync", None)
    assert btrfs.plan("auto", "/srv/plain", "/home", True) == ("rsync", None)
    assert btrfs.plan("rsync", store, "/home", True) == ("rsync", None)
    assert btrfs.plan("btrfs", store, "/home", False) == ("btrfs", None)


@pytest.mark.parametrize(
    ("store", "homes", "why"),
    [
        ("/srv/plain", "/home", "the store /srv/plain is not on a btrfs"),
        ("/srv/other", "/home", "the store /srv/other is on another btrfs than /home"),
        ("/srv/other", "/plain", "/plain is not on a btrfs"),
    ],
)
def test_plan_an_explicit_btrfs_that_cannot_be_names_the_pillar_path(fs, store, homes, why):
    method, problem = btrfs.plan("btrfs", store, homes, True)
    assert method == "rsync"
    assert problem.startswith(f"webarch:backup:method is btrfs, but {why}: "), problem


def test_off_btrfs_nothing_is_a_subvolume(tmp_path):
    (tmp_path / "day").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if btrfs.fsid(fd) is not None:
            pytest.skip("this machine's temporary directory is on a btrfs")
        assert btrfs.subvolume_id(fd) is None
        assert btrfs.is_subvolume(fd, "day") is False
        assert btrfs.subvolume_id_of(fd, "missing") is None
    finally:
        os.close(fd)
    assert btrfs.existing(str(tmp_path / "a" / "b")) == str(tmp_path)


def test_a_name_with_a_slash_is_refused():
    with pytest.raises(ValueError, match="not a name"):
        btrfs.snapshot(0, 0, "a/b")


@pytest.fixture
def state():
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_backup.py")
    with LoaderModuleMock({module: {"__opts__": {"test": True}, "__salt__": {}}}):
        yield module


def test_the_method_state_fails_with_the_plans_problem_in_test_mode_too(state, fs):
    modules = formula.load("_modules/webarch_backup.py")
    state.__salt__["webarch_backup.plan"] = modules.plan
    ret = state.method("/var/lib/webarch-backups", "btrfs", True)
    assert ret["result"] is True and ret["changes"] == {} and "btrfs snapshots" in ret["comment"]
    ret = state.method("/srv/plain", "btrfs", True)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith("webarch:backup:method is btrfs, but the store /srv/plain")
    assert "rsync" in state.method("/srv/plain", "auto", True)["comment"]
