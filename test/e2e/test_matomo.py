"""Matomo, managed by the formula, seen from outside: HTTPS, its API, a real browser.

pillar.example converges with Matomo's release archive copied into the host:
the instance is installed into carol-stats' matomo site (its chroot, its pool,
its database by unix_socket), each account gets a Matomo user whose password
is mailed (to the relay's SMTP sink), each site a Matomo website.  The
clients (curl, Chromium) are this machine's, in the host's network namespace.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path

import pytest
from e2e.browser import run_browser
from e2e.conftest import MATOMO_ARCHIVE
from e2e.helpers import (
    RelaySink,
    changed,
    failed,
    files_containing,
    password_in,
    pool_socket,
    relay_sink,
    state_results,
)
from testhost import Host

pytestmark = pytest.mark.e2e

STATS = "stats.coop.example"
CURL = ["curl", "-sk", "--max-time", "60", "--resolve", f"{STATS}:443:127.0.0.1"]
TOKEN_FILE = "/var/lib/webarch/matomo/token"
SITES = "/home/carol-stats/sites"
CONFIG = f"{SITES}/matomo/config/config.ini.php"
INSTALLED = "webarch_matomo_|-webarch-matomo-installed_|-/home/carol-stats/sites/matomo_|-installed"
API_PASSWORD_FILE = "/var/lib/webarch/matomo/password"
#: The accounts' addresses (pillar.example's, and dave's added by a test).
EMAILS = {
    "alice": "alice@alice.example",
    "bob": "bob@bob.example",
    "carol-stats": "carol@stats.example",
    "dave": "dave@dave.example",
    "admin": "hostmaster@coop.example",
}
#: Every state run's output, for the secret search at the end.
OUTPUTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def _archive() -> None:
    if not MATOMO_ARCHIVE.is_file():
        pytest.skip(f"no Matomo release archive ({MATOMO_ARCHIVE}): see e2e/conftest.py")


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    return relay_sink(host)


#: A GeoLite2-City database made for the test: the host's loopback is in Paris.
GEOIP_ON_HOST = "/srv/matomo/GeoLite2-City.mmdb"


@pytest.fixture(scope="module")
def geoip_db(host: Host, tmp_path_factory: pytest.TempPathFactory) -> str:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-City", languages=["en"])
    writer.insert_network(IPSet(["127.0.0.0/8"]), {
        "city": {"names": {"en": "Paris"}},
        "country": {"iso_code": "FR", "names": {"en": "France"}},
        "continent": {"code": "EU", "names": {"en": "Europe"}},
        "location": {"latitude": 48.8566, "longitude": 2.3522},
    })  # fmt: skip
    path = tmp_path_factory.mktemp("geoip") / "GeoLite2-City.mmdb"
    writer.to_db_file(str(path))
    with path.open("rb") as data:
        subprocess.run(host.nsenter_command(["sh", "-c", f"cat > {GEOIP_ON_HOST}"]),
                       stdin=data, check=True)  # fmt: skip
    return GEOIP_ON_HOST


@pytest.fixture(scope="module")
def base(example_pillar: dict, sink: RelaySink, geoip_db: str) -> dict:
    pillar = copy.deepcopy(example_pillar)
    pillar["webarch"]["mail"] = {"smarthost": sink.exim_smarthost}
    pillar["webarch"]["matomo"]["geoip_db"] = geoip_db
    return pillar


def run(host: Host, pillar: dict) -> dict:
    """state.apply webarch with ``pillar``; the output is kept for the secret search."""
    host.set_pillar(pillar)
    ret = host.salt_call(["state.apply", "webarch"])
    OUTPUTS.append(json.dumps(ret))
    return ret


def matomo_states(ret: dict) -> dict:
    """The Matomo states of a run (webarch_matomo and the Matomo password mails)."""
    return {
        k: v
        for k, v in state_results(ret).items()
        if k.startswith("webarch_matomo_") or "-notify-matomo_" in k
    }


def matomo_seconds(ret: dict) -> float:
    return sum(v.get("duration", 0.0) for v in matomo_states(ret).values()) / 1000


@pytest.fixture(scope="module")
def first(host: Host, base: dict) -> dict:
    """The first run on a fresh host, timed."""
    started = time.monotonic()
    ret = run(host, base)
    ret["elapsed"] = time.monotonic() - started
    return ret


def api(host: Host, token: str, method: str, **params: object) -> object:
    """One Matomo API call over HTTPS (the token in the POST body, read from stdin)."""
    form = [("module", "API"), ("method", method), ("format", "json"), ("token_auth", token)]
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        form += [(f"{key}[]" if isinstance(value, list) else key, str(v)) for v in values]
    out = host.net_run(
        [*CURL, "--data-binary", "@-", f"https://{STATS}/index.php"],
        input=urllib.parse.urlencode(form),
        check=True,
    )
    return json.loads(out.stdout)


def superuser_token(host: Host) -> str:
    return host.read_file(TOKEN_FILE).strip()


def login_token(host: Host, login: str, password: str) -> str:
    """A token of ``login``, made with its own password (what the user can do)."""
    got = api(
        host,
        "anonymous",
        "UsersManager.createAppSpecificTokenAuth",
        userLogin=login,
        passwordConfirmation=password,
        description="e2e",
    )
    assert isinstance(got, dict) and "value" in got, got
    return str(got["value"])


def matomo_password(sink: RelaySink, account: str) -> str:
    mails = [
        m
        for m in sink.messages()
        if "Matomo" in str(m["message"]["Subject"])
        and "Your new" in str(m["message"]["Subject"])
        and EMAILS[account] in str(m["message"]["To"])
    ]
    assert mails, f"no Matomo password mail to {account}"
    return password_in(mails[-1])


def sites_of(host: Host, token: str) -> set[str]:
    got = api(host, token, "SitesManager.getSitesWithAtLeastViewAccess")
    assert isinstance(got, list), got
    return {site["main_url"] for site in got}


# --------------------------------------------------------------------------
# The first run and the second
# --------------------------------------------------------------------------


def test_first_run_installs_matomo_and_the_second_changes_nothing(host, base, first):
    assert failed(first) == {}
    installed = matomo_states(first)[INSTALLED]
    assert installed["changes"]["version"] == "5.0.2"
    install = installed["duration"] / 1000
    print(f"\nFIGURE first run {first['elapsed']:.1f} s; Matomo install {install:.1f} s; "
          f"Matomo states {matomo_seconds(first):.1f} s")  # fmt: skip
    second = run(host, base)
    assert failed(second) == {}
    assert changed(second) == {}
    print(f"FIGURE no-change run: Matomo states {matomo_seconds(second):.2f} s")
    # The token and webarch's superuser password: root only.
    for path in (TOKEN_FILE, API_PASSWORD_FILE):
        assert host.run(["stat", "-c", "%U %a", path]).stdout.split() == ["root", "600"]


def test_matomo_answers_on_its_name_over_https_with_its_secrets_kept(host, first):
    page = host.net_run([*CURL, "-o", "/dev/null", "-w", "%{http_code}", f"https://{STATS}/"])
    assert page.stdout == "200"
    login = host.net_run([*CURL, f"https://{STATS}/index.php?module=Login"]).stdout
    assert "login_form_password" in login
    for path in ("config/config.ini.php", "config/global.ini.php", "tmp/", "core/Piwik.php"):
        code = host.net_run([*CURL, "-o", "/dev/null", "-w", "%{http_code}",
                             f"https://{STATS}/{path}"]).stdout  # fmt: skip
        assert code in ("403", "404"), (path, code)
    # Installed as the pillar says: no password in its config, https only, the
    # reports from the timer only, trusted hosts = the site's name.
    config = host.read_file("/home/carol-stats/sites/matomo/config/config.ini.php")
    database = config.split("[database]")[1].split("[")[0]
    assert "password" not in database and 'port = "/run/mysqld/mysqld.sock"' in database
    assert 'force_ssl = "1"' in config
    assert 'enable_browser_archiving_triggering = "0"' in config
    assert f'trusted_hosts[] = "{STATS}"' in config
    listed = host.run(["systemctl", "is-enabled", "webarch-matomo-archive-carol-stats.timer"])
    assert listed.stdout.strip() == "enabled"


def test_each_account_sees_exactly_its_own_sites(host, first, sink):
    alice = login_token(host, "alice", matomo_password(sink, "alice"))
    bob = login_token(host, "bob", matomo_password(sink, "bob"))
    assert sites_of(host, alice) == {"https://www.alice.example", "https://wiki.alice.example"}
    assert sites_of(host, bob) == {"https://shop.bob.example", "https://bob.example"}
    # bob's websites are not alice's to read.
    ids = json.loads(host.read_file("/var/lib/webarch/matomo/ids.json"))["sites"]
    denied = api(host, alice, "VisitsSummary.get", idSite=ids["bob/shop"], period="day",
                 date="today")  # fmt: skip
    assert isinstance(denied, dict) and denied.get("result") == "error", denied
    # alice's ~/.matomo_sites: her ids, root-owned, readable by her.
    listed = host.read_file("/home/alice/.matomo_sites")
    assert f"www {ids['alice/www']} https://www.alice.example" in listed
    assert host.run(["stat", "-c", "%U %G %a", "/home/alice/.matomo_sites"]).stdout.split() == [
        "root", "alice", "640"]  # fmt: skip


def test_a_hit_on_each_site_shows_in_the_reports_after_the_archive_timer_job(host, first, sink):
    alice = login_token(host, "alice", matomo_password(sink, "alice"))
    ids = json.loads(host.read_file("/var/lib/webarch/matomo/ids.json"))["sites"]
    for site, url in (
        ("www", "https://www.alice.example/"),
        ("wiki", "https://wiki.alice.example/"),
    ):
        hit = urllib.parse.urlencode({"idsite": ids[f"alice/{site}"], "rec": 1, "url": url})
        code = host.net_run([*CURL, "-o", "/dev/null", "-w", "%{http_code}",
                             f"https://{STATS}/matomo.php?{hit}"]).stdout  # fmt: skip
        assert code in ("200", "204")
    # The timer's job, now: core:archive as carol-stats in her chroot.
    job = host.run(["systemctl", "start", "webarch-matomo-archive-carol-stats.service"])
    assert job.returncode == 0, job.stderr
    for site in ("www", "wiki"):
        got = api(host, alice, "VisitsSummary.get", idSite=ids[f"alice/{site}"], period="day",
                  date="today")  # fmt: skip
        assert isinstance(got, dict) and int(got.get("nb_visits", 0)) >= 1, (site, got)
    # Located by the pillar's GeoIP database (Matomo downloads none).
    visits = api(host, alice, "Live.getLastVisitsDetails", idSite=ids["alice/www"],
                 period="day", date="today")  # fmt: skip
    assert isinstance(visits, list) and visits, visits
    assert (visits[0]["countryCode"], visits[0]["city"]) == ("fr", "Paris"), visits[0]


def test_the_superuser_logs_in_with_the_mailed_password(host, first, sink):
    password = matomo_password(sink, "admin")
    token = login_token(host, "admin", password)
    assert api(host, token, "UsersManager.hasSuperUserAccess", userLogin="admin") == {"value": True}
    assert {"https://www.alice.example", "https://shop.bob.example"} <= sites_of(host, token)
    result = run_browser(
        host,
        [
            {"get": f"https://{STATS}/"},
            {"wait_for": "#login_form_login"},
            {"fill": "#login_form_login", "value": "admin"},
            {"fill": "#login_form_password", "value": password},
            {"click": "#login_form_submit"},
            {"wait_for": ".top_controls", "timeout": 30},
            {"text": "#topmenu, nav", "name": "menu"},
            {"screenshot": "superuser-dashboard"},
        ],
        "test_matomo-superuser-login",
    )
    assert "module=CoreHome" in result.url, result.url
    # Only a superuser has Administration (the gear) with System settings.
    assert password not in (result.artifacts / "browser.json").read_text()


def test_alice_logs_in_with_a_real_browser(host, first, sink):
    password = matomo_password(sink, "alice")
    ids = json.loads(host.read_file("/var/lib/webarch/matomo/ids.json"))["sites"]
    query = {"module": "MultiSites", "action": "index", "idSite": ids["alice/www"],
             "period": "day", "date": "today"}  # fmt: skip
    all_websites = urllib.parse.urlencode(query)
    result = run_browser(
        host,
        [
            {"get": f"https://{STATS}/"},
            {"wait_for": "#login_form_login"},
            {"screenshot": "login"},
            {"fill": "#login_form_login", "value": "alice"},
            {"fill": "#login_form_password", "value": password},
            {"click": "#login_form_submit"},
            {"wait_for": "#root", "timeout": 30},
            {"wait_for": ".top_controls", "timeout": 30},
            {"screenshot": "dashboard"},
            {"get": f"https://{STATS}/index.php?{all_websites}"},
            {"wait_for": "body", "contains": "wiki.alice.example", "timeout": 30},
            {"text": "body", "name": "all websites"},
            {"screenshot": "all-websites"},
        ],
        "test_matomo-alice-login",
    )
    assert "Matomo" in result.titles[0]
    assert "module=CoreHome" in result.urls[8], result.urls
    # Her sites, and nobody else's.
    seen = result.texts["all websites"]
    assert "www.alice.example" in seen and "wiki.alice.example" in seen
    assert "bob.example" not in seen and "stats.coop.example" not in seen
    assert password not in (result.artifacts / "browser.json").read_text()


def test_passwords_are_reset_on_request(host, base, first, sink):
    old_alice, old_admin = matomo_password(sink, "alice"), matomo_password(sink, "admin")
    # alice deletes her marker; the sysadmin asks for a new superuser password.
    host.run(["rm", "/home/alice/.notify_matomo"], check=True)
    pillar = copy.deepcopy(base)
    pillar["webarch"]["matomo"]["superuser_reset"] = "2027-01-01"
    ret = run(host, pillar)
    assert failed(ret) == {}
    new_alice, new_admin = matomo_password(sink, "alice"), matomo_password(sink, "admin")
    assert new_alice != old_alice and new_admin != old_admin
    assert login_token(host, "alice", new_alice) and login_token(host, "admin", new_admin)
    refused = api(host, "anonymous", "UsersManager.createAppSpecificTokenAuth",
                  userLogin="alice", passwordConfirmation=old_alice, description="e2e")  # fmt: skip
    assert isinstance(refused, dict) and refused.get("result") == "error", refused
    assert changed(run(host, pillar)) == {}


# --------------------------------------------------------------------------
# Pillar changes followed
# --------------------------------------------------------------------------


def test_pillar_changes_are_followed_and_data_kept(host, base, first, sink):
    token = superuser_token(host)
    pillar = copy.deepcopy(base)
    accounts = pillar["webarch"]["accounts"]
    accounts["alice"]["sites"]["www"]["aliases"].append("blog.alice.example")
    accounts["bob"]["sites"]["new"] = {"server_name": "new.bob.example"}
    accounts["dave"] = {"email": "dave@dave.example",
                        "sites": {"home": {"server_name": "dave.example"}}}  # fmt: skip
    ret = run(host, pillar)
    assert failed(ret) == {}
    ids = json.loads(host.read_file("/var/lib/webarch/matomo/ids.json"))["sites"]
    urls = api(host, token, "SitesManager.getSiteUrlsFromId", idSite=ids["alice/www"])
    assert "https://blog.alice.example" in urls
    assert {"bob/new", "dave/home"} <= set(ids)
    dave = login_token(host, "dave", matomo_password(sink, "dave"))
    assert sites_of(host, dave) == {"https://dave.example"}
    again = run(host, pillar)
    assert changed(again) == {}, "a second run changed something"

    # bob's shop leaves the pillar, dave leaves: access and user go, data stay.
    del pillar["webarch"]["accounts"]["bob"]["sites"]["shop"]
    pillar["webarch"]["accounts"]["dave"]["state"] = "absent"
    ret = run(host, pillar)
    assert failed(ret) == {}
    bob = login_token(host, "bob", matomo_password(sink, "bob"))
    assert "https://shop.bob.example" not in sites_of(host, bob)
    users = api(host, token, "UsersManager.getUsersLogin")
    assert "dave" not in users
    everything = api(host, token, "SitesManager.getAllSitesId")
    assert {str(ids["bob/shop"]), str(ids["dave/home"])} <= {str(i) for i in everything}
    again = run(host, pillar)
    assert changed(again) == {}, "a second run changed something"


def test_a_lost_config_is_never_installed_over(host, base, first):
    assert failed(run(host, base)) == {}  # back to pillar.example after the tests above
    host.run(["mv", CONFIG, "/root/config.ini.php"], check=True)
    try:
        ret = run(host, base)
        bad = failed(ret)
        assert INSTALLED in bad and all("matomo" in key for key in bad), bad
        assert "holds a Matomo already" in bad[INSTALLED]
        assert not host.exists(CONFIG), "the installer ran over the instance's data"
    finally:
        host.run(["mv", "/root/config.ini.php", CONFIG], check=True)
    assert changed(run(host, base)) == {}


def test_matomo_down_fails_only_its_states_and_the_next_run_catches_up(host, base, first):
    pillar = copy.deepcopy(base)
    socket = pool_socket(host, "carol-stats")
    # carol-stats' pool stops answering (its socket gone); the pillar wants a new site.
    host.run(["rm", "-f", socket], check=True)
    pillar["webarch"]["accounts"]["alice"]["sites"]["shop"] = {"server_name": "shop.alice.example"}
    ret = run(host, pillar)
    bad = failed(ret)
    assert bad, "nothing failed with Matomo down"
    assert all("matomo" in key for key in bad), bad
    said = " ".join(bad.values())
    assert socket in said and "no such socket" in said, said
    assert host.exists("/etc/apache2/sites-available/webarch-alice.conf")
    assert "shop.alice.example" in host.read_file("/etc/apache2/sites-available/webarch-alice.conf")
    # Matomo back: the next run converges.
    # (systemd holds the socket: restarted with its master stopped first.)
    units = "webarch-php@carol-stats.service webarch-php@carol-stats.socket"
    fpm = host.run(["sh", "-c", f"systemctl stop {units} && systemctl start {units}"])
    assert fpm.returncode == 0, fpm.stderr
    ret = run(host, pillar)
    assert failed(ret) == {}
    shop = "webarch_matomo_|-webarch-alice-matomo-site-shop_|-alice/shop_|-site_present"
    assert shop in changed(ret)


#: MariaDB's service state: held down, it is the one cause of the run's failures.
MARIADB_SERVICE = "service_|-webarch-mariadb-service_|-mariadb_|-running"


def needs_the_database(key: str) -> bool:
    """Whether a state needs MariaDB: its service, its users, databases and grants
    (saltext-mysql, webarch_mariadb), the MariaDB password mails (they set the
    password in MariaDB), Matomo's (its data are in MariaDB), and the sites'
    applications (issue 16)."""
    return (
        key == MARIADB_SERVICE
        or key.startswith(("mysql_", "webarch_mariadb_", "webarch_matomo_", "webarch_app_"))
        or "-notify-mariadb_" in key
        or "-notify-matomo_" in key
        # The sites' applications (their databases), their admins' password mails
        # and WordPress's Matomo plugin (it needs the installed WordPress).
        or "-notify-app-" in key
        or ("-app-" in key and "-matomo_|-" in key)
        or "_|-webarch-matomo-geoip" in key
        or "_|-webarch-matomo-archive-timer_|-" in key
    )


def test_matomo_database_down_fails_only_what_needs_it_and_the_next_run_catches_up(
    host, base, first
):
    pillar = copy.deepcopy(base)
    pillar["webarch"]["accounts"]["alice"]["sites"]["docs"] = {"server_name": "docs.alice.example"}
    # MariaDB stopped and held down (masked): the run's service state cannot start it
    # again, as when it fails to start.  The pillar wants a new site (a Matomo write).
    host.run(["systemctl", "mask", "--runtime", "--now", "mariadb"], check=True)
    try:
        assert host.run(["systemctl", "is-active", "mariadb"]).stdout.strip() != "active"
        ret = run(host, pillar)
    finally:
        # Back up at once (the run's results are kept): a failed check below must not
        # leave the database down for the tests after this one.
        host.run(["systemctl", "unmask", "--runtime", "mariadb"], check=True)
        started = host.run(["systemctl", "start", "mariadb"]).returncode
    results, bad = state_results(ret), failed(ret)
    print(f"\nFIGURE MariaDB down: {len(bad)} of {len(results)} states failed")
    # The one cause, with systemd's answer; every other failure is a requisite of it
    # (nothing tried the database, nothing crashed).
    assert "mariadb.service" in bad.get(MARIADB_SERVICE, ""), bad.get(MARIADB_SERVICE)
    assert "masked" in bad[MARIADB_SERVICE]
    others = {k: v for k, v in bad.items() if k != MARIADB_SERVICE}
    assert all(v.startswith("One or more requisite failed") for v in others.values()), others
    # Exactly what needs the database failed: MariaDB's own states and Matomo's (their
    # cause named); everything else (Apache, PHP, chroots, mail, files) converged.
    assert sorted(k for k in bad if not needs_the_database(k)) == []
    assert sorted(k for k in results if needs_the_database(k) and k not in bad) == []
    assert "-db-carol_stats_matomo-grant" in bad[INSTALLED], bad[INSTALLED]
    docs = "webarch_matomo_|-webarch-alice-matomo-site-docs_|-alice/docs_|-site_present"
    assert docs in bad
    assert "docs.alice.example" in host.read_file("/etc/apache2/sites-available/webarch-alice.conf")
    # MariaDB back: the next run converges Matomo, the one after changes nothing.
    assert started == 0
    ret = run(host, pillar)
    assert failed(ret) == {}
    assert docs in changed(ret)
    ids = json.loads(host.read_file("/var/lib/webarch/matomo/ids.json"))["sites"]
    assert "alice/docs" in ids
    assert changed(run(host, pillar)) == {}


def test_matomo_refused_by_its_database_fails_only_its_states_with_matomos_answer(
    host, base, first
):
    pillar = copy.deepcopy(base)
    pillar["webarch"]["accounts"]["alice"]["sites"]["www"]["aliases"].append("news.alice.example")
    # MariaDB runs (its states converge) but refuses Matomo's login: Matomo itself
    # answers, with an error; the pillar wants a new alias (a Matomo write).
    lock = "ALTER USER `carol-stats`@localhost ACCOUNT {}"
    host.run(["mariadb", "-e", lock.format("LOCK")], check=True)
    try:
        ret = run(host, pillar)
    finally:
        host.run(["mariadb", "-e", lock.format("UNLOCK")], check=True)
    bad = failed(ret)
    assert bad and all(k.startswith("webarch_matomo_") for k in bad), sorted(bad)
    www = "webarch_matomo_|-webarch-alice-matomo-site-www_|-alice/www_|-site_present"

    def matomos_answer(comment: str) -> bool:
        return "answered HTTP 500: " in comment and "Database access denied" in comment

    assert matomos_answer(bad[www]), bad[www]
    # Each state that asked Matomo says what it answered; the others, which of those failed.
    assert all(matomos_answer(v) or v.startswith("One or more requisite failed")
               for v in bad.values()), bad  # fmt: skip
    # Matomo's login back: the next run writes the alias, the one after changes nothing.
    ret = run(host, pillar)
    assert failed(ret) == {}
    assert www in changed(ret)
    assert changed(run(host, pillar)) == {}


def repacked(tmp: Path, version: str) -> Path:
    """The test release as version ``version`` (only core/Version.php differs): what a
    new pinned release looks like to the formula, and to core:update."""
    target = tmp / f"matomo-{version}.tar.gz"
    with tarfile.open(MATOMO_ARCHIVE, "r:gz") as src, tarfile.open(target, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if member.name.endswith("/core/Version.php") and data is not None:
                text = data.read().decode().replace("const VERSION = '5.0.2'",
                                                    f"const VERSION = '{version}'")  # fmt: skip
                member.size = len(text.encode())
                data = io.BytesIO(text.encode())
            dst.addfile(member, data)
    return target


def test_a_new_pinned_release_is_an_upgrade_that_keeps_config_and_data(
    host, base, first, sink, tmp_path
):
    token = superuser_token(host)
    salt_before = host.read_file(CONFIG).split('salt = "')[1].split('"')[0]
    sites_before = api(host, token, "SitesManager.getAllSitesId")
    release = repacked(tmp_path, "5.0.3")
    on_host = "/srv/matomo/matomo-5.0.3.tar.gz"
    with release.open("rb") as data:
        subprocess.run(host.nsenter_command(["sh", "-c", f"cat > {on_host}"]), stdin=data,
                       check=True)  # fmt: skip
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    pillar = copy.deepcopy(base)
    pillar["webarch"]["matomo"]["archive"] = {"source": on_host, "sha256": digest}
    # What an upgrade before the last one left beside the site (and the account's
    # own hidden directory, which is no release).
    older, notes = f"{SITES}/.matomo-5.0.1-20240101000000", f"{SITES}/.matomo-notes"
    host.run(["runuser", "-u", "carol-stats", "--", "mkdir", "-p", f"{older}/tmp", notes],
             check=True)  # fmt: skip
    # test=True says what the upgrade will remove (its archive not fetched yet, the
    # version is not known), and removes nothing.
    host.set_pillar(pillar)
    dry = host.salt_call(["state.apply", "webarch", "test=True"])
    OUTPUTS.append(json.dumps(dry))
    assert {k: v["comment"] for k, v in state_results(dry).items() if v["result"] is False} == {}
    assert matomo_states(dry)[INSTALLED]["changes"] == {
        "matomo": [f"upgrade to the release {digest[:16]} (not fetched yet)"],
        "removed": [older],
    }, matomo_states(dry)[INSTALLED]
    assert host.exists(older)
    ret = run(host, pillar)
    assert failed(ret) == {}
    installed = matomo_states(ret)[INSTALLED]
    assert installed["changes"]["matomo"] == ["upgrade to 5.0.3"], installed
    assert installed["changes"]["removed"] == [older], installed
    assert api(host, token, "API.getMatomoVersion") == {"value": "5.0.3"}
    # The same instance: its config (salt), websites, users and logins.
    assert f'salt = "{salt_before}"' in host.read_file(CONFIG)
    assert api(host, token, "SitesManager.getAllSitesId") == sites_before
    assert login_token(host, "alice", matomo_password(sink, "alice"))
    # Kept beside the site: the previous release (5.0.2's files, for a rollback) only.
    kept = host.run(["sh", "-c", f"ls -d {SITES}/.matomo-*"]).stdout.split()
    previous = [k for k in kept if k.startswith(f"{SITES}/.matomo-5.0.2-")]
    assert sorted(kept) == sorted([*previous, notes]) and len(previous) == 1, kept
    assert host.exists(f"{previous[0]}/config/config.ini.php")
    # ... which the account can remove at the next upgrade (the prune runs as it).
    theirs = ["find", previous[0], "(", "!", "-user", "carol-stats", "-o", "-type", "d",
              "!", "-perm", "-u+wx", ")", "-print"]  # fmt: skip
    assert host.run(theirs, check=True).stdout == ""
    assert changed(run(host, pillar)) == {}
    # Back to the older release: refused, with why; nothing else fails.
    ret = run(host, base)
    assert set(failed(ret)) >= {INSTALLED}
    assert all("matomo" in key for key in failed(ret))
    assert "older than the installed 5.0.3" in failed(ret)[INSTALLED]


def test_no_password_or_token_in_output_logs_or_cache(host, first, sink):
    secrets = {matomo_password(sink, a) for a in ("alice", "bob", "carol-stats", "admin")}
    secrets |= {superuser_token(host), host.read_file(API_PASSWORD_FILE).strip()}
    outputs = "\n".join(OUTPUTS)
    journal = host.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    for secret in secrets:
        assert secret not in outputs and secret not in journal
    paths = ("/var/log", "/var/cache/salt", "/var/lib/webarch", "/etc", "/home")
    found = files_containing(host, secrets, *paths)
    # Only webarch's root-only token and password files hold them.
    assert sorted(found) == [API_PASSWORD_FILE, TOKEN_FILE], found
