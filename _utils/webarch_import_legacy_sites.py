"""
Import from a legacy host: its virtual hosts to webarch sites.

:py:func:`convert_sites` groups the virtual hosts of ``sites-enabled`` by
server name (the ``:80`` and ``:443`` of one site), gives each site to the
account it runs as (``AssignUserID``, else its document root's owner), keys
it by its directory (``~/sites/KEY``), types it (``wordpress`` by its
``wp-config.php``, ``php``, ``static``) and reports each directive through the
:py:class:`~webarch_import_report.Run`.  :py:class:`Context` is what the
whole conversion knows.  Used by :py:mod:`webarch_import_legacy`.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import webarch_check as check
import webarch_layout as layout
import webarch_paths as paths
import webarch_php as php
import webarch_web as web
from webarch_import_legacy_apache import Directive, VHost, clean_dir, parse_apache
from webarch_import_report import Run

#: Directives of a block (``<Directory>``, ``<Location>`` ...) that webarch does itself.
BENIGN_IN_BLOCK = ("options", "allowoverride", "directoryindex", "require", "order", "allow")
REDIRECT_WORDS = {"permanent": 301, "temp": 302, "seeother": 303, "gone": 410}
#: php settings of a vhost that are webarch pool settings: (key, kind).
PHP_SETTINGS = {
    "memory_limit": "size",
    "upload_max_filesize": "size",
    "post_max_size": "size",
    "max_execution_time": "seconds",
}
PHP_DIRECTIVES = ("php_admin_value", "php_value", "php_admin_flag", "php_flag")
_DIR_OPTIONS = (
    "webarch sets a site's directory options itself (Options SymLinksIfOwnerMatch, its "
    "index files, its AllowOverride list; .htaccess may set Indexes and MultiViews)"
)
_HTACCESS = "webarch writes the virtual host itself: move it into the site's .htaccess ({what})"
#: Directives of a virtual host that webarch has no key for: (decision?, reason).
VHOST_NOT_MAPPED: dict[str, tuple[bool, str]] = {
    **dict.fromkeys(
        (
            "sslengine",
            "sslcertificatefile",
            "sslcertificatekeyfile",
            "sslcertificatechainfile",
            "sslcacertificatefile",
            "sslprotocol",
            "sslciphersuite",
            "sslhonorcipherorder",
            "sslcompression",
            "sslsessiontickets",
            "sslusestapling",
            "sslstaplingcache",
        ),
        (False, "webarch gets each site's certificate by ACME (mod_md) and sets TLS itself"),
    ),
    **dict.fromkeys(
        ("errorlog", "customlog", "transferlog", "loglevel"),
        (False, "webarch logs each account's sites to its ~/logs"),
    ),
    **dict.fromkeys(("options", "allowoverride", "directoryindex"), (False, _DIR_OPTIONS)),
    "serveradmin": (False, "webarch's error pages name no contact (the account's email is kept)"),
    "protocols": (False, "webarch serves HTTP/2 and HTTP/1.1 itself"),
    "maxclientsvhost": (False, "an mpm-itk limit: webarch limits the account's PHP-FPM pool"),
    "usecanonicalname": (False, "webarch's virtual hosts answer every name of the site"),
    **dict.fromkeys(
        ("setenv", "unsetenv", "setenvif", "setenvifnocase"),
        (False, _HTACCESS.format(what="SetEnv and SetEnvIf are allowed there")),
    ),
    **dict.fromkeys(
        ("adddefaultcharset", "addtype", "addcharset", "addoutputfilterbytype", "errordocument"),
        (False, _HTACCESS.format(what="FileInfo directives are allowed there")),
    ),
    **dict.fromkeys(
        ("expiresactive", "expiresdefault", "expiresbytype"),
        (False, _HTACCESS.format(what="mod_expires is on in webarch")),
    ),
    **dict.fromkeys(
        ("rewriteengine", "rewriterule", "rewritecond", "rewritebase", "rewriteoptions"),
        (True, _HTACCESS.format(what="RewriteRule is allowed there")),
    ),
    "redirectmatch": (
        True,
        "webarch redirects by path prefix only: move it into the site's .htaccess "
        "(RedirectMatch is allowed there)",
    ),
    **dict.fromkeys(
        ("alias", "aliasmatch", "scriptalias", "scriptaliasmatch"),
        (True, "webarch has no Alias: a site serves its own directory only; move those files in"),
    ),
    **dict.fromkeys(
        ("proxypass", "proxypassreverse", "proxypassmatch", "proxyrequests"),
        (True, "webarch sites do not proxy to other servers: the proxied paths will answer 404"),
    ),
    "assignuseridexpr": (True, "an expression webarch cannot evaluate: name the account by hand"),
    "assigngroupidexpr": (True, "an expression webarch cannot evaluate: name the account by hand"),
}
#: Directives of the files outside any virtual host.
SERVER_NOT_MAPPED = "a server-wide directive of the old Apache: webarch configures Apache itself"
#: MariaDB users of the server itself (never an account's).
WP_DEFINE_RE = re.compile(
    r"""define\(\s*['"](DB_NAME|DB_USER|DB_HOST|DB_PASSWORD)['"]\s*,\s*(['"])(.*?)\2\s*\)"""
)
LOCAL_DB_HOSTS = (
    "",
    "localhost",
    f"localhost:{paths.MARIADB_SOCKET}",
    f"localhost:/var{paths.MARIADB_SOCKET}",
)


class Context:
    """What the conversion knows while it maps: accounts by name, the scan, the run."""

    def __init__(self, scan: dict, run: Run) -> None:
        self.scan = scan
        self.run = run
        self.users: dict[str, dict] = {}
        self.accounts: dict[str, dict] = {}
        #: Accounts whose WordPress keeps a MariaDB password in wp-config.php.
        self.wp_passwords: set[str] = set()

    def account_of(self, name: str) -> dict | None:
        return self.accounts.get(name)


# --------------------------------------------------------------------------
# Sites (the virtual hosts)
# --------------------------------------------------------------------------


class Site(NamedTuple):
    """The virtual hosts of one server name, and what they say."""

    name: str
    vhosts: list[VHost]


def convert_sites(ctx: Context) -> None:
    run = ctx.run
    by_name: dict[str, list[VHost]] = {}
    for path, text in sorted(ctx.scan.get("vhosts", {}).items()):
        hosts, outside = parse_apache(path, text, run)
        for item in outside:
            run.skip([item.where], SERVER_NOT_MAPPED)
        for vhost in hosts:
            names = [d for d in vhost.directives if d.name.lower() == "servername" and d.args]
            if vhost.port not in ("80", "443", "*"):
                run.decide(
                    [f"{path}:{vhost.line} <VirtualHost>"],
                    f"port {vhost.port}: webarch serves sites on 80 and 443 only; left out",
                )
            elif not names:
                run.decide(
                    [f"{path}:{vhost.line} <VirtualHost>"],
                    "no ServerName (a default "
                    "host): webarch answers unknown names itself; left out",
                )
            else:
                server = names[-1].args[0].lower().rpartition(":")[0] or names[-1].args[0].lower()
                by_name.setdefault(server, []).append(vhost)
    for server, hosts in by_name.items():
        hosts.sort(key=lambda v: v.port != "443")
        _site(Site(server, hosts), ctx)


def _site(site: Site, ctx: Context) -> None:
    """One site: its account, key and type, then each directive."""
    run = ctx.run
    first = site.vhosts[0]
    where = [f"{first.file}:{first.line} <VirtualHost>"]
    roots = [
        clean_dir(d.args[0])
        for v in site.vhosts
        for d in v.directives
        if d.name.lower() == "documentroot" and d.args
    ]
    root = roots[0] if roots else None
    assigned = [
        d for v in site.vhosts for d in v.directives if d.name.lower() == "assignuserid" and d.args
    ]
    info = ctx.scan.get("docroots", {}).get(
        root or "", {"owner": None, "php": False, "wp_config": None}
    )
    user = assigned[0].args[0] if assigned else info.get("owner")
    if len({d.args[0] for d in assigned}) > 1:
        run.decide(
            where, f"{site.name}: its virtual hosts run as different users; taken as {user}'s"
        )
    account = ctx.account_of(user) if user else None
    if account is None:
        reason = (
            f"{site.name} runs as {user}, which is no account (uid {layout.ID_MIN}-"
            f"{layout.ID_MAX}): left out; give it to an account"
            if user
            else f"{site.name} has no AssignUserID and no document root owned by an account: "
            "left out; give it to an account"
        )
        run.decide(where, reason)
        return
    if root is None:
        run.decide(
            where,
            f"{site.name} has no DocumentRoot: left out (webarch serves "
            "~/sites/SITE); give it a directory",
        )
        return
    key, subdir = _site_key(site, root, user, ctx)
    sites = account.setdefault("sites", {})
    key = unique(key, sites)
    target = f"accounts:{user}:sites:{key}"
    data: dict[str, Any] = {"server_name": site.name}
    if subdir:
        data["docroot"] = subdir
    sites[key] = data
    run.mapped(where, target)
    site_ctx = {
        "site": site,
        "data": data,
        "target": target,
        "account": account,
        "user": user,
        "root": root,
        "php_seen": False,
    }
    for vhost in site.vhosts:
        if vhost is not first:
            run.mapped(
                [f"{vhost.file}:{vhost.line} <VirtualHost>"],
                f"{target} (port {vhost.port} of the same site: webarch serves both)",
            )
        for item in vhost.directives:
            _directive(item, vhost, site_ctx, ctx)
    _site_type(info, site_ctx, ctx)


def _site_key(site: Site, root: str, user: str, ctx: Context) -> tuple[str, str]:
    """The site's key from its document root (``~/sites/KEY[/SUB]``); a decision if elsewhere."""
    homes = {paths.home(user), clean_dir(ctx.users[user]["home"])}
    for home in sorted(homes):
        prefix = f"{home}/sites/"
        if root.startswith(prefix):
            key, _, sub = root[len(prefix) :].partition("/")
            if web.SITE_NAME_RE.fullmatch(key):
                return key, sub
    key = re.sub(r"[^a-z0-9]+", "-", site.name.removeprefix("www.")).strip("-")[:63].strip("-")
    ctx.run.decide(
        [f"{site.vhosts[0].file}:{site.vhosts[0].line} DocumentRoot"],
        f"{root} is not in ~/sites: webarch serves {paths.home(user)}/sites/{key}: copy "
        f"it there (rsync -a {root}/ {paths.home(user)}/sites/{key}/, then compare "
        "checksums, owner and group kept) before converging",
    )
    return key or "site", ""


