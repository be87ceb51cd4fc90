"""Unit tests of the Matomo states (_states/webarch_matomo.py) over a fake
``webarch_matomo_setup``, and of that execution module's plan/sync
(_modules/webarch_matomo_setup.py) over a fake model and a fake Matomo API.

Salt's loader is pytest-salt-factories' LoaderModuleMock, imported inside the
fixtures (Salt's import hook must not see pytest's collection).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import formula
import pytest
import webarch_stats as stats
from unit import test_matomo_plan as plan_tests

# --------------------------------------------------------------------------
# The states, over a recording fake of webarch_matomo_setup
# --------------------------------------------------------------------------


class FakeSetup:
    """``__salt__`` for the states: each function records its call and answers
    what ``answers`` holds (a callable is called, an exception raised)."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error
        self.calls: list[tuple[str, tuple, dict]] = []
        self.answers: dict[str, Any] = {
            "status": {"files": True, "installed": True, "token": True, "version": "5.0.2"},
            "release.unpack": {"unpacked": True},
            "release.due": "",
            "release.upgrade": {"upgraded": True, "removed": []},
            "release.old_releases": [],
            "release.prune": {"removed": []},
            "install": {"installed": True},
            "token": {"created": True},
            "settings": {},
            "configure": {"changed": {}},
            "plan": {"writes": [], "notes": []},
            "sync": {"writes": []},
            "sites_file": {"changed": False, "path": "/home/alice/.matomo_sites"},
        }

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {
            f"webarch_matomo_release.{name[8:]}"
            if name.startswith("release.")
            else f"webarch_matomo_setup.{name}": self._function(name)
            for name in self.answers
        }

    def _function(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            if callable(answer):
                return answer(*args, **kwargs)
            return copy.deepcopy(answer)

        return call

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture
def states() -> Iterator[tuple[Any, FakeSetup]]:
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_matomo.py")
    fake = FakeSetup(module.CommandExecutionError)
    dunders = {"__salt__": fake.functions(), "__opts__": {"test": False}, "__context__": {}}
    with LoaderModuleMock({module: dunders}):
        yield module, fake


def test_virtual_needs_the_execution_module(states):
    mod, _ = states
    assert mod.__virtual__() == "webarch_matomo"
    mod.__salt__.pop("webarch_matomo_setup.plan")
    assert mod.__virtual__()[0] is False


# installed -----------------------------------------------------------------

DOCROOT = "/home/carol-stats/sites/matomo"
ARCHIVE = "/var/lib/webarch/matomo/releases/matomo-e1d6a869d3cf.tar.gz"
SHA = "e1d6a869d3cfb1102caddfe4ac2d8fbbb24539ba89df6fc9c10be0ad1924b50f"
NOTHING = {"files": False, "installed": False, "token": False, "version": ""}


def test_installed_nothing_to_do(states):
    mod, fake = states
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret == {
        "name": DOCROOT,
        "result": True,
        "comment": "Matomo 5.0.2 is installed",
        "changes": {},
    }
    assert fake.names() == ["status", "release.due", "release.old_releases"]
    assert fake.calls[-1] == ("release.old_releases", (), {"swap": False})


def test_installed_test_mode_lists_the_steps(states):
    mod, fake = states
    fake.answers["status"] = NOTHING
    mod.__opts__["test"] = True
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret["result"] is None
    assert ret["changes"] == {"matomo": ["unpack", "install", "token"]}
    assert "unpack, install, token" in ret["comment"]
    assert fake.names() == ["status"], "test=True must not unpack, install or make a token"


def test_installed_test_mode_only_the_missing_steps(states):
    mod, fake = states
    fake.answers["status"] = {"files": True, "installed": True, "token": False, "version": "5"}
    mod.__opts__["test"] = True
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret["result"] is None
    assert ret["changes"] == {"matomo": ["token"]}


def test_installed_real_run_unpacks_installs_and_makes_the_token_in_order(states):
    mod, fake = states
    statuses = iter([NOTHING, {"files": True, "installed": True, "token": True,
                               "version": "5.0.2"}])  # fmt: skip
    fake.answers["status"] = lambda: next(statuses)
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert fake.names() == ["status", "release.unpack", "install", "token", "status"]
    assert fake.calls[1] == ("release.unpack", (ARCHIVE, SHA), {})
    assert ret["result"] is True
    assert ret["changes"] == {"matomo": ["unpack", "install", "token"], "version": "5.0.2"}
    assert ret["comment"] == "Matomo 5.0.2 installed"


def test_installed_files_there_does_not_unpack_again(states):
    mod, fake = states
    statuses = iter([{**NOTHING, "files": True}, {"files": True, "installed": True,
                                                  "token": True, "version": "5.0.2"}])  # fmt: skip
    fake.answers["status"] = lambda: next(statuses)
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert fake.names() == ["status", "install", "token", "status"]
    assert ret["changes"]["matomo"] == ["install", "token"]


def test_installed_error_fails_the_state_with_its_message(states):
    mod, fake = states
    fake.answers["status"] = NOTHING
    fake.answers["install"] = fake.error("Matomo installer step databaseSetup: access denied")
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret["result"] is False
    assert ret["comment"] == "Matomo installer step databaseSetup: access denied"
    assert ret["changes"] == {}
    assert fake.names() == ["status", "release.unpack", "install"], "nothing after that"


# configured ----------------------------------------------------------------

DIFFER = {"force_ssl": "1", "trusted_hosts": ["stats.coop.example"]}


def test_configured_nothing_to_do(states):
    mod, fake = states
    ret = mod.configured(DOCROOT)
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert fake.names() == ["settings"]


def test_configured_test_mode(states):
    mod, fake = states
    fake.answers["settings"] = DIFFER
    mod.__opts__["test"] = True
    ret = mod.configured(DOCROOT)
    assert ret["result"] is None
    assert ret["changes"] == {"settings": ["force_ssl", "trusted_hosts"]}
    assert ret["comment"] == "would set force_ssl, trusted_hosts"
    assert "configure" not in fake.names()


def test_configured_real_run(states):
    mod, fake = states
    fake.answers["settings"] = DIFFER
    ret = mod.configured(DOCROOT)
    assert fake.names() == ["settings", "configure"]
    assert ret["result"] is True
    assert ret["changes"] == {"settings": ["force_ssl", "trusted_hosts"]}


def test_configured_error(states):
    mod, fake = states
    fake.answers["settings"] = DIFFER
    fake.answers["configure"] = fake.error("Matomo kept other values for: force_ssl")
    ret = mod.configured(DOCROOT)
    assert ret["result"] is False
    assert ret["comment"] == "Matomo kept other values for: force_ssl"
    assert ret["changes"] == {}


def test_configured_error_reading_the_settings(states):
    mod, fake = states
    fake.answers["settings"] = fake.error("this server runs no Matomo of its own")
    ret = mod.configured(DOCROOT)
    assert ret["result"] is False
    assert "no Matomo" in ret["comment"]


# site_present, user_present, access, synced ---------------------------------

#: Each state, its name, and the plan/sync arguments it must pass.
SYNCED = [
    ("site_present", "alice/www", ("site", "alice/www")),
    ("site_absent", "alice/old", ("site", "alice/old")),
    ("user_present", "alice", ("user", "alice")),
    ("user_absent", "gone", ("user", "gone")),
    ("access", "alice", ("access", "alice")),
    ("synced", "matomo", ("all", "")),
]
WRITES = ["add Matomo website alice/www (https://www.alice.example)"]


@pytest.mark.parametrize(("state", "name", "args"), SYNCED)
def test_synced_no_writes(states, state, name, args):
    mod, fake = states
    ret = getattr(mod, state)(name)
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert ret["comment"] == "Matomo is as it should be"
    assert fake.calls[0] == ("plan", args, {})
    assert "sync" not in fake.names()


@pytest.mark.parametrize(("state", "name", "args"), SYNCED)
def test_synced_test_mode(states, state, name, args):
    mod, fake = states
    fake.answers["plan"] = {"writes": WRITES, "notes": []}
    mod.__opts__["test"] = True
    ret = getattr(mod, state)(name)
    assert ret["result"] is None
    assert ret["changes"] == {"matomo": WRITES}
    assert ret["comment"] == WRITES[0]
    assert fake.calls[0] == ("plan", args, {})
    assert "sync" not in fake.names()


@pytest.mark.parametrize(("state", "name", "args"), SYNCED)
def test_synced_real_run(states, state, name, args):
    mod, fake = states
    fake.answers["plan"] = {"writes": [*WRITES, "what the plan predicted"], "notes": []}
    fake.answers["sync"] = {"writes": WRITES}
    ret = getattr(mod, state)(name)
    assert ret["result"] is True
    assert ret["changes"] == {"matomo": WRITES}, "the changes are what sync did"
    assert ret["comment"] == WRITES[0]
    assert ("sync", args, {}) in fake.calls


@pytest.mark.parametrize(("state", "name", "args"), SYNCED)
@pytest.mark.parametrize("failing", ["plan", "sync"])
def test_synced_error(states, state, name, args, failing):
    mod, fake = states
    fake.answers["plan"] = {"writes": WRITES, "notes": []}
    fake.answers[failing] = fake.error("Matomo answered HTTP 502")
    ret = getattr(mod, state)(name)
    assert ret["result"] is False
    assert ret["comment"] == "Matomo answered HTTP 502"
    assert ret["changes"] == {}
    assert "sites_file" not in fake.names(), "a failed sync writes no sites file"


def test_access_writes_the_sites_file(states):
    mod, fake = states
    fake.answers["sites_file"] = {"changed": True, "path": "/home/alice/.matomo_sites"}
    ret = mod.access("alice")
    assert ret["result"] is True
    assert ret["changes"] == {"sites_file": "/home/alice/.matomo_sites"}
    assert fake.calls[-1] == ("sites_file", ("alice",), {"test": False})


def test_access_test_mode_asks_the_sites_file_in_test_mode(states):
    mod, fake = states
    mod.__opts__["test"] = True
    ret = mod.access("alice")
    assert ret["result"] is True, "unchanged sites file, no write: nothing to do"
    assert fake.calls[-1] == ("sites_file", ("alice",), {"test": True})
    fake.answers["sites_file"] = {"changed": True, "path": "/home/alice/.matomo_sites"}
    ret = mod.access("alice")
    assert ret["result"] is None
    assert ret["changes"] == {"sites_file": "/home/alice/.matomo_sites"}
    assert fake.calls[-1] == ("sites_file", ("alice",), {"test": True})


def test_access_with_writes_and_a_changed_sites_file(states):
    mod, fake = states
    fake.answers["plan"] = {"writes": ["grant view: alice on 2"], "notes": []}
    fake.answers["sync"] = {"writes": ["grant view: alice on 2"]}
    fake.answers["sites_file"] = {"changed": True, "path": "/home/alice/.matomo_sites"}
    ret = mod.access("alice")
    assert ret["result"] is True
    assert ret["changes"] == {
        "matomo": ["grant view: alice on 2"],
        "sites_file": "/home/alice/.matomo_sites",
    }
    assert fake.names() == ["plan", "sync", "sites_file"], "the file after the grants"


def test_access_sites_file_error(states):
    mod, fake = states
    fake.answers["sites_file"] = fake.error("no Unix user alice")
    ret = mod.access("alice")
    assert ret["result"] is False
    assert ret["comment"] == "no Unix user alice"


# --------------------------------------------------------------------------
# webarch_matomo_setup: plan and sync over a fake model and a fake Matomo
# --------------------------------------------------------------------------


def wanted() -> dict:
    return {
        "alice": {
            "email": "alice@example.org",
            "absent": False,
            "sites": {
                "www": {"name": "www.alice.example", "timezone": "UTC", "absent": False,
                        "urls": ["https://www.alice.example", "https://alice.example"]},
                "blog": {"name": "blog.alice.example", "timezone": "UTC", "absent": False,
                         "urls": ["https://blog.alice.example"]},
            },
        },
        "bob": {
            "email": "bob@example.org",
            "absent": False,
            "sites": {"shop": {"name": "shop.bob.example", "timezone": "UTC", "absent": False,
                               "urls": ["https://shop.bob.example"]}},
        },
    }  # fmt: skip


def matomo_state() -> dict:
    """Matomo as the wanted() pillar leaves it (the planner's tests' snapshot)."""
    return plan_tests.snapshot()


IDS = {"alice/www": 2, "alice/blog": 3, "bob/shop": 4}
URL = "https://x/"
TOKEN_FILE = "/root/matomo-token"


class FakeMatomo:
    """``webarch_matomo.*`` (snapshot and writes) over an in-memory Matomo."""

    def __init__(self) -> None:
        #: What every call must name: a remote Matomo and its token (a local one: nothing).
        self.client: dict[str, str] = {"url": URL, "token_file": TOKEN_FILE}
        self.state = matomo_state()
        self.snapshots = 0
        self.writes: list[tuple[str, dict]] = []
        self.next_id = 10

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "webarch_matomo.snapshot": self.snapshot,
            "webarch_matomo.add_site": self.add_site,
            "webarch_matomo.update_site": self.update_site,
            "webarch_matomo.delete_site": self.delete_site,
            "webarch_matomo.set_access": self.set_access,
            "webarch_matomo.add_user": self.add_user,
            "webarch_matomo.delete_user": self.delete_user,
        }

    def _client(self, kw: dict) -> None:
        for key, value in self.client.items():
            assert kw.pop(key) == value
        assert not {"url", "token_file"} & set(kw)

    def snapshot(self, **kw: Any) -> dict:
        self._client(kw)
        assert kw == {}
        self.snapshots += 1
        return copy.deepcopy(self.state)

    def add_site(self, name: str, urls: list[str], timezone: str, **kw: Any) -> int:
        self._client(kw)
        self.writes.append(("add_site", {"name": name, "urls": urls}))
        idsite = self.next_id
        self.next_id += 1
        self.state["sites"][idsite] = {"name": name, "urls": list(urls), "timezone": timezone}
        return idsite

    def update_site(self, id_site: int, **kw: Any) -> bool:
        self._client(kw)
        self.writes.append(("update_site", {"id_site": id_site, **kw}))
        self.state["sites"][id_site].update(kw)
        return True

    def delete_site(self, id_site: int, **kw: Any) -> bool:
        self._client(kw)
        self.writes.append(("delete_site", {"id_site": id_site}))
        del self.state["sites"][id_site]
        for user in self.state["users"].values():  # Matomo drops the access with it
            user["access"].pop(id_site, None)
        return True

    def set_access(self, login: str, access: str, id_sites: list[int], **kw: Any) -> bool:
        self._client(kw)
        self.writes.append(("set_access", {"login": login, "access": access,
                                           "id_sites": list(id_sites)}))  # fmt: skip
        held = self.state["users"][login]["access"]
        for idsite in id_sites:
            if access == "noaccess":
                held.pop(idsite, None)
            else:
                held[idsite] = access
        return True

    def add_user(self, login: str, email: str, password: str, **kw: Any) -> bool:
        self._client(kw)
        self.writes.append(("add_user", {"login": login}))
        self.state["users"][login] = {"email": email, "superuser": False, "access": {}}
        return True

    def delete_user(self, login: str, **kw: Any) -> bool:
        self._client(kw)
        self.writes.append(("delete_user", {"login": login}))
        del self.state["users"][login]
        return True


