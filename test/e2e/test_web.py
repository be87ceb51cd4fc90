"""The web stack as a visitor sees it: curl over HTTPS (SNI) and HTTP/2.

curl is this machine's, run in the test host's network namespace only
(``Host.net_run``), with every site name resolved to the host's loopback.
"""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest
from e2e.browser import run_browser
from e2e.helpers import apply, changed, failed, pool_socket, state_results
from testhost import Host
from testhost.acme import Pebble, served_certificate

pytestmark = pytest.mark.e2e

SITES = {
    # name: (account, site, docroot on the host)
    "www.alice.example": ("alice", "www", "/home/alice/sites/www/public"),
    "alice.example": ("alice", "www", "/home/alice/sites/www/public"),
    "blog.alice.example": ("alice", "blog", "/home/alice/sites/blog"),
    "static.alice.example": ("alice", "static", "/home/alice/sites/static"),
    "shop.bob.example": ("bob", "shop", "/home/bob/sites/shop"),
    "old.bob.example": ("bob", "old", "/home/bob/sites/old"),
    "private.bob.example": ("bob", "private", "/home/bob/sites/private"),
}

WHOAMI = """<?php
$me = posix_getpwuid(posix_geteuid())['name'];
echo implode(' ', [$me, php_sapi_name(), getcwd(), $_SERVER['REQUEST_URI'],
    is_dir('/home/' . ($me === 'alice' ? 'bob' : 'alice')) ? 'sees-other' : 'alone',
    count(glob('/home/*'))]), "\\n";
"""

WORDPRESS_HTACCESS = """# BEGIN WordPress
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteRule .* - [E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]
RewriteBase /
RewriteRule ^index\\.php$ - [L]
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule . /index.php [L]
</IfModule>
Options -Indexes
ErrorDocument 404 /index.php
# END WordPress
"""


def web_pillar(password_hash: str) -> dict:
    """Alice with three sites of three types, bob with three."""
    return {
        "webarch": {
            "accounts": {
                "alice": {
                    "sites": {
                        "www": {
                            "type": "php",
                            "server_name": "www.alice.example",
                            "aliases": ["alice.example"],
                            "docroot": "public",
                        },
                        "blog": {"type": "wordpress", "server_name": "blog.alice.example"},
                        "static": {
                            "type": "static",
                            "server_name": "static.alice.example",
                            "hsts": True,
                            "robots_deny": True,
                            "headers": {
                                "X-Frame-Options": "DENY",
                                # A default header set otherwise, the other removed.
                                "Referrer-Policy": "no-referrer",
                                "x-content-type-options": False,
                            },
                            "redirects": [{"from": "/old", "to": "https://www.alice.example/"}],
                        },
                    },
                },
                "bob": {
                    "php": {"memory_limit": "128M", "max_children": 3, "open_basedir": True},
                    "sites": {
                        "shop": {"server_name": "shop.bob.example"},
                        "old": {
                            "type": "static",
                            "server_name": "old.bob.example",
                            "suspended": True,
                        },
                        "private": {
                            "type": "static",
                            "server_name": "private.bob.example",
                            "basic_auth": {"realm": "Staff", "users": {"staff": password_hash}},
                        },
                    },
                },
            }
        }
    }


@pytest.fixture(scope="module")
def pebble(host: Host) -> Pebble:
    """A real ACME server (Debian's pebble) on the test host, set up but stopped:
    the sites first run on their fallback certificate, as on a new server whose
    CA cannot be reached yet."""
    server = Pebble(host)
    server.start()
    host.run(["systemctl", "stop", "webarch-pebble.service"], check=True)
    return server


@pytest.fixture(scope="module")
def web(host: Host, pebble: Pebble) -> Iterator[Host]:
    """The host with both accounts' sites converged and some content in them."""
    hashed = host.run(["htpasswd", "-nbB", "-C", "5", "staff", "s3cret-staff"], check=True)
    pillar = web_pillar(hashed.stdout.strip().split(":", 1)[1])
    pillar["webarch"]["acme"] = {
        "directory": pebble.directory_url,
        "ca_file": pebble.ca_file_in_host,
        "contact": "hostmaster@coop.example",
    }
    host.web_pillar = pillar
    ret = apply(host, pillar)
    assert failed(ret) == {}
    content = {
        "/home/alice/sites/www/public/whoami.php": WHOAMI,
        "/home/alice/sites/www/public/index.html": "alice www\n",
        "/home/alice/sites/blog/index.php": WHOAMI,
        "/home/alice/sites/blog/.htaccess": WORDPRESS_HTACCESS,
        "/home/alice/sites/static/index.html": "alice static\n",
        "/home/alice/sites/static/secret.php": "<?php echo 'source';",
        "/home/bob/sites/shop/index.php": WHOAMI,
        "/home/bob/sites/old/index.html": "bob old\n",
        "/home/bob/sites/private/index.html": "bob private\n",
    }
    for path, text in content.items():
        owner = path.split("/")[2]
        host.write_file(path, text, mode=0o640)
        host.run(["chown", f"{owner}:www-data", path], check=True)
    yield host


