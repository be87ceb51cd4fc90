"""
The webarch account model.

Reads the ``webarch`` pillar (server-wide settings plus ``accounts`` keyed by
username, each with ``sites`` keyed by site name), merges the defaults,
validates the whole of it and returns normalised data that every SLS file of
the formula renders from.

Validation collects every problem before it reports: each one names its pillar
path (``webarch:accounts:alice:sites:www:server_name``) and what is wrong.  When
anything is wrong, :py:func:`config` raises, so rendering fails and nothing on
the host changes.

The pure logic (:py:func:`build_model`) takes the pillar and a snapshot of the
host's users and groups as plain arguments, so it is unit-tested without Salt.
"""

from __future__ import annotations

import base64
import binascii
import grp
import hashlib
import hmac
import json
import pwd
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

try:
    from salt.exceptions import CommandExecutionError
except ImportError:  # pragma: no cover - only without Salt installed

    class CommandExecutionError(Exception):  # type: ignore[no-redef]
        """Stand-in when Salt is not importable."""


__virtualname__ = "webarch"

# Where webarch records the Unix accounts it created or took over.  A user that
# exists on the host but is not listed here is never touched by webarch.
REGISTRY_PATH = "/var/lib/webarch/managed-accounts"

REGISTRY_HEADER = "# Accounts created or taken over by webarch (managed by Salt)."

HOME_BASE = "/home"
CHROOT_BASE = "/chroots"
ARCHIVE_DIR = "/var/backups/webarch"
WEB_USER = "www-data"
#: What a site's .htaccess may hold besides the AllowOverride groups AuthConfig,
#: Indexes and Limit (and Options=Indexes,MultiViews): enough for WordPress-style
#: rewrites, error documents, headers and content types.  Not SetHandler,
#: AddHandler, Action, ProxyFCGI*, php_value, Include, Options +FollowSymLinks.
HTACCESS_DIRECTIVES = (
    "RewriteEngine", "RewriteBase", "RewriteCond", "RewriteRule", "RewriteOptions",
    "ErrorDocument", "Header", "RequestHeader", "AddType", "AddCharset", "AddDefaultCharset",
    "AddEncoding", "AddLanguage", "DefaultLanguage", "AddOutputFilterByType", "FileETag",
    "Redirect", "RedirectMatch", "RedirectPermanent", "RedirectTemp", "SetEnv", "UnsetEnv",
    "SetEnvIf", "SetEnvIfNoCase", "BrowserMatch", "BrowserMatchNoCase",
)  # fmt: skip
#: Apache modules the web stack uses (a2enmod names) and must not use.
APACHE_MODULES = (
    "mpm_event", "proxy", "proxy_fcgi", "ssl", "http2", "headers", "rewrite", "expires",
    "md", "socache_shmcb", "setenvif", "auth_basic", "authn_file", "authz_user", "alias",
    "mime", "dir", "filter", "deflate",
)  # fmt: skip
#: Off: the other MPMs (mpm_itk too: an imported server of the old platform may
#: have it), and the ways to run code as Apache's own user.
APACHE_MODULES_OFF = (
    "mpm_prefork", "mpm_worker", "mpm_itk", "cgi", "cgid", "userdir", "include", "suexec",
)  # fmt: skip
APACHE_AUTH_DIR = "/etc/apache2/webarch-auth"
LOG_MAP_PATH = "/etc/webarch/log-map"
LOG_MAP_HEADER = "# Managed by Salt (webarch): site name -> account, for webarch-log-split."

#: MariaDB: reached through its socket only (TCP only on 127.0.0.1, if asked).
MARIADB_SOCKET = "/run/mysqld/mysqld.sock"
MARIADB_CONF = "/etc/mysql/mariadb.conf.d/90-webarch.cnf"
DB_DUMP_MAP_PATH = "/etc/webarch/db-dumps"
DB_DUMP_MAP_HEADER = (
    "# Managed by Salt (webarch): ACCOUNT DATABASE, dumped nightly by webarch-db-dump."
)
DB_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")
#: Databases of the server itself: never an account's, whatever the prefix rule.
DB_NAMES_RESERVED = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
#: What an account gets on each of its databases unless it says otherwise.
DB_PRIVILEGES_DEFAULT = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER",
    "CREATE TEMPORARY TABLES", "LOCK TABLES", "EXECUTE", "CREATE VIEW", "SHOW VIEW",
    "CREATE ROUTINE", "ALTER ROUTINE", "EVENT", "TRIGGER", "REFERENCES",
)  # fmt: skip
#: The database-level privileges of MariaDB an account may have.  Not DELETE
#: HISTORY: with all of these it makes ALL PRIVILEGES, which saltext-mysql's
#: mysql_grants.present cannot match against the list it was given.
DB_PRIVILEGES_KNOWN = DB_PRIVILEGES_DEFAULT
#: Privileges MariaDB knows that are never an account's: server-wide or delegating.
DB_PRIVILEGES_REFUSED = frozenset(
    " ".join(name.split())
    for name in """
    ALL|ALL PRIVILEGES|GRANT OPTION|USAGE|PROXY|FILE|SUPER|PROCESS|RELOAD|SHUTDOWN|
    CREATE USER|SHOW DATABASES|CREATE TABLESPACE|REPLICATION CLIENT|REPLICATION SLAVE|
    REPLICATION REPLICA|BINLOG ADMIN|BINLOG MONITOR|BINLOG REPLAY|CONNECTION ADMIN|
    FEDERATED ADMIN|READ_ONLY ADMIN|REPLICATION MASTER ADMIN|REPLICATION SLAVE ADMIN|
    SET USER|SLAVE MONITOR|REPLICA MONITOR
    """.split("|")
)

#: Mail: accounts hand mail to Exim through one socket (a gate that runs
#: ``exim4 -bs`` as the connecting account), reached in each chroot at the same path.
MAIL_GATE_DIR = "/run/webarch-mail"
MAIL_SOCKET = f"{MAIL_GATE_DIR}/submit.sock"
MAIL_ACCOUNTS_PATH = "/etc/webarch/mail-accounts"
MAIL_ACCOUNTS_HEADER = "# Managed by Salt (webarch): ACCOUNT HOME, for webarch-mail-gate and -log."
MAIL_LIMITS_PATH = "/etc/exim4/webarch-mail-limits"
MAIL_KEYS: dict[str, Any] = {"smarthost": str, "rate_limit": int}
ACCOUNT_MAIL_KEYS: dict[str, Any] = {"sender": str, "rate_limit": int}
SMARTHOST_RE = re.compile(r"^(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?:::(?P<port>[0-9]{1,5}))?$")
#: Password notifications: which secret, the marker the account can read.
NOTIFY_KINDS = {"ssh": ".notify_passwd", "mariadb": ".notify_mariadb"}
#: Where webarch_notify keeps a password until it is mailed (its _spool_path).
NOTIFY_SPOOL_DIR = "/var/lib/webarch/notify/spool"
NOTIFY_KEYS: dict[str, Any] = {
    "from": str,
    "from_name": str,
    "reply_to": str,
    "subject_tag": str,
    "signature": str,
    "ssh_host": str,
    "help_url": str,
    "via": ("auto", "reactor", "direct"),
}
RESET_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,64}$")

#: System V shared memory and message queues are one namespace for the whole
#: host: chroots do not separate them, and a segment made with group/other
#: permissions is readable by every account.  Unless the pillar asks for them
#: (sysv_ipc: true), no new ones can be made (0 pages of SysV shared memory,
#: 0 message queues).  Apache, PHP-FPM, MariaDB and Exim use none.
SYSV_IPC_OFF = {"kernel.shmall": 0, "kernel.msgmni": 0}

#: Every present account is in this group: sshd chroots its members.
ACCOUNT_GROUP = "webarch"

# Server paths webarch creates must not lie in these trees (a chroot base inside
# a home would put one account's world under another's files).
FORBIDDEN_PATH_PREFIXES = (
    HOME_BASE,
    "/usr",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var/tmp",
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/root",
    "/srv/formula",
)
ABS_PATH_RE = re.compile(r"^(/[A-Za-z0-9_][A-Za-z0-9._-]{0,63})+$")

