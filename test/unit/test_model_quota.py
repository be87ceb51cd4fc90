"""Disk quotas: the model's ``webarch:quota`` and ``accounts:USERNAME:quota``, and the state."""

from __future__ import annotations

import formula
import pytest
from unit.model_helpers import host, problems

G = 1 << 20  # KiB in a GiB
M = 1 << 10


def build(model, pillar):
    return model.build_model(pillar, host(model), 12)


def test_no_limits_no_quota_states(model):
    built = build(model, {"accounts": {"alice": {}}})
    assert built["quota"]["enabled"] is False and built["quota"]["accounts"] == []
    assert built["quota"]["off_notice"] is False
    assert built["accounts"]["alice"]["quota"] == dict.fromkeys(
        ("blocks_soft", "blocks_hard", "inodes_soft", "inodes_hard"), 0
    )


def test_limits_switch_quotas_on_and_merge_over_the_defaults(model):
    pillar = {
        "quota": {"defaults": {"blocks_soft": "4G", "blocks_hard": "5G", "inodes_hard": 1000}},
        "accounts": {"alice": {"quota": {"blocks_hard": "10G", "blocks_soft": "9G"}}, "bob": {}},
    }
    built = build(model, pillar)
    assert built["quota"]["enabled"] is True
    assert built["quota"]["accounts"] == ["alice", "bob"]
    assert built["quota"]["report_args"] == ["alice:/home/alice", "bob:/home/bob"]
    assert built["accounts"]["alice"]["quota"] == {
        "blocks_soft": 9 * G,
        "blocks_hard": 10 * G,
        "inodes_soft": 0,
        "inodes_hard": 1000,
    }
    assert built["accounts"]["bob"]["quota"]["blocks_hard"] == 5 * G


def test_an_account_limit_alone_switches_quotas_on(model):
    built = build(model, {"accounts": {"alice": {"quota": {"blocks_hard": "500M"}}}})
    assert built["quota"]["enabled"] is True
    assert built["accounts"]["alice"]["quota"]["blocks_hard"] == 500 * M


def test_switched_off_the_limits_are_kept_and_the_run_says_so(model):
    pillar = {"quota": {"enabled": False}, "accounts": {"alice": {"quota": {"blocks_hard": "1G"}}}}
    built = build(model, pillar)
    assert built["quota"]["enabled"] is False and built["quota"]["accounts"] == []
    assert built["quota"]["off_notice"] is True
    assert built["accounts"]["alice"]["quota"]["blocks_hard"] == G


def test_enabled_without_limits_sets_none(model):
    built = build(model, {"quota": {"enabled": True}, "accounts": {"alice": {}}})
    assert built["quota"]["accounts"] == ["alice"]
    assert set(built["accounts"]["alice"]["quota"].values()) == {0}


@pytest.mark.parametrize(
    ("quota", "where", "message"),
    [
        ({"blocks_hard": "5GB"}, "blocks_hard", "must be a size like 500M or 5G"),
        ({"blocks_hard": 5}, "blocks_hard", "must be a size like 500M or 5G"),
        ({"blocks_hard": "-1G"}, "blocks_hard", "must be a size"),
        ({"inodes_hard": "1000"}, "inodes_hard", "must be an integer"),
        ({"inodes_hard": -1}, "inodes_hard", "must be between 0 and"),
        (
            {"blocks_soft": "2G", "blocks_hard": "1G"},
            "blocks_soft",
            "must not be above blocks_hard",
        ),
        ({"inodes_soft": 20, "inodes_hard": 10}, "inodes_soft", "must not be above inodes_hard"),
        ({"blocks": "1G"}, "blocks", "unknown key"),
        ("5G", "", "must be a mapping"),
    ],
)
def test_bad_account_limits_are_reported_with_their_path(model, quota, where, message):
    found = problems(model, {"accounts": {"alice": {"quota": quota}}})
    path = "webarch:accounts:alice:quota" + (f":{where}" if where else "")
    assert any(p.startswith(f"{path}: ") and message in p for p in found), found


def test_bad_server_quota_keys_are_reported(model):
    found = problems(
        model, {"quota": {"enabled": "yes", "defaults": {"blocks_hard": "1X"}, "grace": 7}}
    )
    assert any(p.startswith("webarch:quota:enabled: must be true or false") for p in found)
    assert any(p.startswith("webarch:quota:defaults:blocks_hard: must be a size") for p in found)
    assert any(p.startswith("webarch:quota:grace: unknown key") for p in found)


