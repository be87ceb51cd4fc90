"""Disk quotas on btrfs: the model's pillar paths of the limits btrfs lacks, the states
(over a fake execution module) and the execution module's reading of ``btrfs qgroup show``."""

from __future__ import annotations

import formula
import pytest
from unit.model_helpers import host

M = 1 << 10  # KiB in a MiB


def build(model, pillar):
    return model.build_model(pillar, host(model), 12)


# -- the model -------------------------------------------------------------------------


def test_the_model_names_where_soft_and_file_limits_come_from(model):
    pillar = {
        "quota": {"defaults": {"blocks_hard": "1G", "inodes_hard": 1000, "blocks_soft": "900M"}},
        "accounts": {
            "alice": {"quota": {"inodes_soft": 10, "blocks_soft": 0}},
            "bob": {},
            "carol": {"quota": {"inodes_hard": 0, "blocks_soft": 0}},
        },
    }
    accounts = build(model, pillar)["accounts"]
    assert accounts["alice"]["quota_from"] == {
        "inodes_soft": "webarch:accounts:alice:quota:inodes_soft",
        "inodes_hard": "webarch:quota:defaults:inodes_hard",
    }
    assert accounts["bob"]["quota_from"] == {
        "blocks_soft": "webarch:quota:defaults:blocks_soft",
        "inodes_hard": "webarch:quota:defaults:inodes_hard",
    }
    assert accounts["carol"]["quota_from"] == {}


def test_a_hard_space_limit_alone_is_all_btrfs_needs(model):
    built = build(model, {"accounts": {"alice": {"quota": {"blocks_hard": "8M"}}}})
    assert built["accounts"]["alice"]["quota_from"] == {}
    assert built["quota"]["homes"] == "/home"


# -- the states, over a fake execution module ----------------------------------------


class FakeBtrfs:
    """The webarch_quota execution module of a host whose /home is a btrfs."""

    def __init__(self, qgroups: bool = True, home: str = "subvolume") -> None:
        self.fs = {"mount": "/home", "device": "/dev/loop3", "fstype": "btrfs", "quota": qgroups}
        if not qgroups:
            self.fs["problem"] = "its quotas (qgroups) are off (btrfs quota enable /home)"
        self.home = home  # subvolume, plain or absent
        self.limit = 0
        self.calls: list[str] = []

    def salt(self) -> dict:
        return {
            "webarch_quota.filesystem": lambda path: dict(self.fs),
            "webarch_quota.describe": lambda fs: (
                f"{fs['mount']} ({fs['fstype']} on {fs['device']})"
            ),
            "webarch_quota.subvolume": self.subvolume,
            "webarch_quota.create_subvolume": self.create,
            "webarch_quota.quotas_on": self.quotas_on,
            "webarch_quota.get": lambda name, path=None: {
                "blocks_soft": 0,
                "blocks_hard": self.limit,
                "inodes_soft": 0,
                "inodes_hard": 0,
                "space_used": 4096,
            },
            "webarch_quota.set": self.set_,
            "user.info": lambda name: {"name": name},
        }

    def subvolume(self, path):
        found = {"path": path, "exists": self.home != "absent"}
        found["subvolume"] = self.home == "subvolume"
        return {**found, "id": 257} if found["subvolume"] else found

    def create(self, path):
        self.calls.append(f"create {path}")
        self.home = "subvolume"
        return self.subvolume(path)

    def quotas_on(self, path):
        self.calls.append(f"quota enable {path}")
        self.fs.update(quota=True)
        self.fs.pop("problem", None)
        return dict(self.fs)

    def set_(self, name, path=None, **limits):
        self.calls.append(f"limit {limits['blocks_hard']}")
        self.limit = limits["blocks_hard"]


@pytest.fixture
def state():
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_quota.py")
    with LoaderModuleMock({module: {"__opts__": {"test": False}, "__salt__": {}}}):
        yield module


def use(state, fake, test=False):
    state.__salt__.clear()
    state.__salt__.update(fake.salt())
    state.__opts__["test"] = test
    return state


def test_limit_is_set_only_when_it_differs_and_a_change_is_applied(state):
    fake = FakeBtrfs()
    ret = use(state, fake).limits("alice", "/home/alice", blocks_hard=8 * M)
    assert ret["result"] is True, ret
    assert ret["changes"] == {"blocks_hard": {"old": "none", "new": "8M"}}
    assert "/home (btrfs on /dev/loop3)" in ret["comment"]
    again = use(state, fake).limits("alice", "/home/alice", blocks_hard=8 * M)
    assert again["result"] is True and again["changes"] == {}
    predicted = use(state, fake, test=True).limits("alice", "/home/alice", blocks_hard=16 * M)
    assert predicted["result"] is None
    assert predicted["changes"] == {"blocks_hard": {"old": "8M", "new": "16M"}}
    assert fake.calls == [f"limit {8 * M}"]
    bigger = use(state, fake).limits("alice", "/home/alice", blocks_hard=16 * M)
    assert bigger["changes"] == {"blocks_hard": {"old": "8M", "new": "16M"}}
    assert fake.calls == [f"limit {8 * M}", f"limit {16 * M}"]


