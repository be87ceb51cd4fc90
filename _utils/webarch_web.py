"""
The account model: Apache and the sites (keys, validators, what the SLS files render).
"""

from __future__ import annotations

import re
from typing import Any

import webarch_apps as apps
import webarch_check as check
import webarch_htaccess as htaccess
import webarch_paths as paths
from webarch_check import OPTIONAL, REQUIRED, Derived, Key

#: What a site's .htaccess may hold besides the AllowOverride groups (see
#: webarch_htaccess, the policy, and README.rst's ".htaccess files").
HTACCESS_DIRECTIVES = htaccess.LISTED

#: Apache modules the web stack uses (a2enmod names) and must not use.
APACHE_MODULES = (
    "mpm_event", "proxy", "proxy_fcgi", "ssl", "http2", "headers", "rewrite", "expires",
    "md", "socache_shmcb", "setenvif", "auth_basic", "authn_file", "authz_user", "alias",
    "mime", "dir", "filter", "deflate",
    # What the .htaccess policy relies on: Order/Deny and Require ip known (an
    # unknown directive is ignored, never a protection silently lost), SetEnv,
    # Options Indexes and MultiViews.
    "access_compat", "authz_host", "env", "autoindex", "negotiation",
)  # fmt: skip

#: Off: the other MPMs (mpm_itk too: an imported server of the old platform may
#: have it), the ways to run code as Apache's own user, and mod_status.  In this
#: order, each after the one before (apache.sls): ``a2dismod mpm_prefork`` refuses
#: while a module that depends on it is on (mpm_itk, and mod_php, which apache()
#: puts first), and ``a2enmod mpm_event`` while prefork is on.
APACHE_MODULES_OFF = (
    "mpm_itk", "mpm_prefork", "mpm_worker", "cgi", "cgid", "userdir", "include", "suexec",
    # A .htaccess can name any handler (AddType server-status .txt, or a
    # RewriteRule's [H=server-status]): the server's status page is no account's.
    "status",
)  # fmt: skip

HSTS_DEFAULT = 31536000

HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")

HEADERS_SET_BY_WEBARCH = frozenset({"strict-transport-security", "x-robots-tag"})

#: Response headers every site sends unless its application sends its own
#: (``Header always setifempty``), or its ``headers`` key sets or removes them.
DEFAULT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}

URL_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!&'()*+,;=:@/%-]*$")

AUTH_USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")

PASSWORD_HASH_RE = re.compile(r"^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$")

ACME_DEFAULT = "https://acme-v02.api.letsencrypt.org/directory"

SITE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

SITE_TYPES = ("static", "php", "wordpress", "mediawiki", "matomo")

REDIRECT_STATUSES = (301, 302, 303, 307, 308)

#: A site's web application firewall (ModSecurity with the OWASP Core Rule Set):
#: ``off``, ``detect`` (log what it would block) or ``on`` (block).
WAF_MODES = ("off", "detect", "on")

#: Debian's ModSecurity for Apache and the OWASP Core Rule Set (3.3 on Debian
#: 12 and 13); each site's engine is switched in its own virtual host.
WAF_PACKAGES = ("libapache2-mod-security2", "modsecurity-crs")

#: The CRS version its setup must name (tx.crs_setup_version), by Debian release.
WAF_CRS_VERSION = {12: 334, 13: 337}

#: Debian's file of the module's settings, replaced by webarch's (see apache.sls).
MODSECURITY_CONF = f"{paths.APACHE_DIR}/mods-available/security2.conf"

#: The audit log: every request the firewall flagged, headers and body, of every
#: account's site.  Root's only (Debian's /var/log/apache2 is root:adm 0750).
MODSECURITY_AUDIT_LOG = "/var/log/apache2/modsec_audit.log"

#: The module's scratch space (request bodies over the in-memory limit): www-data's.
MODSECURITY_DATA_DIR = "/var/cache/modsecurity"

#: The site types whose application has rule exclusions in the CRS: the
#: vhost names its type (SecWebAppId), the server-wide setup turns them on.
WAF_EXCLUSIONS = {"wordpress": "crs_exclusions_wordpress"}

