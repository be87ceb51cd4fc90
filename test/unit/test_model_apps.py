"""The account model's applications (_utils/webarch_apps.py): the sites' app blocks."""

from __future__ import annotations

import copy

import pytest
from unit.model_helpers import host, problems

SHA = "a" * 64


def pillar(app: object, site_type: str = "wordpress", **account: object) -> dict:
    """alice with database alice_wp and site www (``site_type``) holding ``app``."""
    return {
        "accounts": {
            "alice": {
                "email": "alice@alice.example",
                "databases": {"alice_wp": None, "alice_old": {"state": "absent"}},
                "sites": {
                    "www": {"server_name": "www.alice.example", "type": site_type, "app": app}
                },
                **account,
            }
        }
    }


def build(model, data: dict, release: int = 12) -> dict:
    return model.build_model(data, host(model), release)


def test_example_pillar_installs_wordpress_and_mediawiki(model, example_pillar):
    built = build(model, example_pillar["webarch"])
    apps = built["accounts"]["alice"]["apps"]
    assert sorted(apps) == ["wiki", "www"]
    www, wiki = apps["www"], apps["wiki"]
    assert (www["kind"], www["database"], www["title"]) == ("wordpress", "alice_wp", "Alice's blog")
    assert www["source"] == {"kind": "debian"}
    assert www["docroot"] == "/home/alice/sites/www/public"
    assert www["url"] == "https://www.alice.example"
    assert www["tree"] == "/usr/share/wordpress"
    assert www["ledger"] == "/var/lib/webarch/apps/alice-www.json"
    assert (wiki["kind"], wiki["database"], wiki["tree"]) == (
        "mediawiki", "alice_wiki", "/var/lib/mediawiki"
    )  # fmt: skip
    assert built["app_packages"] == [
        "php", "mediawiki", "wordpress", "wordpress-theme-twentytwentythree"
    ]  # fmt: skip
    kinds = built["accounts"]["alice"]["notify"]["kinds"]
    assert kinds["app-www"] == {"token": "", "marker": "/home/alice/.notify_app-www"}
    assert "app-wiki" in kinds
    assert built["accounts"]["bob"]["apps"] == {}


def test_debian_13_takes_its_own_theme(model, example_pillar):
    built = build(model, example_pillar["webarch"], 13)
    assert "wordpress-theme-twentytwentyfive" in built["app_packages"]
    assert built["accounts"]["alice"]["apps"]["www"]["php"] == "/usr/bin/php8.4"


def test_defaults(model):
    app = build(model, pillar({"database": "alice_wp"}))["accounts"]["alice"]["apps"]["www"]
    assert app["title"] == "www.alice.example"
    assert app["source"] == {"kind": "debian"}
    assert app["reset"] == ""


def test_an_archive_source_and_a_reset_token(model):
    source = {"source": "salt://apps/wordpress-6.8.tar.gz", "sha256": SHA}
    data = pillar({"database": "alice_wp", "reset": 3, "source": source})
    built = build(model, data)
    app = built["accounts"]["alice"]["apps"]["www"]
    assert app["source"] == {"kind": "archive", "source": "salt://apps/wordpress-6.8.tar.gz",
                             "sha256": SHA}  # fmt: skip
    assert built["accounts"]["alice"]["notify"]["kinds"]["app-www"]["token"] == "3"
    assert built["app_packages"] == [], "an archive needs no Debian package"


def test_no_app_block_no_app(model):
    data = pillar(None)
    data["accounts"]["alice"]["sites"]["www"].pop("app")
    assert build(model, data)["accounts"]["alice"]["apps"] == {}


P = "webarch:accounts:alice:sites:www:app"


