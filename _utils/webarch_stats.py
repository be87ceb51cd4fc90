"""
Matomo for webarch: the planner (pure, no I/O).

Given what pillar wants (accounts, their email and their sites) and one
snapshot of Matomo (read by ``webarch_matomo.snapshot``: users with their
email and per-site access, sites with their URLs), :py:func:`plan` returns the
API writes that make Matomo match, and nothing else: when nothing changed the
list is empty, so a run reads Matomo once and writes nothing.

The rules (issue 15):

* every present account has a Matomo user (login = account name) with *view*
  access to exactly its own sites: a role on any other site is revoked, and
  so is a higher role on its own;
* every present site of a present account has a Matomo website: its name, its
  URLs (``server_name`` first, then the aliases), its timezone;
* a site removed from pillar loses its access but keeps its Matomo data; only
  a site marked ``absent`` is deleted (and only one webarch knows the id of);
* an account removed from pillar (or marked ``absent``) has its user deleted
  if webarch manages it; its websites and their data are kept;
* Matomo's superusers and users webarch does not manage are never touched.

Which website is a site's: ``SitesManager.addSite`` does not deduplicate, so
the site key (``ACCOUNT/SITE``) -> idsite map is remembered between runs (the
caller stores :py:attr:`Plan.ids`).  A site whose key is not in the map, or
whose remembered website was deleted, is matched by URL (its ``server_name``
first, then its aliases) among the websites no other key claims; only then is
a website added.  A lost map therefore never duplicates websites.

Wanted, by login::

    {"alice": {"email": "alice@example.org", "absent": False,
               "sites": {"www": {"name": "www.alice.example",
                                 "urls": ["https://www.alice.example", ...],
                                 "timezone": "Europe/Paris", "absent": False}}}}

Snapshot (see ``webarch_matomo.snapshot``)::

    {"users": {"alice": {"email": ..., "superuser": False, "access": {3: "view"}}},
     "sites": {3: {"name": ..., "urls": [main, alias, ...], "timezone": "UTC"}}}
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

#: The role an account's user gets on its own sites.
VIEW = "view"
#: What ``UsersManager.setUserAccess`` takes to revoke.
NOACCESS = "noaccess"
#: The roles Matomo stores per site (``UsersManager.getUsersSitesFromAccess``).
ROLES = ("view", "write", "admin")


def site_key(account: str, site: str) -> str:
    """The key of ``account``'s site ``site`` in the idsite map."""
    return f"{account}/{site}"


def norm_url(url: str) -> str:
    """A URL as Matomo compares it: scheme and host lower-case, no trailing slash."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if sep:
        host, slash, path = rest.partition("/")
        url = f"{scheme.lower()}://{host.lower()}{slash}{path}"
    return url.rstrip("/") if len(url) > 5 else url


def _urls(urls: Collection[str]) -> list[str]:
    """Normalised URLs, first occurrence kept, order kept (the first is the main URL)."""
    seen: list[str] = []
    for url in urls:
        url = norm_url(url)
        if url and url not in seen:
            seen.append(url)
    return seen


class Write(NamedTuple):
    """One API write: ``call`` is the ``webarch_matomo`` function, ``args`` its arguments.

    ``site`` names the site key an ``add_site`` creates or a ``delete_site``
    removes; ``pending`` the site keys (added by an earlier write of the same
    plan) whose new idsite joins ``args["id_sites"]`` of a ``set_access``.
    """

    call: str
    args: dict[str, Any]
    site: str = ""
    pending: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a state's comment (never a password: a plan holds none)."""
        a = self.args
        if self.call == "add_user":
            return f"add Matomo user {a['login']} <{a['email']}>"
        if self.call == "delete_user":
            return f"delete Matomo user {a['login']} (its websites' data are kept)"
        if self.call == "add_site":
            return f"add Matomo website {self.site} ({', '.join(a['urls'])})"
        if self.call == "update_site":
            fields = ", ".join(sorted(k for k in a if k != "id_site"))
            return f"update Matomo website {a['id_site']} ({self.site}): {fields}"
        if self.call == "delete_site":
            return f"delete Matomo website {a['id_site']} ({self.site}) and its data"
        if self.call == "set_access":
            ids = [str(i) for i in a["id_sites"]] + list(self.pending)
            verb = "grant view" if a["access"] == VIEW else "revoke access"
            return f"{verb}: {a['login']} on {', '.join(ids)}"
        return f"{self.call} {a}"