def curl(host: Host, url: str, *args: str) -> subprocess.CompletedProcess:
    """curl ``url`` from outside, all site names resolving to the host."""
    resolve = []
    for name in SITES:
        resolve += ["--resolve", f"{name}:443:127.0.0.1", "--resolve", f"{name}:80:127.0.0.1"]
    cmd = ["curl", "-sS", "-k", "--max-time", "20", *resolve, *args, url]
    return host.net_run(cmd)


def status(host: Host, url: str, *args: str) -> str:
    """The HTTP status code of ``url``."""
    return curl(host, url, "-o", "/dev/null", "-w", "%{http_code}", *args).stdout


def test_second_run_changes_nothing(web):
    ret = apply(web, web.web_pillar)
    assert failed(ret) == {}
    assert changed(ret) == {}


def test_sites_answer_before_any_certificate_arrives(web):
    """mod_md cannot reach the CA yet: sites answer on the fallback certificate (no 503)."""
    served = served_certificate(web, "shop.bob.example")
    assert served.subject == "CN=webarch-default"
    assert status(web, "https://shop.bob.example/") == "200"


@pytest.mark.parametrize("name", sorted(SITES))
def test_every_site_answers_on_its_names(web, name):
    _, site, _ = SITES[name]
    expected = {
        "www": "alice www",
        "blog": "alice fpm-fcgi",
        "static": "alice static",
        "shop": "bob fpm-fcgi",
        "old": "This site is suspended.",
        "private": "401",
    }[site]
    result = curl(web, f"https://{name}/", "-w", "%{http_code}")
    assert expected in result.stdout, result


@pytest.mark.parametrize(
    ("name", "account"), [("www.alice.example", "alice"), ("shop.bob.example", "bob")]
)
def test_php_runs_as_its_account_inside_its_chroot(web, name, account):
    path = "/whoami.php" if account == "alice" else "/index.php"
    out = curl(web, f"https://{name}{path}").stdout.split()
    assert out[:3] == [
        account,
        "fpm-fcgi",
        f"/home/{account}/sites/" + ("www/public" if account == "alice" else "shop"),
    ]
    assert out[4:] == ["alone", "1"], "the chroot holds its own home only"


@pytest.mark.parametrize(
    ("name", "account", "expected"),
    [
        # Off by default: the chroot confines the pool (its /etc is the chroot's).
        ("www.alice.example", "alice", "open_basedir='' passwd=readable"),
        # bob asks for it: his home, /tmp and /usr/share/php only.
        (
            "shop.bob.example",
            "bob",
            "open_basedir='/home/bob:/tmp:/usr/share/php' passwd=refused",
        ),
    ],
)
def test_open_basedir_only_where_asked(web, name, account, expected):
    docroot = next(root for n, (_, _, root) in SITES.items() if n == name)
    script = (
        "<?php printf(\"open_basedir='%s' passwd=%s\", ini_get('open_basedir'),"
        " @file_get_contents('/etc/passwd') === false ? 'refused' : 'readable');"
    )
    path = f"{docroot}/basedir.php"
    web.write_file(path, script, mode=0o640)
    web.run(["chown", f"{account}:www-data", path], check=True)
    try:
        assert curl(web, f"https://{name}/basedir.php").stdout == expected
    finally:
        web.run(["rm", "-f", path])


#: A login page of alice's PHP site, as a web application would have one.
#: MARKER and PASSWORD are set per run.
LOGIN_PHP = """<?php
$posted = $_SERVER['REQUEST_METHOD'] === 'POST';
$ok = $posted && hash_equals('PASSWORD', (string) ($_POST['password'] ?? ''));
?><!doctype html>
<html><head><title>MARKER <?= $ok ? 'dashboard' : 'login' ?></title>
<style>body { font: 18px sans-serif; margin: 3em; background: #eef3f8; }
h1 { color: #1f4e79; } form { background: #fff; padding: 1em; width: 20em; }
input, button { display: block; margin: .5em 0; font-size: 1em; }</style></head>
<body>
<?php if ($ok): ?>
<h1 id="dashboard">Welcome, <?= htmlspecialchars($_POST['user'] ?? '') ?></h1>
<p id="served-by">served by <?= posix_getpwuid(posix_geteuid())['name'] ?> over
<?= $_SERVER['SERVER_PROTOCOL'] ?></p>
<?php else: ?>
<h1>MARKER</h1>
<?php if ($posted): ?><p id="error">Wrong password</p><?php endif ?>
<form id="login" method="post">
<label>User <input id="user" name="user"></label>
<label>Password <input id="password" name="password" type="password"></label>
<button type="submit">Log in</button>
</form>
<?php endif ?>
</body></html>
"""


