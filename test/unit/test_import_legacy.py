"""The scanner of a legacy host (Apache mpm-itk + mod_php, MariaDB, crontabs) to webarch pillar.

``_utils/webarch_import_legacy.py`` on the texts of ``test/unit/data/legacy/``
(three accounts as the old platform has them: alice's WordPress with its
database password in ``wp-config.php``, bob's static site outside ``~/sites``,
carol's PHP shop with a crontab and a ``.forward``; a database granted to two
users) and on small inputs, one per mapping; then the reading half in
``_modules/webarch_import.py`` (``legacy``) on a scan put in its place and on
a file tree.
"""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import formula
import pytest
import webarch_import_legacy as leg
import webarch_import_legacy_apache as apache
import webarch_import_report as report_module
import yaml
from webarch_import_report import DECISION, MAPPED, NOT_MAPPED, VALIDATION, Entry

DATA = Path(__file__).resolve().parent / "data" / "legacy"
SITES = "/etc/apache2/sites-enabled"
WP_PASSWORD = "Tr0ub4dor&3-legacy"
NO_DOCROOT = {"owner": None, "php": False, "wp_config": None}


def fixture_scan() -> dict:
    """The scan of the legacy fixture host, as webarch_import.legacy builds it."""
    scan = yaml.safe_load((DATA / "scan.yaml").read_text())
    scan["vhosts"] = {
        f"{SITES}/{name}.conf": (DATA / f"{name}.conf").read_text()
        for name in ("alice", "bob", "carol")
    }
    scan["docroots"]["/home/alice/sites/blog"]["wp_config"] = (DATA / "wp-config.php").read_text()
    scan["crontabs"] = {"carol": (DATA / "carol.crontab").read_text()}
    scan["forwards"] = {
        "carol": (DATA / "carol.forward").read_text(),
        "alice": (DATA / "alice.forward").read_text(),
    }
    return scan


@pytest.fixture(scope="module")
def converted() -> tuple[dict, dict[str, list[Entry]], list[Entry]]:
    pillar, report = leg.convert(fixture_scan())
    by_path: dict[str, list[Entry]] = {}
    for entry in report.entries:
        by_path.setdefault(entry.path, []).append(entry)
    return pillar["webarch"]["accounts"], by_path, report.entries


def entry(by_path: dict[str, list[Entry]], path: str) -> Entry:
    (found,) = by_path[path]
    return found


def user(name: str, **extra: Any) -> dict:
    data = {
        "name": name,
        "uid": 1001,
        "gid": 1001,
        "group": name,
        "gecos": "",
        "home": f"/home/{name}",
        "shell": "/bin/bash",
    }
    return {**data, **extra}


def small(
    vhost: str = "",
    docroots: dict | None = None,
    users: list[dict] | None = None,
    **extra: Any,
) -> tuple[dict, dict[str, Entry], list[Entry]]:
    """Convert a host with alice and one vhost file (``alice.conf``) holding ``vhost``."""
    scan = {
        "users": users if users is not None else [user("alice")],
        "vhosts": {f"{SITES}/alice.conf": vhost} if vhost else {},
        "docroots": docroots or {},
        "crontabs": {},
        "forwards": {},
        "mariadb": None,
        **extra,
    }
    pillar, report = leg.convert(scan)
    return (
        pillar["webarch"]["accounts"],
        {e.path: e for e in report.entries},
        report.entries,
    )


def site_of(body: str, root: str = "/home/alice/sites/www", **info: Any) -> tuple[dict, dict]:
    """alice's one site from a :443 vhost with ``body``; its report by ``alice.conf:LINE``."""
    text = (
        f"<VirtualHost *:443>\nServerName www.alice.example\nDocumentRoot {root}\n"
        f"AssignUserID alice alice\n{body}\n</VirtualHost>\n"
    )
    docroots = {root: {**NO_DOCROOT, **info}}
    accounts, report, _ = small(text, docroots)
    sites = accounts["alice"].get("sites", {})
    lines = {p.removeprefix(f"{SITES}/alice.conf:"): e for p, e in report.items()}
    return (next(iter(sites.values())) if sites else {}), lines


