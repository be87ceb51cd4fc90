"""The accounts' outbound network (_utils/webarch_net.py): pillar and nftables rules."""

from __future__ import annotations

from unit.model_helpers import host, problems


def build(model, data: dict) -> dict:
    return model.build_model(data, host(model), 12)


def accounts(**outbound: object) -> dict:
    return {
        "accounts": {
            "alice": {},
            "bob": {"outbound": {"deny_other": True}},
            "carol": {"outbound": outbound} if outbound else {},
        }
    }


def test_smtp_is_refused_for_every_account_and_the_rest_only_when_denied(model):
    built = build(model, accounts())
    text = built["firewall"]["text"]
    assert "    type uid\n    elements = { alice, bob, carol }\n" in text
    assert "set denied {\n    type uid\n    elements = { bob }\n  }" in text
    assert "meta skuid @accounts tcp dport { 25, 465, 587 } counter reject with tcp reset" in text
    assert "meta skuid @denied ct state new counter reject" in text
    # Loopback first: the accounts' own local services and sockets stay reachable.
    assert text.index('oifname "lo" accept') < text.index("@accounts tcp dport")
    assert built["firewall"]["path"] == "/etc/webarch/nftables.conf"


def test_the_server_default_and_an_accounts_override(model):
    data = accounts(deny_other=False)
    data["outbound"] = {"deny_other": True}
    built = build(model, data)
    assert [built["accounts"][n]["outbound"]["deny_other"] for n in ("alice", "bob", "carol")] == [
        True,
        True,
        False,
    ]


def test_no_denied_account_leaves_the_set_without_elements(model):
    text = build(model, {"accounts": {"alice": {}}})["firewall"]["text"]
    assert "set denied {\n    type uid\n  }" in text


def test_mistakes_are_named_by_path(model):
    data = accounts(deny_other="yes", ports=[25])
    data["outbound"] = {"deny_other": 1}
    found = problems(model, data)
    assert "webarch:outbound:deny_other: must be true or false, not 1" in found
    assert "webarch:accounts:carol:outbound:deny_other: must be true or false, not 'yes'" in found
    assert any(p.startswith("webarch:accounts:carol:outbound:ports: unknown key") for p in found)
