"""
WordPress for webarch, the pure part (``_modules/webarch_wordpress.py`` runs it):
where a site stands (:py:func:`classify`), the ``wp-config.php`` and ``.htaccess``
webarch writes, the PHP scripts run headless in the account's chroot, and what
they print back.

Every string put into PHP code goes through :py:func:`php_str` (a quoted
literal, for the configuration the account reads) or :py:func:`php_b64` (a
``base64_decode`` of it, in the scripts: nothing to escape, whatever it holds).
Secrets reach PHP only in a script's text, which goes on standard input.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any, NamedTuple

#: The site states :py:func:`classify` tells apart (see ``webarch_wordpress.status``).
STATES = ("empty", "copied", "configured", "installed", "foreign")

#: WordPress's eight unique keys and salts (``wp-config.php``).
KEY_NAMES = (
    "AUTH_KEY", "SECURE_AUTH_KEY", "LOGGED_IN_KEY", "NONCE_KEY",
    "AUTH_SALT", "SECURE_AUTH_SALT", "LOGGED_IN_SALT", "NONCE_SALT",
)  # fmt: skip
KEY_LENGTH = 64
TABLE_PREFIX = "wp_"
PERMALINKS = "/%postname%/"
#: Files of Debian's tree that are not copied: its loader of /etc/wordpress
#: configurations, and a link to /etc/wordpress/htaccess.
DEBIAN_EXCLUDE = ("wp-config.php", ".htaccess")
#: A WordPress tree has these (relative to the document root).
CORE_FILES = ("wp-settings.php", "wp-includes/version.php")
VERSION_FILE = "wp-includes/version.php"
VERSION_RE = re.compile(r"^\$wp_version\s*=\s*'([0-9A-Za-z.+~-]{1,40})'\s*;", re.MULTILINE)
#: What the scripts print last when they succeed (then a JSON object).
RESULT_MARK = "WEBARCH-RESULT "

#: WordPress's own rewrite block (what it writes itself for these permalinks, between
#: the same markers: its permalink settings page replaces it in place).
HTACCESS = """# BEGIN WordPress
# The directives (lines) between "BEGIN WordPress" and "END WordPress" are
# dynamically generated, and should only be modified via WordPress filters.
# Any changes to the directives between these markers will be overwritten.
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteRule .* - [E=HTTP_AUTHORIZATION:%{HTTP:Authorization}]
RewriteBase /
RewriteRule ^index\\.php$ - [L]
RewriteCond %{REQUEST_FILENAME} !-f
RewriteCond %{REQUEST_FILENAME} !-d
RewriteRule . /index.php [L]
</IfModule>

# END WordPress
"""


class Facts(NamedTuple):
    """What the module found in a site, cheaply (no PHP)."""

    #: The document root is missing or holds nothing.
    empty: bool
    #: A ``wp-config.php`` is where WordPress looks (the docroot or the one above).
    config: bool
    #: That ``wp-config.php`` is the one webarch wrote (its SHA-256 in the ledger).
    config_ours: bool
    #: The WordPress core files are there (:data:`CORE_FILES`).
    wordpress: bool
    #: The site's ledger (``webarch_apprun.read_ledger``).
    ledger: dict[str, Any]


class Verdict(NamedTuple):
    """Where a site stands; ``ask_db``: the database decides installed vs configured."""

    state: str
    detail: str
    ask_db: bool = False


def classify(facts: Facts) -> Verdict:
    """The site's state from what is on disk and in the ledger (see ``STATES``)."""
    ledger = facts.ledger
    if facts.empty:
        return Verdict("empty", "the document root is empty")
    if facts.config:
        if not ledger.get("configured"):
            return Verdict("installed", "wp-config.php not written by webarch: left as it is")
        if ledger.get("installed"):
            return Verdict("installed", "installed by webarch")
        if not facts.config_ours:
            return Verdict(
                "installed", "wp-config.php changed since webarch wrote it: left as it is"
            )
        return Verdict("configured", "wp-config.php written by webarch", ask_db=True)
    if ledger.get("copying") and not ledger.get("copied"):
        return Verdict("empty", "a copy was interrupted: copied again over it")
    if not facts.wordpress:
        return Verdict("foreign", "the document root holds files but no WordPress")
    if ledger.get("copied"):
        return Verdict("copied", "WordPress copied by webarch, not configured yet")
    return Verdict(
        "foreign", "WordPress files not copied by webarch and no wp-config.php: left alone"
    )