def errors(scan: Any) -> list[str]:
    with pytest.raises(leg.ConversionError) as caught:
        leg.convert(scan)
    return caught.value.problems


# The fixture host as a whole.


def test_fixture_host_three_accounts(converted):
    accounts, _, entries = converted
    assert sorted(accounts) == ["alice", "bob", "carol"]
    assert accounts["alice"]["sites"]["blog"]["type"] == "wordpress"
    assert accounts["bob"]["sites"]["bob-example"]["type"] == "static"
    assert accounts["carol"]["sites"]["shop"]["type"] == "php"
    validation = [e.text for e in entries if e.kind == VALIDATION]
    # An existing WordPress gets no app block (no admin password to mail), so the
    # pillar validates as it is.
    assert validation == []


def test_fixture_report_counts(converted):
    _, _, entries = converted
    counts = {
        kind: sum(e.kind == kind for e in entries)
        for kind in (MAPPED, NOT_MAPPED, DECISION, VALIDATION)
    }
    assert counts == {MAPPED: 64, NOT_MAPPED: 21, DECISION: 18, VALIDATION: 0}


def test_fixture_report_complete(converted):
    """Every directive of a vhost, crontab line, database, user and grant has its line."""
    _, by_path, _ = converted
    scan = fixture_scan()
    for path, text in scan["vhosts"].items():
        depth = 0
        for number, line in apache._logical_lines(text):
            if line.startswith("</"):
                depth -= line.lower().startswith(("</directory", "</location"))
                continue
            name = line.split()[0].rstrip(">")
            if name.lstrip("<").lower() in ("ifmodule", "virtualhost") or depth:
                continue
            assert f"{path}:{number} {name}{'>' if line[0] == '<' else ''}" in by_path, line
            depth += line.lower().startswith(("<directory", "<location"))
    for number, line in enumerate(scan["crontabs"]["carol"].splitlines(), 1):
        if not line.startswith("#"):
            assert f"/var/spool/cron/crontabs/carol:{number}" in by_path
    for name in scan["mariadb"]["databases"]:
        assert f"mariadb.databases.{name}" in by_path
    for row in scan["mariadb"]["users"]:
        assert f"mariadb.users.{row['user']}@{row['host']}" in by_path
    for index, row in enumerate(scan["mariadb"]["grants"]):
        assert f"mariadb.grants.{row['user']}@{row['host']}.{index}" in by_path
    for name in ("alice", "bob", "carol"):
        for field in ("uid", "gid", "gecos", "shell", "home"):
            assert f"passwd.{name}.{field}" in by_path
    assert {"/home/alice/.forward", "/home/carol/.forward"} <= set(by_path)


def test_no_secret_in_the_output(converted):
    accounts, _, entries = converted
    assert WP_PASSWORD not in yaml.safe_dump(accounts)
    assert not any(WP_PASSWORD in e.line() for e in entries)


def test_fixture_passes_validation_once_decided(converted):
    """Settled by hand as the report says: the pillar validates."""
    accounts, _, _ = converted
    settled = copy.deepcopy(accounts)
    settled["alice"]["email"] = "alice@mail.example"
    report = leg.Report()
    run = leg.Run("test")
    run.report = report
    report_module.validate({"webarch": {"accounts": settled}}, run, 12, "accounts")
    problems = [e.text for e in report.entries]
    assert problems == []


# Accounts.


def test_account_identity(converted):
    accounts, by_path, _ = converted
    alice = accounts["alice"]
    assert (alice["uid"], alice["gid"], alice["fullname"], alice["shell"]) == (
        1001,
        1001,
        "Alice Liddell",
        "/bin/bash",
    )
    assert "fullname" not in accounts["bob"]
    assert entry(by_path, "passwd.alice.home").kind == MAPPED


def test_account_shell_and_group_decisions(converted):
    accounts, by_path, _ = converted
    assert "shell" not in accounts["bob"]
    assert entry(by_path, "passwd.bob.shell").kind == DECISION
    assert "gid" not in accounts["carol"] and accounts["carol"]["uid"] == 1003
    assert "named after the account" in entry(by_path, "passwd.carol.gid").text


