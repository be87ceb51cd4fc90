"""A server of the old platform moved onto webarch in place (issue 19).

The test host boots on the bench image (``bench/benchimage.py``: the test image plus
Debian's ``libapache2-mpm-itk``, ``libapache2-mod-php`` and ``wordpress``) and is made
the old platform first, with the bench's own legacy configuration (``bench/serving.py``:
Debian's modules plus ssl, rewrite, mod_php on mpm-itk, one virtual host per site with
``AssignUserID``), here as the host's own Apache on port 443:

* alice: a WordPress (Debian's tree copied into ``~/sites/blog``, installed by
  WordPress's own ``wp_install``) whose ``wp-config.php`` logs in to MariaDB as
  ``alice`` with a password;
* bob: a static site, a crontab, a ``~/.forward``;
* carol: a PHP site that says who runs it and reads a file of its own.

Then, as ``docs/migration.rst`` says: ``salt-call webarch_import.legacy out=...`` scans
the host; the old virtual hosts are disabled and the old crontabs put away; the out
file is the pillar, converged with ``state.apply webarch``.  Checked from outside:
every page answers the same body over HTTPS as before; WordPress logs in and publishes
a post; ``wp-config.php``'s password still logs in; every file of the homes and every
table checksum of the databases is as before, except what webarch owns (see
``WEBARCH_OWNS``); a second run changes nothing.  The seconds the scan and the
converge took are printed as figures (not asserted).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e.helpers import changed, failed, mariadb_login
from testhost import Host

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from benchimage import PHP_VERSIONS, ensure_bench_image
from serving import DEBIAN_MODULES, ITK_MODULES, ITK_VHOST

pytestmark = pytest.mark.e2e

#: The Debian release of the test host (as test/conftest.py reads it).
RELEASE = os.environ.get("WEBARCH_TEST_RELEASE", "bookworm")
PHP = PHP_VERSIONS[RELEASE]
RELEASE_NUMBER = {"bookworm": 12, "trixie": 13}[RELEASE]

#: site name -> (account, site directory, pages checked before and after)
SITES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "blog.alice.example": ("alice", "blog", ("/", "/?p=1", "/wp-login.php", "/readme.html")),
    "www.bob.example": ("bob", "www", ("/", "/about/", "/about/index.html", "/logo.svg")),
    "www.carol.example": ("carol", "www", ("/", "/index.php?x=1", "/data.txt")),
}

#: webarch's cron jobs (webarch_paths.CRON_CONFIG_PATH).
CRON_CONFIG = "/etc/webarch/cron.json"

WP_DB = "alice_wp"
WP_DB_PASSWORD = "Legacy-" + secrets.token_hex(8)
WP_ADMIN = "admin"
WP_ADMIN_PASSWORD = "wp-" + secrets.token_hex(10)

#: What webarch owns in an adopted home (relative to it): these directories' own
#: owner, group and mode (and the home's ACL giving Apache ``x``), the ones it makes
#: where missing, and ``logs`` (the account's logs, written by webarch) with all in it.
WEBARCH_OWNS_DIRS = ("", "sites", "sites/blog", "sites/www", "tmp", "private", ".ssh")
WEBARCH_OWNS_TREES = ("logs", "backups")

#: Files of the old platform, created by the test before the scan.
CAROL_INDEX = """<?php
$me = posix_getpwuid(posix_geteuid())['name'];
echo "carol's PHP site, run by $me in ", getcwd(), "\\n";
echo 'data: ', trim(file_get_contents(__DIR__ . '/data.txt')), "\\n";
echo 'query: ', htmlspecialchars($_GET['x'] ?? '-'), "\\n";
"""
BOB_FILES = {
    "index.html": "<!doctype html><title>bob</title><p>Bob's static site.</p>\n",
    "about/index.html": "<!doctype html><title>about</title><p>About bob.</p>\n",
    "logo.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>\n',
}
BOB_CRONTAB = (
    "# bob's jobs\nMAILTO=bob@example.org\n17 3 * * * find /home/bob/sites -type f > /dev/null\n"
)
BOB_FORWARD = "bob@example.org\n"

WP_HTACCESS = """# BEGIN WordPress
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteBase /
RewriteRule ^index\\.php$ - [L]
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule . /index.php [L]
</IfModule>
# END WordPress
"""


def wp_config() -> str:
    """A legacy ``wp-config.php``: the database by password over ``localhost``."""
    keys = "\n".join(
        f"define( '{name}', '{secrets.token_hex(24)}' );"
        for name in ("AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY",
                     "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT")
    )  # fmt: skip
    return f"""<?php