def test_a_browser_logs_in_to_a_php_site(web):
    """A real browser (headless Chromium) over HTTPS: alice's PHP page renders, its
    form posts through Apache to her pool, and each run keeps its screenshots in
    test/artifacts/test_web-browser-login/."""
    marker = f"Login {secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    page = "/home/alice/sites/www/public/login.php"
    text = LOGIN_PHP.replace("MARKER", marker).replace("PASSWORD", password)
    web.write_file(page, text, mode=0o640)
    web.run(["chown", "alice:www-data", page], check=True)
    try:
        result = run_browser(
            web,
            [
                {"get": "https://www.alice.example/login.php"},
                {"wait_for": "h1", "contains": marker},
                {"screenshot": "login"},
                {"fill": "#user", "value": "alice"},
                {"fill": "#password", "value": password},
                {"submit": "#login"},
                {"wait_for": "#dashboard", "contains": "Welcome, alice"},
                {"text": "#served-by", "name": "served"},
                {"screenshot": "dashboard"},
            ],
            "test_web-browser-login",
        )
    finally:
        web.run(["rm", "-f", page])
    assert result.titles[0] == f"{marker} login"
    assert result.title == f"{marker} dashboard"
    assert result.url == "https://www.alice.example/login.php"
    # PHP ran as alice, and the browser spoke HTTP/2 to Apache.
    assert result.texts["served"] == "served by alice over HTTP/2.0"
    for name in ("login", "dashboard"):
        shot = result.screenshots[name]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 2000
    assert password not in (result.artifacts / "browser.json").read_text()


def test_http2_is_negotiated(web):
    result = curl(
        web, "https://www.alice.example/", "--http2", "-o", "/dev/null", "-w", "%{http_version}"
    )
    assert result.stdout == "2"