def test_account_home_elsewhere_and_uid_out_of_range():
    accounts, report, _ = small(users=[user("alice", home="/srv/alice", uid=70000)])
    assert "uid" not in accounts["alice"]
    assert report["passwd.alice.uid"].kind == DECISION
    assert "webarch's home is /home/alice" in report["passwd.alice.home"].text


def test_account_name_webarch_cannot_take():
    accounts, report, _ = small(users=[user("Bad.Name")])
    assert accounts == {}
    assert report["passwd.Bad.Name"].kind == DECISION


# Virtual hosts.


def test_vhost_names_and_port_80_redirect(converted):
    accounts, by_path, _ = converted
    blog = accounts["alice"]["sites"]["blog"]
    assert blog["server_name"] == "blog.alice.example"
    assert blog["aliases"] == ["www.alice.example", "alice.example"]  # continuation joined
    assert "redirects" not in blog
    assert "HTTPS" in entry(by_path, f"{SITES}/alice.conf:7 Redirect").text
    assert entry(by_path, f"{SITES}/alice.conf:2 <VirtualHost>").kind == MAPPED


def test_vhost_docroot_in_sites_and_subdir(converted):
    accounts, _, _ = converted
    assert "docroot" not in accounts["alice"]["sites"]["blog"]
    assert accounts["carol"]["sites"]["shop"]["docroot"] == "public"


def test_vhost_docroot_elsewhere_is_a_decision(converted):
    accounts, by_path, _ = converted
    assert accounts["bob"]["sites"]["bob-example"]["server_name"] == "www.bob.example"
    found = entry(by_path, f"{SITES}/bob.conf:2 DocumentRoot")
    assert found.kind == DECISION
    assert "rsync -a /var/www/bob.example/ /home/bob/sites/bob-example/" in found.text


def test_vhost_headers_hsts_robots(converted):
    accounts, _, _ = converted
    blog = accounts["alice"]["sites"]["blog"]
    assert blog["hsts"] == 63072000
    assert blog["headers"] == {"X-Frame-Options": "SAMEORIGIN"}
    assert accounts["bob"]["sites"]["bob-example"]["robots_deny"] is True


def test_vhost_header_unset():
    site, report = site_of("Header unset Referrer-Policy\nHeader unset X-Powered-By")
    assert site["headers"] == {"Referrer-Policy": False}
    assert report["5 Header"].kind == MAPPED
    assert report["6 Header"].kind == DECISION


def test_vhost_redirects(converted):
    accounts, _, _ = converted
    assert accounts["bob"]["sites"]["bob-example"]["redirects"] == [
        {"from": "/old-prices.html", "to": "https://www.bob.example/prices.html", "status": 301}
    ]
    site, report = site_of(
        "Redirect /a /b\nRedirect gone /c\nRedirectMatch ^/d(.*) /e$1\nRedirect seeother /f /g"
    )
    assert site["redirects"] == [
        {"from": "/a", "to": "/b", "status": 302},
        {"from": "/f", "to": "/g", "status": 303},
    ]
    assert report["6 Redirect"].kind == NOT_MAPPED
    assert report["7 RedirectMatch"].kind == DECISION


def test_vhost_other_directives(converted):
    _, by_path, _ = converted
    assert entry(by_path, f"{SITES}/carol.conf:14 Include").kind == DECISION
    assert entry(by_path, f"{SITES}/carol.conf:15 <Location>").kind == DECISION
    assert entry(by_path, f"{SITES}/alice.conf:25 <Directory>").kind == NOT_MAPPED
    assert entry(by_path, f"{SITES}/alice.conf:18 SSLEngine").kind == NOT_MAPPED
    assert entry(by_path, f"{SITES}/carol.conf:1 ServerTokens").kind == NOT_MAPPED
    _, report = site_of("FooBar on")
    assert report["5 FooBar"].kind == DECISION


def test_vhost_without_assignuserid_goes_to_the_docroot_owner():
    text = (
        "<VirtualHost *:80>\nServerName a.example\nDocumentRoot /home/alice/sites/a\n</VirtualHost>"
    )
    accounts, _, _ = small(text, {"/home/alice/sites/a": {**NO_DOCROOT, "owner": "alice"}})
    assert accounts["alice"]["sites"]["a"]["type"] == "static"


