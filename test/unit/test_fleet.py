"""Clashes across the fleet's minions (``_utils/webarch_fleet.py``, issue 20)."""

from __future__ import annotations

import webarch_fleet as fleet


def pillar(**accounts: dict) -> dict:
    return {"webarch": {"accounts": accounts}}


def site(name: str, *aliases: str, **data: object) -> dict:
    return {"server_name": name, "aliases": list(aliases), **data}


def test_distinct_minions_have_no_clash() -> None:
    pillars = {
        "web1": pillar(alice={"sites": {"www": site("www.alice.example")}}),
        "web2": pillar(bob={"sites": {"shop": site("shop.bob.example", "bob.example")}}),
    }
    assert fleet.clashes(pillars) == []


def test_an_account_on_two_minions_is_named_with_both_paths() -> None:
    pillars = {"web1": pillar(alice={}), "web2": pillar(alice={}), "web3": pillar(bob={})}
    assert fleet.clashes(pillars) == [
        "account alice is on 2 servers: web1 webarch:accounts:alice; web2 webarch:accounts:alice"
    ]


def test_a_site_name_on_two_minions_is_found_in_aliases_too() -> None:
    pillars = {
        "web1": pillar(alice={"sites": {"www": site("www.alice.example", "Alice.example")}}),
        "web2": pillar(carol={"sites": {"old": site("carol.example", "alice.example")}}),
    }
    assert fleet.clashes(pillars) == [
        "site name alice.example is served by 2 servers: "
        "web1 webarch:accounts:alice:sites:www:aliases:0; "
        "web2 webarch:accounts:carol:sites:old:aliases:0"
    ]


def test_absent_accounts_and_sites_do_not_clash() -> None:
    pillars = {
        "web1": pillar(alice={"state": "absent", "sites": {"www": site("www.alice.example")}}),
        "web2": pillar(
            alice={"sites": {"www": site("www.alice.example")}},
            bob={"sites": {"gone": site("www.alice.example", state="absent")}},
        ),
    }
    assert fleet.clashes(pillars) == []


def test_every_clash_is_reported_at_once() -> None:
    pillars = {
        "web1": pillar(alice={"sites": {"www": site("a.example")}}, bob={}),
        "web2": pillar(alice={}, bob={"sites": {"x": site("a.example")}}),
    }
    assert len(fleet.clashes(pillars)) == 3


def test_a_minion_without_webarch_pillar_has_nothing_to_clash() -> None:
    assert fleet.clashes({"web1": {}, "web2": {"webarch": "broken"}, "web3": pillar(a={})}) == []
