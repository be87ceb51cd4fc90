"""Unit tests of WordPress installed by webarch: the pure part (_utils/webarch_wp.py:
where a site stands, the wp-config.php, .htaccess and PHP scripts it writes, what
the scripts print back) and the module's choices (_modules/webarch_wordpress.py)
on real directories, with the account's commands replaced by fakes.

When a test image's PHP is around (and we are root), the generated PHP is also
put through ``php -l``.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import formula
import pytest
import webarch_apprun as apprun
import webarch_wp as wp

SOCKET = "/run/mysqld/mysqld.sock"
KEYS = {name: f"k{i}-" + "x" * 60 for i, name in enumerate(wp.KEY_NAMES)}


def app_of(tmp: Path | None = None, **over: Any) -> dict[str, Any]:
    root = tmp or Path("/home/alice/sites/www")
    app = {
        "kind": "wordpress",
        "database": "alice_wp",
        "title": "Alice's blog",
        "source": {"kind": "debian"},
        "reset": "",
        "account": "alice",
        "site": "www",
        "email": "alice@alice.example",
        "admin": "alice",
        "url": "https://www.alice.example",
        "docroot": f"{root}/public",
        "root": str(root),
        "chroot": "/chroots/alice",
        "home": "/home/alice",
        "php": "/usr/bin/php8.2",
        "socket": SOCKET,
        "tree": f"{root}/tree",
        "packages": ["php", "wordpress", "wordpress-theme-twentytwentythree"],
        "notify_kind": "app-www",
        "ledger": f"{root}/ledger.json",
    }
    return {**app, **over}


def facts(**over: Any) -> wp.Facts:
    base: dict[str, Any] = {
        "empty": False, "config": False, "config_ours": False, "wordpress": True, "ledger": {},
    }  # fmt: skip
    return wp.Facts(**{**base, **over})


# --------------------------------------------------------------------------
# Where a site stands
# --------------------------------------------------------------------------

COPIED = {"copied": True}
CONFIGURED = {"copied": True, "configured": True, "config_sha256": "ab"}
INSTALLED = {**CONFIGURED, "installed": True}


@pytest.mark.parametrize(
    ("found", "state", "ask_db"),
    [
        # Empty wins over any ledger: a site emptied by hand is installed again.
        (facts(empty=True, wordpress=False), "empty", False),
        (facts(empty=True, wordpress=False, ledger=INSTALLED), "empty", False),
        # A copy cut short: copied again over the partial files.
        (facts(wordpress=False, ledger={"copying": True}), "empty", False),
        (facts(ledger={"copying": True}), "empty", False),
        (facts(ledger=COPIED), "copied", False),
        (facts(config=True, config_ours=True, ledger=CONFIGURED), "configured", True),
        # Ours per ledger and installed: no PHP to know it.
        (facts(config=True, ledger=INSTALLED), "installed", False),
        # Any wp-config.php webarch did not write: installed, never touched.
        (facts(config=True), "installed", False),
        (facts(config=True, wordpress=False), "installed", False),
        (facts(config=True, ledger=COPIED), "installed", False),
        # Written by webarch, then changed: the site's own now.
        (facts(config=True, config_ours=False, ledger=CONFIGURED), "installed", False),
        # Other files; a WordPress webarch did not copy (no wp-config.php).
        (facts(wordpress=False), "foreign", False),
        (facts(wordpress=False, ledger=COPIED), "foreign", False),
        (facts(), "foreign", False),
    ],
)
def test_classify(found, state, ask_db):
    verdict = wp.classify(found)
    assert (verdict.state, verdict.ask_db) == (state, ask_db)
    assert verdict.state in wp.STATES and verdict.detail


def test_version_from_version_php():
    text = "<?php\n/**\n * @global string $wp_version\n */\n$wp_version = '6.8.1';\n"
    assert wp.parse_version(text) == "6.8.1"
    assert wp.parse_version("$wp_version = '6.9-beta2-60000';") == "6.9-beta2-60000"
    assert wp.parse_version("<?php echo 1;") is None
    assert wp.parse_version("$wp_version = 'x'; system('id');'") == "x"
    assert wp.parse_version("$wp_version = '1.0 <b>';") is None


# --------------------------------------------------------------------------
# What webarch writes
# --------------------------------------------------------------------------


def test_php_literals():
    assert wp.php_str("it's a \\ test") == "'it\\'s a \\\\ test'"
    expr = wp.php_b64("pa'ss\\word\n$x")
    assert "'" + base64.b64encode(b"pa'ss\\word\n$x").decode() + "'" in expr
    assert "pa'ss" not in expr and "$x" not in expr


def test_config_has_no_password_and_every_setting():
    text = wp.config_text(app_of(), KEYS)
    defines = dict(re.findall(r"define\( '(\w+)', ('[^']*'|true|false) \);", text))
    assert defines["DB_PASSWORD"] == "''"
    assert defines["DB_NAME"] == "'alice_wp'"
    assert defines["DB_USER"] == "'alice'"
    assert defines["DB_HOST"] == f"'localhost:{SOCKET}'"
    assert defines["DB_CHARSET"] == "'utf8mb4'"
    assert defines["WP_HOME"] == defines["WP_SITEURL"] == "'https://www.alice.example'"
    assert defines["FORCE_SSL_ADMIN"] == defines["DISALLOW_FILE_EDIT"] == "true"
    assert defines["FS_METHOD"] == "'direct'"
    assert defines["WP_DEBUG"] == "false"
    for name in wp.KEY_NAMES:
        assert defines[name] == f"'{KEYS[name]}'"
    assert "$table_prefix = 'wp_';" in text
    assert text.rstrip().endswith("require_once ABSPATH . 'wp-settings.php';")
    assert text.index("ABSPATH") > text.index("WP_DEBUG")


def test_config_needs_every_key_and_real_keys_differ():
    with pytest.raises(ValueError, match="NONCE_SALT"):
        wp.config_text(app_of(), {k: v for k, v in KEYS.items() if k != "NONCE_SALT"})
    keys = [apprun.random_key(wp.KEY_LENGTH) for _ in wp.KEY_NAMES]
    assert len(set(keys)) == len(keys) and {len(k) for k in keys} == {64}
    assert not any(c in "".join(keys) for c in "'\\\"")


def test_htaccess_is_wordpress_own_block_and_the_policy_allows_it():
    import webarch_htaccess as htaccess

    lines = wp.HTACCESS.splitlines()
    assert lines[0] == "# BEGIN WordPress" and lines[-1] == "# END WordPress"
    directives = {ln.split()[0] for ln in lines if ln and not ln.startswith(("#", "<"))}
    assert directives <= set(htaccess.LISTED)
    assert "RewriteRule . /index.php [L]" in lines


# --------------------------------------------------------------------------
# The scripts
# --------------------------------------------------------------------------


def test_install_script():
    secret = "Thr0waway'\\pw"
    text = wp.install_script(app_of(), secret)
    assert secret not in text and base64.b64encode(secret.encode()).decode() in text
    assert base64.b64encode(b"alice@alice.example").decode() in text
    # Pluggable and constants before WordPress loads; HTTP and .htaccess writes off.
    load = text.index("wp-load.php")
    for early in ("function wp_new_blog_notification", "WP_INSTALLING", "HTTP_HOST"):
        assert text.index(early) < load
    assert "flush_rewrite_rules_hard" in text and "pre_http_request" in text
    assert "flush_rewrite_rules(false)" in text
    # Never installed over: wp_install only when is_blog_installed() says no.
    assert text.index("if (!is_blog_installed())") < text.index("wp_install(")
    assert "'/%postname%/'" in text


def test_password_script_carries_the_password_encoded_only():
    secret = "n3w p@ss'word"
    text = wp.password_script(app_of(), secret)
    assert secret not in text and "wp_set_password($password, $user->ID)" in text
    assert "wp_check_password" in text and "is_blog_installed()" in text


def test_title_defaults_to_the_host():
    text = wp.install_script(app_of(title=None), "pw")
    assert base64.b64encode(b"www.alice.example").decode() in text


def test_parse_result_and_the_page_wordpress_dies_with():
    out = 'noise\nWEBARCH-RESULT {"done": "installed", "version": "6.8"}\n'
    assert wp.parse_result(out) == {"done": "installed", "version": "6.8"}
    assert wp.parse_result("WEBARCH-RESULT [1]") is None
    assert wp.parse_result("WEBARCH-RESULT {bad") is None
    page = (
        "<html><head><title>WordPress &rsaquo; Error</title><style>body{x:y}</style></head>"
        "<body><h1>Error establishing a database connection</h1><p>It&#8217;s down</p></body>"
    )
    assert wp.parse_result(page) is None
    assert wp.page_text(page) == "Error establishing a database connection It\u2019s down"
    assert len(wp.page_text("x " * 500, 50)) == 50


def _image_php() -> list[str] | None:
    """``chroot ROOTFS php`` of a built test image, when there is one and we are root."""
    if os.geteuid() != 0:
        return None
    for php in sorted(glob.glob("/var/cache/webarch-test/images/*/rootfs/usr/bin/php8.*")):
        rootfs = php.split("/usr/bin/")[0]
        return ["chroot", rootfs, php[len(rootfs) :]]
    return None


@pytest.mark.parametrize(
    "make",
    [
        lambda: wp.config_text(app_of(), KEYS),
        lambda: wp.check_script(app_of()),
        lambda: wp.install_script(app_of(), apprun.random_key(48)),
        lambda: wp.password_script(app_of(), apprun.random_key(48)),
    ],
)
def test_generated_php_parses(make):
    php = _image_php()
    if php is None:
        pytest.skip("no test image PHP here (or not root)")
    proc = subprocess.run([*php, "-l"], input=make(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# The module, on real directories (the account's commands faked)
# --------------------------------------------------------------------------


class Fake:
    """The account's side: copies, writes and PHP runs, recorded."""

    def __init__(self, app: dict[str, Any]) -> None:
        self.app = app
        self.calls: list[str] = []
        self.tables = False

    def copy_tree(self, app: dict, source: str, exclude: tuple[str, ...] = ()) -> None:
        self.calls.append(f"copy {source} {','.join(exclude)}")
        for name in wp.CORE_FILES:
            path = Path(app["docroot"], name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("<?php\n$wp_version = '6.1.9';\n")

    def unpack(self, app: dict, archive: str, sha256: str) -> None:
        self.calls.append(f"unpack {archive} {sha256}")
        self.copy_tree(app, "archive")

    def as_account(self, app: dict, argv: list[str], what: str, **kwargs: Any) -> str:
        self.calls.append(" ".join(argv))
        if argv[:2] == ["mkdir", "-p"]:
            os.makedirs(argv[2], exist_ok=True)
        return ""

    def write_as_account(self, app: dict, path: str, text: str, mode: int = 0o600) -> None:
        self.calls.append(f"write {os.path.basename(path)} {mode:o}")
        Path(path).write_text(text)
        os.chmod(path, mode)

    def php(self, app: dict, script: str, what: str, *args: str, timeout: float = 0) -> str:
        assert not args, "nothing on the command line"
        if "wp_install(" in script:
            self.calls.append("php install")
            done, self.tables = "kept" if self.tables else "installed", True
            return f"{wp.RESULT_MARK}{json.dumps({'done': done, 'version': '6.1.9'})}\n"
        if "wp_set_password" in script:
            self.calls.append("php password")
            return f"{wp.RESULT_MARK}{{}}\n"
        self.calls.append("php check")
        return f"{wp.RESULT_MARK}{json.dumps({'installed': self.tables})}\n"


@pytest.fixture
def site(tmp_path, monkeypatch):
    mod = formula.load("_modules/webarch_wordpress.py")
    app = app_of(tmp_path)
    os.makedirs(app["docroot"])
    Path(app["tree"], wp.VERSION_FILE).parent.mkdir(parents=True)
    Path(app["tree"], wp.VERSION_FILE).write_text("$wp_version = '6.1.9';")
    fake = Fake(app)
    for name in ("copy_tree", "unpack", "as_account", "write_as_account", "php"):
        monkeypatch.setattr(apprun, name, getattr(fake, name))
    model = {"accounts": {"alice": {"apps": {"www": app}}}}
    monkeypatch.setattr(mod, "__salt__", {"webarch.config": lambda: model}, raising=False)
    return mod, app, fake


def test_install_from_empty_then_nothing(site):
    mod, app, fake = site
    assert mod.status("alice", "www")["state"] == "empty"
    done = mod.install("alice", "www")
    assert done["steps"] == ["copy", "configure", "install"] and done["version"] == "6.1.9"
    assert set(done["seconds"]) == {"copy", "configure", "install"}
    assert f"copy {app['tree']} wp-config.php,.htaccess" in fake.calls
    assert "write wp-config.php 600" in fake.calls and "write .htaccess 644" in fake.calls
    config = Path(app["docroot"], "wp-config.php").read_text()
    ledger = json.loads(Path(app["ledger"]).read_text())
    assert ledger["config_sha256"] == hashlib.sha256(config.encode()).hexdigest()
    assert ledger["copied"] and ledger["configured"] and ledger["installed"]
    assert ledger["source"] == "debian" and ledger["version"] == "6.1.9"
    assert not any(key in json.dumps(ledger) for key in re.findall(r"'(\S{64})'", config))
    fake.calls.clear()
    assert mod.status("alice", "www") == {
        "state": "installed", "version": "6.1.9", "detail": "installed by webarch",
    }  # fmt: skip
    assert mod.install("alice", "www") == {"steps": [], "version": "6.1.9"}
    assert fake.calls == [], "an installed site costs no PHP and no write"


def test_an_interrupted_install_converges(site):
    mod, app, fake = site
    mod.install("alice", "www")
    ledger = json.loads(Path(app["ledger"]).read_text())
    del ledger["installed"]
    apprun.write_ledger(app, ledger)
    fake.tables = False
    assert mod.status("alice", "www")["state"] == "configured"
    assert mod.install("alice", "www")["steps"] == ["install"]
    # The tables were there after all (the ledger write was lost): noted, kept.
    ledger = json.loads(Path(app["ledger"]).read_text())
    del ledger["installed"]
    apprun.write_ledger(app, ledger)
    assert mod.status("alice", "www")["state"] == "installed"
    fake.calls.clear()
    assert mod.status("alice", "www")["state"] == "installed" and fake.calls == []


def test_an_emptied_site_keeps_its_database(site):
    mod, app, _fake = site
    mod.install("alice", "www")
    for path in sorted(Path(app["docroot"]).rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    assert mod.install("alice", "www")["steps"] == ["copy", "configure", "install: kept"]


def test_foreign_and_hand_made_sites_are_left_alone(site):
    mod, app, fake = site
    index = Path(app["docroot"], "index.html")
    index.write_text("mine")
    assert mod.status("alice", "www")["state"] == "foreign"
    with pytest.raises(mod.CommandExecutionError, match="nothing copied, left alone"):
        mod.install("alice", "www")
    with pytest.raises(mod.CommandExecutionError, match="not installed"):
        mod.set_password("alice", "www", "pw")
    # A WordPress and its wp-config.php, by hand: installed, never touched.
    fake.copy_tree(app, "by hand")
    Path(app["docroot"], "wp-config.php").write_text("<?php // mine")
    fake.calls.clear()
    assert mod.status("alice", "www")["state"] == "installed"
    assert mod.install("alice", "www")["steps"] == [] and fake.calls == []
    assert index.read_text() == "mine"
    # ... or its wp-config.php one level up (WordPress looks there too).
    Path(app["docroot"], "wp-config.php").rename(Path(app["root"], "wp-config.php"))
    assert mod.status("alice", "www")["state"] == "installed"


def test_version_php_through_a_link_is_not_read(site):
    mod, app, fake = site
    fake.copy_tree(app, "by hand")
    version = Path(app["docroot"], wp.VERSION_FILE)
    target = Path(app["root"], "elsewhere.php")
    target.write_text("$wp_version = '9.9';")
    version.unlink()
    version.symlink_to(target)
    assert mod.version("alice", "www") is None


def test_archive_source(site, monkeypatch):
    mod, app, fake = site
    source = {"kind": "archive", "source": "salt://wp/wordpress-6.8.tar.gz", "sha256": "a" * 64}
    app["source"] = source
    fetched: list[str] = []
    monkeypatch.setitem(mod.__salt__, "cp.cache_file", lambda s: fetched.append(s) or "/c/wp.tgz")
    mod.install("alice", "www")
    assert fetched == [source["source"]] and f"unpack /c/wp.tgz {'a' * 64}" in fake.calls
    ledger = json.loads(Path(app["ledger"]).read_text())
    assert (ledger["source"], ledger["sha256"]) == (source["source"], source["sha256"])


def test_set_password(site):
    mod, _app, fake = site
    mod.install("alice", "www")
    fake.calls.clear()
    assert mod.set_password("alice", "www", "s3cret") is None
    assert fake.calls == ["php password"]
    with pytest.raises(mod.CommandExecutionError, match="empty"):
        mod.set_password("alice", "www", "")


def test_a_site_without_wordpress_is_refused(site):
    mod, app, _fake = site
    with pytest.raises(mod.CommandExecutionError, match="no application"):
        mod.status("alice", "blog")
    app["kind"] = "mediawiki"
    with pytest.raises(mod.CommandExecutionError, match="not wordpress"):
        mod.install("alice", "www")
