"""A moving account's hand-over: the pure parts (``_utils/webarch_handover.py``, issue 20)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import webarch_handover as handover
from unit.model_helpers import host

REPO = Path(__file__).resolve().parents[2]
PILLAR = {
    "accounts": {
        "alice": {
            "sites": {"www": {"server_name": "www.alice.example"}},
            "cron": {"job": {"schedule": "@daily", "command": "true"}},
        },
        "bob": {"sites": {"shop": {"server_name": "shop.bob.example"}}},
    }
}


def build(model, pillar):
    return model.build_model(pillar, host(model), 12)


def test_the_variant_suspends_only_the_moving_account_and_copies_the_pillar(model):
    held = handover.variant_pillar(PILLAR, "alice", suspended=True)
    assert held["accounts"]["alice"]["suspended"] is True
    assert "suspended" not in held["accounts"]["bob"]
    assert "suspended" not in PILLAR["accounts"]["alice"]  # not changed in place
    assert handover.variant_pillar(PILLAR, "alice", suspended=False) == PILLAR
    built = build(model, held)
    assert built["accounts"]["alice"]["suspended"] and not built["accounts"]["bob"]["suspended"]
    # A pillar without the account is left for the model to refuse.
    assert handover.variant_pillar({"accounts": None}, "alice", True) == {"accounts": None}
    assert handover.variant_pillar(None, "alice", True) == {}


def test_the_site_file_context_is_the_one_apache_sls_passes(model):
    built = build(model, PILLAR)
    context = handover.site_file_context(built, built["accounts"]["alice"])
    sls = (REPO / "webarch" / "apache.sls").read_text()
    block = sls.split("webarch-{{ name }}-apache-sites:", 1)[1].split("- context:", 1)[1]
    keys = re.findall(r"^ {8}([a-z_]+):", block.split("\n    - ", 1)[0], re.MULTILINE)
    assert sorted(keys) == sorted(context)
    assert context["account"]["name"] == "alice"
    assert context["auth_dir"] == built["apache"]["auth_dir"]


def test_the_facts_name_the_accounts_units_and_staged_file(model):
    built = build(model, handover.variant_pillar(PILLAR, "alice", suspended=True))
    facts = handover.facts(built, "alice")
    assert facts["suspended"] is True and facts["home"] == "/home/alice"
    assert facts["cron"] is None  # a suspended account runs no job
    served = handover.facts(build(model, PILLAR), "alice")
    assert served["suspended"] is False and served["cron"]["jobs"][0]["name"] == "job"
    assert facts["staged"] == "/etc/webarch/apache-sites/webarch-alice.conf"
    assert facts["socket_unit"] == "webarch-php@alice.socket"
    assert facts["unit"] == "webarch-php@alice.service"
    assert facts["socket_wants"].endswith("/sockets.target.wants/webarch-php@alice.socket")
    assert facts["socket_template"] == "/etc/systemd/system/webarch-php@.socket"


def test_the_cron_file_is_the_one_each_run_writes(model):
    served = build(model, PILLAR)
    cron = served["cron"]["data"]
    assert set(cron["accounts"]) == {"alice", "bob"}
    held = build(model, handover.variant_pillar(PILLAR, "alice", suspended=True))
    left = handover.cron_with(cron, "alice", handover.facts(held, "alice")["cron"])
    assert left == held["cron"]["data"] and set(left["accounts"]) == {"bob"}
    back = handover.cron_with(left, "alice", handover.facts(served, "alice")["cron"])
    assert back == cron
    text = handover.cron_text(back)
    assert text.startswith('{\n  "accounts": {') and text.endswith("\n}\n")
    assert json.loads(text) == cron


def test_the_mail_gate_lines_are_those_the_run_writes(model):
    served = "".join(f"{line}\n" for line in build(model, PILLAR)["mail_accounts"]["lines"])
    held_model = build(model, handover.variant_pillar(PILLAR, "alice", suspended=True))
    held = "".join(f"{line}\n" for line in held_model["mail_accounts"]["lines"])
    assert handover.mail_lines(served, "alice", "/home/alice", allowed=False) == held
    assert handover.mail_lines(held, "alice", "/home/alice", allowed=True) == served
    assert handover.mail_lines(served, "alice", "/home/alice", allowed=True) == served
    assert handover.mail_lines(held, "alice", "/home/alice", allowed=False) == held
