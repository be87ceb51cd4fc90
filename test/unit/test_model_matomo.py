"""Unit tests of the Matomo part of the model (_utils/webarch_stats_model.py, wired
into build_model as ``matomo``), the ``matomo`` switches of accounts and sites,
the ``matomo`` notification kind, and webarch_matomo_api.parse_ini (no Salt)."""

from __future__ import annotations

import copy

import pytest
import webarch_matomo_api as api
import webarch_paths as paths
import webarch_stats_model as stats_model
from unit.model_helpers import host, problems

SHA = "e1d6a869d3cfb1102caddfe4ac2d8fbbb24539ba89df6fc9c10be0ad1924b50f"
ARCHIVE = {"source": "salt://matomo/matomo-5.0.2.tar.gz", "sha256": SHA}
#: What an unknown key's message lists.
KNOWN = ", ".join(sorted(stats_model.MATOMO_KEYS))


def base(**matomo: object) -> dict:
    """alice (a php site with an alias) and carol-stats (the Matomo instance, one database)."""
    return {
        "admin_email": "hostmaster@coop.example",
        "matomo": {"archive": dict(ARCHIVE), **matomo},
        "accounts": {
            "alice": {
                "email": "alice@alice.example",
                "sites": {
                    "www": {"server_name": "www.alice.example", "aliases": ["alice.example"]},
                    "blog": {"server_name": "blog.alice.example"},
                },
            },
            "carol-stats": {
                "email": "carol@stats.example",
                "databases": {"carol_stats_matomo": None},
                "sites": {"matomo": {"type": "matomo", "server_name": "stats.coop.example"}},
            },
        },
    }


def without_instance(pillar: dict) -> dict:
    """``pillar`` without carol-stats' matomo site (for a remote Matomo by URL)."""
    del pillar["accounts"]["carol-stats"]["sites"]
    return pillar


def build(model, pillar: dict) -> dict:
    return model.build_model(pillar, host(model))


# --------------------------------------------------------------------------
# pillar.example
# --------------------------------------------------------------------------


def test_example_pillar_runs_a_local_matomo(model, example_pillar):
    pillar = copy.deepcopy(example_pillar["webarch"])
    built = build(model, pillar)
    matomo = built["matomo"]
    assert matomo["on"] is True
    local = matomo["local"]
    assert (local["account"], local["site"]) == ("carol-stats", "matomo")
    assert local["database"] == "carol_stats_matomo"
    assert local["docroot"] == "/home/carol-stats/sites/matomo"
    assert local["config"] == "/home/carol-stats/sites/matomo/config/config.ini.php"
    assert local["url"] == "https://stats.coop.example/" == matomo["url"]
    assert local["socket"] == built["accounts"]["carol-stats"]["pool"]["socket"]
    assert local["chroot"] == built["accounts"]["carol-stats"]["chroot"]["path"]
    assert local["trusted_hosts"] == ["stats.coop.example"]
    assert local["archive"] == pillar["matomo"]["archive"]
    assert local["timer"] == paths.matomo_archive_unit("carol-stats")
    assert matomo["timezone"] == pillar["matomo"].get("timezone", "UTC")
    assert matomo["api_login"] == "webarch"
    assert matomo["token_file"] == paths.MATOMO_TOKEN_PATH

    accounts = pillar["accounts"]
    with_user = sorted(n for n, a in accounts.items() if a.get("email"))
    assert with_user == ["alice", "bob", "carol-stats"]
    assert sorted(matomo["wanted"]) == with_user
    assert matomo["users"] == with_user
    for name in ("alice", "bob"):
        want = matomo["wanted"][name]
        assert want["email"] == accounts[name]["email"]
        assert want["absent"] is False
        sites = accounts[name]["sites"]
        assert sorted(want["sites"]) == sorted(sites)
        for site_name, site in sites.items():
            hosts = [site["server_name"], *site.get("aliases", [])]
            assert want["sites"][site_name] == {
                "name": site["server_name"],
                "urls": [f"https://{h}" for h in hosts],
                "timezone": matomo["timezone"],
                "absent": False,
            }
    assert matomo["wanted"]["alice"]["sites"]["www"]["urls"] == [
        "https://www.alice.example",
        "https://alice.example",
    ]
    # The instance's own site is no website of its own Matomo.
    assert matomo["wanted"]["carol-stats"]["sites"] == {}

    alice = built["accounts"]["alice"]["notify"]["kinds"]
    assert alice["matomo"] == {
        "token": accounts["alice"].get("resets", {}).get("matomo", ""),
        "marker": "/home/alice/.notify_matomo",
    }
    # The other kinds are still there.
    assert alice["mariadb"]["marker"] == "/home/alice/.notify_mariadb"
    for name in with_user:
        marker = built["accounts"][name]["notify"]["kinds"]["matomo"]["marker"]
        assert marker == f"/home/{name}/.notify_matomo"
        assert name in built["notify_accounts"]