class Plan:
    """What :py:func:`plan` found.

    writes
        In the order they must run: websites, users, grants, revokes, user
        deletions, website deletions.
    ids
        The site key -> idsite map to store: remembered or matched ones (sites
        removed from pillar stay: their data are kept, a site coming back
        finds its website); websites still to add join it when added.
    users
        The logins webarch manages once the writes are done (to store).
    notes
        Things the plan does not change and a human should know.
    """

    def __init__(self, ids: dict[str, int] | None = None) -> None:
        self.writes: list[Write] = []
        self.ids: dict[str, int] = dict(ids or {})
        self.users: list[str] = []
        self.notes: list[str] = []


def _snapshot_sites(snapshot: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The snapshot's websites by int idsite, their URLs normalised."""
    sites: dict[int, dict[str, Any]] = {}
    for idsite, site in (snapshot.get("sites") or {}).items():
        sites[int(idsite)] = {
            "name": site.get("name", ""),
            "urls": _urls(site.get("urls") or []),
            "timezone": site.get("timezone", ""),
        }
    return sites


def _snapshot_users(snapshot: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The snapshot's users, their access keyed by int idsite."""
    users: dict[str, dict[str, Any]] = {}
    for login, user in (snapshot.get("users") or {}).items():
        users[login] = {
            "email": user.get("email", ""),
            "superuser": bool(user.get("superuser")),
            "access": {int(i): role for i, role in (user.get("access") or {}).items()},
        }
    return users


def _match(
    key: str,
    urls: list[str],
    sites: Mapping[int, Mapping[str, Any]],
    ids: Mapping[str, int],
    taken: set[int],
) -> int | None:
    """The website of site ``key``: its remembered one, else one with its URL; None: none."""
    known = ids.get(key)
    if known is not None and known in sites and known not in taken:
        return known
    others = {i for k, i in ids.items() if k != key}
    for url in urls:
        for idsite in sorted(sites):
            if idsite not in taken and idsite not in others and url in sites[idsite]["urls"]:
                return idsite
    return None


def _site_changes(
    want: Mapping[str, Any], urls: list[str], have: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``update_site`` arguments that make website ``have`` as wanted ({}: none)."""
    changes: dict[str, Any] = {}
    if want.get("name") and want["name"] != have["name"]:
        changes["name"] = want["name"]
    current = have["urls"]
    if urls and (not current or urls[0] != current[0] or set(urls[1:]) != set(current[1:])):
        changes["urls"] = urls
    if want.get("timezone") and want["timezone"] != have["timezone"]:
        changes["timezone"] = want["timezone"]
    return changes


def plan(
    wanted: Mapping[str, Mapping[str, Any]],
    snapshot: Mapping[str, Any],
    ids: Mapping[str, int] | None = None,
    managed: Collection[str] = (),
    timezone: str = "UTC",
) -> Plan:
    """
    The writes that make Matomo (``snapshot``) match ``wanted``; none when it does.

    ``ids`` is the stored site key -> idsite map, ``managed`` the stored logins
    webarch created (a Matomo user not listed and not wanted is never
    touched); ``timezone`` is for new websites whose site names none.
    """
    sites = _snapshot_sites(snapshot)
    users = _snapshot_users(snapshot)
    stored = {k: int(v) for k, v in (ids or {}).items()}
    result = Plan(ids={k: i for k, i in stored.items() if i in sites})
    site_writes: list[Write] = []
    deletions: list[Write] = []
    taken: set[int] = set()
    #: Per present account: idsites of its sites, and keys of sites to add.
    own: dict[str, tuple[set[int], list[str]]] = {}

    for login in sorted(wanted):
        account = wanted[login]
        present = not account.get("absent")
        if present:
            own[login] = (set(), [])
        for name in sorted(account.get("sites") or {}):
            spec = account["sites"][name]
            key = site_key(login, name)
            if spec.get("absent"):
                idsite = stored.get(key)
                if idsite in sites:
                    deletions.append(Write("delete_site", {"id_site": idsite}, site=key))
                    result.ids.pop(key, None)
                continue
            if not present:
                continue  # the account goes, its websites' data stay
            urls = _urls(spec.get("urls") or [])
            idsite = _match(key, urls, sites, result.ids, taken)
            if idsite is None:
                if not urls:
                    result.notes.append(f"{key}: no URL, no Matomo website")
                    continue
                args = {"name": spec.get("name") or key, "urls": urls,
                        "timezone": spec.get("timezone") or timezone}  # fmt: skip
                site_writes.append(Write("add_site", args, site=key))
                own[login][1].append(key)
                result.ids.pop(key, None)
                continue
            if stored.get(key) != idsite:
                result.notes.append(f"{key}: matched Matomo website {idsite} by URL")
            taken.add(idsite)
            result.ids[key] = idsite
            own[login][0].add(idsite)
            changes = _site_changes(spec, urls, sites[idsite])
            if changes:
                site_writes.append(Write("update_site", {"id_site": idsite, **changes}, site=key))

    deleted_sites = {w.args["id_site"] for w in deletions}
    adds: list[Write] = []
    grants: list[Write] = []
    revokes: list[Write] = []
    for login, (mine, pending) in own.items():
        user = users.get(login)
        if user is not None and user["superuser"]:
            result.notes.append(f"{login}: a Matomo superuser of that name exists: left alone")
            continue
        result.users.append(login)
        email = wanted[login].get("email") or ""
        held: dict[int, str] = {}
        if user is None:
            if not email:
                result.notes.append(f"{login}: no email address, no Matomo user")
                result.users.remove(login)
                continue
            adds.append(Write("add_user", {"login": login, "email": email}))
        else:
            held = user["access"]
            if login not in managed:
                result.notes.append(f"{login}: existing Matomo user taken over")
            if email and user["email"] and email.lower() != user["email"].lower():
                result.notes.append(
                    f"{login}: Matomo has email {user['email']}, pillar {email}: changing it"
                    " needs the superuser's password (UsersManager.updateUser)"
                )
        grant = sorted(i for i in mine if held.get(i) != VIEW)
        if grant or pending:
            args = {"login": login, "access": VIEW, "id_sites": grant}
            grants.append(Write("set_access", args, pending=tuple(pending)))
        revoke = sorted(i for i in held if i not in mine and i not in deleted_sites)
        if revoke:
            revokes.append(Write("set_access", {"login": login, "access": NOACCESS,
                                                "id_sites": revoke}))  # fmt: skip

    user_deletions: list[Write] = []
    leaving = {login for login, account in wanted.items() if account.get("absent")}
    leaving |= {login for login in managed if login not in wanted}
    for login in sorted(leaving):
        user = users.get(login)
        if user is not None and not user["superuser"]:
            user_deletions.append(Write("delete_user", {"login": login}))

    result.users.sort()
    result.writes = site_writes + adds + grants + revokes + user_deletions + deletions
    return result


def apply(
    writes: list[Write],
    call: Callable[..., Any],
    passwords: Mapping[str, str],
    ids: dict[str, int],
) -> dict[str, int]:
    """
    Run ``writes`` in order through ``call(function_name, args)``.

    ``call`` is e.g. ``lambda fn, kw: __salt__["webarch_matomo." + fn](**kw)``.
    ``passwords`` gives each new user's password (the notification step made
    it).  ``ids`` (the plan's map) gets each new website's idsite as soon as it
    exists, so a caller that stores it even when a later write fails never
    adds that website twice.  Returns ``ids``.
    """
    for write in writes:
        args = dict(write.args)
        if write.pending:
            args["id_sites"] = sorted([*args["id_sites"], *(ids[k] for k in write.pending)])
        if write.call == "add_user":
            if write.args["login"] not in passwords:
                raise ValueError(f"no password for the new Matomo user {write.args['login']}")
            args["password"] = passwords[write.args["login"]]
        answer = call(write.call, args)
        if write.call == "add_site":
            ids[write.site] = int(answer)
        elif write.call == "delete_site":
            ids.pop(write.site, None)
    return ids
