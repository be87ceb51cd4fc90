"""
Import from the peer's Ansible host_vars: the sites.

:py:func:`convert_site` maps one entry of an account's
``users_apache_virtual_hosts`` to a webarch site, reporting every field
through the :py:class:`~webarch_import_report.Run`.  Used by
:py:mod:`webarch_import_ansible`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any

from webarch_import_report import DECISION, NOT_MAPPED, UNREAD, Run, dict_items

#: Site types of the peer that webarch serves as it is.
PEER_TYPES = {None: "static", "static": "static", "php": "php", "php+cgi": "php", "php+fcgi": "php"}
#: CMS of the peer that are webarch site types (with their database and title keys).
CMS_TYPES = {
    "wordpress": ("wordpress_dbname", "wordpress_title"),
    "mediawiki": ("mediawiki_dbname", "mediawiki_wikiname"),
    "matomo": (None, None),
}
CMS_NAMES = (
    "drupal",
    "flarum",
    "kimai",
    "matomo",
    "mediawiki",
    "moodle",
    "nextcloud",
    "phpmyadmin",
    "wordpress",
)
REDIRECT_STATUS = {
    "301": 301, "permanent": 301, "302": 302, "temp": 302, "303": 303, "seeother": 303,
    "307": 307, "308": 308,
}  # fmt: skip
WEBARCH_HEADERS = {
    "strict-transport-security": "hsts (from users_apache_sts)",
    "x-robots-tag": "robots_deny",
}
HSTS_RULE_RE = re.compile(r"^\s*max-age=([0-9]{1,10})\s*$", re.IGNORECASE)
_HTACCESS = "move it into the site's .htaccess, where webarch allows {what}"
_DIR_OPTIONS = (
    "webarch sets a site's directory options itself (Options SymLinksIfOwnerMatch, its "
    "index files, its AllowOverride list; .htaccess may set Indexes and MultiViews)"
)

#: Site keys of the peer that webarch has no key for: kind and reason.
SITE_NOT_MAPPED = {
    **dict.fromkeys(
        (
            "users_apache_options",
            "users_apache_index",
            "users_apache_override",
            "users_apache_index_options",
            "users_apache_index_head_insert",
            "users_apache_header_name",
            "users_apache_readme_name",
            "users_apache_ssi_legacy",
            "users_apache_ssi_modified",
            "users_apache_ssl_options",
            "users_apache_allow_encoded_slashes",
        ),
        (NOT_MAPPED, _DIR_OPTIONS),
    ),
    "users_apache_env": (NOT_MAPPED, _HTACCESS.format(what="SetEnv and UnsetEnv")),
    "users_apache_set_env_if": (NOT_MAPPED, _HTACCESS.format(what="SetEnvIf")),
    "users_apache_rewrite": (NOT_MAPPED, _HTACCESS.format(what="RewriteCond and RewriteRule")),
    "users_apache_error_docs": (NOT_MAPPED, _HTACCESS.format(what="ErrorDocument")),
    "users_apache_add_type": (NOT_MAPPED, _HTACCESS.format(what="AddType")),
    "users_apache_add_output_filters": (NOT_MAPPED, _HTACCESS.format(what="AddOutputFilter")),
    "users_apache_expires": (NOT_MAPPED, "webarch has no expires presets"),
    "users_apache_remoteip": (
        NOT_MAPPED,
        "webarch has no per-site RemoteIP: logs and bans see the connecting address",
    ),
    "users_apache_include_optional": (NOT_MAPPED, "webarch includes no extra config files"),
    "users_apache_directories": (NOT_MAPPED, "webarch has no per-directory config blocks"),
    "users_apache_php_socket_path": (NOT_MAPPED, "webarch wires each site to its pool itself"),
    "users_apache_php_proxy_timeout": (NOT_MAPPED, "webarch wires each site to its pool itself"),
    "users_apache_alias": (
        DECISION,
        "webarch has no Alias: a site serves its own directory only; move those files in",
    ),
    "users_apache_proxy_pass": (
        DECISION,
        "webarch sites do not proxy to other servers: the proxied paths will answer 404",
    ),
    "users_apache_locations": (
        DECISION,
        "per-path rules (auth, redirects, aliases) have no webarch key: the paths are "
        "served like the rest of the site; protect them in .htaccess (AuthConfig is allowed)",
    ),
    "users_apache_htauth_locations": (
        DECISION,
        "per-path basic auth has no webarch key: the paths are served like the rest of "
        "the site; protect them in .htaccess (AuthConfig is allowed)",
    ),
    "users_apache_filesmatch": (
        DECISION,
        "the denied files become readable: deny them in .htaccess (<FilesMatch> with Require)",
    ),
    "users_apache_deny_dirs": (
        DECISION,
        "the denied directories become readable: put 'Require all denied' in their .htaccess",
    ),
    "users_apache_nophp_dirs": (
        DECISION,
        "webarch has no per-directory PHP ban: PHP files there will run (in the account's pool)",
    ),
    "users_apache_require": (
        DECISION,
        "access rules of the document root: webarch has whole-site basic auth only "
        "(basic_auth); other Require rules go into .htaccess",
    ),
}


def convert_site(key: str, data: Any, path: list[str], run: Run, ctx: dict) -> dict | None:
    """One site of the peer (``users_apache_virtual_hosts:KEY``), or ``None`` when left out."""
    if not isinstance(data, dict):
        run.error(path, f"must be a mapping of users_apache_* keys, not {type(data).__name__}")
        return None
    peer_type = data.get("users_apache_type")
    cms = data.get("users_cms")
    if peer_type not in (*PEER_TYPES, "cgi", "fcgi"):
        run.error([*path, "users_apache_type"], "must be static, php, cgi, fcgi, php+cgi, php+fcgi")
        return None
    if cms is not None and cms not in CMS_NAMES:
        run.error([*path, "users_cms"], f"must be one of {', '.join(CMS_NAMES)}")
        return None
    if not data:
        run.mapped(path, f"site {key} (no fields: it needs a server name)")
    if peer_type in ("cgi", "fcgi"):
        run.decide(
            path,
            f"a {peer_type} site: webarch has no CGI; left out of the pillar (its files "
            "stay in ~/sites): rewrite it for PHP or serve it elsewhere",
        )
        return None
    site: dict[str, Any] = {"type": PEER_TYPES[peer_type]}
    if cms in CMS_TYPES:
        site["type"] = cms
    site_ctx = {
        **ctx,
        "site": key,
        "cms": cms,
        # The site's directory (the peer's DocumentRoot): in webarch's home or the peer's.
        "roots": [f"{home}/sites/{key}" for home in ctx["homes"]],
        "site_auth": data.get("users_apache_auth_type") == "Basic",
    }
    for name, value in data.items():
        npath = [*path, str(name)]
        if name in SITE_NOT_MAPPED:
            kind, reason = SITE_NOT_MAPPED[name]
            (run.skip if kind == NOT_MAPPED else run.decide)(npath, reason)
        elif name in SITE_FIELDS:
            SITE_FIELDS[name](value, npath, site, run, site_ctx)
        elif _cms_key(name):
            _cms_setting(str(name), value, npath, site, run, site_ctx)
        else:
            run.error(npath, "unknown key of the peer's virtual host")
    if "users_apache_sts" not in data:
        site["hsts"] = True
        run.mapped(
            [*path, "users_apache_sts"],
            "hsts: true (absent: the peer sends max-age=31536000 by default)",
        )
    return site


def _cms_key(name: Any) -> bool:
    return isinstance(name, str) and any(name == c or name.startswith(c + "_") for c in CMS_NAMES)


def _server_name(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, str):
        run.error(path, f"must be a string, not {type(value).__name__}")
        return
    site["server_name"] = value
    run.mapped(path, "server_name")


def _aliases(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, list):
        run.error(path, f"must be a list, not {type(value).__name__}")
        return
    aliases = []
    for index, alias in enumerate(value):
        if alias is UNREAD:
            continue
        if not isinstance(alias, str):
            run.error([*path, str(index)], f"must be a string, not {type(alias).__name__}")
        else:
            aliases.append(alias)
            run.mapped([*path, str(index)], "aliases")
    if aliases:
        site["aliases"] = aliases


def _type(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if ctx["cms"] in CMS_TYPES:
        run.mapped(path, f"type {ctx['cms']} (from users_cms)")
    elif value in ("php+cgi", "php+fcgi"):
        run.mapped(path, "type php")
        run.skip(path, "its CGI half: webarch has no CGI (the .cgi and .pl files are not run)")
    else:
        run.mapped(path, f"type {site['type']}")


def _vhost_docroot(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, bool):
        run.error(path, "must be true or false")
    elif value:
        run.mapped(path, "docroot (the site directory ~/sites/SITE, webarch's default)")
    else:
        run.decide(
            path, "a virtual host without a DocumentRoot: webarch always serves ~/sites/SITE"
        )


def _redirects(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    found = []
    keys = ("path", "regex_path", "status", "url")
    for index, item in dict_items(value, path, run, keys):
        ipath = [*path, index]
        status = str(item.get("status", "302")).lower()
        if "regex_path" in item:
            run.skip(
                ipath,
                "a RedirectMatch: webarch redirects by path prefix only (.htaccess "
                "allows RedirectMatch)",
            )
        elif status in ("410", "gone"):
            run.skip(
                ipath, "a 410 Gone: not a redirect in webarch (.htaccess allows Redirect gone)"
            )
        elif any(run.dotted([*ipath, k]) in run.unread for k in ("path", "url", "status")):
            run.decide(ipath, "left out: a value it needs is not readable (see above)")
        elif status not in REDIRECT_STATUS or "path" not in item or "url" not in item:
            run.error(ipath, "must have path, url and a status of 301, 302, 303, 307 or 308")
        else:
            found.append(
                {"from": item["path"], "to": item["url"], "status": REDIRECT_STATUS[status]}
            )
            run.mapped(ipath, f"redirects:{len(found) - 1}")
    if found:
        site["redirects"] = found


def _headers(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    keys = ("type", "action", "arg", "expr", "con")
    for index, item in dict_items(value, path, run, keys, ("type",)):
        ipath = [*path, index]
        if item.get("type") not in ("request", "response"):
            run.error(ipath, "type must be request or response")
            continue
        words = _words(item.get("expr") if item["type"] == "response" else item.get("arg"))
        action = item.get("action")
        name = words[0] if words else ""
        if item["type"] == "request" or item.get("con", "always") != "always" or not words:
            run.skip(ipath, _HTACCESS.format(what="Header and RequestHeader"))
        elif name.lower() in WEBARCH_HEADERS:
            run.skip(ipath, f"webarch sets {name} from {WEBARCH_HEADERS[name.lower()]}")
        elif action == "set" and len(words) == 2:
            site.setdefault("headers", {})[name] = words[1]
            run.mapped(ipath, f"headers:{name}")
        elif action == "unset" and len(words) == 1:
            site.setdefault("headers", {})[name] = False
            run.mapped(ipath, f"headers:{name} (false: not sent)")
        else:
            run.skip(ipath, _HTACCESS.format(what="Header and RequestHeader"))


def _words(text: Any) -> list[str]:
    """A header directive's arguments (quotes removed); [] when it cannot be split."""
    if not isinstance(text, str):
        return []
    try:
        return shlex.split(text)
    except ValueError:
        return []