def test_example_pillar_without_the_matomo_block(model, example_pillar):
    pillar = copy.deepcopy(example_pillar["webarch"])
    del pillar["matomo"]
    built = build(model, pillar)
    matomo = built["matomo"]
    assert matomo["on"] is False
    assert matomo["local"] is None
    assert matomo["url"] is None
    assert matomo["wanted"] == {}
    assert matomo["users"] == []
    for account in built["accounts"].values():
        assert "matomo" not in account["notify"]["kinds"]
    # carol-stats had only the matomo kind: now nothing to mail.
    assert "carol-stats" not in built["notify_accounts"]
    # The matomo site is still there as an Apache preset.
    assert built["accounts"]["carol-stats"]["sites"]["matomo"]["type"] == "matomo"


# --------------------------------------------------------------------------
# Who gets a user, which sites get a website
# --------------------------------------------------------------------------


def test_defaults_of_the_block(model):
    matomo = build(model, base())["matomo"]
    assert matomo["on"] is True
    assert matomo["timezone"] == "UTC"
    assert matomo["archive_minutes"] == 60
    assert matomo["local"]["database"] == "carol_stats_matomo"
    # webarch's own superuser: an address of its own (Matomo wants one per user).
    assert matomo["local"]["email"] == "webarch-matomo@localhost"
    assert matomo["local"]["superuser"] == {
        "login": "admin", "email": "hostmaster@coop.example", "reset": ""}  # fmt: skip
    assert matomo["wanted"]["alice"]["sites"]["www"]["timezone"] == "UTC"


def test_settings_are_passed_on(model):
    pillar = base(timezone="Europe/Paris", archive_minutes=15)
    matomo = build(model, pillar)["matomo"]
    assert matomo["timezone"] == "Europe/Paris"
    assert matomo["archive_minutes"] == 15
    assert {s["timezone"] for s in matomo["wanted"]["alice"]["sites"].values()} == {"Europe/Paris"}


def test_an_account_without_email_gets_no_user(model):
    pillar = base()
    del pillar["accounts"]["alice"]["email"]
    built = build(model, pillar)
    assert "alice" not in built["matomo"]["wanted"]
    assert built["matomo"]["users"] == ["carol-stats"]
    assert "matomo" not in built["accounts"]["alice"]["notify"]["kinds"]


def test_account_switched_off(model):
    pillar = base()
    pillar["accounts"]["alice"]["matomo"] = False
    built = build(model, pillar)
    assert built["accounts"]["alice"]["matomo"] is False
    assert "alice" not in built["matomo"]["wanted"]
    assert built["matomo"]["users"] == ["carol-stats"]
    assert "matomo" not in built["accounts"]["alice"]["notify"]["kinds"]
    assert build(model, base())["accounts"]["alice"]["matomo"] is True


