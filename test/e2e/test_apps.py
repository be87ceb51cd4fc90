"""WordPress and MediaWiki installed by the formula (issue 16), seen from outside.

A fresh host converges pillar.example: alice's ``www`` site (wordpress,
docroot ``public``, database ``alice_wp``) and ``wiki`` site (mediawiki,
database ``alice_wiki``) get their applications installed by the account in
its chroot, from Debian's packages; the admin passwords are mailed (to the
relay's SMTP sink).  Checked over HTTPS, with curl and a real browser.
"""

from __future__ import annotations

import copy
import json
import re
import time

import pytest
from e2e.browser import run_browser
from e2e.helpers import RelaySink, changed, failed, password_in, relay_sink, state_results
from testhost import Host

pytestmark = pytest.mark.e2e

WWW = "www.alice.example"
WIKI = "wiki.alice.example"
WP_CONFIG = "/home/alice/sites/www/public/wp-config.php"
LOCAL_SETTINGS = "/home/alice/sites/wiki/LocalSettings.php"
#: Every state run's output, for the secret search.
OUTPUTS: list[str] = []


def curl(host: Host, url: str, *args: str) -> str:
    """The body of ``url`` fetched from outside (every site name on the host's loopback)."""
    resolve = [arg for name in (WWW, WIKI, "stats.coop.example")
               for arg in ("--resolve", f"{name}:443:127.0.0.1")]  # fmt: skip
    return host.net_run(["curl", "-sk", "--max-time", "60", *resolve, *args, url]).stdout


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    return relay_sink(host)


@pytest.fixture(scope="module")
def base(example_pillar: dict, sink: RelaySink) -> dict:
    pillar = copy.deepcopy(example_pillar)
    pillar["webarch"]["mail"] = {"smarthost": sink.exim_smarthost}
    return pillar


def run(host: Host, pillar: dict, *args: str) -> dict:
    host.set_pillar(pillar)
    ret = host.salt_call(["state.apply", "webarch", *args])
    OUTPUTS.append(json.dumps(ret))
    return ret


def app_states(ret: dict) -> dict:
    return {k: v for k, v in state_results(ret).items() if k.startswith("webarch_app_")}


@pytest.fixture(scope="module")
def first(host: Host, base: dict) -> dict:
    started = time.monotonic()
    ret = run(host, base)
    ret["elapsed"] = time.monotonic() - started
    return ret


def admin_password(sink: RelaySink, app: str) -> str:
    mails = [m for m in sink.messages()
             if f"{app} admin" in str(m["message"]["Subject"])
             and "alice@alice.example" in str(m["message"]["To"])]  # fmt: skip
    assert mails, f"no {app} admin password mail to alice"
    return password_in(mails[-1])


def test_the_first_run_installs_both_and_the_second_changes_nothing(host, base, first):
    assert failed(first) == {}
    installed = app_states(first)
    assert len(installed) == 2, installed
    for result in installed.values():
        assert result["changes"]["steps"], result
    print(
        "app install seconds:",
        {k.split("_|-")[1]: round(v["duration"] / 1000, 1) for k, v in installed.items()},
    )
    again = run(host, base)
    assert failed(again) == {} and changed(again) == {}
    assert all("left as it is" in v["comment"] for v in app_states(again).values())


def test_wordpress_answers_installed_with_its_title(host, first):
    page = curl(host, f"https://{WWW}/")
    assert "Alice&#039;s blog" in page or "Alice's blog" in page, page[:2000]
    # The installer says WordPress is already installed.
    assert "Already Installed" in curl(host, f"https://{WWW}/wp-admin/install.php")


def test_mediawiki_answers_installed_with_short_urls(host, first):
    page = curl(host, f"https://{WIKI}/wiki/Main_Page")
    assert "Alice's wiki" in page or "Alice&#039;s wiki" in page, page[:2000]
    assert "MediaWiki has been installed" in page or "Main Page" in page
    assert "mw-config" not in curl(host, f"https://{WIKI}/", "-L")


def test_no_password_in_either_config_and_only_alice_reads_them(host, first):
    wp = host.read_file(WP_CONFIG)
    assert re.search(r"define\(\s*'DB_PASSWORD',\s*''\s*\)", wp), wp
    assert re.search(r"define\(\s*'DB_USER',\s*'alice'\s*\)", wp)
    mw = host.read_file(LOCAL_SETTINGS)
    assert re.search(r'\$wgDBpassword\s*=\s*""', mw) or re.search(r"\$wgDBpassword\s*=\s*''", mw)
    for path in (WP_CONFIG, LOCAL_SETTINGS):
        assert host.run(["stat", "-c", "%U %a", path]).stdout.split() == ["alice", "600"]
        denied = host.run(["setpriv", "--reuid=www-data", "--regid=www-data", "--clear-groups",
                           "cat", path])  # fmt: skip
        assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_the_admin_passwords_are_mailed_once(host, first, sink):
    for app, marker in (("WordPress", "app-www"), ("MediaWiki", "app-wiki")):
        assert admin_password(sink, app)
        assert "was sent to" in host.read_file(f"/home/alice/.notify_{marker}")


