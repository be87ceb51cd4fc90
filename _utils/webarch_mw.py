"""
MediaWiki for webarch's sites: the pure parts of ``_modules/webarch_mediawiki.py``.

What state a site's document root is in, MediaWiki's version from its files,
the command line of its headless installer, the settings webarch appends to
the ``LocalSettings.php`` the installer generates, the PHP that sets the admin
password (the password in the script's text, on standard input: never on a
command line), and the SQL that completes the tables of an interrupted
install (``CREATE TABLE IF NOT EXISTS``: nothing is ever dropped).
"""

from __future__ import annotations

import re
from typing import Any

#: The files that say which MediaWiki release a tree is (newest first):
#: ``MW_VERSION`` since 1.35, ``$wgVersion`` before.
VERSION_FILES = ("includes/Defines.php", "includes/DefaultSettings.php")
MW_VERSION_RE = re.compile(r"""define\(\s*['"]MW_VERSION['"]\s*,\s*['"]([^'"]+)['"]\s*\)""")
WG_VERSION_RE = re.compile(r"""\$wgVersion\s*=\s*['"]([^'"]+)['"]""")

SETTINGS = "LocalSettings.php"
#: The uploads directory (served by the web server, which runs no PHP from it).
UPLOADS = "images"
#: The schema of MediaWiki's core tables (MySQL's: the file of 1.39 and 1.43).
SCHEMA_FILE = "maintenance/tables-generated.sql"
#: What the installer puts for ``/*$wgDBTableOptions*/`` on MariaDB (its defaults).
TABLE_OPTIONS = "ENGINE=InnoDB, DEFAULT CHARSET=binary"
#: The table whose presence tells MediaWiki's installer the tables exist.
MARKER_TABLE = "archive"

#: What may be uploaded: images, PDF and OpenDocument (no SVG: it needs a
#: converter for thumbnails and is a script carrier if the sanitiser misses).
FILE_EXTENSIONS = ("png", "gif", "jpg", "jpeg", "webp", "pdf", "odt", "ods", "odp")

#: Characters a project namespace may hold (others are replaced by ``_``).
_NAMESPACE_BAD = re.compile(r"[^\w'.\-]+")
_PASSWORD_LINE = re.compile(r"""^\s*\$wgDBpassword\s*=\s*(['"])(.*?)\1\s*;""", re.MULTILINE)
_CREATE = re.compile(r"CREATE TABLE /\*_\*/(\w+)\s*\(")


# --------------------------------------------------------------------------
# What is there
# --------------------------------------------------------------------------


def parse_version(defines: str | None, default_settings: str | None = None) -> str | None:
    """MediaWiki's version from the text of includes/Defines.php (or, before 1.35,
    includes/DefaultSettings.php); None when neither says."""
    for text, pattern in ((defines, MW_VERSION_RE), (default_settings, WG_VERSION_RE)):
        found = pattern.search(text or "")
        if found:
            return found.group(1)
    return None


def version_key(version: str | None) -> tuple[int, ...]:
    """``1.39.17`` -> (1, 39, 17); a suffix (``-rc.1``, ``-wmf.2``) is ignored; () for None."""
    if not version:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:4])


def classify(
    entries: int | None, has_settings: bool, version: str | None, ledger: dict[str, Any]
) -> tuple[str, str]:
    """The state of a site's document root and a short detail.

    ``entries``: how many entries the document root has (None: it is missing);
    ``has_settings``: LocalSettings.php is there (a file or a link); ``version``:
    MediaWiki's version from the files (None: no MediaWiki); ``ledger``: what
    webarch recorded of the site.
    """
    if not entries:
        return "empty", "the document root is empty" if entries == 0 else "no document root yet"
    if has_settings:
        what = f"MediaWiki {version}" if version else "a wiki"
        return "installed", f"{what} with its {SETTINGS}: left as it is"
    if ledger.get("installed"):
        return "foreign", (
            f"installed by webarch on {ledger.get('installed_at', '?')} but its {SETTINGS} is "
            "gone: left alone (restore it, or empty the site for a new install)"
        )
    if ledger.get("copied") and version:
        return "copied", f"MediaWiki {version} copied by webarch, not installed yet"
    if ledger.get("copying"):
        return "empty", "a copy by webarch was interrupted: it is copied again"
    if version:
        return "foreign", f"MediaWiki {version} not copied by webarch and no {SETTINGS}: left alone"
    return (
        "foreign",
        f"{entries} {'entry' if entries == 1 else 'entries'} and no MediaWiki: left alone",
    )


# --------------------------------------------------------------------------
# Names and PHP literals
# --------------------------------------------------------------------------