def test_vhost_of_no_account_and_default_vhost():
    text = (
        "<VirtualHost *:80>\nServerName a.example\nDocumentRoot /var/www/html\n"
        "</VirtualHost>\n<VirtualHost *:80>\nDocumentRoot /var/www/html\n</VirtualHost>\n"
        "<VirtualHost *:8080>\nServerName b.example\n</VirtualHost>\n"
    )
    accounts, report, _ = small(text, {"/var/www/html": {**NO_DOCROOT, "owner": "root"}})
    assert "sites" not in accounts["alice"]
    assert "runs as root, which is no account" in report[f"{SITES}/alice.conf:1 <VirtualHost>"].text
    assert "no ServerName" in report[f"{SITES}/alice.conf:5 <VirtualHost>"].text
    assert "port 8080" in report[f"{SITES}/alice.conf:8 <VirtualHost>"].text


def test_docroots_for_the_reader():
    assert leg.docroots(fixture_scan()["vhosts"]) == [
        "/home/alice/sites/blog",
        "/home/carol/sites/shop/public",
        "/var/www/bob.example",
    ]


# Site types and WordPress.


def test_site_type_php_from_files_or_settings():
    assert site_of("", php=True)[0]["type"] == "php"
    assert site_of("php_admin_value memory_limit 128M")[0]["type"] == "php"
    assert site_of("")[0]["type"] == "static"


#: alice's MariaDB password's hash in the scan (the fixture's; not wp-config's password).
ALICE_HASH = "*" + "C0FFEE" * 6 + "C0FF"


def test_wordpress_database_and_user(converted):
    accounts, by_path, _ = converted
    # No app block: it would set and mail a new admin password over the existing one.
    assert "app" not in accounts["alice"]["sites"]["blog"]
    assert "alice_wp" in accounts["alice"]["databases"]
    wp = "/home/alice/sites/blog/wp-config.php"
    assert entry(by_path, f"{wp} DB_NAME").kind == MAPPED
    assert "the existing admin keeps its password" in entry(by_path, f"{wp} DB_NAME").text
    assert entry(by_path, f"{wp} DB_USER").kind == MAPPED
    assert entry(by_path, f"{wp} DB_HOST").kind == MAPPED
    assert entry(by_path, f"{wp} DB_PASSWORD").kind == NOT_MAPPED
    keep = entry(by_path, "mariadb.users.alice@localhost")
    assert keep.kind == MAPPED
    assert "accounts:alice:db_password_hash" in keep.text
    assert "that wp-config.php uses" in keep.text
    assert accounts["alice"]["db_password_hash"] == ALICE_HASH


def test_a_password_that_is_no_native_hash_is_a_decision():
    scan = fixture_scan()
    for row in scan["mariadb"]["users"]:
        row.pop("password_hash", None)
    pillar, report = leg.convert(scan)
    (keep,) = [e for e in report.entries if e.path == "mariadb.users.alice@localhost"]
    assert keep.kind == DECISION and "db_password_hash" in keep.text
    assert "db_password_hash" not in pillar["webarch"]["accounts"]["alice"]


def test_wordpress_other_user_and_tcp_host():
    config = (
        "define('DB_NAME', 'alice_wp');\ndefine('DB_USER', 'wp');\ndefine('DB_HOST', '127.0.0.1');"
    )
    site, report = site_of("", wp_config=config)
    where = "/home/alice/sites/www/wp-config.php"
    assert site["type"] == "wordpress"
    assert report[f"{where} DB_USER"].kind == DECISION
    assert report[f"{where} DB_HOST"].kind == DECISION
    site, report = site_of("", wp_config="<?php // no defines")
    assert "app" not in site
    assert report["/home/alice/sites/www/wp-config.php"].kind == DECISION


# PHP settings.


