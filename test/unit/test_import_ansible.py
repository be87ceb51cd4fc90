"""The converter from the Ansible role ``users``' host_vars to webarch pillar.

``_utils/webarch_import_ansible.py`` (and ``_sites``), and the execution
module ``_modules/webarch_import.py``, on the host_vars files of
``test/unit/data/host_vars/`` (written from the peer's README and argument
specs) and on small inputs, one per field mapping.
"""

from __future__ import annotations

import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import formula
import pytest
import webarch_import_ansible as imp
import webarch_import_ansible_sites as site_map
import webarch_import_report as sites
import yaml
from unit.model_helpers import problems

DATA = Path(__file__).resolve().parent / "data" / "host_vars"
KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDD1nboLDXFcfzxm84N2c02Kr514qRlBnmAXRwfCBdev alice-laptop"
)


def read(name: str) -> Any:
    return imp.load((DATA / name).read_text(), name)


def convert(name: str) -> tuple[dict, imp.Report]:
    return imp.convert(read(name), name)


def one(account: dict, name: str = "alice") -> tuple[dict | None, dict[str, sites.Entry]]:
    """Convert one account: its pillar (None if left out) and its report by path."""
    pillar, report = imp.convert({"users": {name: account}}, "test")
    return pillar["webarch"]["accounts"].get(name), {e.path: e for e in report.entries}


def site(data: dict) -> tuple[dict, dict[str, sites.Entry]]:
    """Convert account alice with one site ``www`` holding ``data``."""
    vhost = {"users_apache_server_name": "www.alice.example", **data}
    account, entries = one({"users_apache_virtual_hosts": {"www": vhost}})
    prefix = "users.alice.users_apache_virtual_hosts.www."
    return account["sites"]["www"], {
        p.removeprefix(prefix): e for p, e in entries.items() if p.startswith(prefix)
    }


def errors(host_vars: Any) -> list[str]:
    with pytest.raises(imp.ConversionError) as caught:
        imp.convert(host_vars, "test")
    return caught.value.problems


def leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf path of a parsed host_vars file (vault values are leaves)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaves(v, (*path, str(k)))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, str(i)))]
    return [path]


# The realistic files.


@pytest.mark.parametrize("name", ["web1.yml", "web2.yml", "web3.yml"])
def test_every_field_of_the_input_is_in_the_report(name):
    _, report = convert(name)
    covered = [tuple(e.path.split(".")) for e in report.entries if e.kind != sites.VALIDATION]
    for leaf in leaves(read(name)):
        assert any(leaf[: len(c)] == c for c in covered), ".".join(leaf)


@pytest.mark.parametrize(
    ("name", "accounts", "mapped"),
    [
        ("web1.yml", ["alice", "bob", "carol-stats", "erin"], 85),
        ("web3.yml", ["kim", "leo", "mia", "nora", "otto", "pia", "quinn"], 75),
    ],
)
def test_realistic_files_convert_to_valid_pillars(model, name, accounts, mapped):
    pillar, report = convert(name)
    assert report.counts()[sites.VALIDATION] == 0
    assert problems(model, pillar["webarch"]) == []
    assert sorted(pillar["webarch"]["accounts"]) == accounts
    assert report.counts()[sites.MAPPED] >= mapped


def test_web2_report_names_each_account_that_needs_a_decision(model):
    pillar, report = convert("web2.yml")
    found = problems(model, pillar["webarch"])
    lines = [e.text for e in report.entries if e.kind == sites.VALIDATION]
    assert len(lines) == len(found) > 0
    assert {line.split(" needs a decision: ")[0] for line in lines} == {
        "account frank",
        "account grace",
    }
    assert [line.split(" needs a decision: ")[1] for line in lines] == found