def test_the_wordpress_admin_logs_in_with_the_mailed_password(host, first, sink):
    password = admin_password(sink, "WordPress")
    result = run_browser(
        host,
        [
            {"get": f"https://{WWW}/"},
            {"screenshot": "front-page"},
            {"get": f"https://{WWW}/wp-login.php"},
            {"wait_for": "#user_login"},
            {"fill": "#user_login", "value": "alice"},
            {"fill": "#user_pass", "value": password},
            {"click": "#wp-submit"},
            {"wait_for": "#wpadminbar", "timeout": 30},
            {"screenshot": "dashboard"},
        ],
        "test_apps-wordpress-login",
    )
    assert "Alice" in result.titles[0]
    assert "/wp-admin/" in result.urls[-1], result.urls


def test_the_mediawiki_admin_logs_in_with_the_mailed_password(host, first, sink):
    password = admin_password(sink, "MediaWiki")
    result = run_browser(
        host,
        [
            {"get": f"https://{WIKI}/wiki/Main_Page"},
            {"screenshot": "main-page"},
            {"get": f"https://{WIKI}/index.php?title=Special:UserLogin"},
            {"wait_for": "#wpName1"},
            {"fill": "#wpName1", "value": "Alice"},
            {"fill": "#wpPassword1", "value": password},
            {"click": "#wpLoginAttempt"},
            {"wait_for": "#firstHeading", "timeout": 30},
            # Only a logged-in user has preferences (anonymous: "Not logged in").
            {"get": f"https://{WIKI}/wiki/Special:Preferences"},
            {"wait_for": "#firstHeading", "contains": "Preferences", "timeout": 30},
            {"screenshot": "logged-in"},
            {"get": f"https://{WIKI}/index.php?title=Co-op_notes&action=edit"},
            {"wait_for": "#wpTextbox1"},
            {"fill": "#wpTextbox1", "value": "Edited in a real browser by the admin."},
            {"click": "#wpSave"},
            {"wait_for": "#mw-content-text", "contains": "Edited in a real browser", "timeout": 30},
            {"screenshot": "edited"},
        ],
        "test_apps-mediawiki-login",
    )
    assert "Alice" in result.titles[0]
    # The edit shows to an anonymous visitor.
    assert "Edited in a real browser by the admin." in curl(
        host, f"https://{WIKI}/wiki/Co-op_notes"
    )


def test_wordpress_carries_the_sites_matomo_tracking_code(host, first):
    ids = json.loads(host.read_file("/var/lib/webarch/matomo/ids.json"))["sites"]
    page = curl(host, f"https://{WWW}/")
    assert f"_paq.push(['setSiteId', \"{ids['alice/www']}\"])" in page, page[-3000:]
    assert "https://stats.coop.example/" in page


def test_no_php_runs_from_wordpress_uploads(host, first):
    uploads = "/home/alice/sites/www/public/wp-content/uploads"
    host.write_file(f"{uploads}/evil.php", "<?php echo 'RAN-' . 'IN-UPLOADS';", mode=0o644)
    host.run(["chown", "alice", f"{uploads}/evil.php"], check=True)
    answer = curl(host, f"https://{WWW}/wp-content/uploads/evil.php", "-w", " %{http_code}")
    assert "RAN-IN-UPLOADS" not in answer and answer.endswith(" 403"), answer


def test_hand_made_changes_are_kept_by_later_runs(host, base, first):
    """A post written and WordPress "updated" by hand (a newer version.php): the
    next run changes nothing and leaves both."""
    version = "/home/alice/sites/www/public/wp-includes/version.php"
    text = host.read_file(version)
    newer = re.sub(r"\$wp_version = '([^']+)';", r"$wp_version = '\1.99';", text)
    assert newer != text
    host.write_file(version, newer, mode=0o644)
    host.run(["chown", "alice", version], check=True)
    post = ("<?php require 'wp-load.php'; echo wp_insert_post(['post_title' => 'Hand-made post',"
            " 'post_status' => 'publish', 'post_content' => 'kept']);")  # fmt: skip
    made = host.run(["chroot", "--userspec=alice:alice", "/chroots/alice", "/bin/sh", "-c",
                     "cd /home/alice/sites/www/public && php"], input=post)  # fmt: skip
    assert made.stdout.strip().isdigit(), made
    ret = run(host, base)
    assert failed(ret) == {} and changed(ret) == {}
    assert host.read_file(version) == newer
    assert "Hand-made post" in curl(host, f"https://{WWW}/")
    assert ".99 is installed" in app_states(ret)["webarch_app_|-webarch-alice-app-www_|-"
                                                 "/home/alice/sites/www/public_|-installed"][
        "comment"]  # fmt: skip


def test_no_password_in_output_or_logs(host, first, sink):
    passwords = [admin_password(sink, app) for app in ("WordPress", "MediaWiki")]
    text = "\n".join(OUTPUTS)
    for password in passwords:
        assert password not in text
    found = host.run(["grep", "-rlF", "-e", passwords[0], "-e", passwords[1], "/var/log",
                      "/var/cache/salt", "/home/alice/logs"])  # fmt: skip
    assert found.stdout == "", found.stdout