def test_site_switched_off_or_absent(model):
    pillar = base()
    pillar["accounts"]["alice"]["sites"]["blog"]["matomo"] = False
    assert sorted(build(model, pillar)["matomo"]["wanted"]["alice"]["sites"]) == ["www"]
    pillar["accounts"]["alice"]["sites"]["blog"]["matomo"] = "absent"
    built = build(model, pillar)
    assert built["accounts"]["alice"]["sites"]["blog"]["matomo"] == "absent"
    sites = built["matomo"]["wanted"]["alice"]["sites"]
    assert sites["blog"]["absent"] is True
    assert sites["www"]["absent"] is False
    # The user stays: only the website goes.
    assert "alice" in built["matomo"]["users"]


def test_an_absent_account_is_wanted_absent(model):
    pillar = base()
    pillar["accounts"]["alice"]["state"] = "absent"
    built = build(model, pillar)
    alice = built["matomo"]["wanted"]["alice"]
    assert alice["absent"] is True
    assert alice["email"] == "alice@alice.example"
    assert built["matomo"]["users"] == ["carol-stats"]
    assert "matomo" not in built["accounts"]["alice"]["notify"]["kinds"]


def test_reset_token_of_the_matomo_password(model):
    pillar = base()
    pillar["accounts"]["alice"]["resets"] = {"matomo": "2026-03-01"}
    kinds = build(model, pillar)["accounts"]["alice"]["notify"]["kinds"]
    assert kinds["matomo"] == {"token": "2026-03-01", "marker": "/home/alice/.notify_matomo"}


def test_enabled_false_leaves_matomo_alone(model):
    built = build(model, base(enabled=False))
    assert built["matomo"]["on"] is False
    assert built["matomo"]["local"] is None
    assert built["matomo"]["wanted"] == {}
    assert "matomo" not in built["accounts"]["alice"]["notify"]["kinds"]


def test_remote_matomo_by_url(model):
    pillar = without_instance(base(url="https://stats.example.org/", token_file="/root/token"))
    del pillar["matomo"]["archive"]
    matomo = build(model, pillar)["matomo"]
    assert matomo["on"] is True
    assert matomo["local"] is None
    assert matomo["url"] == "https://stats.example.org/"
    assert matomo["token_file"] == "/root/token"
    assert sorted(matomo["wanted"]) == ["alice", "carol-stats"]


def test_instance_picks_one_of_several_matomo_sites(model):
    pillar = base(instance="carol-stats/other")
    sites = pillar["accounts"]["carol-stats"]["sites"]
    sites["other"] = {"type": "matomo", "server_name": "other.coop.example"}
    matomo = build(model, pillar)["matomo"]
    assert matomo["local"]["site"] == "other"
    assert matomo["url"] == "https://other.coop.example/"
    # Only the instance's own site is skipped; the other matomo site is a website.
    assert sorted(matomo["wanted"]["carol-stats"]["sites"]) == ["matomo"]


# --------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------


