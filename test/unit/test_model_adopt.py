"""Adopting an existing Unix user webarch did not create (``accounts:USERNAME:adopt``, issue 19)."""

from __future__ import annotations

import pytest
from unit.model_helpers import EMPTY_HOST, host, one_account, problems

#: A legacy host: alice exists (uid 1001, her group 1001), webarch manages nobody.
LEGACY = {
    "users": {**EMPTY_HOST["users"], "alice": 1001},
    "groups": {**EMPTY_HOST["groups"], "alice": 1001},
}


def test_adopt_is_false_by_default_and_the_clash_stays(model):
    found = problems(model, one_account(uid=1001, gid=1001), **LEGACY)
    assert found == [
        "webarch:accounts:alice: username 'alice' clashes with existing user (uid 1001) that "
        "webarch does not manage (adopt: true, with its uid, takes it over)"
    ]
    built = model.build_model(one_account(), host(model))
    assert built["accounts"]["alice"]["adopt"] is False


def test_adopt_with_the_same_ids_takes_the_user_over(model):
    built = model.build_model(one_account(adopt=True, uid=1001, gid=1001), host(model, **LEGACY))
    account = built["accounts"]["alice"]
    assert account["adopt"] is True and (account["uid"], account["gid"]) == (1001, 1001)
    assert built["present"] == ["alice"]
    # From this run on, the user is webarch's (the registry lists it).
    assert built["registry"]["names"] == ["alice"]
    # Its home gets the standard layout (directories only, the same for every account).
    assert [d["id"] for d in account["dirs"]] == ["home", "sites", "logs", "tmp", "private", "ssh"]


def test_adopt_without_gid_is_fine(model):
    built = model.build_model(one_account(adopt=True, uid=1001), host(model, **LEGACY))
    assert built["registry"]["names"] == ["alice"]


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        (
            {"adopt": True},
            "webarch:accounts:alice:uid: must be 1001 to adopt the existing user 'alice' "
            "(adopt: true keeps its uid and files)",
        ),
        (
            {"adopt": True, "uid": 1002},
            "webarch:accounts:alice:uid: must be 1001 to adopt the existing user 'alice' "
            "(adopt: true keeps its uid and files), not 1002",
        ),
        (
            {"adopt": True, "uid": 1001, "gid": 1005},
            "webarch:accounts:alice:gid: must be 1001 (the existing group 'alice') to adopt "
            "it, not 1005",
        ),
    ],
)
def test_adopt_with_other_ids_is_refused_naming_the_path(model, account, expected):
    found = problems(model, one_account(**account), **LEGACY)
    assert found[0] == expected, found
    # And the clash itself is still reported: nothing of the host is taken.
    assert any("clashes with existing user (uid 1001)" in p for p in found) or "gid" in expected


def test_adopt_must_be_a_boolean(model):
    found = problems(model, one_account(adopt="yes", uid=1001), **LEGACY)
    assert "webarch:accounts:alice:adopt: must be true or false, not 'yes'" in found


def test_adopt_never_takes_a_system_user(model):
    snapshot = {
        "users": {**EMPTY_HOST["users"], "alice": 998},
        "groups": {**EMPTY_HOST["groups"], "alice": 998},
    }
    found = problems(model, one_account(adopt=True, uid=1001), **snapshot)
    assert any("is a system user on this host (uid 998)" in p for p in found), found


def test_adopt_of_a_group_alone(model):
    snapshot = {
        "users": dict(EMPTY_HOST["users"]),
        "groups": {**EMPTY_HOST["groups"], "alice": 1500},
    }
    assert "group 'alice' already exists" in problems(model, one_account(), **snapshot)[0]
    assert problems(model, one_account(adopt=True, gid=1500), **snapshot) == []
    found = problems(model, one_account(adopt=True, gid=1501), **snapshot)
    assert found[0].startswith("webarch:accounts:alice:gid: must be 1500"), found


def test_adopt_on_a_host_without_the_user_creates_it(model):
    # The same pillar on a fresh host (or once adopted: the user is webarch's).
    assert problems(model, one_account(adopt=True, uid=1001)) == []
    managed = {**LEGACY, "managed": {"alice"}}
    assert problems(model, one_account(adopt=True, uid=1001), **managed) == []


def test_adopted_uid_of_another_user_is_still_refused(model):
    snapshot = {**LEGACY, "users": {**LEGACY["users"], "bob": 1002}}
    found = problems(model, one_account(adopt=True, uid=1002), **snapshot)
    assert "webarch:accounts:alice:uid: 1002 is already used by 'bob' on this host" in found


#: alice moved away from this host by webarch.orch.move (its marker's first line).
MOVED = {"moved": [("alice", "to web2 on 2026-12-06 02:40 UTC by webarch.orch.move")]}


def test_an_account_moved_away_is_refused_while_present(model):
    found = problems(model, one_account(), managed=["alice"], **MOVED)
    assert found == [
        "webarch:accounts:alice:state: alice was moved to another server (to web2 on "
        "2026-12-06 02:40 UTC by webarch.orch.move): set state: absent here to remove this "
        "copy (its archive is kept), or delete /var/lib/webarch/moved/alice to serve it here "
        "again"
    ]


def test_an_account_moved_away_may_be_absent_and_others_are_untouched(model):
    pillar = {"accounts": {"alice": {"state": "absent"}, "bob": {}}}
    built = model.build_model(pillar, host(model, managed=["alice"], **MOVED))
    assert built["present"] == ["bob"]