HSTS_DEFAULT = 31536000
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
HEADERS_SET_BY_WEBARCH = frozenset({"strict-transport-security", "x-robots-tag"})
# Text that is safe inside a double-quoted Apache or PHP-FPM value: printable
# ASCII without quotes, backslashes, ${...} expansion or %{...} formats.
CONFIG_TEXT_RE = re.compile(r"^[\x20-\x7e]*$")
CONFIG_TEXT_FORBIDDEN = frozenset('"\\$%')
URL_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!&'()*+,;=:@/%-]*$")
URL_RE = re.compile(
    r"^https?://(?P<host>[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/[A-Za-z0-9._~!&'()*+,;=:@/%-]*)?$"
)
AUTH_USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
PASSWORD_HASH_RE = re.compile(r"^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$")
ACME_DEFAULT = "https://acme-v02.api.letsencrypt.org/directory"

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
SSH_COMMENT_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,198}[\x21-\x7e])?$")

USERNAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
SITE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?$")
PATH_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
DISPLAY_NAME_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f:,=\\\"'<>]")

# Debian's range for ordinary users (adduser.conf FIRST_UID / LAST_UID).
ID_MIN = 1000
ID_MAX = 59999

SITE_TYPES = ("static", "php", "wordpress", "mediawiki", "matomo")
SHELLS = ("/bin/bash", "/bin/sh")
STATES = ("present", "absent")

# Names no hosting account may take: Debian's system users and groups, the
# formula's own groups, and role addresses that mail to an account would hijack.
RESERVED_USERNAMES = frozenset(
    """
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup
    list irc gnats nobody nogroup messagebus sshd mysql mariadb debian-exim
    postfix _apt systemd-network systemd-resolve systemd-timesync
    systemd-journal systemd-coredump polkitd adm tty disk kmem dialout fax
    voice cdrom floppy tape sudo audio dip operator src shadow utmp video
    sasl plugdev staff users input sgx kvm render netdev crontab ssl-cert
    admin administrator hostmaster postmaster webmaster abuse security noc
    ftp www web webarch salt apache apache2 httpd nginx php php-fpm chroot
    chroots phpfpm sftponly sshonly localhost support info
    """.split()
)


# --------------------------------------------------------------------------
# The pure model
# --------------------------------------------------------------------------


class HostUsers(NamedTuple):
    """A snapshot of the host's users and groups, and webarch's registry.

    (A NamedTuple, not a dataclass: Salt's loader imports modules without
    registering them in ``sys.modules``, which dataclasses need.)
    """

    users: dict[str, int]
    groups: dict[str, int]
    managed: frozenset[str] = frozenset()
    #: A host secret (/etc/machine-id) that keys the names of the pool sockets.
    socket_key: str = ""

    def uid_owner(self, uid: int) -> str | None:
        """Return the name of the host user with ``uid``, if any."""
        return next((n for n, u in self.users.items() if u == uid), None)

    def gid_owner(self, gid: int) -> str | None:
        """Return the name of the host group with ``gid``, if any."""
        return next((n for n, g in self.groups.items() if g == gid), None)


class ModelError(ValueError):
    """The pillar is invalid; ``problems`` lists every ``path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"webarch pillar is invalid ({len(problems)} problem"
            f"{'' if len(problems) == 1 else 's'}); nothing was changed:\n{lines}"
        )


class _Problems:
    """Collects problems, each under its pillar path."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: list[str], message: str) -> None:
        self.items.append(f"{':'.join(path)}: {message}")


def _describe(value: Any) -> str:
    """Return a short, safe rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(data: dict, allowed: dict[str, Any], path: list[str], problems: _Problems) -> None:
    """Report every key of ``data`` that the schema does not know."""
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            problems.add([*path, str(key)], f"unknown key (known keys: {known})")


def _mapping(value: Any, path: list[str], problems: _Problems) -> dict:
    """Return ``value`` as a dict; ``None`` counts as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, not {type(value).__name__}")
        return {}
    return value


def _string(value: Any, path: list[str], problems: _Problems, max_len: int = 253) -> str | None:
    """Return ``value`` if it is a non-empty string of at most ``max_len``."""
    if not isinstance(value, str):
        problems.add(path, f"must be a string, not {type(value).__name__}")
        return None
    if not value:
        problems.add(path, "must not be empty")
        return None
    if len(value) > max_len:
        problems.add(path, f"must be at most {max_len} characters long")
        return None
    return value


def _integer(value: Any, path: list[str], problems: _Problems, low: int, high: int) -> int | None:
    """Return ``value`` if it is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"must be an integer, not {_describe(value)}")
        return None
    if not low <= value <= high:
        problems.add(path, f"must be between {low} and {high}, not {value}")
        return None
    return value


def _choice(
    value: Any, path: list[str], problems: _Problems, choices: tuple[str, ...]
) -> str | None:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        problems.add(path, f"must be one of {', '.join(choices)}, not {_describe(value)}")
        return None
    return value


def dns_name_problem(name: str) -> str | None:
    """Return what is wrong with ``name`` as a host name, or ``None``."""
    if not name.isascii():
        return "must be ASCII (write internationalised names in punycode, xn--...)"
    if name != name.lower():
        return "must be lower case"
    if len(name) > 253:
        return "must be at most 253 characters long"
    labels = name.split(".")
    if len(labels) < 2:
        return "must be a fully qualified domain name (at least two labels)"
    for label in labels:
        if not DNS_LABEL_RE.fullmatch(label):
            return f"label {label!r} must be 1-63 letters, digits or inner hyphens"
    if labels[-1].isdigit():
        return "must not end in a numeric label"
    return None


def _dns_name(value: Any, path: list[str], problems: _Problems) -> str | None:
    """Return ``value`` if it is a valid fully qualified host name."""
    text = _string(value, path, problems)
    if text is None:
        return None
    problem = dns_name_problem(text)
    if problem:
        problems.add(path, f"{_describe(text)} {problem}")
        return None
    return text


def _email(value: Any, path: list[str], problems: _Problems) -> str | None:
    """Return ``value`` if it is a plain ``local@domain`` address."""
    text = _string(value, path, problems, max_len=254)
    if text is None:
        return None
    local, sep, domain = text.rpartition("@")
    if not sep or not EMAIL_LOCAL_RE.fullmatch(local) or ".." in local or dns_name_problem(domain):
        problems.add(path, f"{_describe(text)} is not a valid email address")
        return None
    return text


def _display_name(value: Any, path: list[str], problems: _Problems) -> str | None:
    """Return ``value`` if it is safe as a GECOS display name."""
    text = _string(value, path, problems, max_len=100)
    if text is None:
        return None
    if DISPLAY_NAME_FORBIDDEN_RE.search(text):
        problems.add(
            path,
            "must not contain control characters, quotes, backslashes or : , = < >",
        )
        return None
    return text


def _relative_path(value: Any, path: list[str], problems: _Problems) -> str | None:
    """Return ``value`` if it is a relative path that cannot climb out."""
    if value is None or value == "":
        return ""
    text = _string(value, path, problems, max_len=200)
    if text is None:
        return None
    parts = text.strip("/").split("/") if not text.startswith("/") else None
    if parts is None:
        problems.add(path, f"{_describe(text)} must be relative to the site directory")
        return None
    for part in parts:
        if part in (".", "..") or not PATH_PART_RE.fullmatch(part):
            problems.add(
                path,
                f"{_describe(text)} must stay inside the site directory: each part "
                "letters, digits, . _ - (no '..', no hidden parts)",
            )
            return None
    return "/".join(parts)


def _acme(value: Any, admin_email: str | None, problems: _Problems) -> dict:
    """ACME settings for mod_md: the CA's directory URL, contact, extra trusted CA."""
    path = ["webarch", "acme"]
    data = _mapping(value, path, problems)
    _check_keys(data, {"directory": str, "contact": str, "ca_file": str}, path, problems)
    directory = _string(data.get("directory", ACME_DEFAULT), [*path, "directory"], problems)
    if directory is not None and (_url_problem(directory) or not config_text_ok(directory)):
        problems.add([*path, "directory"], f"{_describe(directory)} must be an http(s) URL")
        directory = None
    contact = _email(data["contact"], [*path, "contact"], problems) if "contact" in data else None
    ca_file = data.get("ca_file")
    if ca_file is not None and (
        not isinstance(ca_file, str) or not ABS_PATH_RE.fullmatch(ca_file) or "/." in ca_file
    ):
        problems.add([*path, "ca_file"], f"{_describe(ca_file)} must be an absolute path")
        ca_file = None
    return {"directory": directory, "contact": contact or admin_email, "ca_file": ca_file}