def unique(name: str, taken: dict) -> str:
    found, number = name, 1
    while found in taken:
        number += 1
        found = f"{name}-{number}"[:63]
    return found


def _directive(item: Directive, vhost: VHost, sctx: dict, ctx: Context) -> None:
    """One directive of a site's virtual host."""
    run, name, target = ctx.run, item.name.lower(), sctx["target"]
    path = [item.where]
    if item.name.startswith("<"):
        _inner_block(item, ctx)
    elif name == "servername":
        run.mapped(path, f"{target}:server_name")
    elif name == "serveralias":
        data = sctx["data"]
        for alias in item.args:
            alias = alias.lower()
            if alias != data["server_name"] and alias not in data.get("aliases", []):
                data.setdefault("aliases", []).append(alias)
        run.mapped(path, f"{target}:aliases")
    elif name == "documentroot":
        run.mapped(
            path, f"{target} (its directory{', docroot' if 'docroot' in sctx['data'] else ''})"
        )
    elif name == "assignuserid":
        run.mapped(path, f"accounts:{sctx['user']} (its sites, PHP-FPM pool and cron run as it)")
    elif name in ("redirect", "redirectpermanent", "redirecttemp"):
        _redirect(item, vhost, sctx, ctx)
    elif name == "header":
        _header(item, sctx, ctx)
    elif name in PHP_DIRECTIVES:
        _php(item, sctx, ctx)
    elif name in ("include", "includeoptional"):
        run.decide(
            path,
            "the included file is not read: webarch writes the virtual host "
            "itself; check what it holds (.htaccess may take it)",
        )
    elif name in VHOST_NOT_MAPPED:
        decide, reason = VHOST_NOT_MAPPED[name]
        (run.decide if decide else run.skip)(path, reason)
    else:
        run.decide(
            path,
            "no webarch key: webarch writes the virtual host itself; the site is "
            "served without it (.htaccess may hold it)",
        )