def tls(host: Host, *args: str, name: str = "www.alice.example") -> str:
    """openssl s_client's report (both streams) of a handshake with ``args``."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:443", "-servername", name, *args]
    result = host.net_run(cmd, input="")
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "alert"),
    [
        # CBC suites (LUCKY13), with and without ECDHE; no ECDHE; finite-field DH.
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"], "alert handshake failure"),
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"], "alert handshake failure"),
        (["-tls1_2", "-cipher", "AES128-SHA:AES256-SHA256"], "alert handshake failure"),
        (["-tls1_2", "-cipher", "AES128-GCM-SHA256"], "alert handshake failure"),
        (["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"], "alert handshake failure"),
        # Old protocols, offered at the client's lowest security level.
        (["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], "alert protocol version"),
        (["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"], "alert protocol version"),
    ],
)
def test_weak_tls_is_refused(web, args, alert):
    report = tls(web, *args)
    assert alert in report, report
    assert "CONNECTION ESTABLISHED" not in tls(web, "-brief", *args)


@pytest.mark.parametrize(
    ("args", "protocol", "suite"),
    [
        (
            ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
            "TLSv1.2",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ),
        (
            ["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
            "TLSv1.2",
            "ECDHE-RSA-AES256-GCM-SHA384",
        ),
        (
            ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"],
            "TLSv1.2",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ),
        # The client's order wins (SSLHonorCipherOrder off).
        (
            ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256"],
            "TLSv1.2",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ),
        (
            ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305"],
            "TLSv1.2",
            "ECDHE-RSA-AES128-GCM-SHA256",
        ),
        (["-tls1_3"], "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
        (
            ["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
            "TLSv1.3",
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
        # Any client: the best both sides have.
        ([], "TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    ],
)
def test_modern_tls_is_accepted(web, args, protocol, suite):
    report = tls(web, "-brief", *args)
    assert "CONNECTION ESTABLISHED" in report, report
    assert f"Protocol version: {protocol}\n" in report, report
    assert f"Ciphersuite: {suite}\n" in report, report


def test_no_tls_session_tickets(web):
    report = tls(web, "-tls1_2")
    assert "Cipher is ECDHE-RSA-" in report, report
    assert "TLS session ticket" not in report, report


def response_headers(host: Host, url: str) -> list[tuple[str, str]]:
    """The response headers of ``url`` (lower-case names), in order, repeats kept."""
    out = curl(host, url, "-D", "-", "-o", "/dev/null").stdout
    found = []
    for line in out.splitlines()[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            found.append((name.strip().lower(), value.strip()))
    return found


def test_server_header_names_no_version(web):
    for url in (
        "https://www.alice.example/",
        "https://www.alice.example/none",
        "http://alice.example/",
    ):
        servers = [v for n, v in response_headers(web, url) if n == "server"]
        assert servers == ["Apache"], (url, servers)
    page = curl(web, "https://www.alice.example/none").stdout
    assert "Not Found" in page and "Apache" not in page and "Server at" not in page, page


DEFAULT_HEADERS = [
    ("referrer-policy", "strict-origin-when-cross-origin"),
    ("x-content-type-options", "nosniff"),
]


@pytest.mark.parametrize(
    "url",
    [
        "https://www.alice.example/",  # a static file of a php site
        "https://www.alice.example/whoami.php",  # PHP
        "https://www.alice.example/none",  # an error
        "https://shop.bob.example/",
        "https://old.bob.example/",  # suspended: 503
        "https://private.bob.example/",  # basic auth: 401
    ],
)
def test_every_site_sends_the_default_security_headers(web, url):
    names = {name for name, _ in DEFAULT_HEADERS}
    found = sorted((n, v) for n, v in response_headers(web, url) if n in names)
    assert found == DEFAULT_HEADERS, url


def test_a_site_overrides_or_removes_a_default_header(web):
    found = response_headers(web, "https://static.alice.example/")
    assert [v for n, v in found if n == "referrer-policy"] == ["no-referrer"]
    assert [v for n, v in found if n == "x-content-type-options"] == []


def test_an_applications_own_header_is_kept(web):
    _alice_dir(
        web,
        {"policy.php": "<?php header('Referrer-Policy: same-origin'); echo 'ok';"},
    )
    try:
        found = response_headers(web, "https://www.alice.example/t/policy.php")
    finally:
        web.run(["rm", "-rf", "/home/alice/sites/www/public/t"])
    assert [v for n, v in found if n == "referrer-policy"] == ["same-origin"], found
    assert [v for n, v in found if n == "x-content-type-options"] == ["nosniff"], found


def test_port_80_redirects_to_https(web):
    result = curl(
        web,
        "http://shop.bob.example/a/b?c=d",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
    )
    assert result.stdout == "301 https://shop.bob.example/a/b?c=d"


def test_wordpress_style_rewrites_work(web):
    out = curl(web, "https://blog.alice.example/2026/11/hello-world/").stdout.split()
    assert out[:2] == ["alice", "fpm-fcgi"]
    assert out[3] == "/2026/11/hello-world/"


@pytest.mark.parametrize("htaccess", ["Options +FollowSymLinks", "Options +ExecCGI"])
def test_forbidden_options_are_refused(web, htaccess):
    _alice_dir(web, {".htaccess": htaccess + "\n", "index.html": "should not be served\n"})
    try:
        assert status(web, "https://www.alice.example/t/index.html") == "500"
    finally:
        web.run(["rm", "-rf", "/home/alice/sites/www/public/t"])
    assert status(web, "https://www.alice.example/index.html") == "200"


@pytest.mark.parametrize(
    "htaccess",
    [
        'SetHandler "proxy:unix:/run/php/webarch-bob.sock|fcgi://x"',
        "AddHandler cgi-script .php",
        'ForceType "proxy:unix:/run/php/webarch-bob.sock|fcgi://x"',
        "php_value auto_prepend_file /etc/passwd",
        'ProxyFCGISetEnvIf "true" SCRIPT_FILENAME "/home/bob/sites/shop/index.php"',
    ],
)
def test_forbidden_directives_are_ignored(web, htaccess):
    """Ignored (Nonfatal=All), not fatal: the directory is served as if the line
    were not there, its PHP by alice's own pool."""
    htaccess = htaccess.replace(BOB_SOCKET, pool_socket(web, "bob"))
    _alice_dir(web, {".htaccess": htaccess + "\n", "index.html": "static\n",
                     "x.php": "<?php echo 'ALICE-RAN';"})  # fmt: skip
    try:
        assert curl(web, "https://www.alice.example/t/index.html").stdout == "static\n"
        assert curl(web, "https://www.alice.example/t/x.php").stdout == "ALICE-RAN"
    finally:
        web.run(["rm", "-rf", "/home/alice/sites/www/public/t"])