def test_php_settings(converted):
    accounts, by_path, _ = converted
    assert accounts["alice"]["php"] == {"memory_limit": "512M", "max_execution_time": 120}
    carol = accounts["carol"]["php"]
    assert carol == {
        "upload_max_filesize": "64M",
        "post_max_size": "64M",
        "admin_flags": {"allow_url_fopen": False},
    }
    assert entry(by_path, f"{SITES}/carol.conf:9 php_admin_value").kind == NOT_MAPPED
    assert ".user.ini" in entry(by_path, f"{SITES}/carol.conf:11 php_value").text


def test_php_settings_differ_between_sites():
    text = "".join(
        f"<VirtualHost *:443>\nServerName {n}.example\nDocumentRoot /home/alice/sites/{n}\n"
        f"AssignUserID alice alice\nphp_admin_value memory_limit {m}\n</VirtualHost>\n"
        for n, m in (("a", "512M"), ("b", "1G"))
    )
    accounts, report, _ = small(text)
    assert accounts["alice"]["php"]["memory_limit"] == "1G"
    assert report[f"{SITES}/alice.conf:11 php_admin_value"].kind == DECISION
    _, report = site_of("php_admin_value max_execution_time lots\nphp_admin_value html_errors 0")
    assert report["5 php_admin_value"].kind == DECISION
    assert report["6 php_admin_value"].kind == MAPPED


# MariaDB.


def test_database_to_its_owner(converted):
    accounts, by_path, _ = converted
    assert accounts["alice"]["databases"] == {"alice_wp": None}
    assert "db_privileges" not in accounts["alice"]  # ALL: webarch's default
    assert accounts["carol"]["databases"] == {"carol_shop": None}  # by a `carol\_%` grant
    assert accounts["carol"]["db_privileges"] == [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "INDEX",
        "ALTER",
        "LOCK TABLES",
    ]
    assert entry(by_path, "mariadb.databases.mysql").kind == NOT_MAPPED


def test_database_of_two_users_and_of_nobody(converted):
    accounts, by_path, _ = converted
    assert "granted to alice, carol" in entry(by_path, "mariadb.databases.shared_stats").text
    assert entry(by_path, "mariadb.databases.orphan_db").kind == DECISION
    assert all("shared_stats" not in a.get("databases", {}) for a in accounts.values())


def test_database_of_two_users_one_prefixed():
    users = [user("alice"), user("bob", uid=1002, gid=1002)]
    grants = [
        {"user": "alice", "host": "localhost", "grant": "GRANT SELECT ON `alice_x`.* TO `alice`"},
        {"user": "bob", "host": "localhost", "grant": "GRANT ALL PRIVILEGES ON `alice_x`.* TO b"},
    ]
    mariadb = {"databases": ["alice_x"], "users": [], "grants": grants}
    accounts, report, _ = small(users=users, mariadb=mariadb)
    assert accounts["alice"]["databases"] == {"alice_x": None}
    assert accounts["alice"]["db_privileges"] == ["SELECT"]
    assert report["mariadb.databases.alice_x.bob"].kind == DECISION


def test_database_users(converted):
    _, by_path, _ = converted
    assert entry(by_path, "mariadb.users.carol@localhost").kind == MAPPED
    assert entry(by_path, "mariadb.users.carol@%").kind == DECISION
    assert entry(by_path, "mariadb.users.stats@localhost").kind == DECISION
    assert entry(by_path, "mariadb.grants.stats@localhost.8").kind == NOT_MAPPED  # its login
    assert entry(by_path, "mariadb.grants.stats@localhost.9").kind == DECISION  # a table grant
    assert entry(by_path, "mariadb.grants.alice@localhost.1").kind == MAPPED
    assert entry(by_path, "mariadb.grants.carol@%.7").kind == DECISION


def test_database_name_without_prefix_is_a_validation_decision():
    grants = [{"user": "alice", "host": "localhost", "grant": "GRANT ALL ON `blog`.* TO alice"}]
    mariadb = {"databases": ["blog"], "users": [], "grants": grants}
    accounts, _, entries = small(mariadb=mariadb)
    assert accounts["alice"]["databases"] == {"blog": None}
    (problem,) = [e for e in entries if e.kind == VALIDATION]
    assert problem.path == "accounts.alice"
    assert "webarch:accounts:alice:databases:blog: database name must start with" in problem.text


