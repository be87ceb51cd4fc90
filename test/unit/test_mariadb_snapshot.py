"""Unit tests of webarch_mariadb's per-run snapshot (``in_place``, ``held_beyond``).

The client's output is faked; the rows are what MariaDB 10.11 prints for
``SNAPSHOT_SQL`` (checked on the test hosts by test/e2e/test_mariadb.py).
"""

from __future__ import annotations

import formula
import pytest

ROWS = [
    ["U", "alice", "localhost", "unix_socket"],
    ["U", "bob", "localhost", "mysql_native_password"],
    ["U", "root", "localhost", "mysql_native_password"],
    ["D", "alice_wp", "", ""],
    ["D", "bob_shop", "", ""],
    ["G", "'alice'@'localhost'", "alice\\_wp", "SELECT", "NO"],
    ["G", "'alice'@'localhost'", "alice\\_wp", "INSERT", "NO"],
    ["G", "'bob'@'localhost'", "bob\\_shop", "SELECT", "YES"],
]


@pytest.fixture
def mod(monkeypatch):
    # Salt's import hook must not see pytest's collection: imported here.
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_modules/webarch_mariadb.py")
    calls: list[str] = []

    def query(sql):
        calls.append(sql)
        return [list(r) for r in ROWS]

    monkeypatch.setattr(module, "calls", calls, raising=False)
    monkeypatch.setattr(module, "_query", query)
    with LoaderModuleMock({module: {"__context__": {}}}):
        yield module


def test_one_query_per_run_answers_every_check(mod):
    assert mod.in_place("user", user="alice")
    assert not mod.in_place("user", user="bob"), "bob also has a password: not unix_socket only"
    assert mod.in_place("user", user="bob", unix_socket=False)
    assert not mod.in_place("user", user="carol", unix_socket=False)
    assert mod.in_place("database", database="alice_wp")
    assert not mod.in_place("database", database="alice_blog")
    assert mod.in_place("grant", user="alice", database="alice_wp", privileges=["INSERT", "SELECT"])
    assert len(mod.calls) == 1


def test_a_grant_is_in_place_only_when_exactly_as_wanted(mod):
    assert not mod.in_place("grant", user="alice", database="alice_wp", privileges=["SELECT"])
    wanted = ["SELECT", "INSERT", "UPDATE"]
    assert not mod.in_place("grant", user="alice", database="alice_wp", privileges=wanted)
    assert not mod.in_place("grant", user="bob", database="bob_shop", privileges=["SELECT"])
    assert not mod.in_place("grant", user="alice", database="alicexwp", privileges=["SELECT"])


def test_held_beyond(mod):
    assert not mod.held_beyond("alice", "alice_wp", ["SELECT", "INSERT", "UPDATE"])
    assert mod.held_beyond("alice", "alice_wp", ["SELECT"])
    assert mod.held_beyond("bob", "bob_shop", ["SELECT"]), "GRANT OPTION is beyond"
    assert not mod.held_beyond("carol", "carol_db", ["SELECT"]), "holds nothing"


def test_changes_made_by_the_module_drop_the_snapshot(mod):
    assert mod.in_place("database", database="alice_wp")
    mod.revoke("alice", "alice_wp", ["INSERT"])
    assert mod.in_place("database", database="alice_wp")
    assert len([c for c in mod.calls if c == mod.SNAPSHOT_SQL]) == 2


def test_no_answer_from_mariadb_means_not_in_place(mod):
    def refuse(sql):
        raise mod.CommandExecutionError("MariaDB refused")

    mod._query = refuse
    assert not mod.in_place("database", database="alice_wp")


def test_an_unknown_check_is_an_error(mod):
    with pytest.raises(mod.CommandExecutionError):
        mod.in_place("table", database="alice_wp")