@pytest.mark.parametrize("name", ["web1.yml", "web2.yml", "web3.yml"])
def test_no_secret_of_the_input_reaches_report_or_pillar(name):
    pillar, report = convert(name)
    text = "\n".join(report.lines()) + yaml.safe_dump(pillar)
    for secret in ("ANSIBLE_VAULT", "correct-horse-battery-staple", "62313365396662"):
        assert secret not in text
    assert "ssh-ed25519" not in "\n".join(report.lines())


def test_jinja_and_vault_values_are_decisions_never_guesses():
    pillar, report = convert("web2.yml")
    decided = {e.path: e.text for e in report.entries if e.kind == sites.DECISION}
    frank = "users.frank."
    vhost = frank + "users_apache_virtual_hosts.default."
    assert "Jinja" in decided[frank + "users_email"]
    assert "Jinja" in decided[vhost + "users_apache_server_name"]
    assert "Jinja" in decided[vhost + "users_apache_server_aliases.1"]
    assert "vault" in decided[frank + "users_ssh_public_keys.1"]
    assert "vault" in decided[vhost + "users_apache_htauth_users.0.password"]
    assert "not readable" in decided[frank + "users_cron_jobs.1"]
    account = pillar["webarch"]["accounts"]["frank"]
    assert "email" not in account and "server_name" not in account["sites"]["default"]
    assert account["sites"]["default"]["aliases"] == ["www.frank.example"]
    assert list(account["databases"]) == ["wordpress_live"]
    assert "{{" not in yaml.safe_dump(account)


def test_unsafe_text_is_literal():
    pillar, _ = convert("web2.yml")
    jobs = pillar["webarch"]["accounts"]["grace"]["cron"]
    assert jobs["every-minute"]["command"] == "echo {{ not jinja }} >> ~/logs/x.log"
    assert type(jobs["every-minute"]["command"]) is str


def test_malformed_file_names_every_path():
    found = errors(read("malformed.yml"))
    ivy = "users.ivy."
    vhosts = ivy + "users_apache_virtual_hosts."
    expected = [
        "users.Bad Name: is not a user name",
        "users.henry.users_state: must be present, absent or ignore",
        ivy + "users_emial: unknown key",
        ivy + "users_notify_passwd: must be true or false",
        ivy + "users_quota: must be a size",
        ivy + "users_mariadb_databases: must be a list",
        ivy + "users_cron_jobs.0: job must be given",
        ivy + "users_cron_jobs.1: unknown keys hours",
        vhosts + "www.users_apache_type: must be static, php",
        vhosts + "blog.users_apache_robots: must be deny",
        vhosts + "blog.users_apache_redirectz: unknown key",
        vhosts + "list: must be a mapping",
        "users.jack: must be a mapping",
    ]
    assert len(found) == len(expected)
    for problem, start in zip(found, expected, strict=True):
        assert problem.startswith(start), problem


def test_not_yaml_and_not_a_mapping_are_errors():
    with pytest.raises(imp.ConversionError, match=r"x\.yml: not readable YAML"):
        imp.load("users: [", "x.yml")
    assert errors(["a"]) == ["(top level): must be a mapping of variables, not list"]
    assert errors({"other": 1}) == ["users: is required: the accounts, keyed by user name"]


# Identity.


def test_identity_fields():
    account, entries = one(
        {
            "users_state": "present",
            "users_name": "Alice Fernandez",
            "users_email": "alice@alice.example",
            "users_shell": "/bin/sh",
            "users_home": "/home/alice/",
            "users_group": "alice",
            "users_notify_passwd": True,
            "users_mariadb_notify_passwd": False,
            "users_matomo_account": False,
        }
    )
    assert account == {
        "state": "present",
        "fullname": "Alice Fernandez",
        "email": "alice@alice.example",
        "shell": "/bin/sh",
        "ssh_password": True,
        "db_password": False,
        "matomo": False,
    }
    assert all(e.kind == sites.MAPPED for e in entries.values())


