"""
Matomo for webarch: the API client.

Every call is a POST of ``module=API&method=...&format=json&token_auth=...``
(form-urlencoded) to the instance's ``index.php``: over its pool's FastCGI
socket for this server's own instance, else over HTTPS.  The token is read
from a root-only file: it never goes on a command line, into a log line, a
return value or an error message.  Neither does a password.

Connection settings, taken by every function: ``url`` (the instance's base
URL; plain ``http`` only to the loopback; default: this server's own
instance, else the ``webarch_matomo:url`` config value), ``token_file`` (root
only), ``ca_file`` (to verify its certificate), ``timeout`` (seconds).

Errors raise ``CommandExecutionError`` saying what Matomo answered: its
``{"result": "error", "message": ...}``, an HTTP status (401 for a token it
refuses: Matomo answers an HTML page then, even with ``format=json``), a
timeout or a refused connection.

Reads that belong together go in one round trip (``API.getBulkRequest``):
:py:func:`snapshot` reads users, websites with their URLs and every access in
one request, and keeps it in ``__context__`` for the run; every write drops
it.  Site ids are ints, logins and URLs strings.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NamedTuple

import webarch_fcgi as fcgi
import webarch_matomo_api as api
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_matomo"

log = logging.getLogger(__name__)

TOKEN_PATH = paths.MATOMO_TOKEN_PATH
TIMEOUT = 30.0
#: Hosts a plain-http URL may name (the tests' fake Matomo).
LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: Sub-requests per API.getBulkRequest (newer Matomo versions cap them).
BULK_MAX = 100
#: The roles Matomo stores per website, and what revokes them.
ROLES = ("view", "write", "admin")
ACCESS = (*ROLES, "noaccess")
_SNAPSHOT = "webarch_matomo.snapshot"


def __virtual__() -> str:
    return __virtualname__


# --------------------------------------------------------------------------
# The connection and one request
# --------------------------------------------------------------------------


class _Conn(NamedTuple):
    """Where Matomo is and how to reach it (``repr`` never shows the token).

    ``socket``: the local instance's pool (FastCGI, ``endpoint`` its
    ``https://HOST/index.php``); else the HTTP(S) ``endpoint``.
    """

    endpoint: str
    token: str
    context: ssl.SSLContext | None
    timeout: float
    socket: str = ""
    docroot: str = ""

    def __repr__(self) -> str:
        return f"_Conn({self.endpoint!r})"


def _conn(url: str, token_file: str, ca_file: str, timeout: float) -> _Conn:
    """Check the settings and read the token.

    Without ``url``: this server's own instance, through its pool's socket;
    else the ``webarch_matomo:url`` config value.
    """
    local = {} if url else api.read_json(paths.MATOMO_INSTANCE_PATH)
    if local:
        token = _read_token(token_file or TOKEN_PATH)
        endpoint = f"https://{local['host']}/index.php"
        return _Conn(endpoint, token, None, float(timeout), local["socket"], local["docroot"])
    url = url or __salt__["config.get"]("webarch_matomo:url", "")
    if not url:
        raise CommandExecutionError("no Matomo URL: pass url= or set webarch_matomo:url")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise CommandExecutionError(f"{url}: Matomo is reached over https only")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandExecutionError(f"{url}: not an https URL")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    endpoint = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "index.php", "", ""))
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file or None)
    return _Conn(endpoint, _read_token(token_file or TOKEN_PATH), context, float(timeout))


def _read_token(path: str) -> str:
    try:
        return api.read_token(path)
    except ValueError as exc:
        raise CommandExecutionError(str(exc)) from None


def _send(conn: _Conn, form: list[tuple[str, str]]) -> tuple[int, bytes]:
    """POST ``form``: the HTTP status and body (FastCGI to the pool, or HTTP(S))."""
    if conn.socket:
        host = urllib.parse.urlsplit(conn.endpoint).netloc
        got = fcgi.http(conn.socket, "POST", host, "/index.php", form=form,
                        timeout=conn.timeout, document_root=conn.docroot)  # fmt: skip
        return got.status, got.body
    request = urllib.request.Request(
        conn.endpoint, data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=conn.timeout, context=conn.context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() or b""


def _post(
    conn: _Conn, method: str, params: list[tuple[str, str]], secrets: tuple[str, ...] = ()
) -> Any:
    """POST one API call; its decoded JSON answer, or a CommandExecutionError."""
    hide = (conn.token, *secrets)
    form = [("module", "API"), ("method", method), ("format", "json"), *params]
    form.append(("token_auth", conn.token))
    log.debug("Matomo %s %s", conn.endpoint, method)
    where = f"Matomo {method} at {conn.endpoint}"
    try:
        code, body = _send(conn, form)
    except TimeoutError:
        raise CommandExecutionError(f"{where}: no answer within {conn.timeout:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            message = f"no answer within {conn.timeout:g} s"
        else:
            message = f"unreachable: {getattr(reason, 'strerror', None) or reason}"
        raise CommandExecutionError(api.scrub(f"{where}: {message}", hide)) from None
    except OSError as exc:
        raise CommandExecutionError(api.scrub(f"{where}: {exc}", hide)) from None
    if code >= 400:
        try:
            message = api.matomo_error(json.loads(body))
        except ValueError:
            message = None
        if code in (401, 403):
            message = f"refused the token (HTTP {code}): {message or api.snippet(body)}"
        else:
            message = f"answered HTTP {code}: {message or api.snippet(body)}"
        raise CommandExecutionError(api.scrub(f"{where} {message}", hide))
    try:
        answer = json.loads(body)
    except ValueError:
        snippet = api.snippet(body)
        raise CommandExecutionError(api.scrub(f"{where}: not JSON: {snippet}", hide)) from None
    message = api.matomo_error(answer)
    if message is not None:
        raise CommandExecutionError(api.scrub(f"{where}: {message}", hide))
    return answer


def _call(conn: _Conn, method: str, secrets: tuple[str, ...] = (), **params: Any) -> Any:
    """One API call; list values go as ``name[]`` (Matomo's arrays)."""
    return _post(conn, method, api.form(params), secrets)


def _bulk(conn: _Conn, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Several read calls in one round trip each BULK_MAX (``API.getBulkRequest``)."""
    answers: list[Any] = []
    for start in range(0, len(calls), BULK_MAX):
        chunk = calls[start : start + BULK_MAX]
        form = [
            (f"urls[{n}]", urllib.parse.urlencode([("method", method), *api.form(params)]))
            for n, (method, params) in enumerate(chunk)
        ]
        got = _post(conn, "API.getBulkRequest", form)
        if not isinstance(got, list) or len(got) != len(chunk):
            raise CommandExecutionError(
                f"Matomo API.getBulkRequest: unexpected answer {got!r:.200}"
            )
        for (method, _), answer in zip(chunk, got, strict=True):
            message = api.matomo_error(answer)
            if message is not None:
                raise CommandExecutionError(api.scrub(f"Matomo {method}: {message}", (conn.token,)))
            answers.append(answer)
    return answers


def _changed() -> None:
    """Forget the snapshot: Matomo was changed."""
    for key in [k for k in __context__ if str(k).startswith(_SNAPSHOT)]:
        __context__.pop(key, None)


# --------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------

#: The calls of a snapshot: one round trip.
#: ``filter_limit=-1``: Matomo's API answers at most 100 rows otherwise.
_READS: list[tuple[str, dict[str, Any]]] = [
    ("UsersManager.getUsers", {"filter_limit": -1}),
    ("SitesManager.getSitesWithAdminAccess", {"fetchAliasUrls": True, "filter_limit": -1}),
    *[
        ("UsersManager.getUsersSitesFromAccess", {"access": role, "filter_limit": -1})
        for role in ROLES
    ],
]


def _read_all(conn: _Conn) -> dict[str, Any]:
    """Users (email, superuser, access per site) and websites (name, URLs, timezone)."""
    got_users, got_sites, *by_role = _bulk(conn, _READS)
    users: dict[str, dict[str, Any]] = {}
    for row in api.rows(got_users):
        superuser = row.get("superuser_access") in (True, 1, "1")
        users[row["login"]] = {"email": row.get("email", ""), "superuser": superuser, "access": {}}
    for role, held in zip(ROLES, by_role, strict=True):
        for login, ids in (held or {}).items():
            if login in users:
                users[login]["access"].update({int(i): role for i in ids})
    sites: dict[int, dict[str, Any]] = {}
    for row in api.rows(got_sites):
        urls = list(row.get("alias_urls") or [row.get("main_url", "")])
        sites[int(row["idsite"])] = {
            "name": row.get("name", ""),
            "urls": urls,
            "timezone": row.get("timezone", ""),
        }
    return {"users": users, "sites": sites}


def snapshot(
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
    refresh: bool = False,
) -> dict[str, Any]:
    """
    Everything the states compare, in one round trip: users, websites, accesses.

    ``{"users": {LOGIN: {"email", "superuser", "access": {IDSITE: ROLE}}},
    "sites": {IDSITE: {"name", "urls" (main URL first), "timezone"}}}``.  Kept
    for the run (``refresh=True`` reads again); every write drops it.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.snapshot url=https://stats.example.org
    """
    conn = _conn(url, token_file, ca_file, timeout)
    key = f"{_SNAPSHOT}:{conn.endpoint}"
    if refresh or key not in __context__:
        __context__[key] = _read_all(conn)
    return __context__[key]


def users(
    url: str = "", token_file: str = TOKEN_PATH, ca_file: str = "", timeout: float = TIMEOUT
) -> dict[str, dict[str, Any]]:
    """
    Every Matomo user: email, superuser or not, role per website id.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.users url=https://stats.example.org
    """
    return snapshot(url, token_file, ca_file, timeout)["users"]


def sites(
    url: str = "", token_file: str = TOKEN_PATH, ca_file: str = "", timeout: float = TIMEOUT
) -> dict[int, dict[str, Any]]:
    """
    Every Matomo website by id: name, URLs (main URL first), timezone.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.sites url=https://stats.example.org
    """
    return snapshot(url, token_file, ca_file, timeout)["sites"]


def version(
    url: str = "", token_file: str = TOKEN_PATH, ca_file: str = "", timeout: float = TIMEOUT
) -> str:
    """
    Matomo's version (and a check that the URL and the token work).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.version url=https://stats.example.org
    """
    conn = _conn(url, token_file, ca_file, timeout)
    return str(api.value(_call(conn, "API.getMatomoVersion")))


# --------------------------------------------------------------------------
# Writes (each drops the snapshot)
# --------------------------------------------------------------------------


def add_user(
    login: str,
    password: str,
    email: str,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Add the Matomo user ``login`` (no access to any website yet).

    ``password`` comes from the notification step; it is never returned,
    logged or put in an error message.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.add_user alice "$(cat /root/pw)" alice@example.org
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    params = {"userLogin": login, "password": password, "email": email}
    _call(conn, "UsersManager.addUser", (password,), **params)
    return True


def set_user_password(
    login: str,
    password: str,
    confirmation: str,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Give the Matomo user ``login`` a new ``password``.

    Matomo wants the token owner's own password as ``confirmation`` for this.
    Neither password is returned, logged or put in an error message.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.set_user_password alice "$(cat pw)" "$(cat su-pw)"
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    params = {"userLogin": login, "password": password, "passwordConfirmation": confirmation}
    _call(conn, "UsersManager.updateUser", (password, confirmation), **params)
    return True


def set_superuser(
    login: str,
    confirmation: str,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Make the Matomo user ``login`` a superuser (``confirmation``: the token owner's password).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.set_superuser admin "$(cat su-pw)"
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    params = {"userLogin": login, "hasSuperUserAccess": 1, "passwordConfirmation": confirmation}
    _call(conn, "UsersManager.setSuperUserAccess", (confirmation,), **params)
    return True


def set_location_provider(
    provider: str,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Make ``provider`` (``geoip2php``, ``default``) Matomo's geolocation.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.set_location_provider geoip2php
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    _call(conn, "UserCountry.setLocationProvider", providerId=provider)
    return True


def delete_user(
    login: str,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Delete the Matomo user ``login`` (the websites and their data stay).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.delete_user alice
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    _call(conn, "UsersManager.deleteUser", userLogin=login)
    return True


def add_site(
    name: str,
    urls: list[str] | str,
    timezone: str = "UTC",
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> int:
    """
    Add a Matomo website; its new id.  Matomo does not deduplicate: look first.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.add_site www.alice.example https://www.alice.example UTC
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    answer = _call(
        conn, "SitesManager.addSite", siteName=name, urls=api.urls(urls), timezone=timezone
    )
    try:
        return int(api.value(answer))
    except (TypeError, ValueError):
        raise CommandExecutionError(
            f"Matomo SitesManager.addSite: no id in {answer!r:.200}"
        ) from None


def update_site(
    id_site: int,
    name: str = "",
    urls: list[str] | str | None = None,
    timezone: str = "",
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Change a website's name, URLs (the first is the main URL) or timezone.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.update_site 3 name='Alice blog' timezone=Europe/Paris
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    params: dict[str, Any] = {"idSite": int(id_site)}
    if name:
        params["siteName"] = name
    if timezone:
        params["timezone"] = timezone
    wanted = api.urls(urls) if urls is not None else []
    if wanted:
        params["urls"] = wanted
    if len(params) > 1:
        _call(conn, "SitesManager.updateSite", **params)
    if len(wanted) == 1:
        # updateSite with one URL sets the main URL only: drop the aliases.
        _call(conn, "SitesManager.setSiteAliasUrls", idSite=int(id_site), urls="")
    return True


def set_site_urls(
    id_site: int,
    urls: list[str] | str,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Set a website's URLs: the first becomes its main URL, the rest its aliases.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.set_site_urls 3 '[https://alice.example, https://www.alice.example]'
    """
    return update_site(
        id_site,
        urls=api.urls(urls),
        url=url,
        token_file=token_file,
        ca_file=ca_file,
        timeout=timeout,
    )


def delete_site(
    id_site: int,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Delete a Matomo website AND ITS DATA (the states do it only for sites marked absent).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.delete_site 3
    """
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    _call(conn, "SitesManager.deleteSite", idSite=int(id_site))
    return True


def set_access(
    login: str,
    access: str,
    id_sites: list[int] | str | int,
    url: str = "",
    token_file: str = TOKEN_PATH,
    ca_file: str = "",
    timeout: float = TIMEOUT,
) -> bool:
    """
    Give ``login`` the role ``access`` (view, write, admin; noaccess revokes) on ``id_sites``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo.set_access alice view '[2, 3]'
    """
    if access not in ACCESS:
        raise CommandExecutionError(f"access must be one of {', '.join(ACCESS)}, not {access!r}")
    ids = api.ids(id_sites)
    if not ids:
        return False
    conn = _conn(url, token_file, ca_file, timeout)
    _changed()
    params = {"userLogin": login, "access": access, "idSites": ",".join(map(str, ids))}
    _call(conn, "UsersManager.setUserAccess", **params)
    return True