#: Stands for bob's pool socket in the attacks below (its real name is keyed:
#: the attacker is assumed to know it all the same).
BOB_SOCKET = "/run/php/webarch-bob.sock"


def _alice_dir(web: Host, files: dict[str, str]) -> None:
    """Put ``files`` in alice's www/public/t directory, as alice would."""
    web.run(["rm", "-rf", "/home/alice/sites/www/public/t"])
    for name, text in files.items():
        web.write_file(f"/home/alice/sites/www/public/t/{name}", text)
    web.run(["chown", "-R", "alice:www-data", "/home/alice/sites/www/public/t"], check=True)


@pytest.fixture
def bob_secret(web: Host) -> Iterator[str]:
    """A PHP file of bob's outside any document root, and what it prints."""
    web.write_file("/home/bob/private/secret.php", "<?php echo 'BOB-SECRET-RAN';", mode=0o600)
    web.write_file("/home/bob/sites/shop/prepend.php", "<?php echo 'BOB-PREPEND';", mode=0o640)
    web.run(["chown", "bob", "/home/bob/private/secret.php", "/home/bob/sites/shop/prepend.php"])
    yield "BOB-SECRET-RAN"
    web.run(["rm", "-rf", "/home/alice/sites/www/public/t"])


@pytest.mark.parametrize(
    "htaccess",
    [
        # Steer alice's own file to bob's pool: bob's chroot has no such file.
        "RewriteEngine on\n"
        "RewriteRule ^x\\.php$ - [H=proxy:unix:/run/php/webarch-bob.sock|fcgi://webarch-bob]",
        # ...with a PHP_VALUE that would prepend bob's own file.
        "RewriteEngine on\n"
        "RewriteRule ^x\\.php$ - [H=proxy:unix:/run/php/webarch-bob.sock|fcgi://webarch-bob,"
        "E=PHP_VALUE:auto_prepend_file=/home/bob/sites/shop/prepend.php]",
        # Proxy straight to bob's pool with a path of bob's choosing.
        "RewriteEngine on\n"
        'RewriteRule ^x\\.php$ "unix:/run/php/webarch-bob.sock|fcgi://webarch-bob'
        '/home/bob/private/secret.php" [P]',
        # PHP_VALUE / PHP_ADMIN_VALUE sent to alice's own pool.
        'SetEnv PHP_ADMIN_VALUE "auto_prepend_file=/home/bob/private/secret.php"\n'
        'SetEnv PHP_VALUE "auto_prepend_file=/home/bob/private/secret.php"',
    ],
)
def test_htaccess_cannot_reach_another_accounts_pool(web, bob_secret, htaccess):
    htaccess = htaccess.replace(BOB_SOCKET, pool_socket(web, "bob"))
    _alice_dir(web, {".htaccess": htaccess + "\n", "x.php": "<?php echo 'ALICE-RAN';"})
    result = curl(web, "https://www.alice.example/t/x.php", "-w", " %{http_code}")
    assert bob_secret not in result.stdout and "BOB-PREPEND" not in result.stdout, result
    assert result.stdout.split()[-1] in ("200", "403", "404", "500", "503"), result
    if result.stdout.endswith(" 200"):
        assert result.stdout.startswith("ALICE-RAN"), "only alice's own code may run"


def test_suspended_site_keeps_its_files(web):
    assert status(web, "https://old.bob.example/index.html") == "503"
    assert web.read_file("/home/bob/sites/old/index.html") == "bob old\n"


def test_static_site_switches(web):
    headers = curl(
        web, "https://static.alice.example/", "-D", "-", "-o", "/dev/null"
    ).stdout.lower()
    assert "strict-transport-security: max-age=31536000" in headers
    assert "x-robots-tag: noindex, nofollow" in headers
    assert "x-frame-options: deny" in headers
    assert status(web, "https://static.alice.example/secret.php") == "403"
    moved = curl(
        web,
        "https://static.alice.example/old",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
    )
    assert moved.stdout == "301 https://www.alice.example/"


def test_basic_auth(web):
    assert status(web, "https://private.bob.example/") == "401"
    assert status(web, "https://private.bob.example/", "-u", "staff:wrong") == "401"
    ok = curl(web, "https://private.bob.example/", "-u", "staff:s3cret-staff")
    assert ok.stdout == "bob private\n"


