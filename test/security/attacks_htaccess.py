"""Web attacks through what alice's .htaccess and .user.ini files may hold.

The .htaccess policy (``_utils/webarch_htaccess.py``, issue 22) allows more of
mod_mime and mod_filter (``AddType``, ``RemoveType``, ``AddOutputFilter``,
``SetOutputFilter``, ``DefaultType``, ``SetEnvIfExpr``, ...) and makes every
directive it does not allow (``SetHandler``, ``AddHandler``, ``Action``,
``ForceType``, ``ProxyFCGISetEnvIf``) or Apache does not know (``php_value``)
ignored with a warning instead of answering 500.  The pools read per-directory
``.user.ini`` files.  These attacks try each of them: to reach bob's pool or
files, to show alice's PHP source to a visitor, to change the pool's
``php_admin_*`` settings.

Each attack is ``(files, path)`` as in ``WEB_ATTACKS``: the files go to alice's
docroot ``t/`` and ``path`` is ``PAGES`` and the pages requested there
(space-separated), each fetched as a browser would, gzip answers decoded.  alice's
PHP pages hold ``SOURCE_MARK`` in a comment: no answer may show it.  ``NEEDLES``
and ``RAN`` are merged into the suite's tables of the same names.
"""

from __future__ import annotations

from typing import NamedTuple

#: In a comment of alice's PHP files: a visitor never sees it (her PHP source).
SOURCE_MARK = "ALICE-PHP-SOURCE-4d2e"
#: An attack's "path" that lists pages of alice's ``t/`` (see test_attacks.pages()).
PAGES = "pages:"
#: Bob's pool as a handler (``@BOB_SOCKET@`` is his socket's real path).
BOB_POOL = "proxy:unix:@BOB_SOCKET@|fcgi://bob"

#: alice's PHP page: says which account's pool ran it.
PAGE = f"<?php /* {SOURCE_MARK} */ echo 'ran-as-', posix_getpwuid(posix_geteuid())['name'];\n"
#: alice's plain file beside it.
TEXT = "alice-text\n"
#: What alice's page shows when her own pool ran it (the directive did not break her site).
RAN_AS_ALICE = "ran-as-alice"
#: alice's page ran in bob's pool, as bob.
RAN_AS_BOB = "ran-as-bob"

#: The pool settings the PHP page below prints, ``KEY=[VALUE]``.
INI_KEYS = ("disable_functions", "open_basedir", "memory_limit", "post_max_size",
            "upload_max_filesize", "error_log", "session.save_path", "allow_url_include",
            "auto_prepend_file")  # fmt: skip
#: What exec() prints where it runs (``$((6*7))``: not in the page's source).
EXEC_RAN = "EXEC-42"
#: alice's PHP page that prints the pool's settings, tries exec() and bob's files.
INI_PAGE = (
    f"<?php /* {SOURCE_MARK} */ error_reporting(0);"
    f" foreach ({list(INI_KEYS)!r} as $k) echo $k, '=[', ini_get($k), '] ';"
    " try { exec('cat /home/bob/sites/shop/wp-config.php; echo EXEC-$((6*7))', $out);"
    " echo implode(' ', $out); } catch (Throwable $e) { echo 'no-exec'; }"
    " echo ' ', file_get_contents('/home/bob/sites/shop/wp-config.php'),"
    " file_get_contents('/home/bob/private/notes.txt'), ' ';"
    " echo 'ran-as-', posix_getpwuid(posix_geteuid())['name'];\n"
)
#: The setting a .user.ini may change (the pool's php_value): proves PHP read the file.
USER_INI_CONTROL = "upload_max_filesize = 7M\n"
USER_INI_RAN = "upload_max_filesize=[7M]"


class Attack(NamedTuple):
    """One web attack: its files, the pages requested, what they must not and must show."""

    files: dict[str, str]
    pages: str
    #: What the answers must not show, beyond the secrets and SOURCE_MARK.
    needles: tuple[str, ...] = ()
    #: What they must show: the attack's files were read (the control).
    ran: str = RAN_AS_ALICE


def htaccess(text: str, pages: str, needles: tuple[str, ...] = (), **files: str) -> Attack:
    """A .htaccess of ``text`` beside alice's page a.php and text a.txt (and ``files``)."""
    return Attack({".htaccess": text, "a.php": PAGE, "a.txt": TEXT, **files}, pages, needles)


def to_bob(text: str, pages: str = "a.txt a.php", **files: str) -> Attack:
    """A .htaccess line aimed at bob's pool: alice's page must not run as bob."""
    return htaccess(text, pages, (RAN_AS_BOB,), **files)


def php_ini(text: str, *needles: str) -> Attack:
    """A .htaccess of php_* lines (ignored: no PHP module in Apache) beside INI_PAGE."""
    return Attack({".htaccess": text, "a.php": INI_PAGE}, "a.php", (*needles, EXEC_RAN))