def test_state_absent_and_ignore():
    account, _ = one({"users_state": "absent"})
    assert account == {"state": "absent"}
    account, entries = one({"users_state": "ignore", "users_quota": "1G"})
    assert account is None
    assert (
        entries["users.alice"].kind == sites.NOT_MAPPED and "ignore" in entries["users.alice"].text
    )


def test_other_shell_home_and_group_are_reported():
    account, entries = one(
        {"users_shell": "/usr/sbin/nologin", "users_home": "/var/www/alice", "users_group": "www"}
    )
    assert account == {}
    assert entries["users.alice.users_shell"].kind == sites.DECISION
    assert entries["users.alice.users_home"].kind == sites.DECISION
    assert "/home/alice" in entries["users.alice.users_home"].text
    assert entries["users.alice.users_group"].kind == sites.NOT_MAPPED


def test_groups():
    _, entries = one({"users_groups": ["chroot", "phpfpm", "sftponly", "sudo"]})
    kinds = [entries[f"users.alice.users_groups.{i}"].kind for i in range(4)]
    assert kinds == [sites.MAPPED, sites.MAPPED, sites.NOT_MAPPED, sites.NOT_MAPPED]


def test_ssh_keys_literal_mapped_urls_decided():
    account, entries = one({"users_ssh_public_keys": ["https://git.coop/alice.keys", KEY]})
    assert account["ssh_keys"] == [KEY]
    assert entries["users.alice.users_ssh_public_keys.0"].kind == sites.DECISION


# Quota, databases.


def test_quota_size_is_split_as_the_peer_does():
    account, _ = one({"users_quota": "1G"})
    assert account["quota"] == {
        "blocks_hard": "1G",
        "blocks_soft": "954437K",
        "inodes_hard": 209715,
        "inodes_soft": 190887,
    }


def test_quota_limits_override_the_size():
    account, _ = one(
        {
            "users_quota_block_hardlimit": 2097152,
            "users_quota": "1G",
            "users_quota_block_softlimit": 1908874,
            "users_quota_inode_softlimit": 9532,
            "users_quota_inode_hardlimit": 0,
        }
    )
    assert account["quota"] == {
        "blocks_hard": "2G",
        "blocks_soft": "1908874K",
        "inodes_hard": 0,
        "inodes_soft": 9532,
    }


def test_databases_and_privileges():
    account, entries = one(
        {
            "users_mariadb_databases": ["alice_wp", "alice_shop"],
            "users_mariadb_database_privileges": ["select", "LOCK TABLES", "GRANT"],
        }
    )
    assert account["databases"] == {"alice_wp": None, "alice_shop": None}
    assert account["db_privileges"] == ["SELECT", "LOCK TABLES"]
    assert entries["users.alice.users_mariadb_database_privileges.2"].kind == sites.NOT_MAPPED


def test_database_without_prefix_needs_a_decision():
    _, report = imp.convert({"users": {"alice": {"users_mariadb_databases": ["live"]}}}, "t")
    [line] = [e.text for e in report.entries if e.kind == sites.VALIDATION]
    assert line.startswith("account alice needs a decision: webarch:accounts:alice:databases:live")


# PHP-FPM.


def test_php_settings():
    account, entries = one(
        {
            "users_phpfpm_pm": "dynamic",
            "users_phpfpm_max_children": 5,
            "users_phpfpm_request_terminate_timeout": 90,
            "users_phpfpm_admin_flags": [{"name": "display_errors", "value": True}],
            "users_phpfpm_disable_functions": ["exec", "system"],
            "users_phpfpm_open_basedir": ["/home/alice/", "/tmp", "/home/alice/private"],
            "users_phpfpm_mysqli_allow_local_infile": True,
            "users_phpfpm_sendmail_from": "web@alice.example",
            "users_phpfpm_version": "8.1",
            "users_phpfpm_extensions": ["php"],
        }
    )
    assert account["php"] == {
        "pm": "dynamic",
        "max_children": 5,
        "request_terminate_timeout": 90,
        "admin_flags": {"display_errors": True, "mysqli.allow_local_infile": True},
        "disable_functions": ["exec", "system"],
        "open_basedir": ["/home/alice/private"],
    }
    assert account["mail"] == {"sender": "web@alice.example"}
    assert entries["users.alice.users_phpfpm_version"].kind == sites.NOT_MAPPED
    assert entries["users.alice.users_phpfpm_extensions"].kind == sites.NOT_MAPPED


