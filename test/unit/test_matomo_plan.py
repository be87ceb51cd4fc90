"""Unit tests of the Matomo planner (_utils/webarch_stats.py): pure, no Matomo needed.

No change = zero writes; each kind of change = exactly the writes it needs;
an account's user never gets access to another account's website.
"""

from __future__ import annotations

import copy
import random

import pytest
import webarch_stats as stats
from hypothesis import given, settings
from hypothesis import strategies as st


def site(name: str, *aliases: str, tz: str = "") -> dict:
    spec = {"name": name, "urls": [f"https://{name}"] + [f"https://{a}" for a in aliases]}
    if tz:
        spec["timezone"] = tz
    return spec


def wanted() -> dict:
    return {
        "alice": {"email": "alice@example.org",
                  "sites": {"www": site("www.alice.example", "alice.example"),
                            "blog": site("blog.alice.example")}},
        "bob": {"email": "bob@example.org", "sites": {"shop": site("shop.bob.example")}},
    }  # fmt: skip


def snapshot() -> dict:
    """Matomo as the wanted() pillar left it (website 1 is the instance's own)."""
    return {
        "users": {
            "admin": {"email": "admin@example.org", "superuser": True, "access": {}},
            "alice": {"email": "alice@example.org", "superuser": False,
                      "access": {2: "view", 3: "view"}},
            "bob": {"email": "bob@example.org", "superuser": False, "access": {4: "view"}},
        },
        "sites": {
            1: {"name": "stats", "urls": ["https://stats.example.org"], "timezone": "UTC"},
            2: {"name": "www.alice.example", "timezone": "UTC",
                "urls": ["https://www.alice.example", "https://alice.example"]},
            3: {"name": "blog.alice.example", "urls": ["https://blog.alice.example"],
                "timezone": "UTC"},
            4: {"name": "shop.bob.example", "urls": ["https://shop.bob.example"],
                "timezone": "UTC"},
        },
    }  # fmt: skip


IDS = {"alice/www": 2, "alice/blog": 3, "bob/shop": 4}
MANAGED = ["alice", "bob"]


def calls(plan: stats.Plan) -> list[tuple]:
    """The writes, comparable: (call, sorted args, pending)."""
    return [(w.call, tuple(sorted((k, str(v)) for k, v in w.args.items())), w.pending)
            for w in plan.writes]  # fmt: skip


def test_nothing_changed_means_no_write():
    plan = stats.plan(wanted(), snapshot(), IDS, MANAGED)
    assert plan.writes == []
    assert plan.ids == IDS
    assert plan.users == ["alice", "bob"]
    assert plan.notes == []


def test_urls_compare_as_matomo_stores_them():
    snap = snapshot()
    snap["sites"][2]["urls"] = ["https://WWW.alice.example/", "https://alice.example"]
    snap["sites"]["3"] = snap["sites"].pop(3)  # ids as strings (JSON) are the same ids
    assert stats.plan(wanted(), snap, {k: str(v) for k, v in IDS.items()}, MANAGED).writes == []
    assert stats.norm_url("HTTPS://A.Example/Path/") == "https://a.example/Path"


def test_aliases_in_another_order_are_the_same_but_a_new_main_url_is_not():
    want = wanted()
    want["alice"]["sites"]["www"]["urls"].append("https://w3.alice.example")
    snap = snapshot()
    snap["sites"][2]["urls"] = [
        "https://www.alice.example",
        "https://w3.alice.example",
        "https://alice.example",
    ]
    assert stats.plan(want, snap, IDS, MANAGED).writes == []
    snap["sites"][2]["urls"] = [
        "https://alice.example",
        "https://w3.alice.example",
        "https://www.alice.example",
    ]
    assert [w.call for w in stats.plan(want, snap, IDS, MANAGED).writes] == ["update_site"]


