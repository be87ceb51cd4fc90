"""
Matomo for webarch: the server's own instance, and keeping Matomo's users and
websites as the pillar says.

The instance lives in a site of type ``matomo`` of an ordinary account
(``webarch:matomo``): its files belong to the account, its PHP runs in the
account's chrooted pool and its console in the account's chroot, its
database is the account's, reached by unix_socket (no password anywhere).
Root talks to it without a web server, TLS or DNS: straight to the pool's
FastCGI socket (``webarch_fcgi``), as Apache would.

* :py:func:`unpack` puts a verified release archive into the empty site;
* :py:func:`install` runs Matomo's own web installer headlessly, then makes
  webarch's superuser (``webarch``: its password and API token root-only in
  ``/var/lib/webarch/matomo``);
* :py:func:`configure` sets the Matomo settings webarch owns (HTTPS only, the
  trusted host names, archiving from the timer only, no updates or downloads
  from the internet) through ``./console config:set``;
* :py:func:`plan` and :py:func:`sync` keep users, websites and access as the
  pillar says: one bulk read per run, writes only for differences.

No function returns, logs or raises with a password or token in it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tempfile
from typing import Any

import webarch_apprun as apprun
import webarch_fcgi as fcgi
import webarch_matomo_api as api
import webarch_mountns as mountns
import webarch_paths as paths
import webarch_stats as stats
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_matomo_setup"

log = logging.getLogger(__name__)

#: The installer's table prefix (Matomo's default).
TABLE_PREFIX = "matomo_"
PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
#: Dropped with the API client's snapshot by any write (same key prefix).
_PLAN = "webarch_matomo.snapshot.plan"
_PLAN_FAILED = "webarch_matomo.snapshot.failed"
#: Matomo's geolocation with a GeoIP2 database (its plugin GeoIp2), and the
#: name the settings give it.
GEOIP_PROVIDER = "geoip2php"
PROVIDER = "location_provider"
#: ``[General]`` settings webarch owns (trusted_hosts is added per instance).
GENERAL = {
    "force_ssl": "1",
    "enable_browser_archiving_triggering": "0",
    "browser_archiving_disabled_enforce": "1",
    "enable_auto_update": "0",
    "enable_internet_features": "0",
}


def __virtual__() -> str:
    return __virtualname__


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _matomo() -> dict:
    return __salt__["webarch.config"]()["matomo"]


def _local() -> dict:
    local = _matomo()["local"]
    if not local:
        raise CommandExecutionError("this server runs no Matomo of its own (webarch:matomo)")
    return local


def _password(length: int = 32) -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path``, root 0600, atomically (its directory made 0700)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_private(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return ""


def _ids(account: str) -> tuple[int, int]:
    try:
        return apprun.ids(account)
    except apprun.RunError as exc:
        raise CommandExecutionError(str(exc)) from None


def _run(argv: list[str], what: str, timeout: float = 600.0, env: dict | None = None) -> str:
    """Run ``argv``; its standard output, or an error with the end of its standard error."""
    try:
        return apprun.run(argv, what, timeout, env=env)
    except apprun.RunError as exc:
        raise CommandExecutionError(str(exc)) from None


def _config(local: dict) -> dict[str, dict[str, Any]]:
    try:
        with open(local["config"], encoding="utf-8") as handle:
            return api.parse_ini(handle.read())
    except FileNotFoundError:
        return {}


# --------------------------------------------------------------------------
# The instance
# --------------------------------------------------------------------------


def console(*args: str, timeout: float = 1800.0) -> str:
    """
    Run Matomo's ``./console`` with ``args`` as the instance's account, in its chroot.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.console core:version
    """
    local = _local()
    uid, gid = _ids(local["account"])
    argv = mountns.in_namespace([
        "/usr/sbin/chroot", f"--userspec={uid}:{gid}", local["chroot"],
        local["php"], f"{local['docroot']}/console", "--no-ansi", "--no-interaction", *args,
    ])  # fmt: skip
    env = {"HOME": local["home"], "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return _run(argv, f"Matomo console {args[0] if args else ''}", timeout, env=env)


def status() -> dict[str, Any]:
    """
    What there is of the local instance: files, installed, version, token.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.status
    """
    local = _local()
    files = os.path.exists(f"{local['docroot']}/console")
    config = _config(local)
    installed = bool(config) and "installation_in_progress" not in config.get("General", {})
    version = ""
    try:
        with open(f"{local['docroot']}/core/Version.php", encoding="utf-8") as handle:
            found = re.search(r"const VERSION = '([^']+)'", handle.read())
            version = found.group(1) if found else ""
    except FileNotFoundError:
        pass
    return {
        "files": files,
        "installed": installed,
        "version": version,
        "token": bool(_read_private(paths.MATOMO_TOKEN_PATH)),
    }


class _Web:
    """The instance's web installer and API over its pool's socket, with a cookie jar."""

    def __init__(self, local: dict) -> None:
        self.local = local
        self.cookies: dict[str, str] = {}

    def request(self, query: dict[str, str], form: dict[str, str] | None = None) -> Any:
        response = fcgi.http(
            self.local["socket"],
            "POST" if form is not None else "GET",
            self.local["server_name"],
            "/index.php",
            query=query,
            form=form,
            cookies=self.cookies,
            document_root=self.local["docroot"],
        )
        self.cookies.update(response.cookies())
        if response.status >= 400:
            text = response.body.decode("utf-8", "replace")
            raise CommandExecutionError(
                f"Matomo {query.get('module')}.{query.get('action') or query.get('method')} "
                f"answered HTTP {response.status}: {' '.join(text.split())[:300]}"
            )
        return response


def _installer_step(web: _Web, action: str, form: dict[str, str] | None = None) -> str:
    response = web.request({"module": "Installation", "action": action}, form)
    body = response.body.decode("utf-8", "replace")
    # Matomo shows a failed step's message in an error box on the same page.
    found = re.search(r'class="[^"]*(?:error|alert-danger)[^"]*"[^>]*>(.*?)</', body, re.S)
    if response.status == 200 and found and action != "systemCheck":
        message = " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())
        if message:
            raise CommandExecutionError(f"Matomo installer step {action}: {message[:300]}")
    return body


def install() -> dict[str, Any]:
    """
    Install the unpacked instance headlessly (Matomo's own installer), once.

    The database is the account's, over the socket by unix_socket; the
    superuser is webarch's own (login ``webarch``), its password and the API
    token it gets written root-only.  An installed instance is never
    installed again.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.install
    """
    local = _local()
    matomo = _matomo()
    now = status()
    if not now["files"]:
        raise CommandExecutionError(f"no Matomo files in {local['docroot']}: unpack first")
    if now["installed"]:
        return {"installed": False, "comment": "Matomo is installed already"}
    tables = _sql(f"SHOW TABLES LIKE '{TABLE_PREFIX}%'").split()
    if tables:
        # Its data are the users' history: never installed over.
        raise CommandExecutionError(
            f"database {local['database']} holds a Matomo already ({len(tables)} tables) but "
            f"{local['config']} says it is not installed: webarch does not install over it "
            "(restore config.ini.php, or drop the tables of an installation that never finished)"
        )
    if os.path.exists(local["config"]):
        # An installation that stopped before making its tables: start again.
        os.unlink(local["config"])
    password = _password()
    _write_private(paths.MATOMO_PASSWORD_PATH, password + "\n")
    web = _Web(local)
    _installer_step(web, "systemCheck")
    _installer_step(web, "databaseSetup", {
        "type": "InnoDB", "host": paths.MARIADB_SOCKET, "username": local["account"],
        "password": "", "dbname": local["database"], "tables_prefix": TABLE_PREFIX,
        "adapter": "PDO\\MYSQL",
    })  # fmt: skip
    _installer_step(web, "tablesCreation")
    _installer_step(web, "setupSuperUser", {
        "login": matomo["api_login"], "password": password, "password_bis": password,
        "email": local["email"],
    })  # fmt: skip
    _installer_step(web, "firstWebsiteSetup", {
        "siteName": local["server_name"], "url": local["url"],
        "timezone": matomo["timezone"], "ecommerce": "0",
    })  # fmt: skip
    _installer_step(web, "finished", {"anonymise_ip": "1"})
    if not status()["installed"]:
        raise CommandExecutionError("Matomo's installer ran but the instance is not installed")
    token()
    return {"installed": True, "comment": f"Matomo installed at {local['url']}"}


def token(renew: bool = False) -> dict[str, Any]:
    """
    Make sure webarch has its API token (root-only); ``renew`` makes a new one.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.token
    """
    local = _local()
    if _read_private(paths.MATOMO_TOKEN_PATH) and not renew:
        return {"created": False}
    password = _read_private(paths.MATOMO_PASSWORD_PATH)
    if not password:
        raise CommandExecutionError(
            f"no password of Matomo's webarch superuser in {paths.MATOMO_PASSWORD_PATH}"
        )
    answer = _Web(local).request(
        {"module": "API", "format": "json"},
        {
            "method": "UsersManager.createAppSpecificTokenAuth",
            "userLogin": _matomo()["api_login"],
            "passwordConfirmation": password,
            "description": "webarch formula",
        },
    )
    try:
        got = json.loads(answer.body)
    except ValueError:
        got = None
    value = got.get("value") if isinstance(got, dict) else None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        message = got.get("message") if isinstance(got, dict) else "no JSON"
        raise CommandExecutionError(f"Matomo gave no API token: {message}")
    _write_private(paths.MATOMO_TOKEN_PATH, value + "\n")
    return {"created": True}


def settings() -> dict[str, Any]:
    """
    The Matomo settings webarch owns that differ from what they should be.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.settings
    """
    local = _local()
    general = _config(local).get("General", {})
    want: dict[str, Any] = {**GENERAL, "trusted_hosts": list(local["trusted_hosts"])}
    differ = {key: value for key, value in want.items() if general.get(key) != value}
    if local["geoip"] and _ready() and _provider() != GEOIP_PROVIDER:
        differ[PROVIDER] = GEOIP_PROVIDER
    return differ


def _provider() -> str:
    """Matomo's geolocation provider: an option in its database (no API reads it)."""
    sql = (
        f"SELECT option_value FROM {TABLE_PREFIX}option "
        "WHERE option_name = 'usercountry.location_provider'"
    )
    return _sql(sql).strip() or "default"


def _sql(sql: str) -> str:
    """Run ``sql`` as MariaDB's root in the instance's database; its tab-separated rows."""
    argv = ["mariadb", f"--socket={paths.MARIADB_SOCKET}", "--user=root", "--batch",
            "--skip-column-names", "-e", sql, _local()["database"]]  # fmt: skip
    return _run(argv, f"MariaDB: {sql.split()[0]} in Matomo's database", 60)


def configure() -> dict[str, Any]:
    """
    Set the Matomo settings webarch owns (``./console config:set``); only those that differ.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.configure
    """
    differ = settings()
    if not differ:
        return {"changed": {}}
    config = {key: value for key, value in differ.items() if key != PROVIDER}
    if config:
        assignments = [f"General.{k}={json.dumps(v)}" for k, v in sorted(config.items())]
        console("config:set", *assignments)
    if PROVIDER in differ:
        __salt__["webarch_matomo.set_location_provider"](GEOIP_PROVIDER)
    left = settings()
    if left:
        raise CommandExecutionError(f"Matomo kept other values for: {', '.join(sorted(left))}")
    return {"changed": differ}


# --------------------------------------------------------------------------
# Users, websites, access
# --------------------------------------------------------------------------


def _stored() -> dict[str, Any]:
    try:
        with open(paths.MATOMO_IDS_PATH, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {"sites": {}, "users": []}
    return {"sites": dict(data.get("sites") or {}), "users": list(data.get("users") or [])}


def _store(ids: dict[str, int], users: list[str]) -> None:
    data = {"sites": dict(sorted(ids.items())), "users": sorted(set(users))}
    _write_private(paths.MATOMO_IDS_PATH, json.dumps(data, indent=1) + "\n")


def _client_args() -> dict[str, Any]:
    matomo = _matomo()
    if matomo["local"]:
        return {}
    return {"url": matomo["url"], "token_file": matomo["token_file"]}


def _ready() -> bool:
    """Whether the local instance is installed and webarch has its token."""
    now = status()
    return bool(now["installed"] and now["token"])


def _plan() -> stats.Plan:
    """The plan for this run (kept until a write)."""
    if _PLAN_FAILED in __context__:  # Matomo failed this run: every state says so, asked once
        raise CommandExecutionError(__context__[_PLAN_FAILED])
    if _PLAN not in __context__:
        matomo = _matomo()
        stored = _stored()
        if matomo["local"] and not _ready():
            # Not installed yet (a test=True run on a new server): all to add.
            snap: dict[str, Any] = {"users": {}, "sites": {}}
        else:
            try:
                snap = __salt__["webarch_matomo.snapshot"](**_client_args())
            except CommandExecutionError as exc:
                __context__[_PLAN_FAILED] = str(exc)
                raise
        __context__[_PLAN] = stats.plan(
            matomo["wanted"], snap, stored["sites"], stored["users"], matomo["timezone"]
        )
    return __context__[_PLAN]


def _selected(write: stats.Write, kind: str, name: str) -> bool:
    """Whether ``write`` belongs to the state ``kind`` of ``name`` (a login or a site key)."""
    login = write.args.get("login")
    if kind == "user":
        return write.call in ("add_user", "delete_user") and login == name
    if kind == "access":
        return write.call == "set_access" and login == name
    if kind == "site":
        return write.call in ("add_site", "update_site", "delete_site") and write.site == name
    return kind == "all"


def plan(kind: str = "all", name: str = "") -> dict[str, Any]:
    """
    What a sync would write to Matomo (``kind``: all, user, access or site of ``name``).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.plan
        salt '*' webarch_matomo_setup.plan site alice/www
    """
    got = _plan()
    writes = [w for w in got.writes if _selected(w, kind, name)]
    return {"writes": [w.describe() for w in writes], "notes": list(got.notes)}


def sync(kind: str = "all", name: str = "") -> dict[str, Any]:
    """
    Make Matomo match the pillar for ``kind`` and ``name`` (see :py:func:`plan`).

    A new user gets the password its notification issued (``webarch_notify``
    runs first); without one the user is not made.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.sync
    """
    got = _plan()
    writes = [w for w in got.writes if _selected(w, kind, name)]
    if not writes:
        return {"writes": []}
    stored = _stored()
    ids = dict(got.ids)
    args = _client_args()
    done: list[stats.Write] = []

    def call(function: str, kwargs: dict[str, Any]) -> Any:
        return __salt__[f"webarch_matomo.{function}"](**kwargs, **args)

    try:
        for write in writes:
            if write.call == "add_user":
                # Users are made by their password notification (webarch_notify).
                raise CommandExecutionError(
                    f"no Matomo user {write.args['login']} yet: its password notification "
                    f"makes it (delete ~{write.args['login']}/.notify_matomo for a new one)"
                )
            try:
                stats.apply([write], call, {}, ids)
            except (KeyError, ValueError) as exc:
                raise CommandExecutionError(f"Matomo: {write.describe()}: {exc}") from None
            done.append(write)
    finally:
        __context__.pop(_PLAN, None)
        missing = {w.args["login"] for w in got.writes if w.call == "add_user"}
        users = set(stored["users"]) | (set(got.users) - missing)
        users -= {w.args["login"] for w in done if w.call == "delete_user"}
        sites = {**stored["sites"], **ids}
        for write in done:
            if write.call == "delete_site":
                sites.pop(write.site, None)
        _store(sites, sorted(users))
    return {"writes": [w.describe() for w in done]}


def set_password(login: str, password: str, email: str) -> None:
    """
    Give Matomo user ``login`` the password ``password`` (made if missing, with ``email``).

    For ``webarch_notify`` (delete the account's ``~/.notify_matomo`` to have a
    new password made and mailed).  From a command line the password would be
    in the process list and the job cache: only for a throw-away test value.

    CLI Example:

    .. code-block:: bash

        salt-call webarch_matomo_setup.set_password alice "$(pwgen 20 1)" alice@example.org
    """
    args = _client_args()
    known = __salt__["webarch_matomo.users"](**args)
    if login in known:
        __salt__["webarch_matomo.set_user_password"](
            login, password, _read_private(paths.MATOMO_PASSWORD_PATH), **args
        )
    else:
        __salt__["webarch_matomo.add_user"](login, password, email, **args)
    __context__.pop(_PLAN, None)


def sites_file(login: str, test: bool = False) -> dict[str, Any]:
    """
    Write ``~/.matomo_sites`` of account ``login``: its sites' Matomo ids and URLs.

    Root-owned, readable by the account (for the tracking code).  Returns
    whether it changed (``test``: would change).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_setup.sites_file alice
    """
    matomo = _matomo()
    account = __salt__["webarch.config"]()["accounts"][login]
    ids = _plan().ids
    lines = [
        "# Managed by Salt (webarch): your sites' ids in Matomo, for the tracking code.",
        f"# Matomo: {matomo['url'] or ''}",
        "# SITE IDSITE URL",
    ]
    for site, want in sorted(matomo["wanted"].get(login, {}).get("sites", {}).items()):
        idsite = ids.get(stats.site_key(login, site))
        if idsite is not None and not want["absent"]:
            lines.append(f"{site} {idsite} {want['urls'][0]}")
    text = "\n".join(lines) + "\n"
    path = f"{account['home']}/{paths.MATOMO_SITES_FILE}"
    try:
        with open(path, encoding="utf-8") as handle:
            same = handle.read() == text
    except FileNotFoundError:
        same = False
    if not same and not test:
        partial = f"{path}.webarch-new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chown(partial, 0, _ids(login)[1])
        os.chmod(partial, 0o640)
        os.replace(partial, path)
    return {"changed": not same, "path": path}
