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
import secrets
import struct
import time
import zlib

import pytest
from e2e.browser import run_browser
from e2e.helpers import (
    CHROOTS_NS,
    RelaySink,
    changed,
    failed,
    password_in,
    relay_sink,
    relayed,
    state_results,
)
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
    return relayed(example_pillar, sink)


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


def wordpress_login(password: str) -> list[dict]:
    """Browser steps: alice logs in to WordPress's admin with ``password``."""
    return [
        {"get": f"https://{WWW}/wp-login.php"},
        {"wait_for": "#user_login"},
        {"fill": "#user_login", "value": "alice"},
        {"fill": "#user_pass", "value": password},
        {"click": "#wp-submit"},
        {"wait_for": "#wpadminbar", "timeout": 30},
    ]


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
            *wordpress_login(password),
            {"screenshot": "dashboard"},
        ],
        "test_apps-wordpress-login",
    )
    assert "Alice" in result.titles[0]
    assert "/wp-admin/" in result.urls[-1], result.urls


def png_image(width: int, height: int) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` (a colour gradient), made by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    pixels = b"".join(  # each row: filter type 0, then R G B of each pixel
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 160))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_the_wordpress_admin_publishes_a_post_with_an_uploaded_image(host, first, sink, tmp_path):
    """In the browser the admin uploads a PNG (WordPress's plain uploader form),
    takes its URL from the media library, writes a Quick Draft showing it and
    publishes it (Posts, Bulk Edit: Published).  An anonymous visitor then finds
    the post on the front page (Debian 12's theme lists excerpts: the image is
    on the post's page the front page links to) and gets the image back byte for
    byte as image/png; a .php put next to the image is not run."""
    password = admin_password(sink, "WordPress")
    token = secrets.token_hex(4)  # this run's post and file: no earlier one can pass for them
    name, title, alt = f"coop-garden-{token}.png", f"Our co-op garden {token}", f"Garden {token}"
    image = png_image(160, 120)
    photo = tmp_path / name
    photo.write_bytes(image)
    photo.chmod(0o644)
    admin = f"https://{WWW}/wp-admin"
    result = run_browser(
        host,
        [
            *wordpress_login(password),
            # The browser uploader: a plain <input type=file> and an Upload button.
            {"get": f"{admin}/media-new.php?browser-uploader"},
            {"upload": "#async-upload", "file": str(photo)},
            {"screenshot": "upload"},
            {"click": "#html-upload"},
            {"get": f"{admin}/upload.php?mode=list&s={token}"},
            {"wait_for": "#the-list .filename", "contains": name, "timeout": 20},
            # The URL its "Copy URL" button would copy.
            {
                "text": "#the-list .copy-attachment-url",
                "attribute": "data-clipboard-text",
                "name": "image_url",
            },
            {"screenshot": "media-library"},
            {"get": f"{admin}/"},
            {"fill": "#quick-press #title", "value": title},
            {
                "fill": "#quick-press #content",
                "template": f'<p>Planted today.</p>\n<p><img src="{{image_url}}" alt="{alt}"></p>',
            },
            {"click": "#quick-press #save-post"},
            {"wait_for": "#dashboard_quick_press .drafts", "contains": title, "timeout": 20},
            {"screenshot": "quick-draft"},
            {"get": f"{admin}/edit.php?post_status=draft&s={token}"},
            {"wait_for": "#the-list .row-title", "contains": title},
            {"click": "#cb-select-all-1"},
            {"select": "#bulk-action-selector-top", "option": "Edit"},
            {"click": "#doaction"},
            {"select": "#bulk-edit select[name=_status]", "option": "Published"},
            {"screenshot": "bulk-edit"},
            {"click": "#bulk_edit"},
            {"wait_for": "#message", "contains": "1 post updated", "timeout": 20},
            {"screenshot": "published"},
            {"get": f"https://{WWW}/"},
            {"wait_for": ".wp-block-post-title", "contains": title},  # the newest post
            {"screenshot": "front-page"},
            {"click": ".wp-block-post-title a"},
            {"wait_for": f"img[alt='{alt}']"},
            {"screenshot": "post"},
        ],
        "test_apps-wordpress-post-image",
    )
    print(f"browser: {result.seconds}s (start {result.startup_seconds}s)")
    image_url = result.texts["image_url"]
    uploads = rf"https://{re.escape(WWW)}/wp-content/uploads/\d{{4}}/\d\d/"
    assert re.fullmatch(uploads + re.escape(name), image_url), image_url
    # What an anonymous visitor sees.
    front = curl(host, f"https://{WWW}/")
    links = re.findall(
        rf'<a href="(https://{re.escape(WWW)}/[^"]*)"[^>]*>{re.escape(title)}<', front
    )
    assert links, front[-3000:]
    post = curl(host, links[0])
    assert re.search(rf'<img\b[^>]*\bsrc="{re.escape(image_url)}"', post), post[-3000:]
    got = tmp_path / "got.png"
    answer = curl(host, image_url, "-o", str(got), "-w", "%{http_code} %{content_type}")
    assert answer == "200 image/png", answer
    assert got.read_bytes() == image
    # Written by alice's PHP, as alice; and no PHP runs from where it went.
    folder = "/home/alice/sites/www/public" + image_url.removeprefix(f"https://{WWW}")[: -len(name)]
    owner = host.run(["stat", "-c", "%U", f"{folder}{name}"], check=True).stdout.split()
    assert owner == ["alice"]
    host.write_file(f"{folder}shell.php", "<?php echo 'RAN-' . 'NEXT-TO-IMAGE';", mode=0o644)
    host.run(["chown", "alice", f"{folder}shell.php"], check=True)
    answer = curl(host, image_url[: -len(name)] + "shell.php", "-w", " %{http_code}")
    assert "RAN-NEXT-TO-IMAGE" not in answer and answer.endswith(" 403"), answer


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
    made = host.run([*CHROOTS_NS, "chroot", "--userspec=alice:alice", "/chroots/alice",
                     "/bin/sh", "-c", "cd /home/alice/sites/www/public && php"],
                    input=post)  # fmt: skip
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


def test_a_release_archive_from_salt_is_checked_then_installed(host, base, first):
    """A site whose WordPress comes from a release archive (``salt://``, with its
    SHA-256): a wrong checksum fails that site's install alone and unpacks nothing;
    the right one installs it, and it answers with its title."""
    archive = "/srv/formula/releases/wordpress-test.tar.gz"
    host.run(["sh", "-c", "mkdir -p /srv/formula/releases && tar -C /usr/share -czhf "
              f"{archive} --exclude=wordpress/wp-config.php wordpress"], check=True)  # fmt: skip
    sha256 = host.run(["sha256sum", archive], check=True).stdout.split()[0]
    pillar = copy.deepcopy(base)
    alice = pillar["webarch"]["accounts"]["alice"]
    alice["databases"]["alice_shop"] = None
    source = {"source": "salt://releases/wordpress-test.tar.gz", "sha256": "0" * 64}
    alice["sites"]["shop"] = {"type": "wordpress", "server_name": "shop.alice.example",
                              "app": {"database": "alice_shop", "title": "Alice's shop",
                                      "source": source}}  # fmt: skip
    bad = run(host, pillar)
    state_id = "webarch_app_|-webarch-alice-app-shop_|-/home/alice/sites/shop_|-installed"
    # That site's install fails, and only what needs it (its tracking code, its mail).
    assert all("-app-shop" in key for key in failed(bad)), failed(bad)
    assert "sha256" in state_results(bad)[state_id]["comment"], failed(bad)
    assert host.run(["find", "/home/alice/sites/shop", "-name", "wp-settings.php"]).stdout == ""
    source["sha256"] = sha256
    good = run(host, pillar)
    assert failed(good) == {}, failed(good)
    page = host.net_run(["curl", "-sk", "--resolve", "shop.alice.example:443:127.0.0.1",
                         "https://shop.alice.example/"]).stdout  # fmt: skip
    assert "Alice&#039;s shop" in page or "Alice's shop" in page, page[:2000]
    ledger = json.loads(host.read_file("/var/lib/webarch/apps/alice-shop.json"))
    assert ledger["source"] == source["source"] and ledger["sha256"] == sha256, ledger
    again = run(host, pillar)
    assert failed(again) == {} and changed(again) == {}


# Last: it removes alice's WordPress site.
def test_a_site_switched_to_absent_is_archived_with_its_database_then_removed(host, base, first):
    """alice's WordPress site switched to absent: first out of Apache, then its
    database dumped and its tree archived (both verified), then the tree is gone;
    the database stays (its own pillar entry keeps it); the next run changes nothing."""
    assert failed(first) == {}
    root = "/home/alice/sites/www"
    host.write_file(f"{root}/public/wp-content/uploads/keep.txt", "KEEP-ME-42", mode=0o644)
    sql = "INSERT INTO wp_options (option_name, option_value) VALUES ('webarch_keep', 'ROW-43');"
    host.run(["mariadb", "alice_wp", "-e", sql], check=True)
    gone = copy.deepcopy(base)
    gone["webarch"]["accounts"]["alice"]["sites"]["www"]["state"] = "absent"

    predicted = run(host, gone, "test=True")
    archive_id = "webarch_archive_|-webarch-alice-site-www-archived_|-alice.www_|-tree_archived"
    plan = state_results(predicted)[archive_id]
    assert plan["result"] is None and plan["changes"]["dumped"] == ["alice_wp (would be)"], plan
    assert host.run(["test", "-d", root]).returncode == 0

    ret = run(host, gone)
    assert failed(ret) == {}
    results = state_results(ret)
    done = results[archive_id]
    apache = next(v for k, v in results.items() if "webarch-apache-service" in k)
    assert apache["__run_num__"] < done["__run_num__"]
    archive, (dump,) = done["changes"]["archived"], done["changes"]["dumped"]
    assert re.fullmatch(r"/var/backups/webarch/alice\.www-\d{8}T\d{6}Z\.tar\.gz", archive)
    assert re.fullmatch(r"/var/backups/webarch/databases/alice_wp-\d{8}T\d{6}Z\.sql\.gz", dump)
    assert host.run(["test", "-e", root]).returncode == 1
    listing = host.run(["tar", "-tzf", archive], check=True).stdout.split("\n")
    assert "www/public/wp-config.php" in listing
    kept = host.run(["tar", "-xzOf", archive, "www/public/wp-content/uploads/keep.txt"])
    assert kept.stdout == "KEEP-ME-42"
    dumped = host.run(["sh", "-c", f"zcat {dump}"], check=True).stdout
    assert "ROW-43" in dumped and dumped.rstrip().splitlines()[-1].startswith("-- Dump completed")
    for path in (archive, dump):
        assert host.run(["stat", "-c", "%U %a", path]).stdout.split() == ["root", "600"]
    assert host.run(["test", "-e", "/var/lib/webarch/apps/alice-www.json"]).returncode == 1
    # The database stays; the site's name is no longer served by alice.
    assert "ROW-43" in host.run(["mariadb", "alice_wp", "-Ne",
                                 "SELECT option_value FROM wp_options "
                                 "WHERE option_name='webarch_keep'"]).stdout  # fmt: skip
    assert "Alice" not in curl(host, f"https://{WWW}/")
    again = run(host, gone)
    assert failed(again) == {} and changed(again) == {}