class Setup:
    """The loaded execution module with its fakes."""

    def __init__(self, module: Any, matomo: FakeMatomo, ids_path: Any) -> None:
        self.mod = module
        self.matomo = matomo
        self.ids_path = ids_path
        self.wanted = wanted()
        self.local: dict | None = None
        self.configs = 0

    def config(self) -> dict:
        self.configs += 1
        return {
            "matomo": {
                "on": True,
                "local": self.local,
                "url": URL,
                "token_file": TOKEN_FILE,
                "timezone": "UTC",
                "api_login": "webarch",
                "wanted": self.wanted,
            },
            "accounts": {},
        }

    def stored(self) -> dict:
        return json.loads(self.ids_path.read_text())


@pytest.fixture
def setup(tmp_path, monkeypatch) -> Iterator[Setup]:
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_modules/webarch_matomo_setup.py")
    ids_path = tmp_path / "matomo" / "ids.json"
    # The module reads the path from webarch_paths at call time.
    monkeypatch.setattr(module.paths, "MATOMO_IDS_PATH", str(ids_path))
    monkeypatch.setattr(module.paths, "MATOMO_TOKEN_PATH", str(tmp_path / "matomo" / "token"))
    monkeypatch.setattr(module.paths, "MATOMO_PASSWORD_PATH", str(tmp_path / "matomo" / "password"))
    ids_path.parent.mkdir(mode=0o700)
    ids_path.write_text(json.dumps({"sites": IDS, "users": ["alice", "bob"]}))
    matomo = FakeMatomo()
    fixture = Setup(module, matomo, ids_path)
    functions = {"webarch.config": fixture.config, **matomo.functions()}
    with LoaderModuleMock({module: {"__salt__": functions, "__context__": {}}}):
        yield fixture