def _server_settings(pillar: dict, problems: _Problems, osmajorrelease: int = 12) -> dict:
    """Validate and default the server-wide settings."""
    base = ["webarch"]
    hostname = pillar.get("hostname")
    admin_email = pillar.get("admin_email")
    reserved = pillar.get("reserved_usernames", [])
    if not isinstance(reserved, list) or not all(isinstance(r, str) for r in reserved):
        problems.add([*base, "reserved_usernames"], "must be a list of strings")
        reserved = []
    return {
        "hostname": _dns_name(hostname, [*base, "hostname"], problems)
        if hostname is not None
        else None,
        "admin_email": _email(admin_email, [*base, "admin_email"], problems)
        if admin_email is not None
        else None,
        "reserved_usernames": sorted(set(reserved)),
        "chroot_base": _server_path(pillar, "chroot_base", CHROOT_BASE, problems),
        "archive_dir": _server_path(pillar, "archive_dir", ARCHIVE_DIR, problems),
        "web_user": WEB_USER,
        "log_retention_days": _integer(
            pillar.get("log_retention_days", 14), [*base, "log_retention_days"], problems, 1, 3650
        ),
        "sysctls": {}
        if _boolean(pillar.get("sysv_ipc", False), [*base, "sysv_ipc"], problems)
        else dict(SYSV_IPC_OFF),
        "php_version": php_version(osmajorrelease),
        "mariadb": _mariadb_settings(pillar.get("mariadb"), problems),
        "mail": {
            **_mail_settings(pillar.get("mail"), problems),
            "daemon": exim_queue_only(osmajorrelease),
        },
        "notify": _notify_settings(
            pillar.get("notify"),
            hostname,
            admin_email if isinstance(admin_email, str) and "@" in admin_email else None,
            problems,
        ),
        "acme": _acme(
            pillar.get("acme"),
            admin_email if isinstance(admin_email, str) and "@" in admin_email else None,
            problems,
        ),
    }


def _mariadb_settings(value: Any, problems: _Problems) -> dict:
    """Server-wide MariaDB settings: TCP on 127.0.0.1 or not, the name prefix rule, dumps."""
    path = ["webarch", "mariadb"]
    data = _mapping(value, path, problems)
    _check_keys(data, MARIADB_KEYS, path, problems)
    get = {**MARIADB_KEYS, **data}.get
    return {
        "listen_localhost": _boolean(
            get("listen_localhost"), [*path, "listen_localhost"], problems
        ),
        "require_prefix": _boolean(get("require_prefix"), [*path, "require_prefix"], problems),
        "dump_retention_days": _integer(
            get("dump_retention_days"), [*path, "dump_retention_days"], problems, 1, 3650
        ),
        "socket": MARIADB_SOCKET,
        "conf": MARIADB_CONF,
    }


def _mail_settings(value: Any, problems: _Problems) -> dict:
    """Server-wide mail: Exim's smarthost (or direct delivery) and the default send limit."""
    path = ["webarch", "mail"]
    data = _mapping(value, path, problems)
    _check_keys(data, MAIL_KEYS, path, problems)
    smarthost = data.get("smarthost")
    if smarthost is not None:
        smarthost = _smarthost(smarthost, [*path, "smarthost"], problems)
    rate_limit = data.get("rate_limit")
    if rate_limit is not None:
        rate_limit = _integer(rate_limit, [*path, "rate_limit"], problems, 1, 100000)
    return {
        "smarthost": smarthost,
        "rate_limit": rate_limit,
        "socket": MAIL_SOCKET,
        "gate_dir": MAIL_GATE_DIR,
        "accounts_path": MAIL_ACCOUNTS_PATH,
        "limits_path": MAIL_LIMITS_PATH,
    }


def exim_queue_only(osmajorrelease: int) -> dict:
    """The /etc/default/exim4 line that runs Exim's daemon without an SMTP listener."""
    if osmajorrelease <= 12:
        return {"pattern": "^QUEUERUNNER=.*$", "line": "QUEUERUNNER='queueonly'"}
    # Debian 13's exim4.service runs `exim4 $EXIMSERVICE` (default -bdf -q30m).
    return {"pattern": "^EXIMSERVICE=.*$", "line": "EXIMSERVICE='-q30m'"}


def _smarthost(value: Any, path: list[str], problems: _Problems) -> str | None:
    """Return ``host`` or ``host::port`` (Debian's dc_smarthost form) if valid."""
    text = _string(value, path, problems)
    match = SMARTHOST_RE.fullmatch(text) if text else None
    if text is None:
        return None
    host = match["host"] if match else ""
    port = int(match["port"]) if match and match["port"] else 25
    host_ok = host.startswith("[") or re.fullmatch(r"[0-9.]+", host) or not dns_name_problem(host)
    if not match or not host_ok or not 1 <= port <= 65535:
        problems.add(
            path, f"{_describe(text)} must be HOST or HOST::PORT (e.g. mx.example.org::587)"
        )
        return None
    return text


def _single_line(value: Any, path: list[str], problems: _Problems, max_len: int) -> str | None:
    """Return ``value`` if it is printable text on one line (safe in a mail header)."""
    text = _string(value, path, problems, max_len=max_len)
    if text is not None and not text.isprintable():
        problems.add(path, "must be one line of printable text")
        return None
    return text


def _notify_settings(value: Any, hostname: Any, admin_email: Any, problems: _Problems) -> dict:
    """How password notifications are written and sent (never from a request)."""
    path = ["webarch", "notify"]
    data = _mapping(value, path, problems)
    _check_keys(data, NOTIFY_KEYS, path, problems)
    host = hostname if isinstance(hostname, str) else None
    sender = data.get("from")
    signature = data.get("signature", "")
    if (
        not isinstance(signature, str)
        or len(signature) > 2000
        or not all(line.isprintable() for line in signature.splitlines())
    ):
        problems.add([*path, "signature"], "must be printable text of at most 2000 characters")
        signature = ""
    help_url = data.get("help_url")
    if help_url is not None and (not isinstance(help_url, str) or _url_problem(help_url)):
        problems.add([*path, "help_url"], f"{_describe(help_url)} must be an http(s) URL")
        help_url = None
    return {
        "from": _email(sender, [*path, "from"], problems) if sender is not None else admin_email,
        "from_name": _display_name(data["from_name"], [*path, "from_name"], problems)
        if "from_name" in data
        else None,
        "reply_to": _email(data["reply_to"], [*path, "reply_to"], problems)
        if "reply_to" in data
        else None,
        "subject_tag": _single_line(data["subject_tag"], [*path, "subject_tag"], problems, 60)
        if "subject_tag" in data
        else "",
        "signature": signature,
        "ssh_host": _dns_name(data["ssh_host"], [*path, "ssh_host"], problems)
        if "ssh_host" in data
        else host,
        "help_url": help_url,
        "via": _choice(data.get("via", "auto"), [*path, "via"], problems, NOTIFY_KEYS["via"]),
    }


def _account_mail(name: str, data: dict, server: dict, problems: _Problems) -> dict:
    """An account's mail: its fixed envelope sender, send limit, msmtp config and log."""
    path = ["webarch", "accounts", name, "mail"]
    mail = _mapping(data.get("mail"), path, problems)
    _check_keys(mail, ACCOUNT_MAIL_KEYS, path, problems)
    default = f"{name}@{server['hostname'] or 'localhost'}"
    sender = _email(mail["sender"], [*path, "sender"], problems) if "sender" in mail else default
    rate_limit = server["mail"]["rate_limit"]
    if "rate_limit" in mail:
        rate_limit = _integer(mail["rate_limit"], [*path, "rate_limit"], problems, 1, 100000)
    return {
        "sender": sender,
        "rate_limit": rate_limit,
        "log": f"{HOME_BASE}/{name}/logs/mail.log",
        "msmtprc": {
            "path": f"{server['chroot_base'] or CHROOT_BASE}/{name}/etc/msmtprc",
            "lines": [
                "# Managed by Salt (webarch): sendmail (msmtp) hands mail to the host's Exim.",
                "# The envelope sender is fixed by the host for this account.",
                "defaults",
                "auth off",
                "tls off",
                "syslog off",
                "",
                "account default",
                f"socket {MAIL_SOCKET}",
                "host localhost",
                f"domain {server['hostname'] or 'localhost'}",
                f"from {sender}",
                "allow_from_override off",
                "set_from_header auto",
            ],
        },
    }