define( 'DB_NAME', '{WP_DB}' );
define( 'DB_USER', 'alice' );
define( 'DB_PASSWORD', '{WP_DB_PASSWORD}' );
define( 'DB_HOST', 'localhost' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
{keys}
$table_prefix = 'wp_';
define( 'DISABLE_WP_CRON', true );
define( 'WP_DEBUG', false );
if ( ! defined( 'ABSPATH' ) ) {{
\tdefine( 'ABSPATH', __DIR__ . '/' );
}}
require_once ABSPATH . 'wp-settings.php';
"""


WP_INSTALL = """<?php
$_SERVER['HTTP_HOST'] = $_SERVER['SERVER_NAME'] = 'blog.alice.example';
$_SERVER['HTTPS'] = 'on';
$_SERVER['SERVER_PORT'] = '443';
$_SERVER['REQUEST_URI'] = '/';
define('WP_INSTALLING', true);
require getcwd() . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
function wp_new_blog_notification($a, $b, $c, $d) {}
add_filter('pre_http_request', function () { return new WP_Error('x', 'offline'); }, 1);
$got = wp_install('Alice blog', 'ADMIN', 'alice@example.org', true, '', 'PASSWORD');
if (empty($got['user_id']) || is_wp_error($got['user_id'])) {
    fwrite(STDERR, "no admin\\n");
    exit(1);
}
echo "installed\\n";
"""


def sh(host: Host, script: str, *args: str, input: str | None = None) -> str:
    """Run a shell script on the host as root; its output (failing the test on an error)."""
    proc = host.run(["sh", "-ec", script, "sh", *args], input=input)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def sql(host: Host, text: str) -> str:
    return sh(host, 'mariadb --batch --skip-column-names -e "$1"', text)


def build_old_platform(host: Host) -> None:
    """alice, bob and carol as the old platform had them (see the module's text)."""
    for uid, name in enumerate(("alice", "bob", "carol"), start=2001):
        sh(host, 'groupadd -g "$1" "$2" && useradd -u "$1" -g "$2" -m -s /bin/bash '
           '-c "$2 of the co-op" "$2" && mkdir -p "/home/$2/sites"', str(uid), name)  # fmt: skip
    # bob: a static site, a crontab (cron's own layout), a .forward.
    for rel, text in BOB_FILES.items():
        host.write_file(f"/home/bob/sites/www/{rel}", text, mode=0o644)
    host.write_file("/var/spool/cron/crontabs/bob", BOB_CRONTAB, mode=0o600)
    host.write_file("/home/bob/.forward", BOB_FORWARD, mode=0o644)
    # carol: PHP.
    host.write_file("/home/carol/sites/www/index.php", CAROL_INDEX, mode=0o644)
    host.write_file("/home/carol/sites/www/data.txt", "carol's own data\n", mode=0o600)
    host.write_file("/home/carol/notes.txt", "not a site file\n", mode=0o600)
    # alice: WordPress from Debian's tree, its database by password.
    sql(host, f"CREATE DATABASE {WP_DB}; CREATE USER alice@localhost IDENTIFIED BY "
        f"'{WP_DB_PASSWORD}'; GRANT ALL PRIVILEGES ON {WP_DB}.* TO alice@localhost")  # fmt: skip
    blog = "/home/alice/sites/blog"
    sh(host, 'mkdir -p "$1" && tar -C /usr/share/wordpress --dereference -cf - . '
       '| tar -C "$1" -xf - && rm -f "$1/wp-config.php"', blog)  # fmt: skip
    host.write_file(f"{blog}/wp-config.php", wp_config(), mode=0o640)
    host.write_file(f"{blog}/.htaccess", WP_HTACCESS, mode=0o644)
    sh(host, 'for u in alice bob carol; do chown -R "$u:$u" "/home/$u"; done; '
       "true")  # fmt: skip
    script = WP_INSTALL.replace("ADMIN", WP_ADMIN).replace("PASSWORD", WP_ADMIN_PASSWORD)
    out = sh(host, 'cd "$1" && runuser -u alice -- php', blog, input=script)
    assert "installed" in out
    # (wp_install guesses the URL from the CLI's script path.)
    sql(host, f"UPDATE {WP_DB}.wp_options SET option_value = '/%year%/%postname%/' "
        f"WHERE option_name = 'permalink_structure'; UPDATE {WP_DB}.wp_options SET "
        "option_value = 'https://blog.alice.example' "
        "WHERE option_name IN ('siteurl', 'home')")  # fmt: skip
    # Apache: mpm-itk + mod_php, one virtual host per site (the bench's legacy one).
    sh(host, "mkdir -p /etc/ssl/legacy && openssl req -x509 -newkey rsa:2048 -nodes "
       "-days 30 -subj /CN=legacy -keyout /etc/ssl/legacy/site.key "
       "-out /etc/ssl/legacy/site.crt 2>/dev/null")  # fmt: skip
    for server_name, (account, site, _) in SITES.items():
        vhost = ITK_VHOST.format(
            port=443, server_name=server_name, docroot=f"/home/{account}/sites/{site}",
            user=account,
        ).replace("/etc/apache2/webarch-default", "/etc/ssl/legacy/site")  # fmt: skip
        host.write_file(f"/etc/apache2/sites-available/{account}-{site}.conf", vhost)
    modules = [m.format(php=PHP) for m in ITK_MODULES if m not in DEBIAN_MODULES]
    sh(host, 'a2dismod -q -f mpm_event && a2enmod -q "$@" && a2ensite -q alice-blog bob-www '
       "carol-www && systemctl restart apache2", *modules)  # fmt: skip


def curl(host: Host, url: str, *args: str) -> subprocess.CompletedProcess:
    resolve = [arg for name in SITES for arg in ("--resolve", f"{name}:443:127.0.0.1")]
    cmd = ["curl", "-sS", "-k", "--max-time", "30", *resolve, *args, url]
    return host.net_run(cmd)


def bodies(host: Host) -> dict[str, str]:
    """Status and body of every page of every site."""
    found = {}
    for name, (_, _, pages) in SITES.items():
        for page in pages:
            url = f"https://{name}{page}"
            proc = curl(host, url, "-w", "\n%{http_code}")
            assert proc.returncode == 0, (url, proc.stderr)
            found[url] = proc.stdout
    return found


#: Every entry of the homes: type, owner, group, mode, then content digest / link target.
TREE_SCRIPT = r"""
cd /home
find . -mindepth 1 \( -type f -printf '%p f %U %G %m ' -exec sh -c 'sha256sum < "$1" | cut -c1-16' sh {} \; \) \
  -o \( -type l -printf '%p l %U %G %m %l\n' \) -o \( -type d -printf '%p d %U %G %m\n' \) | sort
"""  # noqa: E501


def tree(host: Host) -> dict[str, str]:
    lines = sh(host, TREE_SCRIPT).splitlines()
    return {line.split(" ", 1)[0][2:]: line.split(" ", 1)[1] for line in lines}


def webarch_owned(path: str) -> bool:
    """Whether ``path`` (``alice/logs/x``, relative to /home) is webarch's (see WEBARCH_OWNS_*)."""
    _, _, rel = path.partition("/")
    return rel in WEBARCH_OWNS_DIRS or any(
        rel == top or rel.startswith(top + "/") for top in WEBARCH_OWNS_TREES
    )


def db_checksums(host: Host) -> dict[str, str]:
    tables = sql(host, "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM "
                 f"information_schema.TABLES WHERE TABLE_SCHEMA = '{WP_DB}'").split()  # fmt: skip
    tables.remove(f"{WP_DB}.wp_options")
    rows = sql(host, "CHECKSUM TABLE " + ", ".join(tables)).splitlines()
    found = dict(row.split("\t") for row in rows)
    # wp_options row by row, without WordPress's own cache (transients, which page
    # views rewrite when they expire, whoever serves them).
    options = sql(host, f"SELECT option_name, MD5(option_value) FROM {WP_DB}.wp_options "
                  "WHERE option_name NOT LIKE '\\_transient\\_%' "
                  "AND option_name NOT LIKE '\\_site\\_transient\\_%'")  # fmt: skip
    found.update(("wp_options." + row).split("\t") for row in options.splitlines())
    assert len(found) > 50, found
    return found


@pytest.fixture(scope="module")
def legacy(
    repo: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Host]:
    """The old platform, served, with its pages, files and tables recorded."""
    with Host(name="wa-migration", image=ensure_bench_image(RELEASE), formula_dir=repo) as host:
        build_old_platform(host)
        login = wp_login(host, str(tmp_path_factory.mktemp("legacy") / "cookies"))
        host.before = {
            "login": login,
            "bodies": bodies(host),
            "tree": tree(host),
            "db": db_checksums(host),
        }
        host.figures = {}
        yield host
        figures = " ".join(f"{k}={v}" for k, v in host.figures.items())
        request.config.webarch_summaries.append(f"migration release={RELEASE} {figures}")


def test_old_platform_serves_its_sites(legacy: Host) -> None:
    before = legacy.before["bodies"]
    assert before["https://blog.alice.example/"].endswith("\n200")
    assert "Alice blog" in before["https://blog.alice.example/"]
    assert before["https://www.bob.example/about/"].startswith("<!doctype html><title>about")
    carol = before["https://www.carol.example/"]
    assert carol.startswith("carol's PHP site, run by carol in /home/carol/sites/www\n"), carol
    assert "data: carol's own data" in carol
    assert legacy.before["login"] == "302 https://blog.alice.example/wp-admin/"
    # mod_php on mpm-itk: Apache's own process switched to the account.
    assert "mpm_itk_module" in sh(legacy, "apache2ctl -M 2>/dev/null")


@pytest.fixture(scope="module")
def scanned(legacy: Host) -> dict:
    started = time.monotonic()
    ret = legacy.salt_call(
        ["webarch_import.legacy", "out=/root/webarch-pillar.sls", f"release={RELEASE_NUMBER}"]
    )
    legacy.figures["scan_s"] = round(time.monotonic() - started, 1)
    assert legacy.last.returncode == 0, legacy.last.stderr[-3000:]
    return ret["local"]


def test_scan_finds_the_three_accounts(legacy: Host, scanned: dict) -> None:
    accounts = scanned["pillar"]["webarch"]["accounts"]
    assert sorted(accounts) == ["alice", "bob", "carol"]
    for uid, name in enumerate(("alice", "bob", "carol"), start=2001):
        assert accounts[name]["adopt"] is True
        assert (accounts[name]["uid"], accounts[name]["gid"]) == (uid, uid)
    assert accounts["alice"]["sites"]["blog"]["type"] == "wordpress"
    # No app block: it would set and mail a new admin password over the existing one.
    assert "app" not in accounts["alice"]["sites"]["blog"]
    assert accounts["alice"]["databases"] == {WP_DB: None}
    assert accounts["bob"]["sites"]["www"]["type"] == "static"
    assert accounts["carol"]["sites"]["www"]["type"] == "php"
    assert accounts["bob"]["email"] == "bob@example.org"
    assert [job["command"] for job in accounts["bob"]["cron"].values()] == [
        "find /home/bob/sites -type f > /dev/null"
    ]
    # The old password's hash: in the out file only, never in the result.
    assert accounts["alice"]["db_password_hash"] == "(in the out= file only)"
    assert WP_DB_PASSWORD not in json.dumps(scanned)
    text = legacy.read_file("/root/webarch-pillar.sls")
    assert re.search(r"db_password_hash: '?\*[0-9A-F]{40}", text), text
    counts = scanned["summary"]
    legacy.figures.update(
        mapped=counts["mapped"],
        not_mapped=counts["not mapped"],
        decisions=counts["needs a decision"],
    )
    # Decisions: Debian's default site (no account's) and carol's data.txt, which
    # only carol reads (mpm-itk served it as carol; webarch's Apache is www-data).
    decisions = [line for line in scanned["report"] if "needs a decision" in line]
    assert [line.split(": ", 1)[0] for line in decisions] == [
        "/etc/apache2/sites-enabled/000-default.conf:1 <VirtualHost>",
        "/home/carol/sites/www/data.txt",
    ], decisions
    assert "chgrp www-data FILE; chmod g+r FILE" in decisions[1]
    assert counts["validation"] == 0


@pytest.fixture(scope="module")
def converged(legacy: Host, scanned: dict) -> dict:
    """docs/migration.rst's steps: the old virtual hosts off, old crontabs away, the out
    file converged (webarch turns mpm_itk, mod_php and prefork off, in that order, and
    the event MPM on)."""
    # The report's decision: carol's data.txt readable by the web server's group.
    sh(legacy, 'chgrp www-data "$1" && chmod g+r "$1"', "/home/carol/sites/www/data.txt")
    sh(legacy, "a2dissite -q alice-blog bob-www carol-www")
    sh(legacy, "mkdir -p /root/old-crontabs && mv /var/spool/cron/crontabs/* /root/old-crontabs/")
    legacy.write_pillar_text(legacy.read_file("/root/webarch-pillar.sls"))
    started = time.monotonic()
    ret = legacy.salt_call(["state.apply", "webarch"])
    legacy.figures["converge_s"] = round(time.monotonic() - started, 1)
    assert failed(ret) == {}
    return ret


def test_converge_adopts_the_users(legacy: Host, converged: dict) -> None:
    for uid, name in enumerate(("alice", "bob", "carol"), start=2001):
        entry = sh(legacy, 'getent passwd "$1"', name).strip().split(":")
        assert entry[2:4] == [str(uid), str(uid)] and entry[5] == f"/home/{name}"
    # From now on webarch's own, as if it had created them (its registry).
    registry = legacy.read_file("/var/lib/webarch/managed-accounts").split()
    assert {"alice", "bob", "carol"} <= set(registry)
    # bob's old crontab line is now his job, run by webarch in his chroot.
    jobs = legacy.read_file(CRON_CONFIG)
    assert "find /home/bob/sites -type f > /dev/null" in jobs


def test_every_page_answers_the_same(legacy: Host, converged: dict) -> None:
    after = bodies(legacy)
    assert after == legacy.before["bodies"]
    # Now served by webarch's own Apache (event MPM) and the accounts' PHP-FPM pools.
    modules = sh(legacy, "apache2ctl -M 2>/dev/null")
    assert "mpm_event_module" in modules and "php_module" not in modules


def test_files_and_tables_unchanged_but_what_webarch_owns(legacy: Host, converged: dict) -> None:
    before, after = legacy.before["tree"], tree(legacy)
    lost = sorted(p for p in before if p not in after)
    differ = sorted(p for p in before if p in after and before[p] != after[p])
    new = sorted(p for p in after if p not in before)
    assert lost == []
    # Only the group and mode of the file the report's decision was about changed.
    decided = {"carol/sites/www/data.txt": ("f 2003 2003 600 ", "f 2003 33 640 ")}
    for path, (old, new) in decided.items():
        assert before[path].startswith(old) and after[path] == before[path].replace(old, new)
    assert [p for p in differ if not webarch_owned(p) and p not in decided] == []
    assert [p for p in new if not webarch_owned(p)] == []
    db_before, db_after = legacy.before["db"], db_checksums(legacy)
    assert {k: (db_before.get(k), v) for k, v in db_after.items() if db_before.get(k) != v} == {}


def test_wp_config_password_still_logs_in(legacy: Host, converged: dict) -> None:
    assert mariadb_login(legacy, "alice", WP_DB_PASSWORD).stdout.strip() == "alice@localhost"
    assert mariadb_login(legacy, "alice", "wrong-password").returncode != 0


def wp_login(host: Host, jar: str) -> str:
    """Log in to alice's WordPress (cookies in ``jar``): the answer's status and
    redirect, or its error text."""
    base = "https://blog.alice.example"
    # The cookie wp-login.php sets to see that the browser keeps cookies.
    test_cookie = "Cookie: wordpress_test_cookie=WP%20Cookie%20check"
    login = curl(host, f"{base}/wp-login.php", "-H", test_cookie, "-c", jar, "-w",
                 "\n%{http_code} %{redirect_url}", "--data-urlencode", f"log={WP_ADMIN}",
                 "--data-urlencode", f"pwd={WP_ADMIN_PASSWORD}", "-d", "testcookie=1",
                 "-d", "wp-submit=Log+In")  # fmt: skip
    status = login.stdout.rsplit("\n", 1)[-1]
    siteurl = sql(
        host, f"SELECT option_value FROM {WP_DB}.wp_options WHERE option_name = 'siteurl'"
    )
    assert siteurl.strip() == base
    error = re.search(r'id="login_error"[^>]*>(.*?)</div>', login.stdout, re.S)
    return status if not error else f"{status} {error.group(1).strip()}"


def test_wordpress_logs_in_and_publishes(legacy: Host, converged: dict, tmp_path: Path) -> None:
    jar = str(tmp_path / "cookies")
    base = "https://blog.alice.example"
    assert wp_login(legacy, jar) == f"302 {base}/wp-admin/"
    # The REST API's nonce for the logged-in admin (what wp-admin's editor uses).
    nonce = curl(legacy, f"{base}/wp-admin/admin-ajax.php?action=rest-nonce", "-b", jar).stdout
    assert re.fullmatch(r"[0-9a-f]{10}", nonce), nonce[:2000]
    title = "Moved " + secrets.token_hex(4)
    data = json.dumps({"title": title, "content": "after webarch", "status": "publish"})
    post = curl(legacy, f"{base}/?rest_route=/wp/v2/posts", "-b", jar, "-H",
                f"X-WP-Nonce: {nonce}", "-H", "Content-Type: application/json",
                "-d", data)  # fmt: skip
    answer = json.loads(post.stdout)
    assert answer.get("status") == "publish", answer
    link = answer["link"]
    assert title in curl(legacy, link).stdout


def test_second_run_changes_nothing(legacy: Host, converged: dict) -> None:
    ret = legacy.salt_call(["state.apply", "webarch"])
    assert failed(ret) == {}
    assert changed(ret) == {}
    assert yaml.safe_load(legacy.read_file("/srv/pillar/webarch.sls"))["webarch"]["accounts"]