#: ``webarch:acme``: certificates for every site through Apache's mod_md.
ACME_KEYS = check.key_table(
    Key(
        "directory",
        "URL",
        ACME_DEFAULT,
        "The ACME CA's directory URL (the default is Let's Encrypt's production directory).",
    ),
    Key(
        "contact",
        "email address",
        Derived("default ``admin_email``"),
        "The contact address given to the CA.",
    ),
    Key(
        "ca_file",
        "absolute path",
        OPTIONAL,
        "A CA certificate to trust for the ACME server's own HTTPS, for private or test CAs.",
    ),
    Key(
        "ocsp_stapling",
        "true or false",
        True,
        "OCSP stapling (mod_md's ``MDStapling``) for the certificates that name an OCSP "
        "responder: Apache fetches the CA's answer ahead of time and sends it with the "
        "certificate. Certificates that name none (Let's Encrypt's since 2025) are served "
        "as they are. ``false`` where Apache must not contact the CA's responder.",
    ),
)


def acme(value: Any, admin_email: str | None, problems: check.Problems) -> dict:
    """ACME settings for mod_md: the CA's directory URL, contact, extra trusted CA, stapling."""
    path = ["webarch", "acme"]
    data, get = check.block(value, ACME_KEYS, path, problems)
    directory = check.string(get("directory"), [*path, "directory"], problems)
    if directory is not None and (
        check.url_problem(directory) or not check.config_text_ok(directory)
    ):
        problems.add([*path, "directory"], f"{check.describe(directory)} must be an http(s) URL")
        directory = None
    contact = (
        check.email(data["contact"], [*path, "contact"], problems) if "contact" in data else None
    )
    ca_file = get("ca_file")
    if ca_file is not None and (
        not isinstance(ca_file, str) or not check.ABS_PATH_RE.fullmatch(ca_file) or "/." in ca_file
    ):
        problems.add([*path, "ca_file"], f"{check.describe(ca_file)} must be an absolute path")
        ca_file = None
    stapling = check.boolean(get("ocsp_stapling"), [*path, "ocsp_stapling"], problems)
    return {
        "directory": directory,
        "contact": contact or admin_email,
        "ca_file": ca_file,
        "ocsp_stapling": stapling is not False,
    }


#: ``webarch:accounts:USERNAME:sites:SITE``: one site of an account.
SITE_KEYS = check.key_table(
    Key(
        "server_name",
        "host name",
        REQUIRED,
        "The site's main host name: fully qualified, lower case (internationalised "
        "names in punycode, ``xn--...``), unique across all accounts and sites.",
    ),
    Key(
        "state",
        check.one_of(check.STATES),
        "present",
        "Switching a site to ``absent`` takes it out of the account's Apache site, then "
        "archives its directory ``~/sites/SITE`` to ``archive_dir`` "
        "(``USER.SITE-YYYYmmddTHHMMSSZ.tar.gz``, verified against the tree) after a "
        "verified dump of its application's database (``databases/DB-....sql.gz``), and "
        "only then deletes the directory. The database itself stays as its own "
        "``databases`` entry says, and so does the site's Matomo website (as with "
        "``matomo: false``). A site left out of the pillar loses its virtual host but "
        "keeps its files.",
    ),
    Key("aliases", "list of host names", [], "Further host names of the site, unique likewise."),
    Key("type", check.one_of(SITE_TYPES), "php", "What the site runs."),
    Key(
        "docroot",
        "relative path",
        Derived("default: the site directory itself"),
        "The document root relative to ``~/sites/SITE``, for example ``public``. "
        "It can never climb out of the site directory (no ``..``, no hidden parts).",
    ),
    Key(
        "suspended",
        "true or false",
        False,
        'Answer every request with 503 "This site is suspended."; the files stay.',
    ),
    Key(
        "hsts",
        f"``true``, ``false`` or seconds 0-{2 * HSTS_DEFAULT}",
        False,
        "Send ``Strict-Transport-Security``: ``false`` (not sent), ``true`` (a max-age "
        "of one year) or a max-age in seconds.",
    ),
    Key(
        "headers",
        "mapping",
        {},
        'Extra response headers, ``NAME: VALUE`` (plain ASCII, no ``" \\ $ %``), sent '
        "whatever the application sends. Every site also sends "
        "``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: "
        "strict-origin-when-cross-origin`` unless its application sends its own: "
        "naming one here sets it instead, ``NAME: false`` sends none (header names "
        "are case-insensitive). ``Strict-Transport-Security`` and ``X-Robots-Tag`` "
        "are set by the site's own keys (``hsts``, ``robots_deny``), not here.",
    ),
    Key(
        "robots_deny",
        "true or false",
        False,
        "Send ``X-Robots-Tag: noindex, nofollow``: ask search engines not to index the site.",
    ),
    Key("redirects", "list", [], "Redirects from a URL path of the site, in order."),
    Key(
        "basic_auth",
        "mapping",
        OPTIONAL,
        "The whole site behind HTTP basic auth.",
    ),
    Key(
        "app",
        "mapping",
        OPTIONAL,
        "A ``wordpress`` or ``mediawiki`` site: the application, installed by the "
        "formula into the empty site (see `Applications`_).",
    ),
    Key(
        "waf",
        check.one_of(WAF_MODES),
        Derived("default ``webarch:waf``, ``off``"),
        "The site's web application firewall (ModSecurity with the OWASP Core Rule "
        "Set, paranoia level 1): ``on`` refuses a request it finds an attack with 403, "
        "``detect`` only logs it, ``off`` leaves the site without one. See "
        "`Web application firewall`_.",
    ),
    Key(
        "matomo",
        "``true``, ``false`` or ``absent``",
        True,
        "A Matomo website for the site (``true``); ``false``: none (its website "
        "and data stay, the account loses access); ``absent``: its website and "
        "data are deleted.",
    ),
)


