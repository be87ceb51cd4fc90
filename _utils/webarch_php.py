"""
The account model: PHP-FPM, a pool per account (keys with their defaults, validators).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import Key

PHP_PM = ("ondemand", "dynamic", "static")

#: PHP extensions switched off in PHP-FPM: System V IPC is one namespace for
#: the whole host (chroots do not separate it), and shm_attach() makes 0666
#: segments unless told otherwise: one account's pool could read another's.
PHP_FPM_MODULES_OFF = ("shmop", "sysvmsg", "sysvsem", "sysvshm")

PHP_FUNCTION_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")

PHP_INI_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")

# php.ini keys webarch sets itself (from the keys above, or for isolation).
PHP_KEYS_SET_BY_WEBARCH = frozenset(
    {
        "memory_limit", "upload_max_filesize", "post_max_size", "max_execution_time",
        "disable_functions", "open_basedir", "error_log", "log_errors", "upload_tmp_dir",
        "session.save_path", "sys_temp_dir", "sendmail_path", "mail.log", "doc_root",
        "user_dir", "extension", "zend_extension", "extension_dir", "auto_prepend_file",
        "auto_append_file", "include_path", "allow_url_include", "expose_php",
        "mysqli.default_socket", "pdo_mysql.default_socket", "user_ini.filename",
        "user_ini.cache_ttl",
    }
)  # fmt: skip


#: ``webarch:accounts:USERNAME:php``: the account's PHP-FPM pool.
PHP_KEYS = check.key_table(
    Key(
        "pm",
        check.one_of(PHP_PM),
        "ondemand",
        "How the pool manages its processes: ``ondemand`` starts them for requests "
        "(no process while idle), ``dynamic`` and ``static`` keep some running.",
    ),
    Key("max_children", "integer 1-64", 2, "The most PHP processes of the account at once."),
    Key(
        "process_idle_timeout",
        "seconds 1-3600",
        10,
        "With ``ondemand``: how long an idle process is kept.",
    ),
    Key("memory_limit", "size 16M-4G", "256M", "PHP's ``memory_limit``."),
    Key(
        "upload_max_filesize",
        "size 1M-2G",
        "32M",
        "The largest file an upload may hold, by default: the account may change it for a "
        "directory in a ``.user.ini`` file, up to ``post_max_size``.",
    ),
    Key(
        "post_max_size",
        "size 1M-2G",
        "32M",
        "The largest request body (the account cannot raise it); at least ``upload_max_filesize``.",
    ),
    Key("max_execution_time", "seconds 1-3600", 60, "PHP's ``max_execution_time``."),
    Key(
        "request_terminate_timeout",
        "seconds 0-3600",
        300,
        "PHP-FPM kills a request that runs longer: ``0`` is off, any other value is "
        "at least ``max_execution_time``.",
    ),
    Key(
        "disable_functions",
        "list of PHP function names",
        ["exec", "passthru", "shell_exec", "system", "proc_open", "popen", "pcntl_exec"],
        "PHP functions the pool does not have. A list given here replaces the default.",
    ),
    Key(
        "open_basedir",
        "``true``, ``false`` or a list of paths",
        False,
        "PHP's ``open_basedir``: off (``false``) by default, since the pool already runs "
        "chrooted to the account's own files (and PHP's realpath cache is off whenever "
        "``open_basedir`` is set: WordPress pages cost twice the CPU). ``true``: the "
        "home, ``/tmp`` and ``/usr/share/php`` only (always allowed when it is on); "
        "a list: those plus the listed absolute paths inside the home.",
    ),
    Key(
        "admin_values",
        "mapping",
        {},
        "Further ``php_admin_value`` settings, ``DIRECTIVE: VALUE`` (a string or an "
        'integer: plain ASCII, no ``" \\ $ % ;``). The directives webarch sets '
        "itself (``memory_limit``, ``open_basedir``, ``error_log``, ...) are refused.",
    ),
    Key(
        "admin_flags",
        "mapping",
        {},
        "Further ``php_admin_flag`` settings, ``DIRECTIVE: true`` or ``false``; "
        "refused likewise for the directives webarch sets itself.",
    ),
)

#: The pool settings when the account gives none.
PHP_DEFAULTS = check.defaults(PHP_KEYS)


def account_php(value: Any, home: str, path: list[str], problems: check.Problems) -> dict:
    """Validate an account's PHP-FPM pool settings; return them with defaults."""
    _, get = check.block(value, PHP_KEYS, path, problems)
    php = {
        "pm": check.choice(get("pm"), [*path, "pm"], problems, PHP_PM),
        "max_children": check.integer(
            get("max_children"), [*path, "max_children"], problems, 1, 64
        ),
        "process_idle_timeout": check.integer(
            get("process_idle_timeout"), [*path, "process_idle_timeout"], problems, 1, 3600
        ),
        "memory_limit": check.size(
            get("memory_limit"), [*path, "memory_limit"], problems, "16M", "4G"
        ),
        "upload_max_filesize": check.size(
            get("upload_max_filesize"), [*path, "upload_max_filesize"], problems, "1M", "2G"
        ),
        "post_max_size": check.size(
            get("post_max_size"), [*path, "post_max_size"], problems, "1M", "2G"
        ),
        "max_execution_time": check.integer(
            get("max_execution_time"), [*path, "max_execution_time"], problems, 1, 3600
        ),
        "request_terminate_timeout": check.integer(
            get("request_terminate_timeout"),
            [*path, "request_terminate_timeout"],
            problems,
            0,
            3600,
        ),
        "disable_functions": _php_functions(
            get("disable_functions"), [*path, "disable_functions"], problems
        ),
        "open_basedir": _open_basedir(get("open_basedir"), home, [*path, "open_basedir"], problems),
        "admin_values": _php_ini(get("admin_values"), [*path, "admin_values"], problems, False),
        "admin_flags": _php_ini(get("admin_flags"), [*path, "admin_flags"], problems, True),
    }
    upload, post = php["upload_max_filesize"], php["post_max_size"]
    if upload and post and check.size_bytes(post) < check.size_bytes(upload):
        problems.add([*path, "post_max_size"], f"must be at least upload_max_filesize ({upload})")
    run, kill = php["max_execution_time"], php["request_terminate_timeout"]
    if run and kill and kill < run:
        problems.add(
            [*path, "request_terminate_timeout"],
            f"must be 0 (off) or at least max_execution_time ({run})",
        )
    return php