def test_selected_picks_the_writes_of_one_state(setup):
    select = setup.mod._selected
    add_user = stats.Write("add_user", {"login": "alice", "email": "a@example.org"})
    delete_user = stats.Write("delete_user", {"login": "gone"})
    grant = stats.Write("set_access", {"login": "alice", "access": "view", "id_sites": [2]})
    add_site = stats.Write("add_site", {"name": "w", "urls": ["https://w"]}, site="alice/www")
    update = stats.Write("update_site", {"id_site": 4, "name": "s"}, site="bob/shop")
    delete_site = stats.Write("delete_site", {"id_site": 3}, site="alice/blog")
    every = [add_user, delete_user, grant, add_site, update, delete_site]

    def picked(kind: str, name: str) -> list:
        return [w for w in every if select(w, kind, name)]

    assert picked("user", "alice") == [add_user]
    assert picked("user", "gone") == [delete_user]
    assert picked("user", "bob") == []
    assert picked("access", "alice") == [grant]
    assert picked("access", "bob") == []
    assert picked("site", "alice/www") == [add_site]
    assert picked("site", "bob/shop") == [update]
    assert picked("site", "alice/blog") == [delete_site]
    assert picked("site", "alice") == [], "a login is no site key"
    assert picked("all", "") == every
    assert picked("bogus", "alice") == []