def test_no_mariadb():
    _, report, _ = small()
    assert report["mariadb"].kind == NOT_MAPPED


# Crontabs.


def test_crontab_jobs(converted):
    accounts, by_path, _ = converted
    cron = accounts["carol"]["cron"]
    assert cron["crontab-6"] == {
        "schedule": "*/15 * * * *",
        "command": "php /home/carol/sites/shop/public/cron.php >/dev/null 2>&1",
    }
    assert cron["crontab-8"]["schedule"] == "@daily"
    assert cron["crontab-10"]["command"].endswith("shop-$(date +%F).sql")  # \% is a %
    tab = "/var/spool/cron/crontabs/carol"
    assert entry(by_path, f"{tab}:4").kind == NOT_MAPPED  # MAILTO
    assert entry(by_path, f"{tab}:5").kind == DECISION  # PATH
    assert "@reboot" in entry(by_path, f"{tab}:9").text
    assert "% that cron makes a newline" in entry(by_path, f"{tab}:11").text
    assert sorted(cron) == ["crontab-10", "crontab-6", "crontab-7", "crontab-8"]


def test_crontab_bad_schedule_and_no_account():
    crontabs = {"alice": "61 * * * * true\n* * *\n", "root": "@daily true\n"}
    accounts, report, _ = small(crontabs=crontabs)
    assert "cron" not in accounts["alice"]
    assert "not a webarch job" in report["/var/spool/cron/crontabs/alice:1"].text
    assert report["/var/spool/cron/crontabs/alice:2"].kind == DECISION
    assert report["/var/spool/cron/crontabs/root"].kind == DECISION


# Mail forwards.


def test_forward(converted):
    accounts, by_path, _ = converted
    assert accounts["carol"]["email"] == "carol@carol.example"
    assert "email" not in accounts["alice"]
    assert entry(by_path, "/home/alice/.forward").kind == DECISION


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("|/usr/bin/procmail\n", DECISION),
        ("/home/alice/mbox\n", DECISION),
        ("# none\n", NOT_MAPPED),
    ],
)
def test_forward_not_one_address(text, kind):
    accounts, report, _ = small(forwards={"alice": text})
    assert "email" not in accounts["alice"]
    assert report["/home/alice/.forward"].kind == kind


# Errors.


def test_malformed_scan_errors_with_paths():
    found = errors({"users": [{"name": "alice"}], "vhosts": {"x": 1}, "extra": 1, "mariadb": []})
    assert found == [
        "extra: unknown key of the scan (known: users, vhosts, docroots, crontabs, forwards, "
        "mariadb)",
        "users.0: must be a mapping of name, uid, gid, group, gecos, home, shell[, in_the_way]",
        "vhosts: must be a mapping of names to texts",
        "mariadb: must be null or {databases, users, grants}, each a list",
    ]
    assert errors([]) == ["(top level): the scan must be a mapping, not list"]
    mariadb = {"databases": [1], "users": [{"user": "a"}], "grants": ["GRANT"]}
    assert errors({"mariadb": mariadb}) == [
        "mariadb.databases.0: must be a database name",
        "mariadb.users.0: must be a mapping of host, password, plugin, user",
        "mariadb.grants.0: must be a mapping of grant, host, user",
    ]


def test_unbalanced_apache_file_is_an_error():
    with pytest.raises(leg.ConversionError, match=rf"{SITES}/alice.conf:1: <virtualhost> is never"):
        small("<VirtualHost *:80>\nServerName a.example\n")
    with pytest.raises(leg.ConversionError, match=rf"{SITES}/alice.conf:2: </directory> closes"):
        small("ServerTokens Prod\n</Directory>\n")


# The execution module.


@pytest.fixture
def module() -> ModuleType:
    loaded = formula.load("_modules/webarch_import.py")
    loaded.__grains__ = {"osmajorrelease": 12}
    return loaded