def test_every_mistake_at_once_each_with_its_path(model):
    pillar = base(
        colour="blue",
        database="carol_stats_nope",
        url="http://stats.example.org/",
        timezone="Mars/Olympus Mons",
        archive_minutes=4,
    )
    pillar["matomo"]["archive"] = {"source": "salt://matomo/matomo.zip", "sha256": "abc"}
    alice = pillar["accounts"]["alice"]
    alice["matomo"] = "yes"
    alice["resets"] = {"matomo": "bad token!"}
    alice["sites"]["www"]["matomo"] = "maybe"
    got = problems(model, pillar)
    assert sorted(p.split(": ", 1)[0] for p in got) == sorted(
        [
            "webarch:matomo:colour",
            "webarch:matomo:archive:source",
            "webarch:matomo:archive:sha256",
            "webarch:matomo:database",
            "webarch:matomo:url",  # not https
            "webarch:matomo:url",  # and a local instance as well
            "webarch:matomo:timezone",
            "webarch:matomo:archive_minutes",
            "webarch:accounts:alice:matomo",
            "webarch:accounts:alice:resets:matomo",
            "webarch:accounts:alice:sites:www:matomo",
        ]
    )
    for expected in [
        f"webarch:matomo:colour: unknown key (known keys: {KNOWN})",
        "webarch:matomo:archive:source: 'salt://matomo/matomo.zip' must be salt://, https:// "
        "or /path, ending .tar.gz",
        "webarch:matomo:archive:sha256: 'abc' must be 64 lower-case hex digits",
        "webarch:matomo:database: 'carol_stats_nope' is no present database of carol-stats",
        "webarch:matomo:url: 'http://stats.example.org/' must be an https URL",
        "webarch:matomo:url: a server has its own Matomo (a matomo site) or another's",
        "webarch:matomo:timezone: 'Mars/Olympus Mons' is not a time zone name",
        "webarch:matomo:archive_minutes: must be between 5 and 1440, not 4",
        "webarch:accounts:alice:matomo: must be true or false, not 'yes'",
        "webarch:accounts:alice:resets:matomo: 'bad token!' must be 1-64 letters, digits "
        "or . _ : + - (e.g. a date)",
        "webarch:accounts:alice:sites:www:matomo: 'maybe' must be true, false or absent",
    ]:
        assert expected in got


def test_model_error_lists_the_problems(model):
    with pytest.raises(model.ModelError) as caught:
        build(model, base(timezone="nowhere", archive_minutes=2000))
    assert sorted(caught.value.problems) == [
        "webarch:matomo:archive_minutes: must be between 5 and 1440, not 2000",
        "webarch:matomo:timezone: 'nowhere' is not a time zone name",
    ]


def test_archive_is_required_with_a_local_instance(model):
    pillar = base(timezone="UTC")
    del pillar["matomo"]["archive"]
    got = problems(model, pillar)
    assert "webarch:matomo:archive: is required: the Matomo release archive to install" in got
    assert all(p.startswith("webarch:matomo:archive") for p in got), got
    # Without a local instance (a remote Matomo) no archive is needed.
    remote = without_instance(base(url="https://stats.example.org/"))
    del remote["matomo"]["archive"]
    assert problems(model, remote) == []


@pytest.mark.parametrize(
    "source",
    [
        "salt://matomo/matomo.zip",
        "http://builds.matomo.org/matomo-5.0.2.tar.gz",
        "ftp://builds.matomo.org/matomo-5.0.2.tar.gz",
        "matomo/matomo-5.0.2.tar.gz",
        "salt://matomo/matomo 5.tar.gz",
        "/srv/matomo/matomo-5.0.2.tar",
        42,
    ],
)
def test_bad_archive_source(model, source):
    pillar = base()
    pillar["matomo"]["archive"]["source"] = source
    got = problems(model, pillar)
    assert got == [
        f"webarch:matomo:archive:source: {source!r} must be salt://, https:// or /path, "
        "ending .tar.gz"
    ]


@pytest.mark.parametrize(
    "source",
    [
        "salt://matomo/matomo-5.0.2.tar.gz",
        "https://builds.matomo.org/matomo-5.0.2.tar.gz",
        "/srv/matomo/matomo-5.0.2.tgz",
    ],
)
def test_good_archive_sources(model, source):
    pillar = base()
    pillar["matomo"]["archive"]["source"] = source
    assert build(model, pillar)["matomo"]["local"]["archive"] == {"source": source, "sha256": SHA}


@pytest.mark.parametrize("sha256", ["abc", SHA.upper(), SHA + "0", SHA[:-1] + "g", 1234])
def test_bad_sha256(model, sha256):
    pillar = base()
    pillar["matomo"]["archive"]["sha256"] = sha256
    got = problems(model, pillar)
    assert len(got) == 1
    assert got[0].startswith("webarch:matomo:archive:sha256: ")
    assert got[0].endswith("must be 64 lower-case hex digits")