def test_no_change_means_no_write_and_one_snapshot_per_run(setup):
    for kind, name in [("site", "alice/www"), ("site", "bob/shop"), ("user", "alice"),
                       ("access", "alice"), ("access", "bob"), ("all", "")]:  # fmt: skip
        assert setup.mod.plan(kind, name) == {"writes": [], "notes": []}
        assert setup.mod.sync(kind, name) == {"writes": []}
    assert setup.matomo.snapshots == 1, "the plan is kept in __context__ for the run"
    assert setup.matomo.writes == []
    assert setup.stored() == {"sites": IDS, "users": ["alice", "bob"]}, "ids.json untouched"


def test_a_matomo_that_failed_is_asked_once_per_run(setup):
    """Down or hanging: the first state waits for it, the others fail at once, same answer."""

    def down(**_: Any) -> dict:
        setup.matomo.snapshots += 1
        raise setup.mod.CommandExecutionError("Matomo answered HTTP 500: Database access denied")

    setup.mod.__salt__["webarch_matomo.snapshot"] = down
    for kind, name in [("site", "alice/www"), ("user", "alice"), ("all", "")]:
        with pytest.raises(setup.mod.CommandExecutionError, match="Database access denied"):
            setup.mod.sync(kind, name)
    assert setup.matomo.snapshots == 1