def test_hidden_and_backup_files_are_not_served(web):
    planted = ("/.env", "/index.php.bak", "/.git/config", "/dump.sql", "/wp-config.php")
    for path in planted:
        web.write_file(f"/home/alice/sites/blog{path}", "secret\n")
    web.run(["chown", "-R", "alice:www-data", "/home/alice/sites/blog"], check=True)
    for path in ("/.htaccess", *planted):
        assert status(web, f"https://blog.alice.example{path}") in ("403", "404"), path


def test_pool_sockets_belong_to_the_web_server_only(web):
    sockets = [pool_socket(web, "alice"), pool_socket(web, "bob")]
    out = web.run(["stat", "-c", "%U %G %a", *sockets])
    assert out.stdout.split("\n")[:2] == ["www-data www-data 600"] * 2
    # Their names tell nothing of the accounts (every process sees them in /proc/net/unix).
    assert not any("alice" in s or "bob" in s for s in sockets)
    # Each account's pool is its own master's (issue 18); Debian's php-fpm, masked,
    # keeps only the pool no one can reach.
    pools = web.run(["sh", "-c", "ls /etc/php/*/fpm/pool.d/"], check=True).stdout.split()
    assert pools == ["000-webarch-idle.conf"]
    own = web.run(["ls", "/etc/webarch/php-fpm/"], check=True).stdout.split()
    assert sorted(own) == ["alice.conf", "bob.conf"]
    # systemd holds the sockets (the masters adopt them): they outlive a master.
    units = web.run(["systemctl", "show", "-p", "Listen", "webarch-php@alice.socket"]).stdout
    assert f"{sockets[0]} (Stream)" in units, units


def test_per_account_logs(web):
    curl(web, "https://shop.bob.example/index.php?marker=bob-log-test")
    curl(web, "https://www.alice.example/whoami.php?marker=alice-log-test")
    bob = web.read_file("/home/bob/logs/apache-access.log")
    alice = web.read_file("/home/alice/logs/apache-access.log")
    assert "marker=bob-log-test" in bob and "marker=alice-log-test" not in bob
    assert "marker=alice-log-test" in alice and "marker=bob-log-test" not in alice
    mode = web.run(["stat", "-c", "%U %G %a", "/home/bob/logs/apache-access.log"]).stdout.strip()
    assert mode == "root bob 640"


def test_config_checks_refuse_bad_files(web):
    web.write_file(
        "/tmp/bad-site.conf", "<VirtualHost *:443>\n  NoSuchDirective on\n</VirtualHost>\n"
    )
    check = web.run(
        [
            "/usr/local/sbin/webarch-apache-check",
            "/etc/apache2/sites-available/webarch-bad.conf",
            "/tmp/bad-site.conf",
        ]
    )
    assert check.returncode != 0 and "NoSuchDirective" in check.stderr
    bad_pool = "[bad]\nuser = nosuchuser\nlisten = /run/php/bad.sock\npm = ondemand\n"
    web.write_file("/tmp/bad-pool.conf", bad_pool + "pm.max_children = 1\n")
    version = web.run(["sh", "-c", "ls /etc/php"]).stdout.split()[0]
    check = web.run(["/usr/local/sbin/webarch-fpm-check", version, "/tmp/bad-pool.conf"])
    assert check.returncode != 0
    assert status(web, "https://shop.bob.example/") == "200", "the live server is untouched"
    # Checking copies the config to a scratch place; nothing of it stays behind
    # (the copies once piled up in /tmp, one per checked file).
    left = web.run(["sh", "-c", "ls -d /tmp/webarch-*-check.* 2>/dev/null"]).stdout
    assert left == ""


# Site (MDomain) -> its names, as in web_pillar().
CERTIFICATES = {
    "www.alice.example": ("www.alice.example", "alice.example"),
    "blog.alice.example": ("blog.alice.example",),
    "static.alice.example": ("static.alice.example",),
    "shop.bob.example": ("shop.bob.example",),
    "old.bob.example": ("old.bob.example",),
    "private.bob.example": ("private.bob.example",),
}


