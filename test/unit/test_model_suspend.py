"""Suspending a whole account (``accounts:USERNAME:suspended``, issue 19)."""

from __future__ import annotations

import copy

from unit.model_helpers import host, problems

PILLAR = {
    "accounts": {
        "alice": {
            "suspended": True,
            "sites": {"www": {"server_name": "www.alice.example"}},
            "cron": {"job": {"schedule": "@daily", "command": "true"}},
        },
        "bob": {"sites": {"shop": {"server_name": "shop.bob.example"}}},
    }
}


def build(model, pillar=PILLAR, **kw):
    return model.build_model(pillar, host(model, **kw), 12)


def test_not_suspended_by_default(model):
    built = build(model, {"accounts": {"alice": {}}})
    assert built["accounts"]["alice"]["suspended"] is False
    assert built["suspended"] == [] and built["expiry"] == {"expired": [], "open": ["alice"]}


def test_a_suspended_accounts_sites_all_answer_503(model):
    built = build(model)
    assert built["accounts"]["alice"]["sites"]["www"]["suspended"] is True
    assert built["accounts"]["bob"]["sites"]["shop"]["suspended"] is False


def test_a_suspended_account_stays_present_with_its_data(model):
    built = build(model)
    assert "alice" in built["present"] and built["accounts"]["alice"]["state"] == "present"
    assert built["suspended"] == ["alice"]
    assert built["expiry"] == {"expired": ["alice"], "open": ["bob"]}


def test_a_suspended_account_has_no_cron_no_master_and_no_mail(model):
    built = build(model)
    assert set(built["cron"]["data"]["accounts"]) == {"bob"}
    assert built["php_masters"]["services"] == ["webarch-php@bob.service"]
    gate = built["mail_accounts"]["lines"][1:]
    assert gate == ["bob /home/bob"]
    # Mail to the account still reaches its holder.
    assert "alice" in built["mail_accounts"]["aliases"]


def test_suspended_must_be_a_boolean(model):
    pillar = {"accounts": {"alice": {"suspended": "yes"}}}
    assert any("webarch:accounts:alice:suspended" in p for p in problems(model, pillar))


def test_the_account_that_runs_matomo_cannot_be_suspended(model, example_pillar):
    pillar = copy.deepcopy(example_pillar["webarch"])
    runner = next(
        name
        for name, account in pillar["accounts"].items()
        if any(s.get("type") == "matomo" for s in account.get("sites", {}).values())
    )
    pillar["accounts"][runner]["suspended"] = True
    found = problems(model, pillar)
    assert any(f"accounts:{runner}:suspended" in p and "Matomo" in p for p in found), found


def test_a_rename_by_uid_is_refused_with_how_to_move(model):
    pillar = {"accounts": {"alice2": {"uid": 2001}}}
    found = problems(model, pillar, users={"root": 0, "alice": 2001}, managed=["alice"])
    assert len(found) == 1 and "webarch:accounts:alice2:uid" in found[0], found
    assert "cannot be renamed" in found[0] and "alice: {state: absent}" in found[0]