def test_plan_lists_each_states_writes(setup):
    setup.wanted["alice"]["sites"]["www"]["urls"] = ["https://www.alice.example"]
    del setup.matomo.state["sites"][3]  # alice/blog's website was deleted in Matomo
    del setup.matomo.state["users"]["alice"]["access"][3]
    assert setup.mod.plan("site", "alice/www")["writes"] == [
        "update Matomo website 2 (alice/www): urls"
    ]
    assert setup.mod.plan("site", "alice/blog")["writes"] == [
        "add Matomo website alice/blog (https://blog.alice.example)"
    ]
    assert setup.mod.plan("access", "alice")["writes"] == ["grant view: alice on alice/blog"]
    assert setup.mod.plan("site", "bob/shop")["writes"] == []
    assert setup.mod.plan("user", "alice")["writes"] == []
    assert len(setup.mod.plan()["writes"]) == 3
    assert setup.matomo.snapshots == 1


def test_sync_of_one_site_runs_only_its_write_and_stores_the_new_idsite(setup):
    # alice/www lost its website; bob/shop has a new name: two site writes pending.
    del setup.matomo.state["sites"][2]
    del setup.matomo.state["users"]["alice"]["access"][2]
    setup.wanted["bob"]["sites"]["shop"]["name"] = "Bob's shop"
    done = setup.mod.sync("site", "alice/www")
    assert done == {
        "writes": ["add Matomo website alice/www (https://www.alice.example, "
                   "https://alice.example)"]
    }  # fmt: skip
    assert setup.matomo.writes == [
        ("add_site", {"name": "www.alice.example",
                      "urls": ["https://www.alice.example", "https://alice.example"]}),
    ]  # fmt: skip
    assert setup.stored() == {
        "sites": {"alice/blog": 3, "alice/www": 10, "bob/shop": 4},
        "users": ["alice", "bob"],
    }
    assert oct(setup.ids_path.stat().st_mode & 0o777) == "0o600"
    # The write dropped the run's plan: the next plan reads Matomo again and
    # now finds the new website (only the grant and bob's rename are left).
    assert setup.matomo.snapshots == 1
    left = setup.mod.plan()["writes"]
    assert setup.matomo.snapshots == 2
    assert left == [
        "update Matomo website 4 (bob/shop): name",
        "grant view: alice on 10",
    ]
    assert setup.mod.sync("access", "alice")["writes"] == ["grant view: alice on 10"]
    assert setup.matomo.writes[-1] == (
        "set_access",
        {"login": "alice", "access": "view", "id_sites": [10]},
    )
    assert setup.mod.sync()["writes"] == ["update Matomo website 4 (bob/shop): name"]
    assert setup.mod.plan()["writes"] == []
    assert setup.matomo.snapshots == 4