def _php_functions(value: Any, path: list[str], problems: check.Problems) -> list[str]:
    """A list of PHP function names."""
    if not isinstance(value, list):
        problems.add(path, "must be a list of PHP function names")
        return []
    names = []
    for index, name in enumerate(value):
        if not isinstance(name, str) or not PHP_FUNCTION_RE.fullmatch(name):
            problems.add([*path, str(index)], f"{check.describe(name)} is not a PHP function name")
        elif name not in names:
            names.append(name)
    return names


def _open_basedir(value: Any, home: str, path: list[str], problems: check.Problems) -> list[str]:
    """open_basedir: off (``false``, the default) or the paths PHP may open.

    The pool already runs chrooted to the account's own tree, so open_basedir
    adds little there and costs much: PHP switches its realpath cache off for
    every request that has one (WordPress's front page took twice the CPU).
    ``true`` turns it on for the home, /tmp and /usr/share/php; a list turns it
    on for those plus the listed paths inside the home.
    """
    if value is False or value is None:
        return []
    if value is True:
        value = []
    if not isinstance(value, list):
        problems.add(path, "must be true, false or a list of paths inside the account's home")
        return []
    extra = []
    for index, item in enumerate(value):
        ipath = [*path, str(index)]
        if not isinstance(item, str) or not check.ABS_PATH_RE.fullmatch(item) or "/." in item:
            problems.add(ipath, f"{check.describe(item)} must be an absolute path")
        elif not (item + "/").startswith(home + "/"):
            problems.add(ipath, f"{check.describe(item)} must be inside the account's home {home}")
        else:
            extra.append(item)
    return [home, "/tmp", "/usr/share/php", *[e for e in extra if e != home]]