def test_first_run_adds_sites_then_users_then_grants():
    empty = {"users": {"admin": snapshot()["users"]["admin"]},
             "sites": {1: snapshot()["sites"][1]}}  # fmt: skip
    plan = stats.plan(wanted(), empty, {}, [], timezone="Europe/Paris")
    assert [w.call for w in plan.writes] == ["add_site"] * 3 + ["add_user"] * 2 + ["set_access"] * 2
    adds = {w.site: w.args for w in plan.writes if w.call == "add_site"}
    assert adds["alice/www"] == {
        "name": "www.alice.example",
        "timezone": "Europe/Paris",
        "urls": ["https://www.alice.example", "https://alice.example"],
    }
    grants = {w.args["login"]: (w.args, w.pending) for w in plan.writes if w.call == "set_access"}
    assert grants["alice"] == ({"login": "alice", "access": "view", "id_sites": []},
                               ("alice/blog", "alice/www"))  # fmt: skip
    assert grants["bob"][1] == ("bob/shop",)
    assert plan.ids == {}
    assert plan.users == ["alice", "bob"]


def test_apply_resolves_new_ids_and_needs_each_new_password():
    empty = {"users": {}, "sites": {}}
    plan = stats.plan({"bob": wanted()["bob"]}, empty, {}, [])
    done: list[tuple[str, dict]] = []

    def call(name, args):
        done.append((name, args))
        return 7 if name == "add_site" else True

    with pytest.raises(ValueError, match="no password for the new Matomo user bob") as err:
        stats.apply(plan.writes, call, {}, {})
    assert [n for n, _ in done] == ["add_site"], "the website is added before it fails"
    done.clear()
    ids = stats.apply(plan.writes, call, {"bob": "pw-123456"}, {})
    assert ids == {"bob/shop": 7}
    assert done[1] == ("add_user", {"login": "bob", "email": "bob@example.org",
                                    "password": "pw-123456"})  # fmt: skip
    assert done[2] == ("set_access", {"login": "bob", "access": "view", "id_sites": [7]})
    assert "pw-123456" not in str(err.value) and all("pw" not in w.describe() for w in plan.writes)


def test_a_new_alias_is_one_update():
    want = wanted()
    want["alice"]["sites"]["blog"]["urls"].append("https://news.alice.example")
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert calls(plan) == [
        (
            "update_site",
            (
                ("id_site", "3"),
                ("urls", str(["https://blog.alice.example", "https://news.alice.example"])),
            ),
            (),
        )
    ]
    assert plan.writes[0].describe() == "update Matomo website 3 (alice/blog): urls"


def test_a_renamed_site_or_new_timezone_is_one_update_of_those_fields():
    want = wanted()
    want["bob"]["sites"]["shop"]["name"] = "Bob's shop"
    want["bob"]["sites"]["shop"]["timezone"] = "Europe/Berlin"
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert [w.args for w in plan.writes] == [
        {"id_site": 4, "name": "Bob's shop", "timezone": "Europe/Berlin"}
    ]


def test_a_new_site_is_added_and_granted_to_its_account_only():
    want = wanted()
    want["bob"]["sites"]["blog"] = site("blog.bob.example")
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert [(w.call, w.site, w.pending) for w in plan.writes] == [
        ("add_site", "bob/blog", ()),
        ("set_access", "", ("bob/blog",)),
    ]
    assert plan.writes[1].args == {"login": "bob", "access": "view", "id_sites": []}


def test_a_site_removed_from_pillar_loses_access_and_keeps_its_website():
    want = wanted()
    del want["alice"]["sites"]["blog"]
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert [w.args for w in plan.writes] == [
        {"login": "alice", "access": "noaccess", "id_sites": [3]}
    ]
    assert plan.ids["alice/blog"] == 3, "remembered: it finds its website if it comes back"


def test_a_site_marked_absent_is_deleted_without_a_revoke():
    want = wanted()
    want["alice"]["sites"]["blog"]["absent"] = True
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert [(w.call, w.args, w.site) for w in plan.writes] == [
        ("delete_site", {"id_site": 3}, "alice/blog")
    ]
    assert "alice/blog" not in plan.ids
    gone = snapshot()
    del gone["sites"][3]
    gone["users"]["alice"]["access"].pop(3)
    assert stats.plan(want, gone, plan.ids, MANAGED).writes == []