def test_sync_stores_the_idsite_even_when_a_later_write_fails(setup):
    del setup.matomo.state["sites"][2]
    del setup.matomo.state["users"]["alice"]["access"][2]

    def broken(*args: Any, **kw: Any) -> bool:
        raise setup.mod.CommandExecutionError("Matomo answered HTTP 500")

    setup.mod.__salt__["webarch_matomo.set_access"] = broken
    with pytest.raises(setup.mod.CommandExecutionError, match="HTTP 500"):
        setup.mod.sync()  # add_site, then the grant fails
    assert setup.stored()["sites"]["alice/www"] == 10, "never added twice"
    assert setup.mod._PLAN not in setup.mod.__context__


def test_sync_deletes_a_site_marked_absent_and_forgets_its_id(setup):
    setup.wanted["alice"]["sites"]["blog"]["absent"] = True
    assert setup.mod.plan("site", "alice/blog")["writes"] == [
        "delete Matomo website 3 (alice/blog) and its data"
    ]
    setup.mod.sync("site", "alice/blog")
    assert setup.matomo.writes == [("delete_site", {"id_site": 3})]
    assert 3 not in setup.matomo.state["sites"]
    assert setup.mod.plan()["writes"] == [], "deleted once, not again"
    assert setup.matomo.snapshots == 2