def user_ini(directory: str, text: str, *needles: str, ran: str = USER_INI_RAN) -> Attack:
    """A .user.ini of ``text`` beside INI_PAGE, in a directory of its own: PHP
    caches what it read of a directory for user_ini.cache_ttl (60 s)."""
    files = {f"{directory}/.user.ini": USER_INI_CONTROL + text, f"{directory}/a.php": INI_PAGE}
    return Attack(files, f"{directory}/a.php", (*needles, EXEC_RAN), ran)


TABLE: dict[str, Attack] = {
    # Handlers, types and environment towards bob's pool (ignored or guarded).
    "ForceType to bob's pool": to_bob(f'ForceType "{BOB_POOL}"\n'),
    "AddType bob's pool handler for .txt": to_bob(f'AddType "{BOB_POOL}" .txt\n'),
    "AddType bob's pool handler for .php": to_bob(f'AddType "{BOB_POOL}" .php\n'),
    "AddHandler to bob's pool": to_bob(f'AddHandler "{BOB_POOL}" .php .txt\n'),
    "Action to bob's pool": to_bob(
        f'Action bob-pool "{BOB_POOL}/home/bob/private/tool.php" virtual\n'
        f'Action text/plain "{BOB_POOL}/home/bob/private/tool.php"\n'
        "AddHandler bob-pool .php .txt\n"
    ),
    "SetHandler to bob's pool in <Files>": to_bob(
        f'<Files "a.php">\nSetHandler "{BOB_POOL}"\n</Files>\n'
        f'<Files "a.txt">\nSetHandler "{BOB_POOL}"\n</Files>\n'
    ),
    "SetHandler to bob's pool in <FilesMatch>": to_bob(
        f'<FilesMatch "\\.(php|txt)$">\nSetHandler "{BOB_POOL}"\n</FilesMatch>\n'
    ),
    "SetHandler to bob's pool in <If>": to_bob(
        f'<If "%{{REQUEST_URI}} =~ m#/t/a\\.#">\nSetHandler "{BOB_POOL}"\n</If>\n'
    ),
    "SetEnvIfExpr PHP_VALUE and SCRIPT_FILENAME with [H=] to bob": to_bob(
        'SetEnvIfExpr "true" SCRIPT_FILENAME=/home/bob/private/tool.php'
        " PHP_VALUE=auto_prepend_file=/home/bob/private/tool.php"
        " PHP_ADMIN_VALUE=auto_prepend_file=/home/bob/private/tool.php proxy-fcgi-pathinfo=full\n"
        f"RewriteEngine on\nRewriteRule ^b\\.php$ - [H={BOB_POOL}]\n",
        "b.php a.php",
        **{"b.php": PAGE},
    ),
    "ProxyFCGISetEnvIf in .htaccess with [H=] to bob": to_bob(
        'ProxyFCGISetEnvIf "true" SCRIPT_FILENAME "/home/bob/private/tool.php"\n'
        'ProxyFCGISetEnvIf "true" PHP_ADMIN_VALUE "auto_prepend_file=/home/bob/private/tool.php"\n'
        f"RewriteEngine on\nRewriteRule ^b\\.php$ - [H={BOB_POOL}]\n",
        "b.php a.php",
        **{"b.php": PAGE},
    ),
    "RewriteRule [P] to bob's script with .. past the guard": to_bob(
        "RewriteEngine on\nRewriteRule ^b\\.php$"
        ' "unix:@BOB_SOCKET@|fcgi://bob/home/alice/sites/../../bob/private/tool.php" [P]\n',
        "b.php a.php",
        **{"b.php": PAGE},
    ),
    "SetEnvIfExpr PHP_ADMIN_VALUE to alice's own pool": Attack(
        {
            ".htaccess": 'SetEnvIfExpr "true" PHP_ADMIN_VALUE=disable_functions='
            " PHP_VALUE=auto_prepend_file=/home/alice/sites/www/t/p.php\n",
            "a.php": INI_PAGE,
            "p.php": "<?php echo 'PRE' . 'PENDED ';\n",
        },
        "a.php",
        ("disable_functions=[]", "PREPENDED", EXEC_RAN),
    ),
    # The server's own handlers named from a .htaccess: its status page shows
    # every site's traffic (mod_status is off; mod_md's md-status lists the
    # names of every certificate, public in Certificate Transparency logs anyway).
    "AddType server-status .txt": htaccess(
        "AddType server-status .txt\n", "a.txt a.php", ("Apache Server Status", "Server uptime")
    ),
    "RewriteRule [H=server-status]": htaccess(
        "RewriteEngine on\nRewriteRule ^a\\.txt$ - [H=server-status]\n",
        "a.txt a.php",
        ("Apache Server Status", "Server uptime"),
    ),
    # alice's PHP source to a visitor: the vhost's handler for .php stays.
    "AddType text/plain for .php (alice's PHP source)": htaccess(
        "AddType text/plain .php\nAddType application/x-httpd-php-source .php\n", "a.php"
    ),
    "RemoveType .php (alice's PHP source)": htaccess("RemoveType .php\n", "a.php"),
    "ForceType text/plain (alice's PHP source)": htaccess("ForceType text/plain\n", "a.php"),
    "DefaultType with RemoveType (alice's PHP source)": htaccess(
        "RemoveType .php\nDefaultType text/plain\n", "a.php"
    ),
    "SetHandler default-handler (alice's PHP source)": htaccess(
        'SetHandler default-handler\n<FilesMatch "\\.php$">\nSetHandler none\n</FilesMatch>\n'
        "RemoveHandler .php\n",
        "a.php",
    ),
    "AddOutputFilter and SetOutputFilter DEFLATE (alice's PHP source)": htaccess(
        "SetEnv force-gzip 1\nRemoveOutputFilter .php\nAddOutputFilter DEFLATE .php\n"
        "SetOutputFilter DEFLATE\nAddOutputFilterByType DEFLATE text/html text/plain\n",
        "a.php a.txt",
    ),
    "AddOutputFilter INCLUDES (alice's PHP source)": htaccess(
        "AddOutputFilter INCLUDES .txt .php\nSetOutputFilter INCLUDES\n",
        "a.txt a.php",
        **{"a.txt": '<!--#include file="a.php" --> <!--#include virtual="a.php" -->\n'},
    ),
    "AddEncoding and RemoveEncoding (alice's PHP source)": htaccess(
        "AddEncoding x-gzip .php\nAddEncoding identity .txt\nRemoveEncoding .txt\n", "a.php"
    ),
    "MultiViews and LanguagePriority (alice's PHP source)": htaccess(
        "Options +MultiViews\nRemoveType .php\nAddLanguage en .php\nRemoveLanguage .txt\n"
        "RemoveCharset .php\nLanguagePriority en\nForceLanguagePriority Prefer Fallback\n",
        "a a.en a.php",
    ),
    # PHP settings from .htaccess: ignored (Apache runs no PHP module).
    "php_value auto_prepend_file of bob's file in .htaccess": php_ini(
        "php_value auto_prepend_file /home/bob/sites/shop/wp-config.php\n"
        "php_admin_value auto_prepend_file /home/bob/private/tool.php\n",
        "auto_prepend_file=[/home/bob",
    ),
    "php_admin_value open_basedir and disable_functions in .htaccess": php_ini(
        "php_admin_value open_basedir /\nphp_admin_value disable_functions none\n"
        'php_value disable_functions ""\nphp_flag allow_url_include on\n'
        "php_admin_flag engine off\n",
        "open_basedir=[/]",
        "disable_functions=[none]",
        "disable_functions=[]",
        "allow_url_include=[1]",
    ),
    # .user.ini: the pool's php_admin_* settings stay (PHP's own rule).
    ".user.ini disable_functions=": user_ini(
        "ini-functions", "disable_functions =\n", "disable_functions=[]"
    ),
    # open_basedir is off on this host (the pool's chroot is the boundary): a
    # .user.ini may set it, which only restricts; bob's files stay out of reach.
    ".user.ini open_basedir=/": user_ini("ini-basedir", "open_basedir = /\n"),
    ".user.ini memory_limit and post_max_size 4G": user_ini(
        "ini-sizes",
        "memory_limit = 4G\npost_max_size = 4G\n",
        "memory_limit=[4G]",
        "post_max_size=[4G]",
    ),
    ".user.ini error_log into bob's logs": user_ini(
        "ini-log", "error_log = /home/bob/logs/php-error.log\n", "error_log=[/home/bob"
    ),
    ".user.ini session.save_path into bob's home": user_ini(
        "ini-session", "session.save_path = /home/bob/private\n", "session.save_path=[/home/bob"
    ),
    ".user.ini allow_url_include": user_ini(
        "ini-url", "allow_url_include = On\n", "allow_url_include=[1]"
    ),
    # PHP may not open bob's file in alice's chroot: a fatal error, nothing shown.
    ".user.ini auto_prepend_file of bob's config": user_ini(
        "ini-prepend", "auto_prepend_file = /home/bob/sites/shop/wp-config.php\n", ran=""
    ),
}

ATTACKS: dict[str, tuple[dict[str, str], str]] = {
    name: (attack.files, PAGES + attack.pages) for name, attack in TABLE.items()
}
NEEDLES: dict[str, tuple[str, ...]] = {
    name: attack.needles for name, attack in TABLE.items() if attack.needles
}
RAN: dict[str, str] = {name: attack.ran for name, attack in TABLE.items() if attack.ran}