def test_open_basedir_of_home_only_switches_it_on():
    account, _ = one({"users_phpfpm_open_basedir": ["/home/alice", "/usr/share/php"]})
    assert account["php"]["open_basedir"] is True


# Cron.


def test_cron_jobs():
    account, entries = one(
        {
            "users_cron_jobs": [
                {"name": "WordPress cron!", "job": "php wp-cron.php", "minute": "*/5"},
                {"name": "wordpress cron", "job": "x", "hour": 3, "minute": 0, "weekday": "1"},
                {"name": "Weekly", "job": "y", "special_time": "@annually", "disabled": True},
                {"name": "Boot", "job": "z", "special_time": "@reboot"},
                {"name": "Gone", "job": "z", "state": "absent"},
                {"name": "2 fast", "job": "z"},
            ],
            "users_daily_scripts": ["a", "b"],
            "users_hourly_scripts": ["c"],
            "users_minutely_scripts": ["d"],
        }
    )
    assert account["cron"] == {
        "wordpress-cron": {"schedule": "*/5 * * * *", "command": "php wp-cron.php"},
        "wordpress-cron-2": {"schedule": "0 3 * * 1", "command": "x"},
        "weekly": {"schedule": "@yearly", "command": "y", "enabled": False},
        "job-2-fast": {"schedule": "* * * * *", "command": "z"},
        "daily-1": {"schedule": "@daily", "command": "a"},
        "daily-2": {"schedule": "@daily", "command": "b"},
        "hourly-1": {"schedule": "@hourly", "command": "c"},
        "minutely-1": {"schedule": "* * * * *", "command": "d"},
    }
    assert entries["users.alice.users_cron_jobs.3"].kind == sites.DECISION
    assert entries["users.alice.users_cron_jobs.4"].kind == sites.NOT_MAPPED


def test_cron_percent_signs_keep_crontab_meaning():
    account, entries = one(
        {
            "users_cron_jobs": [
                {"name": "stamp", "job": r"date +\%F >> ~/logs/stamp"},
                {"name": "mail", "job": "mail -s hi me%body"},
            ]
        }
    )
    assert account["cron"] == {
        "stamp": {"schedule": "* * * * *", "command": "date +%F >> ~/logs/stamp"}
    }
    assert entries["users.alice.users_cron_jobs.1"].kind == sites.DECISION


def test_empty_values_are_reported_not_dropped():
    pillar, report = imp.convert({"users": {"alice": None, "bob": {"users_email": ""}}}, "t")
    assert pillar["webarch"]["accounts"] == {"alice": {}, "bob": {}}
    paths = {e.path: e.kind for e in report.entries}
    assert paths == {"users.alice": sites.MAPPED, "users.bob.users_email": sites.MAPPED}
    pillar, report = imp.convert({"users": None}, "t")
    assert pillar == {"webarch": {"accounts": {}}}
    assert [e.path for e in report.entries] == ["users"]
    _, entries = one({"users_apache_virtual_hosts": {"www": {}}})
    assert entries["users.alice.users_apache_virtual_hosts.www"].kind == sites.MAPPED


# Sites.