@pytest.mark.parametrize("test", [False, True])
def test_a_file_or_soft_limit_fails_naming_its_pillar_path(state, test):
    fake = FakeBtrfs()
    sources = {"inodes_hard": "webarch:quota:defaults:inodes_hard"}
    ret = use(state, fake, test=test).limits(
        "alice", "/home/alice", blocks_hard=8 * M, blocks_soft=6 * M, inodes_hard=500,
        sources=sources,
    )  # fmt: skip
    assert ret["result"] is False and fake.calls == []
    assert "webarch:quota:defaults:inodes_hard is 500" in ret["comment"], ret["comment"]
    assert "blocks_soft is 6M" in ret["comment"]
    assert "no soft limit, grace period or file count" in ret["comment"]


def test_on_a_fresh_btrfs_test_mode_predicts_everything(state):
    fake = FakeBtrfs(qgroups=False, home="absent")
    on = use(state, fake, test=True).enabled("/home")
    assert on["result"] is None and on["changes"] == {"qgroups": {"old": "off", "new": "on"}}
    home = use(state, fake, test=True).home("/home/alice", chroot="/chroots/alice")
    assert home["result"] is None
    assert home["changes"] == {"subvolume": {"old": None, "new": "/home/alice"}}
    limit = use(state, fake, test=True).limits("alice", "/home/alice", blocks_hard=8 * M)
    assert limit["result"] is None
    assert limit["changes"] == {"blocks_hard": {"old": "none", "new": "8M"}}
    assert fake.calls == []


def test_quotas_are_switched_on_and_a_new_home_made_a_subvolume_once(state):
    fake = FakeBtrfs(qgroups=False, home="absent")
    on = use(state, fake).enabled("/home")
    assert on["result"] is True and on["changes"] == {"qgroups": {"old": "off", "new": "on"}}
    assert "were off: switched on" in on["comment"]
    home = use(state, fake).home("/home/alice")
    assert home["result"] is True and "qgroup 0/257" in home["comment"]
    assert fake.calls == ["quota enable /home", "create /home/alice"]
    assert use(state, fake).enabled("/home")["changes"] == {}
    assert use(state, fake).home("/home/alice")["changes"] == {}
    assert len(fake.calls) == 2


def test_a_plain_directory_home_fails_saying_how_to_convert_it(state):
    fake = FakeBtrfs(home="plain")
    home = use(state, fake).home("/home/alice", chroot="/chroots/alice")
    assert home["result"] is False and fake.calls == []
    comment = home["comment"]
    assert "is a plain directory, not a subvolume" in comment
    assert "nsenter --mount=/run/webarch/ns/chroots findmnt -R /chroots/alice" in comment
    assert "cp -a --reflink=always /home/alice/. /home/alice.new/" in comment
    assert "mv /home/alice /home/alice.old && mv /home/alice.new /home/alice" in comment
    limit = use(state, fake).limits("alice", "/home/alice", blocks_hard=8 * M)
    assert limit["result"] is False and "webarch-alice-home-subvolume" in limit["comment"]


def test_elsewhere_the_btrfs_states_change_nothing(state):
    fake = FakeBtrfs()
    fake.fs.update(fstype="ext4", device="/dev/sdb1")
    on = use(state, fake).enabled("/home")
    assert on["result"] is True and on["changes"] == {} and "not a btrfs" in on["comment"]
    home = use(state, fake).home("/home/alice")
    assert home["result"] is True and home["changes"] == {} and fake.calls == []


# -- the execution module --------------------------------------------------------------

QGROUP_SHOW = """\
Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path
--------    ----------    ---------  --------------  -------------   ----
0/257          3162112      3162112         8388608           none   alice
"""


@pytest.fixture
def module():
    from saltfactories.utils.loader import LoaderModuleMock

    loaded = formula.load("_modules/webarch_quota.py")
    with LoaderModuleMock({loaded: {"__salt__": {}}}):
        yield loaded


def test_qgroup_reads_the_homes_row_of_btrfs_qgroup_show(module, monkeypatch):
    ran = []

    def run_all(cmd, **_kwargs):
        ran.append(cmd)
        return {"retcode": 0, "stdout": QGROUP_SHOW, "stderr": ""}

    module.__salt__["cmd.run_all"] = run_all
    monkeypatch.setattr(module, "subvolume", lambda path: {"subvolume": True, "id": 257})
    assert module.qgroup("/home/alice") == {
        "qgroup": "0/257",
        "referenced": 3162112,
        "exclusive": 3162112,
        "max_referenced": 8388608,
    }
    assert ran == [["btrfs", "qgroup", "show", "--raw", "-re", "-f", "/home/alice"]]
    monkeypatch.setattr(module, "subvolume", lambda path: {"subvolume": True, "id": 300})
    with pytest.raises(module.CommandExecutionError, match="no qgroup 0/300"):
        module.qgroup("/home/alice")


def test_set_on_btrfs_refuses_what_a_qgroup_cannot_limit(module, monkeypatch):
    module.__salt__["cmd.run_all"] = lambda cmd, **_kw: pytest.fail(f"ran {cmd}")
    monkeypatch.setattr(module, "_user", lambda name: type("U", (), {"pw_dir": "/home/" + name}))
    monkeypatch.setattr(
        module, "filesystem", lambda path: {"fstype": "btrfs", "quota": True, "mount": "/home"}
    )
    with pytest.raises(module.CommandExecutionError, match="inodes_hard must be 0"):
        module.set_("alice", blocks_hard=8 * M, inodes_hard=10)