def test_sync_forgets_the_id_of_a_deleted_website(setup):
    setup.wanted["alice"]["sites"]["blog"]["absent"] = True
    setup.mod.sync("site", "alice/blog")
    assert "alice/blog" not in setup.stored()["sites"]


def test_sync_makes_no_user_without_the_password_of_its_notification(setup):
    setup.wanted["dave"] = {"email": "dave@example.org", "absent": False, "sites": {}}
    assert setup.mod.plan("user", "dave")["writes"] == ["add Matomo user dave <dave@example.org>"]
    with pytest.raises((ValueError, setup.mod.CommandExecutionError), match="dave"):
        setup.mod.sync("user", "dave")
    assert setup.matomo.writes == []
    assert "dave" not in setup.matomo.state["users"]


def test_sync_of_a_removed_account_deletes_its_user_and_unlists_it(setup):
    setup.wanted["bob"]["absent"] = True
    assert setup.mod.plan("user", "bob")["writes"] == [
        "delete Matomo user bob (its websites' data are kept)"
    ]
    assert setup.mod.sync("user", "bob")["writes"] == [
        "delete Matomo user bob (its websites' data are kept)"
    ]
    assert setup.matomo.writes == [("delete_user", {"login": "bob"})]
    assert setup.stored()["users"] == ["alice"]
    # bob's website stays remembered: its data are kept.
    assert setup.stored()["sites"]["bob/shop"] == 4


def test_a_missing_ids_file_is_rebuilt_by_url(setup):
    setup.ids_path.unlink()
    got = setup.mod.plan()
    assert got["writes"] == []
    assert sorted(got["notes"]) == [
        "alice/blog: matched Matomo website 3 by URL",
        "alice/www: matched Matomo website 2 by URL",
        "alice: existing Matomo user taken over",
        "bob/shop: matched Matomo website 4 by URL",
        "bob: existing Matomo user taken over",
    ]
    assert not setup.ids_path.exists(), "a plan writes nothing"


def test_a_local_instance_not_yet_installed_plans_everything_without_reading_it(setup, tmp_path):
    docroot = tmp_path / "sites" / "matomo"
    (docroot / "config").mkdir(parents=True)
    setup.local = {"docroot": str(docroot), "config": str(docroot / "config" / "config.ini.php"),
                   "account": "carol-stats"}  # fmt: skip
    setup.matomo.client = {}
    # A test=True run on a new server: no Matomo to ask, every website and user to add.
    writes = setup.mod.plan()["writes"]
    assert setup.matomo.snapshots == 0
    assert "add Matomo website alice/www (https://www.alice.example, https://alice.example)" in (
        writes
    )
    assert "add Matomo user bob <bob@example.org>" in writes
    # Installed, with webarch's token: Matomo is read (no URL: the local instance).
    (docroot / "console").write_text("#!/usr/bin/env php\n")
    (docroot / "config" / "config.ini.php").write_text(
        '; <?php exit; ?> DO NOT REMOVE THIS LINE\n[General]\nsalt = "x"\n'
    )
    with open(setup.mod.paths.MATOMO_TOKEN_PATH, "w") as handle:
        handle.write("0123456789abcdef0123456789abcdef\n")
    setup.mod.__context__.clear()  # a new run
    assert setup.mod.plan()["writes"] == []
    assert setup.matomo.snapshots == 1


def test_installed_a_new_release_is_an_upgrade(states):
    mod, fake = states
    fake.answers["release.due"] = "5.0.3"
    mod.__opts__["test"] = True
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret["result"] is None and ret["changes"] == {"matomo": ["upgrade to 5.0.3"]}
    assert "release.upgrade" not in fake.names()
    mod.__opts__["test"] = False
    ready = {"files": True, "installed": True, "token": True}
    statuses = iter([{**ready, "version": "5.0.2"}, {**ready, "version": "5.0.3"}])
    fake.answers["status"] = lambda: next(statuses)
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert fake.calls[-3:-1] == [("release.upgrade", (ARCHIVE, SHA), {}), ("token", (), {})]
    assert ret["result"] is True and ret["comment"] == "Matomo 5.0.3 upgraded"
    assert ret["changes"] == {"matomo": ["upgrade to 5.0.3"], "version": "5.0.3"}


