"""Unit tests of the Matomo API client (_modules/webarch_matomo.py) against a fake Matomo.

The fake speaks the API calls the client makes over real HTTP on 127.0.0.1,
with the answers and quirks measured with Matomo 5.0.2
(../shared/vendor/matomo/README.md): an invalid token answers HTTP 401 with an
HTML page even with ``format=json``, errors are ``{"result": "error"}``,
``SitesManager.addSite`` does not deduplicate, scalars come as
``{"value": ...}``.  It counts the round trips and the writes, so the no-change
cost of a run is measured, not assumed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import formula
import pytest
import webarch_stats as stats

TOKEN = "f00dfeedc0ffee0123456789abcdef42"
PASSWORD = "Secret-Pa55word-xyz"
WRITES = {
    "UsersManager.addUser",
    "UsersManager.deleteUser",
    "UsersManager.setUserAccess",
    "SitesManager.addSite",
    "SitesManager.updateSite",
    "SitesManager.setSiteAliasUrls",
    "SitesManager.deleteSite",
}
PAGE_401 = (
    b"<!DOCTYPE html><html><head><title>Matomo &rsaquo; Error</title>"
    b"<style>body{color:red}</style></head><body><p>You must be logged in to access this"
    b" functionality.</p></body></html>"
)


class ApiError(Exception):
    """What Matomo turns into ``{"result": "error", "message": ...}``."""


class FakeMatomo:
    """Users, websites and accesses, changed and read through the API methods below."""

    def __init__(self) -> None:
        self.users: dict[str, dict] = {
            "admin": {"email": "admin@example.org", "superuser": True, "password": "x"}
        }
        self.sites: dict[int, dict] = {
            1: {"name": "stats", "urls": ["https://stats.example.org"], "timezone": "UTC"}
        }
        self.access: dict[tuple[str, int], str] = {}
        self.next_id = 2
        self.requests: list[list[str]] = []  # per round trip: the API methods it ran
        self.delay = 0.0
        self.bodies: list[str] = []

    # -- counters ---------------------------------------------------------
    @property
    def reads(self) -> int:
        return sum(1 for r in self.requests if not WRITES & set(r))

    @property
    def writes(self) -> int:
        return sum(1 for r in self.requests for m in r if m in WRITES)

    def reset(self) -> None:
        self.requests.clear()

    # -- the API ----------------------------------------------------------
    def dispatch(self, method: str, p: dict[str, list[str]], ran: list[str]):
        ran.append(method)
        one = {k: v[0] for k, v in p.items()}
        if method == "API.getBulkRequest":
            urls = sorted((k for k in p if k.startswith("urls[")), key=lambda k: int(k[5:-1]))
            answers = []
            for key in urls:
                sub = urllib.parse.parse_qs(p[key][0], keep_blank_values=True)
                try:
                    answers.append(self.dispatch(sub["method"][0], sub, ran))
                except ApiError as exc:
                    answers.append({"result": "error", "message": str(exc)})
            return answers
        handler = getattr(self, "api_" + method.replace(".", "_"), None)
        if handler is None:
            raise ApiError(f"The method '{method}' does not exist or is not available")
        answer = handler(one, p)
        # Matomo answers at most filter_limit (default 100) rows; -1: all.
        limit = int(one.get("filter_limit", 100))
        if limit >= 0 and isinstance(answer, list):
            answer = answer[:limit]
        elif limit >= 0 and isinstance(answer, dict) and method != "API.getBulkRequest":
            answer = dict(list(answer.items())[:limit]) if "value" not in answer else answer
        return answer

    def _user(self, login: str) -> dict:
        if login not in self.users:
            raise ApiError(f"User '{login}' doesn't exist.")
        return self.users[login]

    def _site(self, idsite: str) -> int:
        if int(idsite) not in self.sites:
            raise ApiError(f"website id = {idsite} not found")
        return int(idsite)

    def api_API_getMatomoVersion(self, one, p):
        return {"value": "5.0.2"}

    def api_UsersManager_getUsers(self, one, p):
        return [
            {"login": login, "email": u["email"], "superuser_access": u["superuser"]}
            for login, u in sorted(self.users.items())
        ]

    def api_UsersManager_getUsersSitesFromAccess(self, one, p):
        found: dict[str, list[str]] = {}
        for (login, idsite), role in sorted(self.access.items()):
            if role == one["access"]:
                found.setdefault(login, []).append(str(idsite))
        return found or []  # PHP's empty array is a JSON list

    def api_SitesManager_getSitesWithAdminAccess(self, one, p):
        rows = []
        for idsite, site in sorted(self.sites.items()):
            row = {"idsite": str(idsite), "name": site["name"], "main_url": site["urls"][0],
                   "timezone": site["timezone"]}  # fmt: skip
            if one.get("fetchAliasUrls") in ("1", "true"):
                row["alias_urls"] = list(site["urls"])
            rows.append(row)
        return rows

    def api_SitesManager_getSiteUrlsFromId(self, one, p):
        return list(self.sites[self._site(one["idSite"])]["urls"])

    def api_UsersManager_addUser(self, one, p):
        login = one["userLogin"]
        if login in self.users:
            raise ApiError(f"Username '{login}' already exists.")
        if any(u["email"] == one["email"] for u in self.users.values()):
            raise ApiError(f'The email "{one["email"]}" is already used by another user.')
        if len(one["password"]) < 6:
            raise ApiError("The password must be at least 6 characters long.")
        self.users[login] = {"email": one["email"], "superuser": False,
                             "password": one["password"]}  # fmt: skip
        return {"result": "success", "message": "ok"}

    def api_UsersManager_deleteUser(self, one, p):
        self._user(one["userLogin"])
        del self.users[one["userLogin"]]
        self.access = {k: v for k, v in self.access.items() if k[0] != one["userLogin"]}
        return {"result": "success", "message": "ok"}

    def api_UsersManager_setUserAccess(self, one, p):
        login = one["userLogin"]
        if self._user(login)["superuser"]:
            raise ApiError("A user with Super User access cannot be given another access.")
        ids = [self._site(i) for i in one["idSites"].split(",")]
        for idsite in ids:
            if one["access"] == "noaccess":
                self.access.pop((login, idsite), None)
            else:
                self.access[(login, idsite)] = one["access"]
        return {"result": "success", "message": "ok"}

    def api_SitesManager_addSite(self, one, p):
        # Matomo 5.0.2 does not deduplicate: the same URLs make a second website.
        idsite, self.next_id = self.next_id, self.next_id + 1
        self.sites[idsite] = {"name": one["siteName"], "urls": list(p["urls[]"]),
                              "timezone": one.get("timezone", "UTC")}  # fmt: skip
        return {"value": idsite}

    def api_SitesManager_updateSite(self, one, p):
        site = self.sites[self._site(one["idSite"])]
        if "siteName" in one:
            site["name"] = one["siteName"]
        if "timezone" in one:
            site["timezone"] = one["timezone"]
        urls = p.get("urls[]")
        if urls and len(urls) == 1:
            site["urls"] = [urls[0], *site["urls"][1:]]  # one URL: the main URL only
        elif urls:
            site["urls"] = list(urls)
        return {"result": "success", "message": "ok"}

    def api_SitesManager_setSiteAliasUrls(self, one, p):
        site = self.sites[self._site(one["idSite"])]
        aliases = [u for u in p.get("urls[]", p.get("urls", [])) if u]
        site["urls"] = [site["urls"][0], *aliases]
        return {"result": "success", "message": "ok"}

    def api_SitesManager_deleteSite(self, one, p):
        idsite = self._site(one["idSite"])
        if len(self.sites) == 1:
            raise ApiError("It is not possible to delete this website: it is the only one.")
        del self.sites[idsite]
        self.access = {k: v for k, v in self.access.items() if k[1] != idsite}
        return {"result": "success", "message": "ok"}


def serve(fake: FakeMatomo) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def answer(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            fake.bodies.append(body)
            time.sleep(fake.delay)
            p = urllib.parse.parse_qs(body, keep_blank_values=True)
            if self.path != "/index.php" or p.get("module") != ["API"]:
                return self.answer(404, b"<html>Not Found</html>", "text/html")
            if p.get("token_auth") != [TOKEN]:
                return self.answer(401, PAGE_401, "text/html; charset=utf-8")
            ran: list[str] = []
            try:
                result = fake.dispatch(p["method"][0], p, ran)
            except ApiError as exc:
                result = {"result": "error", "message": str(exc)}
            fake.requests.append(ran)
            self.answer(200, json.dumps(result).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def matomo(tmp_path):
    # Salt's import hook must not see pytest's collection: imported here.
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_modules/webarch_matomo.py")
    fake = FakeMatomo()
    server = serve(fake)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    conn = {"url": url, "token_file": str(token), "timeout": 2}
    dunders = {"__context__": {}, "__salt__": {"config.get": lambda key, default="": default}}
    with LoaderModuleMock({module: dunders}):
        yield module, fake, conn, tmp_path
    server.shutdown()
    server.server_close()


def no_secret(message: str) -> None:
    assert TOKEN not in message
    assert PASSWORD not in message


def test_reads_and_writes_against_the_fake(matomo):
    mod, fake, conn, _ = matomo
    assert mod.version(**conn) == "5.0.2"
    idsite = mod.add_site(
        "www.alice.example", ["https://www.alice.example"], "Europe/Paris", **conn
    )
    assert idsite == 2
    assert mod.add_user("alice", PASSWORD, "alice@example.org", **conn)
    assert mod.set_access("alice", "view", [idsite], **conn)
    snap = mod.snapshot(**conn)
    assert snap["users"]["alice"] == {"email": "alice@example.org", "superuser": False,
                                      "access": {2: "view"}}  # fmt: skip
    assert snap["users"]["admin"]["superuser"]
    assert snap["sites"][2] == {"name": "www.alice.example", "timezone": "Europe/Paris",
                                "urls": ["https://www.alice.example"]}  # fmt: skip
    assert mod.set_site_urls(2, "https://alice.example,https://www.alice.example", **conn)
    assert mod.sites(**conn)[2]["urls"] == ["https://alice.example", "https://www.alice.example"]
    assert mod.set_site_urls(2, ["https://alice.example"], **conn)
    assert mod.sites(**conn)[2]["urls"] == ["https://alice.example"], "aliases dropped"
    assert mod.set_access("alice", "noaccess", "2", **conn)
    assert mod.users(**conn)["alice"]["access"] == {}
    assert mod.delete_user("alice", **conn)
    assert mod.delete_site(2, **conn)
    assert set(mod.snapshot(**conn)["users"]) == {"admin"}
    assert list(mod.sites(**conn)) == [1]
    for body in fake.bodies:  # the token goes in the POST body, form-encoded, once
        assert urllib.parse.parse_qs(body)["token_auth"] == [TOKEN]


def test_the_snapshot_is_one_round_trip_kept_for_the_run_and_dropped_by_writes(matomo):
    mod, fake, conn, _ = matomo
    mod.snapshot(**conn)
    mod.users(**conn)
    mod.sites(**conn)
    assert fake.requests == [["API.getBulkRequest", "UsersManager.getUsers",
                              "SitesManager.getSitesWithAdminAccess",
                              *["UsersManager.getUsersSitesFromAccess"] * 3]]  # fmt: skip
    mod.add_site("b", ["https://b.example"], **conn)
    assert 2 in mod.sites(**conn), "the write dropped the snapshot"
    assert fake.reads == 2 and fake.writes == 1


def test_add_site_does_not_deduplicate(matomo):
    mod, _, conn, _ = matomo
    first = mod.add_site("a", ["https://a.example"], **conn)
    second = mod.add_site("a", ["https://a.example"], **conn)
    assert first != second, "Matomo made two websites: the planner must look first"


def test_a_refused_token_says_so_without_the_token(matomo):
    mod, _, conn, tmp_path = matomo
    bad = tmp_path / "bad"
    bad.write_text("0123456789abcdef0123456789abcdef")
    bad.chmod(0o600)
    with pytest.raises(mod.CommandExecutionError, match="HTTP 401") as err:
        mod.snapshot(**{**conn, "token_file": str(bad)})
    assert "You must be logged in" in str(err.value)
    assert "<" not in str(err.value), "the HTML page is reduced to its text"
    assert "0123456789abcdef" not in str(err.value)


def test_matomo_errors_are_reported_without_secrets(matomo):
    mod, _, conn, _ = matomo
    mod.add_user("alice", PASSWORD, "alice@example.org", **conn)
    with pytest.raises(mod.CommandExecutionError, match="already exists") as err:
        mod.add_user("alice", PASSWORD, "alice@example.org", **conn)
    no_secret(str(err.value))
    with pytest.raises(mod.CommandExecutionError, match="doesn't exist") as err:
        mod.delete_user("nobody", **conn)
    no_secret(str(err.value))
    with pytest.raises(mod.CommandExecutionError, match="not found") as err:
        mod.set_access("alice", "view", [99], **conn)
    with pytest.raises(mod.CommandExecutionError, match="access must be"):
        mod.set_access("alice", "superuser", [1], **conn)


def test_a_password_echoed_by_matomo_is_scrubbed(matomo, monkeypatch):
    mod, fake, conn, _ = matomo

    def echo(one, p):
        raise ApiError(f"password {one['password']} rejected, token {one['token_auth']}")

    monkeypatch.setattr(fake, "api_UsersManager_addUser", echo)
    with pytest.raises(mod.CommandExecutionError, match="rejected") as err:
        mod.add_user("alice", PASSWORD, "alice@example.org", **conn)
    no_secret(str(err.value))
    assert "***" in str(err.value)


def test_timeouts_and_refused_connections(matomo):
    mod, fake, conn, _ = matomo
    fake.delay = 1.5
    with pytest.raises(mod.CommandExecutionError, match=r"no answer within 0\.5 s") as err:
        mod.version(**{**conn, "timeout": 0.5})
    no_secret(str(err.value))
    fake.delay = 0
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(mod.CommandExecutionError, match="unreachable") as err:
        mod.version(**{**conn, "url": f"http://127.0.0.1:{port}/"})
    no_secret(str(err.value))


def test_settings_are_checked(matomo):
    mod, _, conn, tmp_path = matomo
    with pytest.raises(mod.CommandExecutionError, match="https only"):
        mod.version(**{**conn, "url": "http://stats.example.org/"})
    with pytest.raises(mod.CommandExecutionError, match="no Matomo URL"):
        mod.version(**{**conn, "url": ""})
    loose = tmp_path / "loose"
    loose.write_text(TOKEN)
    loose.chmod(0o640)
    with pytest.raises(mod.CommandExecutionError, match="readable by others") as err:
        mod.version(**{**conn, "token_file": str(loose)})
    no_secret(str(err.value))
    with pytest.raises(mod.CommandExecutionError, match="cannot read"):
        mod.version(**{**conn, "token_file": str(tmp_path / "missing")})
    assert TOKEN not in repr(mod._conn(conn["url"], conn["token_file"], "", 1))


def test_a_bulk_answer_with_an_error_names_the_call(matomo, monkeypatch):
    mod, fake, conn, _ = matomo

    def broken(one, p):
        raise ApiError("You can't access this resource as it requires Super User access.")

    monkeypatch.setattr(fake, "api_UsersManager_getUsers", broken)
    with pytest.raises(mod.CommandExecutionError, match=r"UsersManager\.getUsers: You can't"):
        mod.snapshot(**conn)


# --------------------------------------------------------------------------
# The planner and the client together: the cost of a run, measured
# --------------------------------------------------------------------------


def wanted_accounts(count: int, aliases: int = 1) -> dict:
    return {
        f"user{n}": {
            "email": f"user{n}@example.org",
            "sites": {
                site: {
                    "name": f"{site}.user{n}.example",
                    "urls": [f"https://{site}.user{n}.example"]
                    + [f"https://a{a}.{site}.user{n}.example" for a in range(aliases)],
                }
                for site in ("www", "blog")
            },
        }
        for n in range(count)
    }


def converge(mod, conn, wanted, ids, managed):
    """One run: read once, plan, write the differences; the ids and users to store."""
    snap = mod.snapshot(**conn)
    plan = stats.plan(wanted, snap, ids, managed)

    def call(name, kwargs):
        return getattr(mod, name)(**kwargs, **conn)

    passwords = {w.args["login"]: PASSWORD for w in plan.writes if w.call == "add_user"}
    stats.apply(plan.writes, call, passwords, plan.ids)
    return plan


@pytest.mark.parametrize("count", [10, 100])
def test_a_run_where_nothing_changed_reads_once_and_writes_nothing(matomo, count):
    mod, fake, conn, _ = matomo
    wanted = wanted_accounts(count)
    first = converge(mod, conn, wanted, {}, [])
    assert len(first.writes) == count * 4  # 2 websites, 1 user, 1 grant each
    mod._changed()  # a new run
    fake.reset()
    second = converge(mod, conn, wanted, first.ids, first.users)
    assert second.writes == []
    assert (fake.reads, fake.writes) == (1, 0), f"{count} accounts: {fake.requests}"
    assert len(fake.requests[0]) == 6  # the bulk and its five calls, whatever the count
    owners = {idsite: key.split("/")[0] for key, idsite in second.ids.items()}
    for (login, idsite), role in fake.access.items():
        assert role == "view" and owners[idsite] == login


def test_changes_follow_and_a_lost_map_duplicates_nothing(matomo):
    mod, fake, conn, _ = matomo
    wanted = wanted_accounts(3)
    first = converge(mod, conn, wanted, {}, [])
    sites_before = len(fake.sites)
    mod._changed()
    again = converge(mod, conn, wanted, {}, [])  # the stored map was lost
    assert again.writes == [] and len(fake.sites) == sites_before
    assert again.ids == first.ids
    wanted["user1"]["sites"]["www"]["urls"].append("https://new.user1.example")
    del wanted["user2"]
    wanted["user0"]["sites"]["blog"]["absent"] = True
    mod._changed()
    fake.reset()
    plan = converge(mod, conn, wanted, again.ids, again.users)
    assert sorted(w.call for w in plan.writes) == ["delete_site", "delete_user", "update_site"]
    assert "user2" not in fake.users and first.ids["user2/www"] in fake.sites, "data kept"
    assert first.ids["user0/blog"] not in fake.sites
    assert "https://new.user1.example" in fake.sites[first.ids["user1/www"]]["urls"]
    mod._changed()
    assert converge(mod, conn, wanted, plan.ids, plan.users).writes == []


def test_the_snapshot_sees_more_than_a_hundred_users_and_websites(matomo):
    # Matomo's API answers 100 rows unless asked for all (filter_limit=-1):
    # measured with 104 users and 201 websites (bench/matomo.py).
    mod, _, conn, _ = matomo
    for n in range(150):
        site = mod.add_site(f"site{n}", [f"https://s{n}.example"], **conn)
        mod.add_user(f"user{n}", PASSWORD, f"u{n}@example.org", **conn)
        mod.set_access(f"user{n}", "view", [site], **conn)
    snap = mod.snapshot(**conn)
    assert len(snap["sites"]) == 151
    assert {f"user{n}" for n in range(150)} <= set(snap["users"])
    assert snap["users"]["user149"]["access"] == {max(snap["sites"]): "view"}