def _sts(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, list):
        run.error(path, f"must be a list of rules, not {type(value).__name__}")
        return
    site["hsts"] = False
    for index, rule in enumerate(value):
        if rule is UNREAD:
            continue
        match = HSTS_RULE_RE.fullmatch(rule) if isinstance(rule, str) else None
        if not isinstance(rule, str):
            run.error([*path, str(index)], "must be a string")
        elif match:
            site["hsts"] = int(match.group(1))
            run.mapped([*path, str(index)], "hsts")
        else:
            run.skip([*path, str(index)], "webarch's HSTS header has a max-age only")
    if site["hsts"] is False:
        run.mapped(path, "hsts: false (no max-age rule: no header)")


def _robots(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if value != "deny":
        run.error(path, "must be deny")
        return
    site["robots_deny"] = True
    run.mapped(path, "robots_deny (an X-Robots-Tag header; the peer's robots.txt is not served)")


def _htauth_users(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    for index, item in dict_items(value, path, run, ("name", "password", "state"), ("name",)):
        ipath = [*path, index]
        if not isinstance(item.get("name"), str):
            run.error(ipath, "name must be given, as a string")
        elif item.get("state", "present") == "absent":
            run.skip(ipath, "an absent user: nothing to carry")
        elif ctx.get("site_auth"):
            users = site.setdefault("basic_auth", {}).setdefault("users", {})
            users[item["name"]] = "BCRYPT-HASH-NEEDED"
            run.decide(
                ipath,
                "webarch takes a bcrypt hash (htpasswd -nB NAME), the peer a password (not "
                "copied): put the hash in basic_auth:users (the pillar fails validation "
                "until then)",
            )
        else:
            run.skip(ipath, "used by the peer in Locations only (see users_apache_locations)")


def _auth_type(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if value == "Basic":
        site.setdefault("basic_auth", {}).setdefault("users", {})
        run.mapped(path, "basic_auth (the whole site)")
    elif value in ("None", None):
        run.mapped(path, "no basic_auth")
    else:
        run.decide(path, "webarch has basic auth only: the site would be served without it")


def _auth_name(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, str):
        run.error(path, f"must be a string, not {type(value).__name__}")
    elif ctx.get("site_auth"):
        site.setdefault("basic_auth", {})["realm"] = value
        run.mapped(path, "basic_auth:realm")
    else:
        run.skip(path, "no users_apache_auth_type Basic: the name of no prompt")


def _matomo_site(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if not isinstance(value, bool):
        run.error(path, "must be true or false")
        return
    site["matomo"] = value
    run.mapped(path, "matomo")


def _cms(value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    if value in CMS_TYPES:
        run.mapped(path, f"type {value}")
    else:
        run.skip(path, f"webarch has no {value} application: the site is served as its type says")


def _cms_setting(name: str, value: Any, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    """``<cms>_*`` keys: database, title and document root of a webarch app; else why not."""
    cms = ctx["cms"]
    db_key, title_key = CMS_TYPES.get(cms, (None, None)) if cms else (None, None)
    if name in (db_key, title_key) and cms in ("wordpress", "mediawiki"):
        if not isinstance(value, str):
            run.error(path, f"must be a string, not {type(value).__name__}")
            return
        target = "database" if name == db_key else "title"
        site.setdefault("app", {})[target] = value
        run.mapped(path, f"app:{target}")
    elif name == f"{cms}_docroot" and cms in ("wordpress", "mediawiki") and isinstance(value, str):
        _app_docroot(value, path, site, run, ctx)
    elif name == cms:
        run.skip(path, "the peer's switch for its installer role: webarch's is the site type")
    elif any(word in name for word in ("pass", "secret", "token")):
        run.skip(
            path,
            "a secret: not carried (webarch's applications reach their database "
            "by unix_socket, with no password)",
        )
    elif cms == "matomo" and name.startswith("matomo_"):
        run.skip(path, "a setting of the peer's Matomo installer: webarch's Matomo instance "
                 "is set in webarch:matomo (its database is the site account's own)")  # fmt: skip
    elif cms in CMS_TYPES and name.startswith(f"{cms}_"):
        run.skip(
            path,
            f"a setting of the peer's {cms} installer: webarch installs into an empty "
            "site only (database and title); an existing install keeps its own settings",
        )
    elif cms and name.startswith(f"{cms}_"):
        run.skip(path, f"a setting of the peer's {cms} installer: webarch has no {cms} application")
    else:
        run.skip(path, f"a setting of a CMS this site is not ({cms or 'no users_cms'})")


def _app_docroot(value: str, path: list[str], site: dict, run: Run, ctx: dict) -> None:
    """Where the peer installed the CMS: its DocumentRoot is always the site directory."""
    clean = value.rstrip("/")
    if clean in ctx["roots"]:
        run.mapped(path, "the document root (the site directory, as webarch's app expects)")
    elif any(clean.startswith(root + "/") for root in ctx["roots"]):
        run.decide(
            path,
            "the application sits below the document root (the peer serves the site "
            "directory, and so does webarch): webarch's app expects it in the document "
            "root; docroot: SUBDIR would change the site's URLs",
        )
    else:
        run.decide(path, f"outside {ctx['roots'][0]}: webarch serves a site from its own directory")


#: Site keys of the peer that webarch maps, by handler.
SITE_FIELDS: dict[str, Callable[..., None]] = {
    "users_apache_server_name": _server_name,
    "users_apache_server_aliases": _aliases,
    "users_apache_type": _type,
    "users_apache_vhost_docroot": _vhost_docroot,
    "users_apache_redirects": _redirects,
    "users_apache_headers": _headers,
    "users_apache_sts": _sts,
    "users_apache_robots": _robots,
    "users_apache_htauth_users": _htauth_users,
    "users_apache_auth_type": _auth_type,
    "users_apache_auth_name": _auth_name,
    "users_matomo_site": _matomo_site,
    "users_cms": _cms,
}