SITES = "/home/carol-stats/sites"
OLDER = f"{SITES}/.matomo-5.0.1-20240101000000"
PREVIOUS = f"{SITES}/.matomo-5.0.2-20250101090000"


def test_installed_an_upgrade_predicts_and_reports_the_old_releases_it_removes(states):
    mod, fake = states
    fake.answers["release.due"] = "5.0.3"
    # The swap keeps the current files: every older tree there goes.
    fake.answers["release.old_releases"] = lambda swap: [OLDER, PREVIOUS] if swap else [OLDER]
    mod.__opts__["test"] = True
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert fake.calls[-1] == ("release.old_releases", (), {"swap": True})
    assert ret["result"] is None
    assert ret["changes"] == {"matomo": ["upgrade to 5.0.3"], "removed": [OLDER, PREVIOUS]}
    assert ret["comment"] == (
        f"Matomo would be: upgrade to 5.0.3; old releases would be removed: {OLDER}, {PREVIOUS}"
    )
    assert "release.upgrade" not in fake.names() and "release.prune" not in fake.names()
    mod.__opts__["test"] = False
    ready = {"files": True, "installed": True, "token": True}
    statuses = iter([{**ready, "version": "5.0.2"}, {**ready, "version": "5.0.3"}])
    fake.answers["status"] = lambda: next(statuses)
    fake.answers["release.upgrade"] = {"upgraded": True, "removed": [OLDER, PREVIOUS]}
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert "release.prune" not in fake.names(), "the upgrade prunes by itself"
    assert ret["result"] is True
    assert ret["changes"] == {
        "matomo": ["upgrade to 5.0.3"],
        "version": "5.0.3",
        "removed": [OLDER, PREVIOUS],
    }
    assert ret["comment"] == f"Matomo 5.0.3 upgraded; old releases removed: {OLDER}, {PREVIOUS}"


def test_installed_an_unfinished_upgrade_swaps_nothing_and_keeps_the_previous_release(states):
    mod, fake = states
    # Swapped in before, core:update did not finish: the files are 5.0.3 already.
    fake.answers["status"] = {"files": True, "installed": True, "token": True, "version": "5.0.3"}
    fake.answers["release.due"] = "5.0.3"
    mod.__opts__["test"] = True
    mod.installed(DOCROOT, ARCHIVE, SHA)
    assert fake.calls[-1] == ("release.old_releases", (), {"swap": False})


def test_installed_old_releases_left_over_are_removed_without_an_upgrade(states):
    mod, fake = states
    fake.answers["release.old_releases"] = [OLDER]
    mod.__opts__["test"] = True
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret["result"] is None
    assert ret["changes"] == {"removed": [OLDER]}
    assert ret["comment"] == f"old releases would be removed: {OLDER}"
    assert "release.prune" not in fake.names()
    mod.__opts__["test"] = False
    fake.answers["release.prune"] = {"removed": [OLDER]}
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret == {
        "name": DOCROOT,
        "result": True,
        "comment": f"old releases removed: {OLDER}",
        "changes": {"removed": [OLDER]},
    }
    assert "release.upgrade" not in fake.names() and "token" not in fake.names()


def test_installed_an_old_release_that_cannot_be_removed_fails_the_state(states):
    mod, fake = states
    fake.answers["release.old_releases"] = [OLDER]
    fake.answers["release.prune"] = fake.error(f"the old release {OLDER} was not removed: EPERM")
    ret = mod.installed(DOCROOT, ARCHIVE, SHA)
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == f"the old release {OLDER} was not removed: EPERM"