def _php_ini(value: Any, path: list[str], problems: check.Problems, flags: bool) -> dict:
    """Extra php_admin_value (or php_admin_flag) settings: KEY -> value."""
    found: dict[str, Any] = {}
    for key, item in check.mapping(value, path, problems).items():
        ipath = [*path, str(key)]
        if not isinstance(key, str) or not PHP_INI_KEY_RE.fullmatch(key) or len(key) > 64:
            problems.add(ipath, "is not a php.ini directive name")
        elif key in PHP_KEYS_SET_BY_WEBARCH:
            problems.add(ipath, "is set by webarch (use the account's php keys)")
        elif flags:
            checked = check.boolean(item, ipath, problems)
            if checked is not None:
                found[key] = "on" if checked else "off"
        elif isinstance(item, bool) or not isinstance(item, (str, int)):
            problems.add(ipath, "must be a string or an integer")
        elif not check.config_text_ok(str(item)) or ";" in str(item) or len(str(item)) > 500:
            problems.add(ipath, check.CONFIG_TEXT_MESSAGE + " ;")
        else:
            found[key] = str(item)
    return found


def pool_socket(name: str, key: str) -> str:
    """The PHP-FPM socket of account ``name``: a name that does not tell the account.

    Every process on the host sees every bound unix socket path in
    /proc/net/unix, chrooted accounts included: ``webarch-alice.sock`` would
    list the other accounts.  The name is keyed with a host secret, so that it
    cannot be guessed from a list of candidate names either.
    """
    digest = hmac.new(key.encode(), f"webarch-pool:{name}".encode(), hashlib.sha256)
    return f"/run/php/webarch-{digest.hexdigest()[:20]}.sock"


def adopted_listen(socket: str) -> str:
    """The pool's ``listen`` address when systemd holds its socket.

    The master adopts the socket systemd passes it (``FPM_SOCKETS=ADDRESS=3``:
    the pool whose ``listen`` is ADDRESS takes fd 3) and, when it exits,
    removes the file named by ADDRESS: so ADDRESS is a name of its own,
    never bound, and the socket's file stays for the next start.
    """
    return socket.removesuffix(".sock") + ".adopted"


def masters(names: list[str]) -> dict[str, list[str]]:
    """The PHP-FPM masters of accounts ``names``: their services and sockets (units)."""
    services = [paths.fpm_unit(name) for name in names]
    return {
        "services": services,
        "sockets": [unit.removesuffix(".service") + ".socket" for unit in services],
    }


#: PHP's version on each Debian release (its packages are named after it).
PHP_VERSIONS = {12: "8.2", 13: "8.4"}


def php_version(osmajorrelease: int) -> str:
    """Return the PHP version Debian ships on ``osmajorrelease``."""
    try:
        return PHP_VERSIONS[int(osmajorrelease)]
    except (KeyError, ValueError, TypeError):
        raise check.UnsupportedRelease(
            f"webarch supports Debian {', '.join(map(str, PHP_VERSIONS))}, not {osmajorrelease!r}"
        ) from None


#: PHP extension packages (``php<version>-NAME``) beside FPM and the CLI: the
#: MariaDB drivers, and what the site types' applications need (Matomo,
#: MediaWiki, WordPress): xml (dom, simplexml, xmlreader/writer, xsl), mbstring,
#: gd, curl and intl.  Each is on for FPM and the CLI (the chroots copy
#: /etc/php/*/cli, so an account's shell has the same extensions).
PHP_EXTENSION_PACKAGES = ("mysql", "xml", "mbstring", "gd", "curl", "intl")


def packages(php_version: str) -> list[str]:
    """The Debian packages of PHP ``php_version``: FPM, the CLI and the extensions."""
    return [f"php{php_version}-{name}" for name in ("fpm", "cli", *PHP_EXTENSION_PACKAGES)]


def fpm(php_version: str) -> dict:
    """PHP-FPM's server-wide files and service on that PHP version."""
    pools = f"{paths.fpm_dir(php_version)}/pool.d"
    return {
        "service": f"php{php_version}-fpm",
        "conf_dir": f"{paths.fpm_dir(php_version)}/conf.d",
        # Debian's own pool (as www-data, outside any chroot): removed.
        "default_pool": f"{pools}/www.conf",
        # The pool no one can reach: php-fpm needs one.
        "idle_pool": f"{pools}/000-webarch-idle.conf",
        "idle_socket": paths.PHP_IDLE_SOCKET,
    }