def _account_notify(
    name: str, data: dict, email: str | None, ssh_password: bool | None, problems: _Problems
) -> dict:
    """Which passwords webarch generates and mails for the account, and their reset tokens."""
    path = ["webarch", "accounts", name]
    db_password = _boolean(data.get("db_password", False), [*path, "db_password"], problems)
    resets = _mapping(data.get("resets"), [*path, "resets"], problems)
    _check_keys(resets, dict.fromkeys(NOTIFY_KINDS, str), [*path, "resets"], problems)
    tokens = {}
    for kind in NOTIFY_KINDS:
        token = resets.get(kind, "")
        if isinstance(token, int) and not isinstance(token, bool):
            token = str(token)
        if token != "" and (not isinstance(token, str) or not RESET_TOKEN_RE.fullmatch(token)):
            problems.add(
                [*path, "resets", kind],
                f"{_describe(token)} must be 1-64 letters, digits or . _ : + - (e.g. a date)",
            )
            token = ""
        tokens[kind] = token
    if db_password and not email:
        problems.add(
            [*path, "db_password"], "needs the account's email: the password is sent there"
        )
    enabled = {"ssh": bool(ssh_password and email), "mariadb": bool(db_password and email)}
    home = f"{HOME_BASE}/{name}"
    return {
        "email": email,
        "db_password": bool(db_password),
        "kinds": {
            kind: {"token": tokens[kind], "marker": f"{home}/{marker}"}
            for kind, marker in NOTIFY_KINDS.items()
            if enabled[kind]
        },
        # Passwords still waiting to be mailed: deleted with the account.
        "spool": [f"{NOTIFY_SPOOL_DIR}/{name}.{kind}" for kind in NOTIFY_KINDS],
    }


def db_prefix(account: str) -> str:
    """The prefix every database name of ``account`` starts with (by default)."""
    return account.replace("-", "_") + "_"


def _databases(
    value: Any, account: str, require_prefix: bool, path: list[str], problems: _Problems
) -> dict[str, str]:
    """An account's databases: NAME -> present or absent (``null`` is present)."""
    found: dict[str, str] = {}
    prefix = db_prefix(account)
    for name, item in _mapping(value, path, problems).items():
        dpath = [*path, str(name)]
        if not isinstance(name, str) or not DB_NAME_RE.fullmatch(name):
            problems.add(
                dpath, "database name must be 1-64 lower-case letters, digits or underscores"
            )
            continue
        if name in DB_NAMES_RESERVED:
            problems.add(dpath, f"{name!r} is a database of the server itself")
            continue
        if require_prefix and (not name.startswith(prefix) or name == prefix):
            problems.add(dpath, f"database name must start with {prefix!r} (the account's prefix)")
            continue
        data = _mapping(item, dpath, problems)
        _check_keys(data, {"state": STATES}, dpath, problems)
        state = _choice(data.get("state", "present"), [*dpath, "state"], problems, STATES)
        if state:
            found[name] = state
    return dict(sorted(found.items()))


def _db_privileges(value: Any, path: list[str], problems: _Problems) -> list[str]:
    """Database-level privileges, normalised to MariaDB's spelling (upper case)."""
    if value is None:
        return list(DB_PRIVILEGES_DEFAULT)
    if not isinstance(value, list) or not value:
        problems.add(path, "must be a non-empty list of database privileges")
        return []
    found: list[str] = []
    for index, item in enumerate(value):
        ipath = [*path, str(index)]
        if not isinstance(item, str):
            problems.add(ipath, f"must be a string, not {type(item).__name__}")
            continue
        privilege = " ".join(item.upper().split())
        if privilege in DB_PRIVILEGES_REFUSED:
            problems.add(
                ipath,
                f"{privilege} is never granted to an account (server-wide or delegating)",
            )
        elif privilege == "DELETE HISTORY":
            problems.add(ipath, "DELETE HISTORY is not granted by webarch")
        elif privilege not in DB_PRIVILEGES_KNOWN:
            problems.add(
                ipath,
                f"{_describe(item)} is not a database privilege of MariaDB "
                f"(known: {', '.join(DB_PRIVILEGES_KNOWN)})",
            )
        elif privilege in found:
            problems.add(ipath, f"repeats {privilege}")
        else:
            found.append(privilege)
    return found


def _account_mariadb(name: str, data: dict, server: dict, problems: _Problems) -> dict:
    """An account's MariaDB user (``NAME@localhost``, unix_socket), databases, ~/.my.cnf."""
    path = ["webarch", "accounts", name]
    require_prefix = server["mariadb"]["require_prefix"] is not False
    databases = _databases(
        data.get("databases"), name, require_prefix, [*path, "databases"], problems
    )
    home = f"{HOME_BASE}/{name}"
    return {
        "user": name,
        "host": "localhost",
        "prefix": db_prefix(name),
        "privileges": _db_privileges(data.get("db_privileges"), [*path, "db_privileges"], problems),
        "databases": databases,
        "present": [db for db, state in databases.items() if state == "present"],
        "absent": [db for db, state in databases.items() if state == "absent"],
        "my_cnf": {
            "path": f"{home}/.my.cnf",
            "lines": [
                "# Managed by Salt (webarch): MariaDB logs you in by your Unix user.",
                "[client]",
                f"socket={MARIADB_SOCKET}",
                f"user={name}",
            ],
        },
        "backups": f"{home}/backups",
        "dump_dir": f"{home}/backups/mariadb",
    }


def _check_unique_databases(accounts: dict[str, dict], problems: _Problems) -> None:
    """Report database names that more than one account names."""
    seen: dict[str, str] = {}
    for name, account in accounts.items():
        for db in account["mariadb"]["databases"]:
            other = seen.setdefault(db, name)
            if other != name:
                problems.add(
                    ["webarch", "accounts", name, "databases", db],
                    f"is also a database of account {other!r}",
                )


def _server_path(pillar: dict, key: str, default: str, problems: _Problems) -> str | None:
    """Validate an absolute server path that webarch creates and owns."""
    path = ["webarch", key]
    value = pillar.get(key, default)
    text = _string(value, path, problems, max_len=200)
    if text is None:
        return None
    if not ABS_PATH_RE.fullmatch(text) or "/." in text:
        problems.add(
            path,
            f"{_describe(text)} must be an absolute path of letters, digits, . _ - "
            "(no '..', no hidden parts, no trailing slash)",
        )
        return None
    for prefix in FORBIDDEN_PATH_PREFIXES:
        if text == prefix or text.startswith(prefix + "/"):
            problems.add(path, f"{_describe(text)} must not be inside {prefix}")
            return None
    return text


def _site(account: str, site: str, data: Any, path: list[str], problems: _Problems) -> dict:
    """Validate one site and return its normalised form."""
    if not SITE_NAME_RE.fullmatch(site):
        problems.add(
            path,
            "site name must be 1-63 lower-case letters, digits or inner hyphens",
        )
    data = _mapping(data, path, problems)
    _check_keys(data, SITE_KEYS, path, problems)
    server_name = None
    if "server_name" in data:
        server_name = _dns_name(data["server_name"], [*path, "server_name"], problems)
    else:
        problems.add([*path, "server_name"], "is required")
    aliases_raw = data.get("aliases", [])
    aliases: list[str] = []
    if not isinstance(aliases_raw, list):
        problems.add([*path, "aliases"], "must be a list of host names")
    else:
        for index, alias in enumerate(aliases_raw):
            checked = _dns_name(alias, [*path, "aliases", str(index)], problems)
            if checked:
                aliases.append(checked)
    site_type = _choice(data.get("type", "php"), [*path, "type"], problems, SITE_TYPES)
    docroot = _relative_path(data.get("docroot"), [*path, "docroot"], problems)
    root = f"{HOME_BASE}/{account}/sites/{site}"
    return {
        "name": site,
        "type": site_type,
        "server_name": server_name,
        "aliases": aliases,
        "root": root,
        "docroot": f"{root}/{docroot}" if docroot else root,
        "suspended": _boolean(data.get("suspended", False), [*path, "suspended"], problems),
        "robots_deny": _boolean(data.get("robots_deny", False), [*path, "robots_deny"], problems),
        "hsts": _hsts(data.get("hsts", False), [*path, "hsts"], problems),
        "headers": _headers(data.get("headers"), [*path, "headers"], problems),
        "redirects": _redirects(data.get("redirects"), [*path, "redirects"], problems),
        "basic_auth": _basic_auth(data.get("basic_auth"), [*path, "basic_auth"], problems),
    }