def test_each_site_gets_its_own_certificate_from_the_acme_server(web, pebble, tmp_path):
    web.run(["systemctl", "start", "webarch-pebble.service"], check=True)
    pebble.wait_ready()
    # mod_md backs off between attempts; a reload makes it try again now.
    web.run(["systemctl", "reload", "apache2"], check=True)
    roots = pebble.fetch_roots(tmp_path / "pebble-roots.pem")
    deadline = time.monotonic() + 120
    pending = dict(CERTIFICATES)
    seen = {}
    # No manual reload: mod_md's "renewed" message makes the formula's path
    # unit reload Apache by itself.
    while pending and time.monotonic() < deadline:
        for md, names in list(pending.items()):
            for name in names:
                cert = served_certificate(web, name, cafile=roots)
                if not cert.verified:
                    break
                seen[name] = cert
            else:
                del pending[md]
        time.sleep(1)
    assert not pending, f"no ACME certificate served for {sorted(pending)}"
    for names in CERTIFICATES.values():
        for name in names:
            cert = seen[name]
            assert sorted(cert.names) == sorted(names), (name, cert.names)
            assert "Pebble" in cert.issuer or "pebble" in cert.issuer.lower(), cert.issuer
            assert cert.alpn == "h2"
        assert len({seen[n].sha256 for n in names}) == 1, "one certificate per site"
    assert len({seen[md].sha256 for md in CERTIFICATES}) == len(CERTIFICATES)
    page = curl(web, "https://www.alice.example/", "--cacert", str(roots), "--http2")
    assert page.stdout == "alice www\n"
    # The reloads stop once the certificates are in use (no reload loop).
    count = ["sh", "-c", "journalctl -u webarch-md-reload.service | grep -c Starting"]
    before = web.run(count).stdout
    time.sleep(8)
    assert web.run(count).stdout == before


def test_logs_rotate_and_logging_goes_on(web):
    curl(web, "https://shop.bob.example/index.php?marker=before-rotation")
    rotate = web.run(["logrotate", "-f", "/etc/logrotate.d/webarch"])
    assert rotate.returncode == 0, rotate.stderr
    assert "marker=before-rotation" in web.read_file("/home/bob/logs/apache-access.log.1")
    curl(web, "https://shop.bob.example/index.php?marker=after-rotation")
    time.sleep(1)
    now = web.read_file("/home/bob/logs/apache-access.log")
    assert "marker=after-rotation" in now and "marker=before-rotation" not in now


#: The state that fails when an account's new Apache file was refused.
REFUSED = "cmd_|-webarch-apache-sites-refused_|-/usr/local/sbin/webarch-apache-sites refused_|-run"
#: The state that puts the accounts' checked Apache files in place.
INSTALLED = (
    "cmd_|-webarch-apache-sites-install_|-/usr/local/sbin/webarch-apache-sites install_|-run"
)


def test_a_config_that_fails_its_check_keeps_the_old_one_live(web):
    pillar = web.web_pillar
    bob_shop = pillar["webarch"]["accounts"]["bob"]["sites"]["shop"]
    bob_shop["headers"] = {"X-Shop": "new"}
    web.run(["mv", "/etc/apache2/webarch-default.key", "/root/key.saved"], check=True)
    try:
        ret = apply(web, pillar)
        # Bob's new file was checked with every other change at once (one
        # apache2 -t) and refused: the refusal names him, his old file stays.
        broken = failed(ret)
        assert REFUSED in broken, broken
        told = state_results(ret)[REFUSED]["changes"]["stderr"]
        conf = "/etc/apache2/sites-available/webarch-bob.conf"
        assert f"{conf} (account bob) kept as it was" in told
        assert "alice" not in told
        assert "X-Shop" not in web.read_file(conf)
        # The old configuration still serves every site.
        assert status(web, "https://shop.bob.example/") == "200"
        assert status(web, "https://www.alice.example/") == "200"
    finally:
        web.run(["mv", "/root/key.saved", "/etc/apache2/webarch-default.key"], check=True)
    ret = apply(web, pillar)
    assert failed(ret) == {}
    headers = curl(web, "https://shop.bob.example/", "-D", "-", "-o", "/dev/null").stdout
    assert "x-shop: new" in headers.lower()


def test_a_reload_refuses_a_broken_config_and_apache_keeps_serving(web):
    # The formula's drop-in: no PrivateTmp, and a reload is "apache2ctl -k
    # graceful", which checks the whole configuration before it signals Apache.
    shown = web.run(["systemctl", "show", "apache2", "-p", "PrivateTmp", "-p", "ExecReload"])
    assert "PrivateTmp=no" in shown.stdout and "apache2ctl ; argv[]=" in shown.stdout
    broken = "/etc/apache2/conf-enabled/zz-broken.conf"
    web.write_file(broken, "NoSuchDirective on\n")
    try:
        assert web.run(["systemctl", "reload", "apache2"]).returncode != 0
        assert web.run(["systemctl", "is-active", "apache2"]).stdout.strip() == "active"
        assert status(web, "https://www.alice.example/") == "200"
    finally:
        web.run(["rm", "-f", broken], check=True)
    assert web.run(["systemctl", "reload", "apache2"]).returncode == 0
    assert status(web, "https://www.alice.example/") == "200"