def parse_version(text: str) -> str | None:
    """``$wp_version`` of a ``wp-includes/version.php`` text (None when it has none)."""
    found = VERSION_RE.search(text)
    return found.group(1) if found else None


def php_str(value: str) -> str:
    """``value`` as a single-quoted PHP string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def php_b64(value: str) -> str:
    """A PHP expression that is ``value`` (base64 in the code: nothing to escape)."""
    return "base64_decode('" + base64.b64encode(value.encode()).decode() + "')"


def host_of(url: str) -> str:
    """The host name of ``https://host[:port]``."""
    return url.split("://", 1)[-1].split("/", 1)[0]


def config_text(app: dict[str, Any], keys: dict[str, str]) -> str:
    """The ``wp-config.php`` of the site (``keys``: the :data:`KEY_NAMES`, random)."""
    missing = [name for name in KEY_NAMES if not keys.get(name)]
    if missing:
        raise ValueError(f"keys missing: {', '.join(missing)}")
    lines = [
        "<?php",
        "/*",
        " * WordPress's configuration, written by webarch at install: from now on the",
        " * site's own (webarch never rewrites it).  The database is reached by MariaDB's",
        " * socket as the account, which unix_socket authentication identifies: there",
        " * is no password, here or anywhere.",
        " */",
        "",
        _define("DB_NAME", app["database"]),
        _define("DB_USER", app["account"]),
        _define("DB_PASSWORD", ""),
        _define("DB_HOST", "localhost:" + app["socket"]),
        _define("DB_CHARSET", "utf8mb4"),
        _define("DB_COLLATE", ""),
        "",
        *(_define(name, keys[name]) for name in KEY_NAMES),
        "",
        f"$table_prefix = {php_str(TABLE_PREFIX)};",
        "",
        _define("WP_HOME", app["url"]),
        _define("WP_SITEURL", app["url"]),
        "define( 'FORCE_SSL_ADMIN', true );",
        "define( 'DISALLOW_FILE_EDIT', true );",
        _define("FS_METHOD", "direct"),
        "define( 'WP_DEBUG', false );",
        "",
        "/* That's all, stop editing! Happy publishing. */",
        "",
        "if ( ! defined( 'ABSPATH' ) ) {",
        "\tdefine( 'ABSPATH', __DIR__ . '/' );",
        "}",
        "",
        "require_once ABSPATH . 'wp-settings.php';",
    ]
    return "\n".join(lines) + "\n"


def _define(name: str, value: str) -> str:
    return f"define( {php_str(name)}, {php_str(value)} );"


def _prelude(app: dict[str, Any], pluggable: tuple[str, ...] = ()) -> list[str]:
    """The start of every script: a request to the site as PHP CLI lacks one, no cron,
    no plugins (WordPress "installing"), ``pluggable`` functions defined, WordPress
    loaded, the database reached, no HTTP out; errors to standard error with exit 1."""
    host = host_of(app["url"])
    return [
        "<?php",
        "// webarch: run headless in the account's chroot (this text came on stdin).",
        f"$_SERVER['HTTP_HOST'] = $_SERVER['SERVER_NAME'] = {php_b64(host)};",
        "$_SERVER['SERVER_PORT'] = '443';",
        "$_SERVER['HTTPS'] = 'on';",
        "$_SERVER['REQUEST_URI'] = '/';",
        "$_SERVER['REQUEST_METHOD'] = 'GET';",
        "$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';",
        "$_SERVER['REMOTE_ADDR'] = '127.0.0.1';",
        'function webarch_fail($what) { fwrite(STDERR, $what . "\\n"); exit(1); }',
        "define('WP_INSTALLING', true);",
        "define('DISABLE_WP_CRON', true);",
        *pluggable,
        "require getcwd() . '/wp-load.php';",
        "global $wpdb, $wp_version, $wp_rewrite;",
        "if ($wpdb->get_var('SELECT 1') !== '1') {",
        "    webarch_fail('no database connection as ' . DB_USER . ' to ' . DB_NAME . ': '"
        " . (mysqli_connect_error() ?: $wpdb->last_error));",
        "}",
        "add_filter('pre_http_request', function () {",
        "    return new WP_Error('webarch', 'no HTTP request from a headless run');",
        "}, 1);",
    ]