@pytest.mark.parametrize(
    ("peer", "webarch", "kinds"),
    [
        (None, "static", []),
        ("static", "static", [sites.MAPPED]),
        ("php", "php", [sites.MAPPED]),
        ("php+fcgi", "php", [sites.MAPPED, sites.NOT_MAPPED]),
    ],
)
def test_site_types(peer, webarch, kinds):
    vhost = {"users_apache_server_name": "a.example"}
    if peer is not None:
        vhost["users_apache_type"] = peer
    pillar, report = imp.convert(
        {"users": {"alice": {"users_apache_virtual_hosts": {"www": vhost}}}}, "test"
    )
    assert pillar["webarch"]["accounts"]["alice"]["sites"]["www"]["type"] == webarch
    assert [e.kind for e in report.entries if e.path.endswith("www.users_apache_type")] == kinds


def test_cgi_site_is_left_out_as_a_decision():
    account, entries = one({"users_apache_virtual_hosts": {"cgi": {"users_apache_type": "cgi"}}})
    assert "sites" not in account
    assert entries["users.alice.users_apache_virtual_hosts.cgi"].kind == sites.DECISION


def test_names_and_docroot():
    converted, _ = site(
        {"users_apache_server_aliases": ["alice.example"], "users_apache_vhost_docroot": True}
    )
    assert converted["server_name"] == "www.alice.example"
    assert converted["aliases"] == ["alice.example"]
    assert "docroot" not in converted
    _, entries = site({"users_apache_vhost_docroot": False})
    assert entries["users_apache_vhost_docroot"].kind == sites.DECISION


def test_wordpress_and_mediawiki_apps():
    converted, entries = site(
        {
            "users_apache_type": "php",
            "users_cms": "wordpress",
            "wordpress_dbname": "alice_wp",
            "wordpress_title": "Blog",
            "wordpress_docroot": "/home/alice/sites/www/public/",
            "wordpress_admin_user": "admin",
        }
    )
    assert converted["type"] == "wordpress"
    assert converted["app"] == {"database": "alice_wp", "title": "Blog"}
    assert "docroot" not in converted
    assert entries["wordpress_docroot"].kind == sites.DECISION
    converted, _ = site(
        {"users_cms": "mediawiki", "mediawiki_dbname": "alice_wiki", "mediawiki_wikiname": "W"}
    )
    assert converted["type"] == "mediawiki" and converted["app"]["title"] == "W"
    converted, _ = site({"users_cms": "matomo", "users_matomo_site": False})
    assert converted["type"] == "matomo" and converted["matomo"] is False


def test_other_cms_is_served_by_its_type():
    converted, entries = site(
        {"users_apache_type": "php", "users_cms": "nextcloud", "nextcloud_dbpass": "s3cret"}
    )
    assert converted["type"] == "php"
    assert entries["users_cms"].kind == sites.NOT_MAPPED
    assert "secret" in entries["nextcloud_dbpass"].text


def test_redirects():
    converted, entries = site(
        {
            "users_apache_redirects": [
                {"path": "/a", "url": "https://b.example/", "status": "permanent"},
                {"path": "/c", "url": "/d"},
                {"regex_path": "^/e(.*)", "url": "/f$1"},
                {"path": "/g", "status": 410},
            ]
        }
    )
    assert converted["redirects"] == [
        {"from": "/a", "to": "https://b.example/", "status": 301},
        {"from": "/c", "to": "/d", "status": 302},
    ]
    assert entries["users_apache_redirects.2"].kind == sites.NOT_MAPPED
    assert entries["users_apache_redirects.3"].kind == sites.NOT_MAPPED


def test_headers():
    converted, entries = site(
        {
            "users_apache_headers": [
                {"type": "response", "action": "set", "expr": 'X-Frame-Options "DENY"'},
                {"type": "response", "con": "always", "action": "unset", "expr": "X-Powered-By"},
                {"type": "response", "action": "set", "expr": "X-Robots-Tag none"},
                {"type": "request", "action": "set", "arg": "X-A b"},
                {"type": "response", "con": "onsuccess", "action": "set", "expr": "X-B c"},
            ]
        }
    )
    assert converted["headers"] == {"X-Frame-Options": "DENY", "X-Powered-By": False}
    assert [entries[f"users_apache_headers.{i}"].kind for i in range(5)] == [
        sites.MAPPED,
        sites.MAPPED,
        sites.NOT_MAPPED,
        sites.NOT_MAPPED,
        sites.NOT_MAPPED,
    ]