def only(*names: str) -> str:
    """The salt-call argument of a run limited to ``names`` (README: webarch_only)."""
    return "pillar=" + json.dumps({"webarch_only": list(names)})


def test_a_run_limited_to_one_account(web):
    pillar = copy.deepcopy(web.web_pillar)
    pillar["webarch"]["accounts"]["alice"]["sites"]["www"]["headers"] = {"X-Only": "alice"}
    # A stopped server-wide unit: only a full run checks it.
    web.run(["systemctl", "stop", "webarch-db-dump.timer"], check=True)
    ret = apply(web, pillar, only("alice"))
    assert failed(ret) == {}
    staged = "/etc/webarch/apache-sites/webarch-alice.conf"
    assert set(changed(ret)) == {
        f"file_|-webarch-alice-apache-sites_|-{staged}_|-managed",
        INSTALLED,
        "service_|-webarch-apache-service_|-apache2_|-running",
    }
    assert not [key for key in state_results(ret) if "-bob-" in key]
    ssh = state_results(ret)["service_|-webarch-sshd-service_|-ssh_|-running"]
    assert "none of the onchanges reqs changed" in ssh["comment"]
    headers = curl(web, "https://www.alice.example/", "-D", "-", "-o", "/dev/null").stdout
    assert "x-only: alice" in headers.lower()
    inactive = web.run(["systemctl", "is-active", "webarch-db-dump.timer"]).stdout.strip()
    assert inactive == "inactive"
    assert changed(apply(web, pillar, only("alice"))) == {}
    # The full run afterwards: the stopped timer and the original pillar.
    ret = apply(web, web.web_pillar)
    assert failed(ret) == {}
    assert set(changed(ret)) == {
        f"file_|-webarch-alice-apache-sites_|-{staged}_|-managed",
        INSTALLED,
        "service_|-webarch-apache-service_|-apache2_|-running",
        "service_|-webarch-db-dump-timer_|-webarch-db-dump.timer_|-running",
    }


def test_an_account_added_and_removed_by_limited_runs(web):
    pillar = copy.deepcopy(web.web_pillar)
    accounts = pillar["webarch"]["accounts"]
    accounts["carol"] = {"sites": {"www": {"type": "static", "server_name": "www.carol.example"}}}
    ret = apply(web, pillar, only("carol"))
    assert failed(ret) == {}
    assert not [key for key in state_results(ret) if "-alice-" in key or "-bob-" in key]
    assert changed(apply(web, pillar)) == {}, "the limited run left work for a full one"
    web.write_file("/home/carol/sites/www/index.html", "carol's site\n", mode=0o640)
    web.run(["chown", "carol:www-data", "/home/carol/sites/www/index.html"], check=True)
    carol = ("https://www.carol.example/", "--resolve", "www.carol.example:443:127.0.0.1")
    assert curl(web, *carol).stdout == "carol's site\n"
    # A password the MTA refused waits in the spool; it goes with the account.
    spooled = "/var/lib/webarch/notify/spool/carol.ssh"
    web.run(["install", "-d", "-m", "0700", "/var/lib/webarch/notify/spool"], check=True)
    web.write_file(spooled, "Carol-Pending-Passw0rd\n", mode=0o600)
    accounts["carol"] = {"state": "absent"}
    ret = apply(web, pillar, only("carol"))
    assert failed(ret) == {}
    assert not [key for key in state_results(ret) if "-alice-" in key or "-bob-" in key]
    # Apache and PHP-FPM were reloaded without carol; her home went to an archive.
    assert "carol's site" not in curl(web, *carol).stdout
    assert not web.exists("/etc/apache2/sites-available/webarch-carol.conf")
    assert web.run(["getent", "passwd", "carol"]).returncode != 0
    archives = web.run(["sh", "-c", "ls /var/backups/webarch/"], check=True).stdout
    assert "carol-" in archives
    assert not web.exists(spooled)
    assert status(web, "https://www.alice.example/") == "200"
    assert changed(apply(web, pillar)) == {}
    # A staged file of no present account (by hand, or an old run's) goes with
    # the next full run, and only it: it would be put live otherwise.
    stray = "/etc/webarch/apache-sites/webarch-ghost.conf"
    web.write_file(stray, "# nobody's\n", mode=0o600)
    ret = apply(web, pillar)
    assert [key.split("_|-")[1] for key in changed(ret)] == ["webarch-apache-staging-dir"]
    assert not web.exists(stray)
    assert web.exists("/etc/webarch/apache-sites/webarch-alice.conf")