def test_two_matomo_sites_need_instance(model):
    pillar = base()
    pillar["accounts"]["carol-stats"]["sites"]["other"] = {
        "type": "matomo",
        "server_name": "other.coop.example",
    }
    assert problems(model, pillar) == [
        "webarch:matomo:instance: several sites of type matomo "
        "(carol-stats/matomo, carol-stats/other): say which one"
    ]


@pytest.mark.parametrize("instance", ["alice/www", "carol-stats/nope", "carol-stats", 3])
def test_instance_must_name_a_matomo_site(model, instance):
    assert problems(model, base(instance=instance)) == [
        f"webarch:matomo:instance: {instance!r} is not ACCOUNT/SITE of a present matomo site"
    ]


def test_database_must_be_said_when_ambiguous(model):
    pillar = base()
    pillar["accounts"]["carol-stats"]["databases"]["carol_stats_other"] = None
    assert problems(model, pillar) == [
        "webarch:matomo:database: say which of carol-stats's databases Matomo uses"
    ]
    pillar["matomo"]["database"] = "carol_stats_other"
    assert build(model, pillar)["matomo"]["local"]["database"] == "carol_stats_other"


def test_database_must_be_the_accounts(model):
    pillar = base(database="carol_stats_nope")
    assert problems(model, pillar) == [
        "webarch:matomo:database: 'carol_stats_nope' is no present database of carol-stats"
    ]
    # A database marked absent is not one Matomo can use.
    pillar = base(database="carol_stats_old")
    pillar["accounts"]["carol-stats"]["databases"]["carol_stats_old"] = {"state": "absent"}
    assert problems(model, pillar) == [
        "webarch:matomo:database: 'carol_stats_old' is no present database of carol-stats"
    ]


def test_a_local_instance_needs_a_database(model):
    pillar = base()
    del pillar["accounts"]["carol-stats"]["databases"]
    assert problems(model, pillar) == [
        "webarch:matomo:database: Matomo needs a database: give account carol-stats one"
    ]


@pytest.mark.parametrize(
    "url", ["http://stats.example.org/", "stats.example.org", "https://", 42, "https://a b/"]
)
def test_url_must_be_https(model, url):
    pillar = without_instance(base(url=url))
    del pillar["matomo"]["archive"]
    got = problems(model, pillar)
    assert got == [f"webarch:matomo:url: {url!r} must be an https URL"]


def test_url_and_a_local_instance_exclude_each_other(model):
    assert problems(model, base(url="https://stats.example.org/")) == [
        "webarch:matomo:url: a server has its own Matomo (a matomo site) or another's"
    ]


@pytest.mark.parametrize("timezone", ["Mars/Olympus Mons", "utc", "Europe", "UTC+15", "", 1])
def test_bad_timezone(model, timezone):
    assert problems(model, base(timezone=timezone)) == [
        f"webarch:matomo:timezone: {timezone!r} is not a time zone name"
    ]


@pytest.mark.parametrize(
    "timezone", ["UTC", "UTC+5.5", "UTC-3", "Europe/London", "America/Argentina/Buenos_Aires"]
)
def test_good_timezones(model, timezone):
    assert build(model, base(timezone=timezone))["matomo"]["timezone"] == timezone


@pytest.mark.parametrize(
    ("minutes", "message"),
    [
        (4, "must be between 5 and 1440, not 4"),
        (1441, "must be between 5 and 1440, not 1441"),
        ("60", "must be an integer, not '60'"),
        (True, "must be an integer, not True"),
    ],
)
def test_archive_minutes_range(model, minutes, message):
    assert problems(model, base(archive_minutes=minutes)) == [
        f"webarch:matomo:archive_minutes: {message}"
    ]