CONFIG_TEXT_MESSAGE = 'must be printable ASCII without " \\ $ %'


def config_text_ok(text: str) -> bool:
    """Tell whether ``text`` can stand in a double-quoted config value as it is."""
    return bool(CONFIG_TEXT_RE.fullmatch(text)) and not CONFIG_TEXT_FORBIDDEN & set(text)


def _hsts(value: Any, path: list[str], problems: _Problems) -> int:
    """HSTS: false (off), true (one year) or a max-age in seconds."""
    if value is False:
        return 0
    if value is True:
        return HSTS_DEFAULT
    checked = _integer(value, path, problems, 0, 2 * HSTS_DEFAULT)
    return checked or 0


def _headers(value: Any, path: list[str], problems: _Problems) -> dict[str, str]:
    """Extra response headers: NAME -> VALUE, both safe for Apache's config."""
    headers: dict[str, str] = {}
    for name, text in _mapping(value, path, problems).items():
        hpath = [*path, str(name)]
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            problems.add(hpath, "header name must be 1-64 letters, digits or hyphens")
            continue
        if name.lower() in HEADERS_SET_BY_WEBARCH:
            problems.add(hpath, "is set by webarch (use the site's own keys)")
            continue
        checked = _string(text, hpath, problems, max_len=1000)
        if checked is not None and not config_text_ok(checked):
            problems.add(hpath, CONFIG_TEXT_MESSAGE)
            continue
        if checked is not None:
            headers[name] = checked
    return headers


def _redirects(value: Any, path: list[str], problems: _Problems) -> list[dict]:
    """Redirects: a list of {from: /path, to: URL or /path, status: 301|302|307|308}."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, "must be a list of {from, to, status}")
        return []
    found = []
    for index, item in enumerate(value):
        rpath = [*path, str(index)]
        item = _mapping(item, rpath, problems)
        _check_keys(item, {"from": str, "to": str, "status": int}, rpath, problems)
        source = _string(item.get("from"), [*rpath, "from"], problems, max_len=500)
        if source is not None and not URL_PATH_RE.fullmatch(source):
            problems.add([*rpath, "from"], f"{_describe(source)} must be a URL path like /old/")
            source = None
        target = _string(item.get("to"), [*rpath, "to"], problems, max_len=1000)
        if target is not None and not (
            URL_PATH_RE.fullmatch(target) or _url_problem(target) is None
        ):
            problems.add([*rpath, "to"], f"{_describe(target)} must be a URL or a URL path")
            target = None
        status = _integer(item.get("status", 301), [*rpath, "status"], problems, 301, 308)
        if status is not None and status not in (301, 302, 303, 307, 308):
            problems.add([*rpath, "status"], "must be 301, 302, 303, 307 or 308")
            status = None
        if source and target and status:
            found.append({"from": source, "to": target, "status": status})
    return found


def _basic_auth(value: Any, path: list[str], problems: _Problems) -> dict | None:
    """HTTP basic auth for a whole site: a realm and users with password hashes."""
    if value is None:
        return None
    data = _mapping(value, path, problems)
    _check_keys(data, {"realm": str, "users": dict}, path, problems)
    realm = _string(data.get("realm", "Restricted"), [*path, "realm"], problems, max_len=100)
    if realm is not None and not config_text_ok(realm):
        problems.add([*path, "realm"], CONFIG_TEXT_MESSAGE)
    users = {}
    for user, hashed in _mapping(data.get("users"), [*path, "users"], problems).items():
        upath = [*path, "users", str(user)]
        if not isinstance(user, str) or not AUTH_USER_RE.fullmatch(user):
            problems.add(upath, "user name must be 1-64 letters, digits, . _ @ -")
        elif not isinstance(hashed, str) or not PASSWORD_HASH_RE.fullmatch(hashed):
            problems.add(upath, "must be a bcrypt hash ($2y$..., from htpasswd -nB USER)")
        else:
            users[user] = hashed
    if not users:
        problems.add([*path, "users"], "must name at least one user")
    lines = [f"{user}:{hashed}" for user, hashed in sorted(users.items())]
    return {"realm": realm, "users": users, "lines": lines}


def _url_problem(url: str) -> str | None:
    """Return what is wrong with an http(s) URL, or ``None``."""
    match = URL_RE.fullmatch(url)
    if not match:
        return "must be an http:// or https:// URL"
    host, port = match.group("host"), match.group("port")
    if host != "localhost" and dns_name_problem(host):
        return f"host {host!r} {dns_name_problem(host)}"
    if port is not None and not 1 <= int(port) <= 65535:
        return f"port {port} must be between 1 and 65535"
    return None


def ssh_key_problem(key: str) -> str | None:
    """Return what is wrong with an OpenSSH public key line, or ``None``."""
    parts = key.strip().split(None, 2)
    if len(parts) < 2:
        return "must be 'TYPE BASE64 [COMMENT]' (an OpenSSH public key line)"
    key_type, blob_text = parts[0], parts[1]
    if key_type not in SSH_KEY_TYPES:
        if any(t in key for t in SSH_KEY_TYPES):
            return "must not carry options (from=, command=, ...) before the key type"
        return f"key type must be one of {', '.join(SSH_KEY_TYPES)}"
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        return "key data is not valid base64"
    if len(blob) < 4:
        return "key data is too short"
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + length] != key_type.encode():
        return f"key data does not hold a {key_type} key"
    if key_type == "ssh-ed25519" and len(blob) != 51:
        return "key data is not a whole ed25519 key"
    if key_type == "ssh-rsa" and len(blob) < 275:
        return "RSA keys must have at least 2048 bits"
    if len(parts) == 3 and not SSH_COMMENT_RE.fullmatch(parts[2]):
        return "comment must be printable ASCII, at most 200 characters"
    return None


def _ssh_keys(value: Any, path: list[str], problems: _Problems) -> list[str]:
    """Validate a list of OpenSSH public keys; return them normalised."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, "must be a list of OpenSSH public keys")
        return []
    keys: list[str] = []
    for index, key in enumerate(value):
        kpath = [*path, str(index)]
        if not isinstance(key, str):
            problems.add(kpath, f"must be a string, not {type(key).__name__}")
            continue
        if "\n" in key.strip() or "\r" in key or "\x00" in key:
            problems.add(kpath, "must be one line")
            continue
        problem = ssh_key_problem(key)
        if problem:
            problems.add(kpath, problem)
            continue
        normalised = " ".join(key.strip().split(None, 2))
        if normalised.split()[1] in {k.split()[1] for k in keys}:
            problems.add(kpath, "repeats an earlier key")
            continue
        keys.append(normalised)
    return keys


def _boolean(value: Any, path: list[str], problems: _Problems) -> bool | None:
    """Return ``value`` if it is a YAML boolean."""
    if not isinstance(value, bool):
        problems.add(path, f"must be true or false, not {_describe(value)}")
        return None
    return value


PHP_DEFAULTS: dict[str, Any] = {
    "pm": "ondemand",
    "max_children": 2,
    "process_idle_timeout": 10,
    "memory_limit": "256M",
    "upload_max_filesize": "32M",
    "post_max_size": "32M",
    "max_execution_time": 60,
    "request_terminate_timeout": 300,
    "disable_functions": [
        "exec", "passthru", "shell_exec", "system", "proc_open", "popen", "pcntl_exec",
    ],
    "open_basedir": False,
    "admin_values": {},
    "admin_flags": {},
}  # fmt: skip
PHP_PM = ("ondemand", "dynamic", "static")
#: PHP extensions switched off in PHP-FPM: System V IPC is one namespace for
#: the whole host (chroots do not separate it), and shm_attach() makes 0666
#: segments unless told otherwise: one account's pool could read another's.
PHP_FPM_MODULES_OFF = ("shmop", "sysvmsg", "sysvsem", "sysvshm")
SIZE_RE = re.compile(r"^([1-9][0-9]{0,6})([KMG])$")
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
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
        "mysqli.default_socket", "pdo_mysql.default_socket",
    }
)  # fmt: skip