def test_module_legacy_writes_the_pillar_0600(module, tmp_path, monkeypatch):
    monkeypatch.setattr(module, "_scan", fixture_scan)
    out = tmp_path / "legacy.sls"
    result = module.legacy(out=str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    assert "by webarch_import.legacy:" in text
    written = yaml.safe_load(text)
    # The kept hash is in the file (0600) only, never in the result (the job cache).
    assert written["webarch"]["accounts"]["alice"]["db_password_hash"] == ALICE_HASH
    assert ALICE_HASH not in json.dumps(result)
    assert module._without_hashes(written) == result["pillar"]
    assert "#   /home/alice/.forward: needs a decision" in text
    assert WP_PASSWORD not in text
    summary = result["summary"]
    assert (summary["mapped"], summary["validation"]) == (64, 0)
    assert summary["seconds"] >= 0


def test_module_reads_a_docroot(module, tmp_path):
    root = tmp_path / "sites" / "www"
    (root / "sub").mkdir(parents=True)
    assert module._docroot(str(root))["php"] is False
    (root / "sub" / "index.php").write_text("<?php echo 1;")
    (tmp_path / "sites" / "wp-config.php").write_text("define('DB_NAME', 'x');")
    found = module._docroot(str(root))
    assert found["php"] is True
    assert found["wp_config"] == "define('DB_NAME', 'x');"  # WordPress's one level up
    assert found["owner"] == __import__("pwd").getpwuid(os.getuid()).pw_name
    assert module._docroot(str(tmp_path / "missing")) == NO_DOCROOT


def test_module_reads_no_symlink(module, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root-only")
    (tmp_path / ".forward").symlink_to(secret)
    assert module._read_text(str(tmp_path / ".forward")) is None
    assert module._read_text(str(secret)) == "root-only"
    assert module._read_text(str(tmp_path)) is None


# Adoption (the existing users become the accounts) and what would change for them.


def test_every_user_is_adopted_with_its_ids(converted):
    accounts, by_path, _ = converted
    for name in ("alice", "bob", "carol"):
        assert accounts[name]["adopt"] is True and "uid" in accounts[name]
        assert "adopt: true" in entry(by_path, f"passwd.{name}.uid").text


def test_a_system_uid_is_not_adopted():
    accounts, report, _ = small(users=[user("alice", uid=999)])
    assert "adopt" not in accounts["alice"] and "uid" not in accounts["alice"]
    assert report["passwd.alice.uid"].kind == DECISION


def test_layout_dirs_in_the_way_are_decisions():
    accounts, report, _ = small(users=[user("alice", in_the_way=["logs", ".ssh"])])
    assert accounts["alice"]["adopt"] is True
    for part in ("logs", ".ssh"):
        found = report[f"passwd.alice.home.{part}"]
        assert found.kind == DECISION and "move it away before converging" in found.text
    assert errors({"users": [user("alice", in_the_way=["etc"])]}) == [
        "users.0.in_the_way: must be a list of sites, logs, tmp, private, .ssh"
    ]


def test_files_only_the_owner_reads_are_decisions():
    site, lines = site_of("", unserved=["/home/alice/sites/www/secret.txt"])
    assert site["type"] == "static"
    found = lines["/home/alice/sites/www/secret.txt"]
    assert found.kind == DECISION and "chgrp www-data FILE; chmod g+r FILE" in found.text


def test_module_finds_the_unserved_and_the_layout_in_the_way(module, tmp_path):
    root = tmp_path / "sites" / "www"
    (root / "private").mkdir(parents=True)
    for name, mode in (("open.html", 0o644), ("mine.html", 0o600), ("app.php", 0o600)):
        (root / name).write_text("x")
        (root / name).chmod(mode)
    (root / "private").chmod(0o700)
    (root / "link").symlink_to("/etc/shadow")
    # The web server's group may read it: served.
    (root / "group.html").write_text("x")
    (root / "group.html").chmod(0o640)
    web_gid = os.stat(root / "group.html").st_gid
    found = sorted(module._unserved(str(root), web_gid))
    assert found == [str(root / "mine.html"), str(root / "private")]
    (tmp_path / "logs").write_text("a file where ~/logs goes")
    (tmp_path / ".ssh").symlink_to("/etc")
    assert module._in_the_way(str(tmp_path)) == ["logs", ".ssh"]