def test_an_absent_site_webarch_does_not_know_is_not_deleted():
    want = wanted()
    want["alice"]["sites"]["blog"]["absent"] = True
    plan = stats.plan(want, snapshot(), {}, MANAGED)
    assert all(w.call != "delete_site" for w in plan.writes)


@pytest.mark.parametrize("how", ["removed", "absent"])
def test_a_removed_account_loses_its_user_and_keeps_its_websites(how):
    want = wanted()
    if how == "removed":
        del want["bob"]
    else:
        want["bob"]["absent"] = True
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert [(w.call, w.args) for w in plan.writes] == [("delete_user", {"login": "bob"})]
    assert plan.ids["bob/shop"] == 4
    assert plan.users == ["alice"]


def test_users_webarch_does_not_manage_and_superusers_are_never_touched():
    snap = snapshot()
    snap["users"]["carol"] = {"email": "c@example.org", "superuser": False, "access": {2: "admin"}}
    plan = stats.plan(wanted(), snap, IDS, MANAGED)
    assert plan.writes == [], "carol was made by hand: not webarch's"
    want = wanted()
    want["admin"] = {"email": "admin@example.org", "sites": {}}
    plan = stats.plan(want, snapshot(), IDS, MANAGED)
    assert plan.writes == [] and "admin" not in plan.users
    assert any("superuser" in note for note in plan.notes)
    del want["admin"]
    plan = stats.plan(want, snapshot(), IDS, [*MANAGED, "admin"])
    assert plan.writes == [], "never deletes a superuser"


def test_access_beyond_its_own_sites_is_revoked_and_higher_roles_lowered():
    snap = snapshot()
    snap["users"]["alice"]["access"].update({4: "view", 1: "admin", 2: "admin"})
    plan = stats.plan(wanted(), snap, IDS, MANAGED)
    assert [w.args for w in plan.writes] == [
        {"login": "alice", "access": "view", "id_sites": [2]},
        {"login": "alice", "access": "noaccess", "id_sites": [1, 4]},
    ]


def test_a_lost_map_matches_websites_by_url_and_adds_none():
    plan = stats.plan(wanted(), snapshot(), {}, [])
    assert plan.writes == []
    assert plan.ids == IDS
    assert len(plan.notes) == 5  # 3 matched by URL, 2 users taken over


def test_matching_by_an_alias_and_a_changed_server_name():
    want = wanted()
    want["alice"]["sites"]["www"] = site("alice.example", "www.alice.example")
    plan = stats.plan(want, snapshot(), {}, MANAGED)
    assert plan.ids["alice/www"] == 2
    assert [w.args for w in plan.writes] == [
        {"id_site": 2, "name": "alice.example",
         "urls": ["https://alice.example", "https://www.alice.example"]}
    ]  # fmt: skip


def test_a_website_claimed_by_another_key_is_not_taken():
    snap = snapshot()
    want = {"dave": {"email": "d@example.org", "sites": {"www": site("shop.bob.example")}}}
    plan = stats.plan(want, snap, IDS, [])
    assert [w.call for w in plan.writes] == ["add_site", "add_user", "set_access"]


def test_two_sites_never_share_one_website():
    snap = snapshot()
    twins = {"a": site("www.alice.example"), "b": site("www.alice.example")}
    want = {"alice": {"email": "alice@example.org", "sites": twins}}
    plan = stats.plan(want, snap, {}, [])
    assert plan.ids == {"alice/a": 2}
    assert [w.site for w in plan.writes if w.call == "add_site"] == ["alice/b"]


def test_a_website_deleted_by_hand_is_added_again():
    snap = snapshot()
    del snap["sites"][4]
    snap["users"]["bob"]["access"] = {}
    plan = stats.plan(wanted(), snap, IDS, MANAGED)
    assert [(w.call, w.site, w.pending) for w in plan.writes] == [
        ("add_site", "bob/shop", ()),
        ("set_access", "", ("bob/shop",)),
    ]


def test_a_new_account_whose_user_exists_is_taken_over_and_email_drift_noted():
    snap = snapshot()
    snap["users"]["bob"]["email"] = "old@example.org"
    plan = stats.plan(wanted(), snap, IDS, ["alice"])
    assert plan.writes == []
    assert plan.users == ["alice", "bob"]
    assert any("taken over" in n for n in plan.notes)
    assert any("old@example.org" in n for n in plan.notes)