@pytest.mark.parametrize(
    ("app", "site_type", "expected"),
    [
        ({"database": "alice_wp"}, "php",
         f"{P}: only a site of type wordpress or mediawiki has an application"),
        ({}, "wordpress", f"{P}:database: is required: which of the account's databases"),
        ({"database": "alice_old"}, "wordpress",
         f"{P}:database: 'alice_old' is not one of the account's present databases (alice_wp)"),
        ({"database": "bob_shop"}, "mediawiki",
         f"{P}:database: 'bob_shop' is not one of the account's present databases (alice_wp)"),
        ({"database": "alice_wp", "source": "upstream"}, "wordpress",
         f"{P}:source: 'upstream' must be debian or {{source: ..., sha256: ...}}"),
        ({"database": "alice_wp", "reset": "no spaces"}, "wordpress",
         f"{P}:reset: 'no spaces' must be 1-64 letters, digits or . _ : + -"),
        ({"database": "alice_wp", "title": "two\nlines"}, "wordpress", f"{P}:title:"),
        ({"database": "alice_wp", "bogus": 1}, "wordpress", f"{P}:bogus:"),
    ],
)  # fmt: skip
def test_mistakes_are_named_by_their_pillar_path(model, app, site_type, expected):
    found = problems(model, pillar(app, site_type))
    assert any(p.startswith(expected) for p in found), found


def test_an_app_needs_the_accounts_email(model):
    data = pillar({"database": "alice_wp"})
    del data["accounts"]["alice"]["email"]
    assert f"{P}: needs the account's email: the admin password is sent there" in problems(
        model, data
    )


def test_a_site_switched_to_absent_is_archived_with_its_database(model):
    data = pillar({"database": "alice_wp"})
    data["accounts"]["alice"]["sites"]["www"]["state"] = "absent"
    data["accounts"]["alice"]["sites"]["blog"] = {"server_name": "blog.alice.example"}
    alice = build(model, data)["accounts"]["alice"]
    assert sorted(alice["sites"]) == ["blog"]
    assert alice["apps"] == {} and "app-www" not in alice["notify"]["kinds"]
    assert alice["sites_removed"] == [
        {
            "name": "www",
            "root": "/home/alice/sites/www",
            "archive_name": "alice.www",
            "archive_dir": "/var/backups/webarch",
            "dump_dir": "/var/backups/webarch/databases",
            "stage_dir": "/home/alice/.webarch-removing",
            "databases": ["alice_wp"],
            "leftovers": [
                "/var/lib/webarch/apps/alice-www.json",
                "/home/alice/.notify_app-www",
                "/var/lib/webarch/notify/spool/alice.app-www",
            ],
        }
    ]


def test_an_absent_site_frees_its_names_and_its_database(model):
    data = pillar({"database": "alice_old"})
    data["accounts"]["alice"]["sites"]["www"]["state"] = "absent"
    data["accounts"]["alice"]["sites"]["new"] = {"server_name": "www.alice.example"}
    alice = build(model, data)["accounts"]["alice"]
    assert alice["sites_removed"][0]["databases"] == ["alice_old"]
    assert alice["sites"]["new"]["server_name"] == "www.alice.example"


def test_a_bad_site_state_is_named(model):
    data = pillar(None, "php")
    data["accounts"]["alice"]["sites"]["www"]["state"] = "gone"
    assert problems(model, data) == [
        "webarch:accounts:alice:sites:www:state: must be one of present, absent, not 'gone'"
    ]


def test_a_suspended_accounts_applications_wait_with_their_passwords(model, example_pillar):
    """Suspended (a new account, or one moving in): no install, no admin password yet."""
    pillar = copy.deepcopy(example_pillar["webarch"])
    pillar["accounts"]["alice"]["suspended"] = True
    alice = build(model, pillar)["accounts"]["alice"]
    assert alice["apps"]["www"]["marker"] == "/home/alice/.notify_app-www"
    assert not [kind for kind in alice["notify"]["kinds"] if kind.startswith("app-")]
    assert "/var/lib/webarch/notify/spool/alice.app-www" in alice["notify"]["spool"]