def _inner_block(item: Directive, ctx: Context) -> None:
    names = sorted({d.name.lower().lstrip("<") for d in item.inner})
    benign = all(d.name.lower() in BENIGN_IN_BLOCK for d in item.inner) and not any(
        d.name.lower() in ("require", "allow") and "all" not in [a.lower() for a in d.args]
        for d in item.inner
    )
    if benign:
        ctx.run.skip([item.where], _DIR_OPTIONS)
    else:
        ctx.run.decide(
            [item.where],
            f"per-path rules ({', '.join(names) or 'empty'}) have no "
            "webarch key: the paths are served like the rest of the site; put "
            "them in .htaccess",
        )


def _redirect(item: Directive, vhost: VHost, sctx: dict, ctx: Context) -> None:
    run, path, args = ctx.run, [item.where], list(item.args)
    status = {"redirectpermanent": 301, "redirecttemp": 302}.get(item.name.lower(), 302)
    if args and (args[0].lower() in REDIRECT_WORDS or args[0].isdigit()):
        word = args.pop(0).lower()
        status = REDIRECT_WORDS.get(word) or int(word)
    if status == 410:
        run.skip(path, "a 410 Gone: not a redirect in webarch (.htaccess allows Redirect gone)")
        return
    if len(args) != 2 or status not in web.REDIRECT_STATUSES:
        run.decide(
            path,
            "not a Redirect webarch can carry (PATH URL, status 301-308): move it into .htaccess",
        )
        return
    source, to = args
    names = [sctx["data"]["server_name"], *sctx["data"].get("aliases", [])]
    if (
        vhost.port == "80"
        and source == "/"
        and re.match(r"^https://([^/]+)/?", to)
        and (to.split("/")[2].lower() in names)
    ):
        run.mapped(path, "HTTPS (webarch redirects every HTTP request to HTTPS itself)")
        return
    sctx["data"].setdefault("redirects", []).append({"from": source, "to": to, "status": status})
    run.mapped(path, f"{sctx['target']}:redirects:{len(sctx['data']['redirects']) - 1}")