def admin_name(account: str) -> str:
    """The wiki user name MediaWiki makes of the account's name (``alice`` -> ``Alice``,
    ``_`` read as a space)."""
    name = account.replace("_", " ").strip()
    return name[:1].upper() + name[1:]


def meta_namespace(title: str) -> str | None:
    """The project namespace to set for ``title``, or None when the installer's own
    (the title with ``_`` for spaces) is a valid one."""
    if not _NAMESPACE_BAD.search(title.replace(" ", "_")):
        return None
    name = _NAMESPACE_BAD.sub("_", title.replace(" ", "_")).strip("_")
    name = re.sub("_+", "_", name)
    name = name[:1].upper() + name[1:]
    return name if name and name != "MediaWiki" else "Project"


def php_string(value: str) -> str:
    """``value`` as a single-quoted PHP string literal (nothing is interpolated)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def db_server(socket: str) -> str:
    """``$wgDBserver`` for the local server by its socket (``localhost:/path``: MediaWiki's
    MySQL driver takes what follows ``:/`` as a socket path)."""
    return f"localhost:{socket}"


# --------------------------------------------------------------------------
# The installer
# --------------------------------------------------------------------------


def install_argv(app: dict[str, Any], passfile: str, confpath: str) -> list[str]:
    """``php maintenance/install.php ...`` (run in the document root, in the chroot).

    The admin's password is read from ``passfile``; the generated LocalSettings.php
    goes to ``confpath`` (not the site: webarch completes it and puts it in place
    whole).  No secret is on this command line.
    """
    return [
        app["php"], "-d", "display_errors=stderr", "maintenance/install.php",
        "--dbtype=mysql", f"--dbserver={db_server(app['socket'])}",
        f"--dbname={app['database']}", f"--dbuser={app['account']}", "--dbpass=",
        f"--server={app['url']}", "--scriptpath=", "--lang=en",
        f"--passfile={passfile}", f"--confpath={confpath}",
        "--", app["title"] or app["url"], app["admin"],
    ]  # fmt: skip


def update_argv(app: dict[str, Any]) -> list[str]:
    """``php maintenance/update.php --quick`` (after an install over existing tables)."""
    return [app["php"], "-d", "display_errors=stderr", "maintenance/update.php", "--quick"]


def admin_email_argv(app: dict[str, Any]) -> list[str]:
    """``php maintenance/resetUserEmail.php``: the admin's email, confirmed (the
    password is left as it is)."""
    return [app["php"], "-d", "display_errors=stderr", "maintenance/resetUserEmail.php",
            "--no-reset-password", "--", admin_name(app["admin"]), app["email"]]  # fmt: skip


def db_password(settings: str) -> str | None:
    """The ``$wgDBpassword`` a LocalSettings.php text sets (None when it sets none)."""
    found = _PASSWORD_LINE.findall(settings)
    return found[-1][1] if found else None


def settings_block(app: dict[str, Any]) -> str:
    """What webarch appends to the installer's LocalSettings.php."""
    url = php_string(app["url"])
    lines = [
        "",
        "# ---------------------------------------------------------------------",
        "# Added by webarch (the hosting's formula) at install; yours to change.",
        "# The database is reached by its socket as the account (unix_socket):",
        "# no password, here or anywhere.",
        '$wgDBpassword = "";',
        "# The site's URL, HTTPS only, and short URLs (/wiki/Page: the web",
        "# server maps /wiki/ to index.php).",
        f"$wgServer = {url};",
        f"$wgCanonicalServer = {url};",
        "$wgForceHTTPS = true;",
        '$wgScriptPath = "";',
        '$wgArticlePath = "/wiki/$1";',
        "$wgUsePathInfo = true;",
        *_mail_lines(app),
        "# Uploads into images/ (the web server runs no PHP from there).",
        "$wgEnableUploads = true;",
        "$wgFileExtensions = [ " + ", ".join(php_string(e) for e in FILE_EXTENSIONS) + " ];",
        "# Localisation and other caches as files, not in the database.",
        '$wgCacheDirectory = "$IP/cache";',
        "# No reports to mediawiki.org.",
        "$wgPingback = false;",
        "# Against spam: anonymous visitors read but neither edit nor create",
        "# accounts; the admin creates the users (Special:CreateAccount).",
        "$wgGroupPermissions['*']['edit'] = false;",
        "$wgGroupPermissions['*']['createaccount'] = false;",
    ]
    namespace = meta_namespace(app["title"] or "")
    if namespace:
        lines += ["# The project namespace (the title has characters it cannot hold).",
                  f"$wgMetaNamespace = {php_string(namespace)};"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _mail_lines(app: dict[str, Any]) -> list[str]:
    """The wiki's mail sender and contact: the account's email (the installer leaves
    them empty)."""
    if not app.get("email"):
        return []
    email = php_string(app["email"])
    return ["# The wiki's mail (password resets, notifications) is from the account.",
            f"$wgPasswordSender = {email};", f"$wgEmergencyContact = {email};"]  # fmt: skip


def local_settings(generated: str, app: dict[str, Any]) -> str:
    """The installer's LocalSettings.php with webarch's settings appended.

    ValueError when the installer wrote a database password (it never should:
    the install gets an empty one).
    """
    if not generated.lstrip().startswith("<?php"):
        raise ValueError(f"the installer's {SETTINGS} does not start with <?php")
    if db_password(generated):
        raise ValueError(f"the installer's {SETTINGS} holds a database password")
    return generated.rstrip("\n") + "\n" + settings_block(app)


def set_password_script(user: str, password: str) -> str:
    """PHP (read by ``php`` from standard input, in the document root) running
    MediaWiki's own ``maintenance/changePassword.php`` with its options in
    ``$argv``: the password is in this text only, never on a command line."""
    args = ("changePassword.php", f"--user={user}", f"--password={password}")
    argv = ", ".join(php_string(a) for a in args)
    return (
        "<?php\n"
        # PHP defines no STDIN/STDOUT/STDERR for a script read from standard input.
        "foreach ( [ 'STDIN' => 'r', 'STDOUT' => 'w', 'STDERR' => 'w' ] as $name => $mode ) {\n"
        "    if ( !defined( $name ) ) {\n"
        "        define( $name, fopen( 'php://' . strtolower( $name ), $mode ) );\n"
        "    }\n"
        "}\n"
        f"$argv = [ {argv} ];\n"
        "$argc = count( $argv );\n"
        "$_SERVER['argv'] = $argv;\n"
        "$_SERVER['argc'] = $argc;\n"
        "require 'maintenance/changePassword.php';\n"
    )


# --------------------------------------------------------------------------
# The database
# --------------------------------------------------------------------------


def connect_php(app: dict[str, Any]) -> str:
    """PHP opening the app's database as the account by the socket (errors throw)."""
    args = ", ".join(
        [php_string("localhost"), php_string(app["account"]), "''",
         php_string(app["database"]), "0", php_string(app["socket"])]
    )  # fmt: skip
    return (
        "mysqli_report( MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT );\n"
        f"$db = new mysqli( {args} );\n"
    )


def tables_script(app: dict[str, Any]) -> str:
    """PHP printing the tables of the app's database, one a line."""
    rows = "$db->query( 'SHOW TABLES' )->fetch_all()"
    return "<?php\n" + connect_php(app) + f'foreach ( {rows} as $row ) {{ echo $row[0], "\\n"; }}\n'


def run_sql_script(app: dict[str, Any], sql: str) -> str:
    """PHP running the statements ``sql`` in the app's database."""
    return (
        "<?php\n" + connect_php(app) + f"$db->multi_query( {php_string(sql)} );\n"
        "do {\n"
        "    $result = $db->store_result();\n"
        "    if ( $result ) { $result->free(); }\n"
        "} while ( $db->more_results() && $db->next_result() );\n"
    )


def schema_tables(schema: str) -> list[str]:
    """The tables the schema file creates, in its order."""
    return _CREATE.findall(schema)


def missing_tables_sql(schema: str, existing: set[str], options: str = TABLE_OPTIONS) -> str:
    """The schema's statements for the tables not in ``existing`` (``IF NOT EXISTS``,
    no table prefix, the installer's table options); '' when none is missing."""
    wanted = []
    for statement in _statements(schema):
        found = _CREATE.search(statement)
        if not found or found.group(1) in existing:
            continue
        text = statement.replace("CREATE TABLE /*_*/", "CREATE TABLE IF NOT EXISTS ", 1)
        wanted.append(text.replace("/*_*/", "").replace("/*$wgDBTableOptions*/", options) + ";")
    return "\n".join(wanted)


def foreign_tables(existing: list[str], schema: str) -> list[str]:
    """The tables of the database that are not MediaWiki's core tables."""
    core = set(schema_tables(schema))
    return sorted(t for t in existing if t not in core)


def _statements(sql: str) -> list[str]:
    """The statements of an SQL file (``--`` comment lines dropped; ``;`` ends one at
    the end of a line)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in re.split(r";[ \t]*(?:\n|$)", "\n".join(lines)) if s.strip()]