def site_settings(
    account: str,
    site: str,
    data: Any,
    path: list[str],
    problems: check.Problems,
    waf_default: str = "off",
) -> dict:
    """Validate one site and return its normalised form (``waf_default``: ``webarch:waf``)."""
    if not SITE_NAME_RE.fullmatch(site):
        problems.add(
            path,
            "site name must be 1-63 lower-case letters, digits or inner hyphens",
        )
    data, get = check.block(data, SITE_KEYS, path, problems)
    server_name = None
    if "server_name" in data:
        server_name = check.dns_name(data["server_name"], [*path, "server_name"], problems)
    else:
        problems.add([*path, "server_name"], "is required")
    aliases_raw = get("aliases")
    aliases: list[str] = []
    if not isinstance(aliases_raw, list):
        problems.add([*path, "aliases"], "must be a list of host names")
    else:
        for index, alias in enumerate(aliases_raw):
            checked = check.dns_name(alias, [*path, "aliases", str(index)], problems)
            if checked:
                aliases.append(checked)
    site_type = check.choice(get("type"), [*path, "type"], problems, SITE_TYPES)
    docroot = check.relative_path(get("docroot"), [*path, "docroot"], problems)
    root = f"{paths.HOME_BASE}/{account}/sites/{site}"
    headers = _headers(get("headers"), [*path, "headers"], problems)
    return {
        "name": site,
        "state": check.choice(get("state"), [*path, "state"], problems, check.STATES),
        "type": site_type,
        "server_name": server_name,
        "aliases": aliases,
        "root": root,
        "docroot": f"{root}/{docroot}" if docroot else root,
        "suspended": check.boolean(get("suspended"), [*path, "suspended"], problems),
        "robots_deny": check.boolean(get("robots_deny"), [*path, "robots_deny"], problems),
        "hsts": _hsts(get("hsts"), [*path, "hsts"], problems),
        "headers": {name: value for name, value in headers.items() if value is not None},
        "default_headers": _default_headers(headers),
        "redirects": _redirects(get("redirects"), [*path, "redirects"], problems),
        "basic_auth": _basic_auth(get("basic_auth"), [*path, "basic_auth"], problems),
        "matomo": _matomo_switch(get("matomo"), [*path, "matomo"], problems),
        "waf": waf_mode(data.get("waf", waf_default), [*path, "waf"], problems),
        "app": apps.site_app(site_type, data.get("app"), server_name, [*path, "app"], problems),
    }