def _header(item: Directive, sctx: dict, ctx: Context) -> None:
    run, path, args = ctx.run, [item.where], list(item.args)
    if args and args[0].lower() in ("always", "onsuccess"):
        args.pop(0)
    action = args[0].lower() if args else ""
    header = args[1] if len(args) > 1 else ""
    data, target = sctx["data"], sctx["target"]
    if action == "set" and len(args) == 3 and header.lower() == "strict-transport-security":
        match = re.match(r"^\s*max-age=([0-9]{1,10})\b", args[2], re.IGNORECASE)
        if match:
            data["hsts"] = int(match.group(1))
            run.mapped(path, f"{target}:hsts (its max-age; webarch sends no other parameter)")
        else:
            run.decide(path, "an HSTS header without max-age: webarch's has a max-age only")
    elif action == "set" and len(args) == 3 and header.lower() == "x-robots-tag":
        if "noindex" in args[2].lower():
            data["robots_deny"] = True
            run.mapped(path, f"{target}:robots_deny (X-Robots-Tag: noindex, nofollow)")
        else:
            run.decide(path, "webarch's X-Robots-Tag is noindex, nofollow only (robots_deny)")
    elif action == "set" and len(args) == 3:
        data.setdefault("headers", {})[header] = args[2]
        run.mapped(path, f"{target}:headers:{header}")
    elif action == "unset" and len(args) == 2 and header.lower() not in _default_headers():
        run.decide(
            path,
            _HTACCESS.format(
                what="webarch's headers key unsets only its own "
                "default headers; Header unset is allowed there"
            ),
        )
    elif action == "unset" and len(args) == 2:
        data.setdefault("headers", {})[header] = False
        run.mapped(path, f"{target}:headers:{header} (false: not sent)")
    else:
        run.decide(path, _HTACCESS.format(what="Header is allowed there"))


def _default_headers() -> set[str]:
    return {name.lower() for name in web.DEFAULT_HEADERS}


def _php(item: Directive, sctx: dict, ctx: Context) -> None:
    """``php_admin_value`` and friends: webarch's pool settings (per account, not per site)."""
    run, path, name = ctx.run, [item.where], item.name.lower()
    sctx["php_seen"] = True
    user = sctx["user"]
    if len(item.args) != 2:
        run.decide(path, "not NAME VALUE: not read")
        return
    setting, value = item.args[0].lower(), item.args[1]
    pool = sctx["account"].setdefault("php", {})
    if setting in PHP_SETTINGS and name in ("php_admin_value", "php_value"):
        kind = PHP_SETTINGS[setting]
        number = _php_number(value, kind)
        if number is None:
            run.decide(path, f"{setting} {value!r} is not a value webarch reads: left out")
            return
        old = pool.get(setting)
        if old is not None and _php_number(str(old), kind) != number:
            keep = max(
                (old, value if kind == "size" else number),
                key=lambda v: _php_number(str(v), kind) or 0,
            )
            pool[setting] = keep
            run.decide(
                path,
                f"{setting} differs between {user}'s sites: webarch's pool is the "
                f"account's, the larger ({keep}) is kept",
            )
            return
        pool[setting] = value.upper() if kind == "size" else number
        run.mapped(path, f"accounts:{user}:php:{setting} (the account's pool: all its sites)")
    elif setting in php.PHP_KEYS_SET_BY_WEBARCH:
        run.skip(path, f"webarch sets {setting} itself")
    elif name == "php_admin_value":
        pool.setdefault("admin_values", {})[setting] = value
        run.mapped(path, f"accounts:{user}:php:admin_values:{setting}")
    elif name == "php_admin_flag" and value.lower() in ("on", "off"):
        pool.setdefault("admin_flags", {})[setting] = value.lower() == "on"
        run.mapped(path, f"accounts:{user}:php:admin_flags:{setting}")
    else:
        run.decide(
            path,
            f"a {name} the site may change: put '{setting} = {value}' in the "
            "site's .user.ini (PHP-FPM reads it)",
        )
    if not pool:
        del sctx["account"]["php"]