def _result(fields: str) -> str:
    return f'echo "\\n{RESULT_MARK}" . json_encode({fields}) . "\\n";'


def check_script(app: dict[str, Any]) -> str:
    """PHP printing whether WordPress's tables are installed (``is_blog_installed``)."""
    lines = [
        *_prelude(app),
        _result("['installed' => is_blog_installed(), 'version' => $wp_version]"),
    ]
    return "\n".join(lines) + "\n"


def install_script(app: dict[str, Any], password: str) -> str:
    """PHP running WordPress's own install (``wp_install``) unless its tables are there
    already; then pretty permalinks, the rules flushed without writing ``.htaccess``.

    ``password`` is a throwaway: the admin's real one is set by ``set_password``."""
    lines = [
        # WordPress would mail the account; webarch's notification does.
        *_prelude(app, ("function wp_new_blog_notification($title, $url, $uid, $pw) {}",)),
        "require_once ABSPATH . 'wp-admin/includes/upgrade.php';",
        # No .htaccess from PHP (webarch wrote it), no probing of the site over HTTP.
        "add_filter('flush_rewrite_rules_hard', '__return_false');",
        f"$permalinks = {php_str(PERMALINKS)};",
        "$done = 'kept';",
        "if (!is_blog_installed()) {",
        "    add_filter('pre_option_permalink_structure', function () use ($permalinks) {",
        "        return $permalinks;",
        "    });",
        f"    $got = wp_install({php_b64(app['title'] or host_of(app['url']))}, "
        f"{php_b64(app['admin'])}, {php_b64(app['email'])}, true, '', {php_b64(password)});",
        "    remove_all_filters('pre_option_permalink_structure');",
        "    if (empty($got['user_id']) || is_wp_error($got['user_id'])) {",
        "        webarch_fail('wp_install made no admin user');",
        "    }",
        "    update_option('permalink_structure', $permalinks);",
        "    $wp_rewrite->init();",
        "    flush_rewrite_rules(false);",
        "    $done = 'installed';",
        "}",
        "wp_cache_flush();",
        "if (!is_blog_installed()) { webarch_fail('WordPress is still not installed'); }",
        _result("['done' => $done, 'version' => $wp_version]"),
    ]
    return "\n".join(lines) + "\n"


def password_script(app: dict[str, Any], password: str) -> str:
    """PHP setting the admin's password (``wp_set_password``) and checking it took."""
    lines = [
        *_prelude(app),
        "if (!is_blog_installed()) { webarch_fail('WordPress is not installed'); }",
        f"$user = get_user_by('login', {php_b64(app['admin'])});",
        f"if (!$user) {{ webarch_fail('WordPress has no user ' . {php_b64(app['admin'])}); }}",
        f"$password = {php_b64(password)};",
        "wp_set_password($password, $user->ID);",
        "$user = get_user_by('id', $user->ID);",
        "if (!wp_check_password($password, $user->user_pass, $user->ID)) {",
        "    webarch_fail('the new password does not check');",
        "}",
        _result("['set' => true]"),
    ]
    return "\n".join(lines) + "\n"


def parse_result(output: str) -> dict[str, Any] | None:
    """The JSON a script printed last after :data:`RESULT_MARK` (None: it did not get
    there, e.g. WordPress died with a page of HTML and exit status 0)."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                value = json.loads(line[len(RESULT_MARK) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def page_text(output: str, limit: int = 400) -> str:
    """The start of the text of what a script printed instead of a result (WordPress's
    error page: its head, styles and tags dropped)."""
    text = re.sub(r"(?is)<(head|style|script)\b.*?</\1\s*>", " ", output)
    text = " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