def _size(value: Any, path: list[str], problems: _Problems, low: str, high: str) -> str | None:
    """A php.ini size like ``256M`` between ``low`` and ``high``."""
    text = value if isinstance(value, str) else None
    match = SIZE_RE.fullmatch(text) if text else None
    if not match:
        problems.add(path, f"must be a size like 64M or 1G, not {_describe(value)}")
        return None
    if not size_bytes(low) <= size_bytes(text) <= size_bytes(high):
        problems.add(path, f"must be between {low} and {high}, not {text}")
        return None
    return text


def size_bytes(size: str) -> int:
    """Bytes in a php.ini size like ``256M``."""
    match = SIZE_RE.fullmatch(size)
    assert match, size
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]


def _php(value: Any, home: str, path: list[str], problems: _Problems) -> dict:
    """Validate an account's PHP-FPM pool settings; return them with defaults."""
    data = _mapping(value, path, problems)
    _check_keys(data, PHP_DEFAULTS, path, problems)
    get = {**PHP_DEFAULTS, **data}.get
    php = {
        "pm": _choice(get("pm"), [*path, "pm"], problems, PHP_PM),
        "max_children": _integer(get("max_children"), [*path, "max_children"], problems, 1, 64),
        "process_idle_timeout": _integer(
            get("process_idle_timeout"), [*path, "process_idle_timeout"], problems, 1, 3600
        ),
        "memory_limit": _size(get("memory_limit"), [*path, "memory_limit"], problems, "16M", "4G"),
        "upload_max_filesize": _size(
            get("upload_max_filesize"), [*path, "upload_max_filesize"], problems, "1M", "2G"
        ),
        "post_max_size": _size(
            get("post_max_size"), [*path, "post_max_size"], problems, "1M", "2G"
        ),
        "max_execution_time": _integer(
            get("max_execution_time"), [*path, "max_execution_time"], problems, 1, 3600
        ),
        "request_terminate_timeout": _integer(
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
    if upload and post and size_bytes(post) < size_bytes(upload):
        problems.add([*path, "post_max_size"], f"must be at least upload_max_filesize ({upload})")
    run, kill = php["max_execution_time"], php["request_terminate_timeout"]
    if run and kill and kill < run:
        problems.add(
            [*path, "request_terminate_timeout"],
            f"must be 0 (off) or at least max_execution_time ({run})",
        )
    return php


def _php_functions(value: Any, path: list[str], problems: _Problems) -> list[str]:
    """A list of PHP function names."""
    if not isinstance(value, list):
        problems.add(path, "must be a list of PHP function names")
        return []
    names = []
    for index, name in enumerate(value):
        if not isinstance(name, str) or not PHP_FUNCTION_RE.fullmatch(name):
            problems.add([*path, str(index)], f"{_describe(name)} is not a PHP function name")
        elif name not in names:
            names.append(name)
    return names


def _open_basedir(value: Any, home: str, path: list[str], problems: _Problems) -> list[str]:
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
        if not isinstance(item, str) or not ABS_PATH_RE.fullmatch(item) or "/." in item:
            problems.add(ipath, f"{_describe(item)} must be an absolute path")
        elif not (item + "/").startswith(home + "/"):
            problems.add(ipath, f"{_describe(item)} must be inside the account's home {home}")
        else:
            extra.append(item)
    return [home, "/tmp", "/usr/share/php", *[e for e in extra if e != home]]


def _php_ini(value: Any, path: list[str], problems: _Problems, flags: bool) -> dict:
    """Extra php_admin_value (or php_admin_flag) settings: KEY -> value."""
    found: dict[str, Any] = {}
    for key, item in _mapping(value, path, problems).items():
        ipath = [*path, str(key)]
        if not isinstance(key, str) or not PHP_INI_KEY_RE.fullmatch(key) or len(key) > 64:
            problems.add(ipath, "is not a php.ini directive name")
        elif key in PHP_KEYS_SET_BY_WEBARCH:
            problems.add(ipath, "is set by webarch (use the account's php keys)")
        elif flags:
            checked = _boolean(item, ipath, problems)
            if checked is not None:
                found[key] = "on" if checked else "off"
        elif isinstance(item, bool) or not isinstance(item, (str, int)):
            problems.add(ipath, "must be a string or an integer")
        elif not config_text_ok(str(item)) or ";" in str(item) or len(str(item)) > 500:
            problems.add(ipath, CONFIG_TEXT_MESSAGE + " ;")
        else:
            found[key] = str(item)
    return found


def chroot_spec(name: str, chroot_base: str) -> dict:
    """
    Return the chroot of account ``name``: its path and its mounts, in order.

    The host's /usr read-only, the account's home read-write at the same path,
    the account's ~/tmp as /tmp, MariaDB's socket directory read-only and a
    /proc that shows only the account's own processes.
    """
    root = f"{chroot_base}/{name}"
    home = f"{HOME_BASE}/{name}"
    bind_ro = ["bind", "ro", "nosuid", "nodev"]
    return {
        "path": root,
        "home": home,
        "mounts": [
            # slave: the sendmail bind below must not propagate back to the
            # host's /usr (nor to other chroots: all binds of /usr are peers).
            {
                "id": "usr",
                "name": f"{root}/usr",
                "device": "/usr",
                "fstype": "none",
                "opts": [*bind_ro, "slave"],
            },
            {
                "id": "home",
                "name": f"{root}{home}",
                "device": home,
                "fstype": "none",
                "opts": ["bind", "nosuid", "nodev"],
            },
            {
                "id": "tmp",
                "name": f"{root}/tmp",
                "device": f"{home}/tmp",
                "fstype": "none",
                "opts": ["bind", "nosuid", "nodev"],
            },
            # /run/mysqld is made by systemd-tmpfiles after local file systems
            # are mounted: nofail drops the mount's ordering before
            # local-fs.target so that it can wait for the directory.
            {
                "id": "mysqld",
                "name": f"{root}/run/mysqld",
                "device": "/run/mysqld",
                "fstype": "none",
                "opts": [
                    *bind_ro,
                    "noexec",
                    "nofail",
                    "x-systemd.after=systemd-tmpfiles-setup.service",
                ],
            },
            # Exim's submission gate: a socket owned by root that runs
            # ``exim4 -bs`` as whoever connects (webarch-mail-gate).
            {
                "id": "mail",
                "name": f"{root}{MAIL_GATE_DIR}",
                "device": MAIL_GATE_DIR,
                "fstype": "none",
                "opts": [
                    *bind_ro,
                    "noexec",
                    "nofail",
                    "x-systemd.after=systemd-tmpfiles-setup.service",
                ],
            },
            # sendmail in the chroot is msmtp (/usr/sbin/sendmail -> exim4):
            # Exim itself cannot run there (no setuid, no spool).
            {
                "id": "sendmail",
                "name": f"{root}/usr/sbin/exim4",
                "device": "/usr/bin/msmtp",
                "fstype": "none",
                "opts": bind_ro,
            },
            {
                "id": "proc",
                "name": f"{root}/proc",
                "device": "proc",
                "fstype": "proc",
                "opts": ["nosuid", "nodev", "noexec", "hidepid=invisible"],
            },
        ],
    }


def _account_dirs(name: str) -> list[dict]:
    """Return the standard layout of an account's home, in creation order."""
    home = f"{HOME_BASE}/{name}"
    layout = [
        # id, path, owner, group, mode.  The home and logs are root's: the
        # account cannot change them.  The web server reads the sites through
        # their group (setgid: new files keep it).
        ("home", home, "root", name, "0750"),
        ("sites", f"{home}/sites", name, WEB_USER, "2750"),
        ("logs", f"{home}/logs", "root", name, "0750"),
        ("tmp", f"{home}/tmp", name, name, "0700"),
        ("private", f"{home}/private", name, name, "0700"),
        ("ssh", f"{home}/.ssh", name, name, "0700"),
    ]
    return [
        {"id": i, "path": path, "user": user, "group": group, "mode": mode}
        for i, path, user, group, mode in layout
    ]


def pool_socket(name: str, key: str) -> str:
    """The PHP-FPM socket of account ``name``: a name that does not tell the account.

    Every process on the host sees every bound unix socket path in
    /proc/net/unix, chrooted accounts included: ``webarch-alice.sock`` would
    list the other accounts.  The name is keyed with a host secret, so that it
    cannot be guessed from a list of candidate names either.
    """
    digest = hmac.new(key.encode(), f"webarch-pool:{name}".encode(), hashlib.sha256)
    return f"/run/php/webarch-{digest.hexdigest()[:20]}.sock"


def _account(name: Any, data: Any, server: dict, problems: _Problems, socket_key: str = "") -> dict:
    """Validate one account (not its relations to others) and normalise it."""
    path = ["webarch", "accounts", str(name)]
    if not isinstance(name, str) or not USERNAME_RE.fullmatch(name):
        problems.add(path, f"username must match {USERNAME_RE.pattern}")
    data = _mapping(data, path, problems)
    _check_keys(data, ACCOUNT_KEYS, path, problems)
    name = str(name)
    state = _choice(data.get("state", "present"), [*path, "state"], problems, STATES)
    uid = _integer(data["uid"], [*path, "uid"], problems, ID_MIN, ID_MAX) if "uid" in data else None
    gid = _integer(data["gid"], [*path, "gid"], problems, ID_MIN, ID_MAX) if "gid" in data else None
    email = _email(data["email"], [*path, "email"], problems) if "email" in data else None
    ssh_password = _boolean(data.get("ssh_password", False), [*path, "ssh_password"], problems)
    sites_raw = _mapping(data.get("sites"), [*path, "sites"], problems)
    sites = {
        str(site): _site(name, str(site), site_data, [*path, "sites", str(site)], problems)
        for site, site_data in sorted(sites_raw.items(), key=lambda kv: str(kv[0]))
    }
    return {
        "name": name,
        "state": state,
        "fullname": _display_name(data["fullname"], [*path, "fullname"], problems)
        if "fullname" in data
        else name,
        "email": email,
        "uid": uid,
        "gid": gid,
        "shell": _choice(data.get("shell", SHELLS[0]), [*path, "shell"], problems, SHELLS),
        "group": name,
        "home": f"{HOME_BASE}/{name}",
        "dirs": _account_dirs(name),
        "ssh": {
            "keys": _ssh_keys(data.get("ssh_keys"), [*path, "ssh_keys"], problems),
            "password": ssh_password,
        },
        "chroot": chroot_spec(name, server["chroot_base"] or CHROOT_BASE),
        "php": _php(data.get("php"), f"{HOME_BASE}/{name}", [*path, "php"], problems),
        "pool": {
            "name": name,
            "socket": pool_socket(name, socket_key),
            "file": f"/etc/php/{server['php_version']}/fpm/pool.d/webarch-{name}.conf",
        },
        "sites": sites,
        "mariadb": _account_mariadb(name, data, server, problems),
        "mail": _account_mail(name, data, server, problems),
        "notify": _account_notify(name, data, email, ssh_password, problems),
    }


def _check_host_clashes(
    account: dict, host: HostUsers, reserved: frozenset[str], problems: _Problems
) -> None:
    """Report clashes of a present account with the host's users and groups."""
    name = account["name"]
    path = ["webarch", "accounts", name]
    if name in reserved:
        problems.add(path, f"username {name!r} is reserved")
        return
    managed = name in host.managed
    uid = host.users.get(name)
    if uid is not None and not ID_MIN <= uid <= ID_MAX:
        problems.add(path, f"username {name!r} is a system user on this host (uid {uid})")
    elif uid is not None and not managed:
        problems.add(
            path,
            f"username {name!r} clashes with existing user (uid {uid}) that webarch "
            "does not manage",
        )
    gid = host.groups.get(name)
    if gid is not None and not ID_MIN <= gid <= ID_MAX:
        problems.add(path, f"group {name!r} is a system group on this host (gid {gid})")
    elif gid is not None and uid is None and not managed:
        problems.add(
            path,
            f"group {name!r} already exists on this host (gid {gid}) and webarch "
            "does not manage it",
        )
    for key, wanted, owner in (
        ("uid", account["uid"], host.uid_owner),
        ("gid", account["gid"], host.gid_owner),
    ):
        holder = owner(wanted) if wanted is not None else None
        if holder is not None and holder != name:
            problems.add([*path, key], f"{wanted} is already used by {holder!r} on this host")


def _check_unique(accounts: dict[str, dict], problems: _Problems) -> None:
    """Report ids and host names used more than once across all accounts."""
    seen: dict[tuple[str, Any], str] = {}
    for name, account in accounts.items():
        for key in ("uid", "gid"):
            value = account[key]
            if value is None:
                continue
            other = seen.setdefault((key, value), name)
            if other != name:
                problems.add(
                    ["webarch", "accounts", name, key],
                    f"{value} is also the {key} of account {other!r}",
                )
        for site_name, site in account["sites"].items():
            spath = ["webarch", "accounts", name, "sites", site_name]
            names = [("server_name", site["server_name"])] + [
                (f"aliases:{i}", a) for i, a in enumerate(site["aliases"])
            ]
            for key, host_name in names:
                if host_name is None:
                    continue
                where = f"{name}:sites:{site_name}"
                other = seen.setdefault(("host", host_name), where)
                if other != where:
                    problems.add(
                        spath + key.split(":"),
                        f"{host_name} is already used by {other}",
                    )
                elif key != "server_name" and host_name == site["server_name"]:
                    problems.add(spath + key.split(":"), "repeats the server_name")


# Keys the schema knows, with what they hold (used for unknown-key errors; the
# documentation of each key is in pillar.example and README.rst).
SITE_KEYS: dict[str, Any] = {
    "type": SITE_TYPES,
    "server_name": str,
    "aliases": list,
    "docroot": str,
    "suspended": bool,
    "robots_deny": bool,
    "hsts": int,
    "headers": dict,
    "redirects": list,
    "basic_auth": dict,
}
ACCOUNT_KEYS: dict[str, Any] = {
    "state": STATES,
    "fullname": str,
    "email": str,
    "uid": int,
    "gid": int,
    "shell": SHELLS,
    "sites": dict,
    "ssh_keys": list,
    "ssh_password": bool,
    "php": dict,
    "databases": dict,
    "db_privileges": list,
    "db_password": bool,
    "mail": dict,
    "resets": dict,
}
#: Server-wide MariaDB keys, with their defaults.
MARIADB_KEYS: dict[str, Any] = {
    "listen_localhost": False,
    "require_prefix": True,
    "dump_retention_days": 7,
}
SERVER_KEYS: dict[str, Any] = {
    "hostname": str,
    "admin_email": str,
    "reserved_usernames": list,
    "chroot_base": str,
    "archive_dir": str,
    "acme": dict,
    "log_retention_days": int,
    "sysv_ipc": bool,
    "mariadb": dict,
    "mail": dict,
    "notify": dict,
    "accounts": dict,
}


def _check_server_paths(server: dict, problems: _Problems) -> None:
    """Report server paths nested in one another."""
    chroots, archives = server["chroot_base"], server["archive_dir"]
    if not chroots or not archives:
        return
    if chroots == archives or archives.startswith(chroots + "/"):
        problems.add(["webarch", "archive_dir"], f"must not be inside chroot_base {chroots}")
    elif chroots.startswith(archives + "/"):
        problems.add(["webarch", "chroot_base"], f"must not be inside archive_dir {archives}")


def _only(value: Any, accounts: dict[str, dict], problems: _Problems) -> list[str] | None:
    """The accounts a targeted run is limited to (pillar ``webarch_only``), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.add(["webarch_only"], "must be a list of account names")
        return None
    for name in value:
        if name not in accounts:
            problems.add(["webarch_only"], f"{_describe(name)} is not an account in the pillar")
    return sorted(set(value) & set(accounts))


def build_model(pillar: Any, host: HostUsers, osmajorrelease: int = 12, only: Any = None) -> dict:
    """
    Validate the ``webarch`` pillar against ``host`` and return the model.

    ``only`` (the ``webarch_only`` pillar given at apply time) limits the
    per-account states to those accounts; the server-wide files still list
    every account.  Raises :py:class:`ModelError` listing every problem found.
    """
    problems = _Problems()
    pillar = _mapping(pillar, ["webarch"], problems)
    _check_keys(pillar, SERVER_KEYS, ["webarch"], problems)
    server = _server_settings(pillar, problems, osmajorrelease)
    reserved = RESERVED_USERNAMES | frozenset(server["reserved_usernames"])
    raw_accounts = _mapping(pillar.get("accounts"), ["webarch", "accounts"], problems)
    accounts = {
        str(name): _account(name, data, server, problems, host.socket_key)
        for name, data in sorted(raw_accounts.items(), key=lambda kv: str(kv[0]))
    }
    present = [a for a in accounts.values() if a["state"] == "present"]
    for account in present:
        _check_host_clashes(account, host, reserved, problems)
    _check_unique(accounts, problems)
    _check_unique_databases(accounts, problems)
    _check_server_paths(server, problems)
    targets = _only(only, accounts, problems)
    if problems.items:
        # Group the problems by account (stable: each account's keep their order).
        raise ModelError(sorted(problems.items, key=lambda p: p.split(":", 3)[:3]))
    present_names = {a["name"] for a in present}
    managed_after = sorted((set(host.managed) & set(host.users)) | present_names)
    wanted = set(accounts) if targets is None else set(targets)
    return {
        **server,
        "accounts": accounts,
        # The accounts whose own states this run renders (all, or webarch_only).
        "present": sorted(present_names & wanted),
        "all_present": sorted(present_names),
        "only": targets,
        # Added to the requisites of the server-wide services: a run limited by
        # webarch_only checks a service only when a state it watches changed
        # (a full run checks every service is running and enabled).
        "service_onchanges": [] if targets is None else ["onchanges"],
        "ssh_password_accounts": sorted(a["name"] for a in present if a["ssh"]["password"]),
        "log_map": {
            "path": LOG_MAP_PATH,
            "rotate_glob": f"{HOME_BASE}/*/logs/apache-*.log {HOME_BASE}/*/logs/php-*.log"
            f" {HOME_BASE}/*/logs/mail.log",
            "lines": [LOG_MAP_HEADER]
            + [
                f"{name} {account['name']}"
                for account in present
                for site in account["sites"].values()
                for name in [site["server_name"], *site["aliases"]]
            ],
        },
        "php_fpm_modules_off": list(PHP_FPM_MODULES_OFF),
        "apache": {
            "modules": list(APACHE_MODULES),
            "modules_off": [*APACHE_MODULES_OFF, f"php{server['php_version']}"],
            "htaccess_directives": list(HTACCESS_DIRECTIVES),
            "auth_dir": APACHE_AUTH_DIR,
            "server_name": server["hostname"] or "localhost",
        },
        "account_group": ACCOUNT_GROUP,
        "mail_accounts": {
            "lines": [MAIL_ACCOUNTS_HEADER] + [f"{a['name']} {a['home']}" for a in present],
            "senders": {a["name"]: a["mail"]["sender"] for a in present},
            # Mail to ACCOUNT@hostname (bounces of its mail among it) goes to
            # its holder: Exim cannot deliver into the root-owned homes.
            "aliases": {a["name"]: a["email"] or "postmaster" for a in present},
            "limits": [
                f"{a['name']}: {a['mail']['rate_limit']}"
                for a in present
                if a["mail"]["rate_limit"]
            ],
        },
        "notify_accounts": sorted(
            a["name"] for a in present if a["notify"]["kinds"] and a["name"] in wanted
        ),
        "db_dumps": {
            "path": DB_DUMP_MAP_PATH,
            "archive_dir": f"{server['archive_dir']}/databases",
            "lines": [DB_DUMP_MAP_HEADER]
            + [f"{a['name']} {db}" for a in present for db in a["mariadb"]["present"]],
        },
        "absent": sorted(set(accounts) - present_names),
        # Absent accounts whose Unix user webarch made: archived, then removed.
        "remove": sorted((set(accounts) - present_names) & set(host.managed) & wanted),
        "registry": {
            "path": REGISTRY_PATH,
            "names": managed_after,
            "lines": [REGISTRY_HEADER, *managed_after],
        },
    }


# --------------------------------------------------------------------------
# Salt functions
# --------------------------------------------------------------------------


def __virtual__() -> str:
    return __virtualname__


def _read_registry(path: str = REGISTRY_PATH) -> frozenset[str]:
    """Return the account names recorded as managed by webarch."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def host_users() -> HostUsers:
    """Return a snapshot of this host's users, groups and webarch registry."""
    return HostUsers(
        users={p.pw_name: p.pw_uid for p in pwd.getpwall()},
        groups={g.gr_name: g.gr_gid for g in grp.getgrall()},
        managed=_read_registry(),
        socket_key=_machine_id(),
    )


def _machine_id(path: str = "/etc/machine-id") -> str:
    """This host's machine id (root's, never copied into a chroot), or '' without one."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def _pillar_data(pillar: dict | None) -> Any:
    """The ``webarch`` pillar with plain values.

    Salt 3008 masks pillar values that ``pillar.get`` returns outside templates
    (``**********``); the model needs them (e.g. when the reactor has
    ``webarch_notify.send`` read the account's address).
    """
    if pillar is not None:
        return pillar
    get: Callable[..., Any] = __salt__["pillar.get"]
    try:
        return get("webarch", {}, unmask=True)
    except TypeError:  # Salt before 3008: nothing is masked
        return get("webarch", {})


#: Where config() keeps the model it built last, with the inputs it was built from.
MODEL_CONTEXT_KEY = "webarch.model"


def config(pillar: dict | None = None) -> dict:
    """
    Return the whole validated, normalised webarch model.

    Raises an error listing every problem (with its pillar path) when the
    pillar is invalid, so an SLS rendering from it fails before anything
    changes on the host.

    pillar
        Use this dict instead of the ``webarch`` pillar (for checking a
        proposed pillar).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.config
    """
    only = None
    if pillar is None:
        only = __salt__["pillar.get"]("webarch_only", None, unmask=True)
    inputs = (_pillar_data(pillar), host_users(), __grains__["osmajorrelease"], only)
    # Every SLS file imports map.jinja, so a run asks for the model once per
    # file: build it once for the same pillar and host.  The model is read-only.
    key = json.dumps(inputs, sort_keys=True, default=repr)
    cached = __context__.get(MODEL_CONTEXT_KEY)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        model = build_model(*inputs)
    except ModelError as exc:
        raise CommandExecutionError(str(exc)) from None
    __context__[MODEL_CONTEXT_KEY] = (key, model)
    return model


def accounts(state: str = "present") -> dict:
    """
    Return the normalised accounts in ``state`` (``present``, ``absent`` or ``all``).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.accounts
        salt '*' webarch.accounts state=all
    """
    everything = config()["accounts"]
    if state == "all":
        return everything
    return {name: a for name, a in everything.items() if a["state"] == state}


def validate(pillar: dict | None = None) -> dict:
    """
    Check the webarch pillar without raising; return ``valid`` and ``problems``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.validate
    """
    try:
        build_model(_pillar_data(pillar), host_users(), __grains__["osmajorrelease"])
    except ModelError as exc:
        return {"valid": False, "problems": exc.problems}
    return {"valid": True, "problems": []}


#: PHP's version on each Debian release (its packages are named after it).
PHP_VERSIONS = {12: "8.2", 13: "8.4"}


def php_version(osmajorrelease: int) -> str:
    """Return the PHP version Debian ships on ``osmajorrelease``."""
    try:
        return PHP_VERSIONS[int(osmajorrelease)]
    except (KeyError, ValueError, TypeError):
        raise CommandExecutionError(
            f"webarch supports Debian {', '.join(map(str, PHP_VERSIONS))}, not {osmajorrelease!r}"
        ) from None


def packages(osmajorrelease: int | None = None) -> list[str]:
    """
    Return the Debian packages the formula installs on this (or that) release.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.packages
    """
    major = int(osmajorrelease if osmajorrelease is not None else __grains__["osmajorrelease"])
    php = php_version(major)
    found = [
        # SSH logins into the chroots, and the tools an account's shell offers.
        "openssh-server",
        "bash",
        "nano",
        "rsync",
        "tar",
        "gzip",
        "mariadb-client",
        # Mail: Exim takes the accounts' mail (msmtp is sendmail in the chroots).
        "exim4-daemon-light",
        "msmtp",
        "python3",
        # Databases: MariaDB, reached only through its socket.
        "mariadb-server",
        # The web stack: Apache (event MPM, proxy_fcgi, md) and PHP-FPM; the
        # web server reaches the sites through an ACL on each home.
        "acl",
        "apache2",
        f"php{php}-fpm",
        f"php{php}-cli",
        f"php{php}-mysql",
    ]
    if major == 12:
        found.append("libapache2-mod-md")  # part of apache2 from Debian 13 on
    return found