def _php_number(value: str, kind: str) -> int | None:
    """A php.ini size in bytes or a number of seconds; None when it is neither."""
    if kind == "seconds":
        return int(value) if value.isdigit() else None
    text = value.upper()
    match = check.SIZE_RE.fullmatch(text)
    return int(match.group(1)) * check.SIZE_UNITS[match.group(2)] if match else None


def _site_type(info: dict, sctx: dict, ctx: Context) -> None:
    """static, php or wordpress: from the files of the document root."""
    run, data, target, root = ctx.run, sctx["data"], sctx["target"], sctx["root"]
    for path in info.get("unserved", []):
        run.decide(
            [path],
            "only its owner can read it: mpm-itk served it as the account, webarch's "
            f"Apache reads a site's files as {paths.WEB_USER} (PHP files excepted): "
            f"'chgrp {paths.WEB_USER} FILE; chmod g+r FILE' (g+x for a directory) keeps "
            "it served, else it answers 403",
        )
    if info.get("wp_config"):
        data["type"] = "wordpress"
        run.mapped(
            [f"{root}/wp-config.php"],
            f"{target}:type wordpress (an existing install: "
            "webarch installs into an empty site only, this one is kept)",
        )
        _wp_config(info["wp_config"], sctx, ctx)
    elif info.get("php") or sctx["php_seen"]:
        data["type"] = "php"
        run.mapped([root], f"{target}:type php (PHP files or settings: its own PHP-FPM pool)")
    else:
        data["type"] = "static"
        run.mapped([root], f"{target}:type static (no PHP file)")


def _wp_config(text: str, sctx: dict, ctx: Context) -> None:
    """DB_NAME to the app's database; DB_USER and DB_HOST checked; DB_PASSWORD never copied."""
    run, root, user = ctx.run, sctx["root"], sctx["user"]
    found = {m.group(1): m.group(3) for m in WP_DEFINE_RE.finditer(text)}
    where = f"{root}/wp-config.php"
    if "DB_NAME" in found:
        # No app block: it would have webarch set and mail a new admin password
        # (the notification of an app), replacing the existing admin's.
        run.mapped(
            [f"{where} DB_NAME"],
            f"the database {found['DB_NAME']} (an account's by its grants, see mariadb; "
            f"{sctx['target']} gets no app block: the existing admin keeps its password)",
        )
    else:
        run.decide([where], "no DB_NAME define found: which database does WordPress use?")
    db_user = found.get("DB_USER")
    if db_user == user:
        run.mapped([f"{where} DB_USER"], f"the account's MariaDB user {user}@localhost")
    else:
        run.decide(
            [f"{where} DB_USER"],
            f"WordPress logs in as another MariaDB user than "
            f"{user}: webarch's sites reach MariaDB as their account (unix_socket); "
            f"set DB_USER to {user} and give {user} the database",
        )
    if found.get("DB_HOST", "localhost") in LOCAL_DB_HOSTS:
        run.mapped([f"{where} DB_HOST"], "the socket (webarch's MariaDB socket, in the chroot)")
    else:
        run.decide(
            [f"{where} DB_HOST"],
            "not localhost: webarch's MariaDB listens on its "
            "socket (mariadb:listen_localhost for 127.0.0.1); unix_socket needs the "
            "socket: set DB_HOST to localhost",
        )
    if found.get("DB_PASSWORD"):
        ctx.wp_passwords.add(user)
        run.skip(
            [f"{where} DB_PASSWORD"],
            f"left in wp-config.php (never read into the "
            f"pillar): {user} logs in by unix_socket first, which does not check it; "
            f"see mariadb.users.{user}@localhost for its hash",
        )