def waf_mode(value: Any, path: list[str], problems: check.Problems) -> str:
    """A web application firewall mode: off, detect or on.

    YAML 1.1 reads a bare ``off`` and ``on`` as false and true: both spellings count.
    """
    if value is False or value is True:
        return "on" if value else "off"
    if value in WAF_MODES:
        return value
    problems.add(path, f"{check.describe(value)} must be off, detect or on")
    return "off"


def waf(present: list[dict], osmajorrelease: int) -> dict:
    """The server's web application firewall: on when any present site has one.

    The module is loaded once, its engine Off; each such site's vhost switches it
    on (``engine``) and names its type (``app_id``) for the CRS's exclusions.
    """
    modes = [site["waf"] for account in present for site in account["sites"].values()]
    return {
        "enabled": any(mode != "off" for mode in modes),
        "packages": list(WAF_PACKAGES),
        "modules": ["unique_id", "security2"],
        "conf": MODSECURITY_CONF,
        "audit_log": MODSECURITY_AUDIT_LOG,
        "data_dir": MODSECURITY_DATA_DIR,
        "crs_version": WAF_CRS_VERSION.get(osmajorrelease, max(WAF_CRS_VERSION.values())),
        "exclusions": dict(WAF_EXCLUSIONS),
    }


def _matomo_switch(value: Any, path: list[str], problems: check.Problems) -> bool | str:
    """A site's ``matomo`` key: True, False or "absent"."""
    if isinstance(value, bool) or value == "absent":
        return value
    problems.add(path, f"{check.describe(value)} must be true, false or absent")
    return True


def _hsts(value: Any, path: list[str], problems: check.Problems) -> int:
    """HSTS: false (off), true (one year) or a max-age in seconds."""
    if value is False:
        return 0
    if value is True:
        return HSTS_DEFAULT
    checked = check.integer(value, path, problems, 0, 2 * HSTS_DEFAULT)
    return checked or 0


def _headers(value: Any, path: list[str], problems: check.Problems) -> dict[str, str | None]:
    """Extra response headers: NAME -> VALUE, both safe for Apache's config.

    ``None`` for a default header (``DEFAULT_HEADERS``) that ``NAME: false`` removes.
    """
    headers: dict[str, str | None] = {}
    defaults = {name.lower() for name in DEFAULT_HEADERS}
    seen: dict[str, str] = {}
    for name, text in check.mapping(value, path, problems).items():
        hpath = [*path, str(name)]
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            problems.add(hpath, "header name must be 1-64 letters, digits or hyphens")
            continue
        if name.lower() in HEADERS_SET_BY_WEBARCH:
            problems.add(hpath, "is set by webarch (use the site's own keys)")
            continue
        if name.lower() in seen:
            problems.add(
                hpath,
                f"names the header of {seen[name.lower()]!r} again (names are case-insensitive)",
            )
            continue
        seen[name.lower()] = name
        if text is False:
            if name.lower() in defaults:
                headers[name] = None
            else:
                problems.add(
                    hpath,
                    "false removes only a header every site sends by default "
                    f"({', '.join(sorted(DEFAULT_HEADERS))})",
                )
            continue
        checked = check.string(text, hpath, problems, max_len=1000)
        if checked is not None and not check.config_text_ok(checked):
            problems.add(hpath, check.CONFIG_TEXT_MESSAGE)
            continue
        if checked is not None:
            headers[name] = checked
    return headers


def _default_headers(headers: dict[str, str | None]) -> dict[str, str]:
    """The default headers (``DEFAULT_HEADERS``) a site's ``headers`` leaves alone."""
    named = {name.lower() for name in headers}
    return {name: value for name, value in DEFAULT_HEADERS.items() if name.lower() not in named}


#: Each item of ``webarch:accounts:USERNAME:sites:SITE:redirects``.
REDIRECT_KEYS = check.key_table(
    Key("from", "URL path", REQUIRED, "The path to redirect, like ``/old/``."),
    Key(
        "to",
        "URL or URL path",
        REQUIRED,
        "Where to: an ``http://`` or ``https://`` URL, or a path on the same site.",
    ),
    Key(
        "status",
        check.one_of(tuple(map(str, REDIRECT_STATUSES))),
        301,
        "The HTTP status of the redirect.",
    ),
)