@pytest.mark.parametrize("minutes", [5, 1440])
def test_archive_minutes_bounds(model, minutes):
    assert build(model, base(archive_minutes=minutes))["matomo"]["archive_minutes"] == minutes


def test_enabled_must_be_boolean(model):
    assert problems(model, base(enabled="no")) == [
        "webarch:matomo:enabled: must be true or false, not 'no'"
    ]


@pytest.mark.parametrize("value", ["maybe", "yes", 1, None, "Absent"])
def test_site_switch_values(model, value):
    pillar = base()
    pillar["accounts"]["alice"]["sites"]["www"]["matomo"] = value
    assert problems(model, pillar) == [
        f"webarch:accounts:alice:sites:www:matomo: {value!r} must be true, false or absent"
    ]


@pytest.mark.parametrize("value", ["yes", "absent", 1, None])
def test_account_switch_values(model, value):
    pillar = base()
    pillar["accounts"]["alice"]["matomo"] = value
    assert problems(model, pillar) == [
        f"webarch:accounts:alice:matomo: must be true or false, not {value!r}"
    ]


def test_reset_token_must_be_a_token(model):
    pillar = base()
    pillar["accounts"]["alice"]["resets"] = {"matomo": "bad token!"}
    assert problems(model, pillar) == [
        "webarch:accounts:alice:resets:matomo: 'bad token!' must be 1-64 letters, digits "
        "or . _ : + - (e.g. a date)"
    ]


def test_unknown_key_in_the_block(model):
    assert problems(model, base(colour="blue")) == [
        f"webarch:matomo:colour: unknown key (known keys: {KNOWN})"
    ]
    assert {"archive", "enabled", "instance", "url", "timezone"} <= set(stats_model.MATOMO_KEYS)


def test_unknown_key_in_the_archive(model):
    pillar = base()
    pillar["matomo"]["archive"]["size"] = 3
    assert problems(model, pillar) == [
        "webarch:matomo:archive:size: unknown key (known keys: sha256, source)"
    ]


# --------------------------------------------------------------------------
# parse_ini
# --------------------------------------------------------------------------

CONFIG_INI = """\
; <?php exit; ?> DO NOT REMOVE THIS LINE
; file automatically generated or modified by Matomo; you can manually override
[database]
host = "/run/mysqld/mysqld.sock"
username = "carol-stats"
password = ""
dbname = "carol_stats_matomo"
tables_prefix = "matomo_"
adapter = "PDO\\MYSQL"
charset = "utf8mb4"

[General]
salt = "2f1c0e6d9b8a"
trusted_hosts[] = "stats.coop.example"
trusted_hosts[] = "www.stats.coop.example"
force_ssl = 1
enable_browser_archiving_triggering = 0
assume_secure_protocol = "1"
installation_in_progress = 1

[PluginsInstalled]
PluginsInstalled[] = "Diagnostics"
PluginsInstalled[] = "Login"
"""


def test_parse_ini_reads_matomo_config():
    got = api.parse_ini(CONFIG_INI)
    assert list(got) == ["database", "General", "PluginsInstalled"]
    assert got["database"] == {
        "host": "/run/mysqld/mysqld.sock",
        "username": "carol-stats",
        "password": "",
        "dbname": "carol_stats_matomo",
        "tables_prefix": "matomo_",
        "adapter": "PDO\\MYSQL",
        "charset": "utf8mb4",
    }
    general = got["General"]
    assert general["trusted_hosts"] == ["stats.coop.example", "www.stats.coop.example"]
    assert general["force_ssl"] == "1"  # unquoted: the same string
    assert general["enable_browser_archiving_triggering"] == "0"
    assert general["assume_secure_protocol"] == "1"
    assert general["installation_in_progress"] == "1"
    assert got["PluginsInstalled"] == {"PluginsInstalled": ["Diagnostics", "Login"]}
    # The PHP guard line is a comment, not a key.
    assert not any("php" in key for section in got.values() for key in section)