def test_hsts():
    assert site({})[0]["hsts"] is True
    converted, entries = site({"users_apache_sts": ["max-age=600", "preload"]})
    assert converted["hsts"] == 600
    assert entries["users_apache_sts.1"].kind == sites.NOT_MAPPED
    assert site({"users_apache_sts": []})[0]["hsts"] is False


def test_robots():
    assert site({"users_apache_robots": "deny"})[0]["robots_deny"] is True


def test_basic_auth_of_the_whole_site_fails_closed():
    converted, entries = site(
        {
            "users_apache_auth_type": "Basic",
            "users_apache_auth_name": "Staff",
            "users_apache_htauth_users": [
                {"name": "staff", "password": "hunter2"},
                {"name": "old", "state": "absent"},
            ],
        }
    )
    assert converted["basic_auth"] == {"users": {"staff": "BCRYPT-HASH-NEEDED"}, "realm": "Staff"}
    assert entries["users_apache_htauth_users.0"].kind == sites.DECISION
    assert "hunter2" not in entries["users_apache_htauth_users.0"].text


def test_basic_auth_users_of_locations_only_are_reported():
    converted, entries = site(
        {
            "users_apache_htauth_users": [{"name": "staff", "password": "x"}],
            "users_apache_locations": [{"location": "/wp-login.php"}],
        }
    )
    assert "basic_auth" not in converted
    assert entries["users_apache_htauth_users.0"].kind == sites.NOT_MAPPED
    assert entries["users_apache_locations"].kind == sites.DECISION


def test_sites_disabled_are_suspended():
    account, _ = one(
        {
            "users_apache_virtual_hosts_enabled": False,
            "users_apache_virtual_hosts": {"www": {"users_apache_server_name": "a.example"}},
        }
    )
    assert account["sites"]["www"]["suspended"] is True


def test_every_handled_key_is_in_the_migration_guide(repo):
    guide = (repo / "docs" / "migration.rst").read_text()
    keys = [
        *imp.ACCOUNT_FIELDS,
        *imp.ACCOUNT_NOT_MAPPED,
        *imp.SCRIPT_SCHEDULES,
        *site_map.SITE_FIELDS,
        *site_map.SITE_NOT_MAPPED,
    ]
    assert [key for key in keys if f"``{key}``" not in guide] == []


def test_every_known_site_key_is_handled():
    unknown = set(site_map.SITE_FIELDS) & set(site_map.SITE_NOT_MAPPED)
    assert unknown == set()
    assert set(imp.ACCOUNT_FIELDS).isdisjoint(imp.ACCOUNT_NOT_MAPPED)


# The execution module.


@pytest.fixture
def module() -> ModuleType:
    loaded = formula.load("_modules/webarch_import.py")
    loaded.__grains__ = {"osmajorrelease": 12}
    return loaded


def test_module_writes_the_pillar_0600(module, tmp_path):
    out = tmp_path / "web2.sls"
    result = module.ansible(str(DATA / "web2.yml"), out=str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert text.startswith("#!yaml\n")
    assert yaml.safe_load(text) == result["pillar"]
    assert "#   account frank needs a decision" in text
    assert result["summary"]["validation"] == 9
    assert len(result["report"]) == sum(
        result["summary"][k] for k in ("mapped", "not mapped", "needs a decision", "validation")
    )


def test_module_errors(module, tmp_path):
    from salt.exceptions import CommandExecutionError

    with pytest.raises(CommandExecutionError, match=r"users\.jack: must be a mapping"):
        module.ansible(str(DATA / "malformed.yml"))
    with pytest.raises(CommandExecutionError, match="cannot read"):
        module.ansible(str(tmp_path / "missing.yml"))
    assert not list(tmp_path.iterdir())