def _redirects(value: Any, path: list[str], problems: check.Problems) -> list[dict]:
    """Redirects: a list of {from: /path, to: URL or /path, status: 301|302|307|308}."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(path, "must be a list of {from, to, status}")
        return []
    found = []
    for index, item in enumerate(value):
        rpath = [*path, str(index)]
        item, get = check.block(item, REDIRECT_KEYS, rpath, problems)
        source = check.string(get("from"), [*rpath, "from"], problems, max_len=500)
        if source is not None and not URL_PATH_RE.fullmatch(source):
            problems.add(
                [*rpath, "from"], f"{check.describe(source)} must be a URL path like /old/"
            )
            source = None
        target = check.string(get("to"), [*rpath, "to"], problems, max_len=1000)
        if target is not None and not (
            URL_PATH_RE.fullmatch(target) or check.url_problem(target) is None
        ):
            problems.add([*rpath, "to"], f"{check.describe(target)} must be a URL or a URL path")
            target = None
        status = check.integer(get("status"), [*rpath, "status"], problems, 301, 308)
        if status is not None and status not in REDIRECT_STATUSES:
            problems.add([*rpath, "status"], "must be 301, 302, 303, 307 or 308")
            status = None
        if source and target and status:
            found.append({"from": source, "to": target, "status": status})
    return found


#: ``webarch:accounts:USERNAME:sites:SITE:basic_auth``.
BASIC_AUTH_KEYS = check.key_table(
    Key(
        "realm",
        "text",
        "Restricted",
        'The realm the browser names when it asks (plain ASCII, no ``" \\ $ %``).',
    ),
    Key(
        "users",
        "mapping",
        REQUIRED,
        "``NAME: BCRYPT_HASH``, at least one (``htpasswd -nB NAME`` prints a hash). "
        "Names are 1 to 64 letters, digits and ``. _ @ -``.",
    ),
)


def _basic_auth(value: Any, path: list[str], problems: check.Problems) -> dict | None:
    """HTTP basic auth for a whole site: a realm and users with password hashes."""
    if value is None:
        return None
    _, get = check.block(value, BASIC_AUTH_KEYS, path, problems)
    realm = check.string(get("realm"), [*path, "realm"], problems, max_len=100)
    if realm is not None and not check.config_text_ok(realm):
        problems.add([*path, "realm"], check.CONFIG_TEXT_MESSAGE)
    users = {}
    for user, hashed in check.mapping(get("users"), [*path, "users"], problems).items():
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


def log_map(present: list[dict]) -> dict:
    """The map webarch-log-split reads (host name -> account) and the logs it rotates."""
    logs = f"{paths.HOME_BASE}/*/logs"
    return {
        "path": paths.LOG_MAP_PATH,
        "rotate_glob": f"{logs}/apache-*.log {logs}/php-*.log {logs}/mail.log",
        "lines": [paths.LOG_MAP_HEADER]
        + [
            f"{name} {account['name']}"
            for account in present
            for site in account["sites"].values()
            for name in [site["server_name"], *site["aliases"]]
        ],
    }


def staged_keep(present: list[dict]) -> str:
    """The staged site files a full run keeps (Salt's ``exclude_pat``: one regexp).

    A full run removes the others (of accounts no longer present) from the
    staging directory: a pattern, not a ``require_in`` of every account's file,
    which Salt's ``clean`` resolves in time quadratic in accounts.
    """
    names = "|".join(re.escape(paths.apache_site(a["name"])) for a in present)
    return f"E@^(?:{names})\\.conf$"


def apache(server: dict, present: list[dict]) -> dict:
    """Apache's server-wide settings: the modules on and off, what .htaccess may hold."""
    return {
        "staged_keep": staged_keep(present),
        "modules": list(APACHE_MODULES),
        "modules_off": [f"php{server['php_version']}", *APACHE_MODULES_OFF],
        "htaccess_directives": list(HTACCESS_DIRECTIVES),
        "allow_override": htaccess.ALLOW_OVERRIDE,
        "auth_dir": paths.APACHE_AUTH_DIR,
        "server_name": server["hostname"] or "localhost",
    }