def test_parse_ini_edge_cases():
    assert api.parse_ini("") == {}
    assert api.parse_ini("; <?php exit; ?> DO NOT REMOVE THIS LINE\n") == {}
    text = '[General]\nvalue = "a=b"\n  spaced  =  " x "  \nnot a setting\n"\n'
    assert api.parse_ini(text) == {"General": {"value": "a=b", "spaced": " x "}}
    # A repeated section adds to the first.
    assert api.parse_ini("[A]\nx = 1\n[B]\n[A]\ny = 2\n") == {"A": {"x": "1", "y": "2"}, "B": {}}
    # A lone quote is no quoted value.
    assert api.parse_ini('[A]\nq = "\n') == {"A": {"q": '"'}}


# --------------------------------------------------------------------------
# The superuser for people, and one address per Matomo user
# --------------------------------------------------------------------------


def test_the_superuser_is_mailed_to_admin_email_and_needs_it(model):
    pillar = base(superuser="webmaster", superuser_reset="2027-01-01")
    local = build(model, pillar)["matomo"]["local"]
    assert local["superuser"] == {
        "login": "webmaster",
        "email": "hostmaster@coop.example",
        "reset": "2027-01-01",
    }
    del pillar["admin_email"]
    assert build(model, pillar)["matomo"]["local"]["superuser"] is None


def test_the_superuser_takes_only_a_reserved_login(model):
    got = problems(model, base(superuser="alice", superuser_reset="no good"))
    assert got == [
        "webarch:matomo:superuser: 'alice' must be one of admin, administrator, hostmaster, "
        "webmaster",
        "webarch:matomo:superuser_reset: 'no good' is not a token",
    ]


def test_two_matomo_users_cannot_share_an_address(model):
    pillar = base()
    pillar["accounts"]["bob"] = {"email": "ALICE@alice.example"}
    pillar["accounts"]["carol-stats"]["email"] = "hostmaster@coop.example"
    assert problems(model, pillar) == [
        "webarch:accounts:bob:email: is also the address of account alice: Matomo needs one "
        "address per user (set matomo: false on one of them)",
        "webarch:accounts:carol-stats:email: is also the address of the Matomo superuser "
        "(admin_email): Matomo needs one address per user (set matomo: false on one of them)",
    ]
    pillar["accounts"]["bob"]["matomo"] = False
    pillar["accounts"]["carol-stats"]["matomo"] = False
    assert problems(model, pillar) == []


def test_a_geoip_database_goes_into_the_instances_misc(model):
    local = build(model, base(geoip_db="/srv/geo/GeoLite2-City.mmdb"))["matomo"]["local"]
    assert local["geoip"] == {
        "source": "/srv/geo/GeoLite2-City.mmdb",
        "dir": "/home/carol-stats/sites/matomo/misc",
        "path": "/home/carol-stats/sites/matomo/misc/GeoLite2-City.mmdb",
    }
    assert build(model, base())["matomo"]["local"]["geoip"] is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("geo/GeoLite2-City.mmdb", "'geo/GeoLite2-City.mmdb' is not an absolute path"),
        ("/srv/geo/city.mmdb", "'city.mmdb' is not a name Matomo looks for"),
        (["/srv/x"], "['/srv/x'] is not an absolute path"),
    ],
)
def test_a_geoip_database_must_be_named_as_matomo_looks_for_it(model, value, problem):
    got = problems(model, base(geoip_db=value))
    assert len(got) == 1 and got[0].startswith(f"webarch:matomo:geoip_db: {problem}"), got


@pytest.mark.parametrize(
    "name", ["DBIP-City-Lite.mmdb", "dbip-city-lite-2026-12.mmdb", "GeoIP2-Country.mmdb"]
)
def test_matomos_geoip_names_are_taken(model, name):
    assert problems(model, base(geoip_db=f"/srv/geo/{name}")) == []