def test_an_account_without_email_gets_no_user():
    want = {"erin": {"sites": {"www": site("www.erin.example")}}}
    plan = stats.plan(want, {"users": {}, "sites": {}}, {}, [])
    assert [w.call for w in plan.writes] == ["add_site"]
    assert plan.users == []


# --------------------------------------------------------------------------
# Property: whatever the pillar and Matomo's state, after applying the plan
# each account's user views exactly its own sites, and a second plan is empty.
# --------------------------------------------------------------------------


def simulate(snap: dict, writes: list[stats.Write], ids: dict) -> dict:
    """Apply writes to a snapshot as Matomo would."""
    snap = copy.deepcopy(snap)

    def call(name, a):
        if name == "add_site":
            idsite = max(snap["sites"], default=0) + 1
            snap["sites"][idsite] = {"name": a["name"], "urls": list(a["urls"]),
                                     "timezone": a["timezone"]}  # fmt: skip
            return idsite
        if name == "update_site":
            site_ = snap["sites"][a["id_site"]]
            site_.update({k: v for k, v in a.items() if k != "id_site"})
        elif name == "delete_site":
            del snap["sites"][a["id_site"]]
            for user in snap["users"].values():
                user["access"].pop(a["id_site"], None)
        elif name == "add_user":
            snap["users"][a["login"]] = {"email": a["email"], "superuser": False, "access": {}}
        elif name == "delete_user":
            del snap["users"][a["login"]]
        elif name == "set_access":
            held = snap["users"][a["login"]]["access"]
            for idsite in a["id_sites"]:
                if a["access"] == "noaccess":
                    held.pop(idsite, None)
                else:
                    held[idsite] = a["access"]
        return True

    stats.apply(writes, call, {w.args["login"]: "pw" for w in writes if w.call == "add_user"}, ids)
    return snap


@st.composite
def pillars(draw):
    logins = draw(st.lists(st.sampled_from(["alice", "bob", "carol", "dave"]), unique=True))
    want = {}
    for login in logins:
        names = draw(st.lists(st.sampled_from(["www", "blog", "shop"]), unique=True))
        want[login] = {
            "email": f"{login}@example.org",
            "absent": draw(st.booleans()) and draw(st.booleans()),
            "sites": {
                n: {**site(f"{n}.{login}.example", *draw(st.lists(
                    st.sampled_from([f"a.{n}.{login}.example", f"b.{n}.{login}.example"]),
                    unique=True))), "absent": draw(st.booleans()) and draw(st.booleans())}
                for n in names
            },
        }  # fmt: skip
    return want


@settings(max_examples=150, deadline=None)
@given(first=pillars(), second=pillars(), seed=st.integers(0, 1000))
def test_property_exact_access_and_a_second_run_is_empty(first, second, seed):
    snap = snapshot()
    snap["users"]["alice"]["access"][1] = "admin"  # a hand-made extra grant
    plan = stats.plan(first, snap, {}, [])
    snap = simulate(snap, plan.writes, plan.ids)
    # The map may be lost between runs: the URLs still find the websites.
    ids = plan.ids if random.Random(seed).random() < 0.5 else {}
    plan2 = stats.plan(second, snap, ids, plan.users)
    snap = simulate(snap, plan2.writes, plan2.ids)
    for login, account in second.items():
        user = snap["users"].get(login)
        if account.get("absent"):
            assert user is None or user["superuser"]
            continue
        own = {plan2.ids[stats.site_key(login, n)] for n, s in account["sites"].items()
               if not s.get("absent")}  # fmt: skip
        assert user["access"] == dict.fromkeys(own, "view"), login
    owner = {i: k.split("/")[0] for k, i in plan2.ids.items()}
    for login, user in snap["users"].items():
        for idsite in user["access"]:
            assert user["superuser"] or login not in second or owner.get(idsite) == login
    assert stats.plan(second, snap, plan2.ids, plan2.users).writes == []