def test_a_soft_limit_over_the_default_hard_one_is_the_accounts_mistake(model):
    pillar = {
        "quota": {"defaults": {"blocks_hard": "1G"}},
        "accounts": {"alice": {"quota": {"blocks_soft": "2G"}}, "bob": {}},
    }
    found = problems(model, pillar)
    assert found == [
        "webarch:accounts:alice:quota:blocks_soft: must not be above blocks_hard (1G), not 2G"
    ]


def test_pillar_example_keeps_quotas_off_on_hosts_without_them(model, example_pillar):
    built = build(model, example_pillar["webarch"])
    assert built["quota"]["enabled"] is False and built["quota"]["off_notice"] is True
    assert built["accounts"]["alice"]["quota"]["blocks_hard"] == 10 * G
    assert built["accounts"]["bob"]["quota"] == {
        "blocks_soft": 900 * M,
        "blocks_hard": G,
        "inodes_soft": 40000,
        "inodes_hard": 50000,
    }
    assert built["accounts"]["carol-stats"]["quota"]["blocks_hard"] == 5 * G


# -- the state, over a fake execution module -------------------------------------------


class FakeQuota:
    """The webarch_quota execution module of a host whose /home has quotas (or not)."""

    def __init__(self, quota: bool = True) -> None:
        self.fs = {"mount": "/home", "device": "/dev/sdb1", "fstype": "ext4", "quota": quota}
        if not quota:
            self.fs["problem"] = "user quotas are not on for it"
        self.limits = dict.fromkeys(("blocks_soft", "blocks_hard", "inodes_soft", "inodes_hard"), 0)
        self.sets: list[dict] = []

    def salt(self) -> dict:
        return {
            "webarch_quota.filesystem": lambda path: self.fs,
            "webarch_quota.describe": lambda fs: (
                f"{fs['mount']} ({fs['fstype']} on {fs['device']})"
            ),
            "webarch_quota.get": lambda name, path=None: dict(self.limits),
            "webarch_quota.set": self.set_,
            "user.info": lambda name: {"name": name},
        }

    def set_(self, name, path=None, **limits):
        self.sets.append(limits)
        self.limits.update(limits)
        return dict(self.limits)


@pytest.fixture
def state():
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_quota.py")
    with LoaderModuleMock({module: {"__opts__": {"test": False}, "__salt__": {}}}):
        yield module


def run(state, fake, test=False, **limits):
    state.__salt__.clear()
    state.__salt__.update(fake.salt())
    state.__opts__["test"] = test
    return state.limits("alice", "/home/alice", **limits)


def test_state_sets_only_what_differs_then_changes_nothing(state):
    fake = FakeQuota()
    ret = run(state, fake, blocks_soft=6 * M, blocks_hard=8 * M)
    assert ret["result"] is True
    assert ret["changes"] == {
        "blocks_soft": {"old": "none", "new": "6M"},
        "blocks_hard": {"old": "none", "new": "8M"},
    }
    assert fake.sets == [
        {"blocks_soft": 6 * M, "blocks_hard": 8 * M, "inodes_soft": 0, "inodes_hard": 0}
    ]
    again = run(state, fake, blocks_soft=6 * M, blocks_hard=8 * M)
    assert again["result"] is True and again["changes"] == {} and len(fake.sets) == 1
    changed = run(state, fake, blocks_soft=6 * M, blocks_hard=16 * M)
    assert changed["changes"] == {"blocks_hard": {"old": "8M", "new": "16M"}}


def test_state_in_test_mode_predicts_and_changes_nothing(state):
    fake = FakeQuota()
    ret = run(state, fake, test=True, blocks_hard=G, inodes_hard=100)
    assert ret["result"] is None and fake.sets == []
    assert ret["changes"] == {
        "blocks_hard": {"old": "none", "new": "1G"},
        "inodes_hard": {"old": "none", "new": "100"},
    }


@pytest.mark.parametrize("test", [False, True])
def test_state_fails_naming_a_file_system_without_quotas(state, test):
    fake = FakeQuota(quota=False)
    ret = run(state, fake, test=test, blocks_hard=G)
    assert ret["result"] is False and fake.sets == []
    assert "/home (ext4 on /dev/sdb1)" in ret["comment"]
    assert "no user quotas" in ret["comment"] and "webarch:quota:enabled" in ret["comment"]
