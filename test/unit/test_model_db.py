"""Unit tests of the account model's MariaDB part: databases, privileges, settings."""

from __future__ import annotations

import pytest
from unit.model_helpers import host, one_account, problems

DEFAULT_PRIVILEGES = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER",
    "CREATE TEMPORARY TABLES", "LOCK TABLES", "EXECUTE", "CREATE VIEW", "SHOW VIEW",
    "CREATE ROUTINE", "ALTER ROUTINE", "EVENT", "TRIGGER", "REFERENCES",
]  # fmt: skip


def two_accounts(alice: dict, bob: dict, **server: object) -> dict:
    return {**server, "accounts": {"alice": alice, "bob": bob}}


def test_defaults(model):
    result = model.build_model(one_account(), host(model))
    db = result["accounts"]["alice"]["mariadb"]
    assert db["user"] == "alice" and db["host"] == "localhost"
    assert db["databases"] == {} and db["present"] == [] and db["absent"] == []
    assert db["privileges"] == DEFAULT_PRIVILEGES
    assert db["my_cnf"]["path"] == "/home/alice/.my.cnf"
    assert db["my_cnf"]["lines"][1:] == [
        "[client]",
        "socket=/run/mysqld/mysqld.sock",
        "user=alice",
    ]
    assert db["dump_dir"] == "/home/alice/backups/mariadb"
    assert result["mariadb"] == {
        "listen_localhost": False,
        "require_prefix": True,
        "dump_retention_days": 7,
        "socket": "/run/mysqld/mysqld.sock",
        "conf": "/etc/mysql/mariadb.conf.d/90-webarch.cnf",
    }
    assert result["db_dumps"]["archive_dir"] == "/var/backups/webarch/databases"


def test_databases_states_and_dump_map(model):
    pillar = two_accounts(
        {"databases": {"alice_wp": None, "alice_old": {"state": "absent"}, "alice_x": {}}},
        {"databases": {"bob_shop": {"state": "present"}}, "state": "absent"},
        archive_dir="/srv/archive",
    )
    result = model.build_model(pillar, host(model))
    alice = result["accounts"]["alice"]["mariadb"]
    assert alice["databases"] == {
        "alice_old": "absent",
        "alice_wp": "present",
        "alice_x": "present",
    }
    assert alice["present"] == ["alice_wp", "alice_x"] and alice["absent"] == ["alice_old"]
    # Only present accounts' present databases are dumped nightly.
    assert result["db_dumps"]["lines"][1:] == ["alice alice_wp", "alice alice_x"]
    assert result["db_dumps"]["archive_dir"] == "/srv/archive/databases"


def test_prefix_uses_underscores_for_hyphens(model):
    pillar = {"accounts": {"carol-stats": {"databases": {"carol_stats_matomo": None}}}}
    result = model.build_model(pillar, host(model))
    assert result["accounts"]["carol-stats"]["mariadb"]["prefix"] == "carol_stats_"
    assert problems(model, {"accounts": {"carol-stats": {"databases": {"carol-stats_x": None}}}})


def test_privileges_normalised(model):
    pillar = one_account(db_privileges=["select", "insert", "create   temporary tables"])
    result = model.build_model(pillar, host(model))
    assert result["accounts"]["alice"]["mariadb"]["privileges"] == [
        "SELECT",
        "INSERT",
        "CREATE TEMPORARY TABLES",
    ]


def test_server_switches(model):
    pillar = {
        "mariadb": {"listen_localhost": True, "require_prefix": False, "dump_retention_days": 30},
        "accounts": {"alice": {"databases": {"wordpress": None}}},
    }
    result = model.build_model(pillar, host(model))
    assert result["mariadb"]["listen_localhost"] is True
    assert result["mariadb"]["dump_retention_days"] == 30
    assert result["accounts"]["alice"]["mariadb"]["present"] == ["wordpress"]


# -- invalid input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("alice_" + "x" * 59, "1-64 lower-case letters"),
        ("alice_WP", "1-64 lower-case letters"),
        ("alice-wp", "1-64 lower-case letters"),
        ("alice_w$p", "1-64 lower-case letters"),
        ("wordpress", "must start with 'alice_'"),
        ("alice_", "must start with 'alice_'"),
        ("alicewp", "must start with 'alice_'"),
    ],
)
def test_bad_database_names(model, name, message):
    found = problems(model, one_account(databases={name: None}))
    assert len(found) == 1
    assert found[0].startswith(f"webarch:accounts:alice:databases:{name}: ")
    assert message in found[0]


def test_64_characters_is_fine(model):
    assert problems(model, one_account(databases={"alice_" + "x" * 58: None})) == []


def test_server_databases_refused_even_without_prefix(model):
    pillar = {"mariadb": {"require_prefix": False}, **one_account(databases={"mysql": None})}
    assert problems(model, pillar) == [
        "webarch:accounts:alice:databases:mysql: 'mysql' is a database of the server itself"
    ]


def test_duplicate_database_across_accounts(model):
    pillar = two_accounts(
        {"databases": {"shared": None}},
        {"databases": {"shared": {"state": "absent"}}},
        mariadb={"require_prefix": False},
    )
    assert problems(model, pillar) == [
        "webarch:accounts:bob:databases:shared: is also a database of account 'alice'"
    ]


def test_duplicate_possible_with_prefix_rule(model):
    # alice-b's prefix is alice_b_, which also starts with alice_.
    pillar = {
        "accounts": {
            "alice": {"databases": {"alice_b_wp": None}},
            "alice-b": {"databases": {"alice_b_wp": None}},
        }
    }
    assert problems(model, pillar) == [
        "webarch:accounts:alice-b:databases:alice_b_wp: is also a database of account 'alice'"
    ]


@pytest.mark.parametrize(
    ("privilege", "message"),
    [
        ("GRANT OPTION", "never granted"),
        ("FILE", "never granted"),
        ("super", "never granted"),
        ("PROCESS", "never granted"),
        ("ALL PRIVILEGES", "never granted"),
        ("ALL", "never granted"),
        ("SELCT", "is not a database privilege"),
        ("DROP TABLE", "is not a database privilege"),
        ("delete history", "is not granted by webarch"),
    ],
)
def test_bad_privileges(model, privilege, message):
    found = problems(model, one_account(db_privileges=["SELECT", privilege]))
    assert len(found) == 1
    assert found[0].startswith("webarch:accounts:alice:db_privileges:1: ")
    assert message in found[0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "non-empty list"),
        ("SELECT", "non-empty list"),
        (["SELECT", "select"], "repeats SELECT"),
        ([3], "must be a string"),
    ],
)
def test_bad_privilege_lists(model, value, message):
    found = problems(model, one_account(db_privileges=value))
    assert len(found) == 1 and message in found[0], found


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"databases": {"alice_wp": {"state": "gone"}}}, "databases:alice_wp:state"),
        ({"databases": {"alice_wp": {"size": 3}}}, "databases:alice_wp:size"),
        ({"databases": {"alice_wp": "present"}}, "databases:alice_wp"),
        ({"databases": ["alice_wp"]}, "databases"),
    ],
)
def test_bad_database_entries(model, data, path):
    found = problems(model, one_account(**data))
    assert len(found) == 1 and found[0].startswith(f"webarch:accounts:alice:{path}: "), found


@pytest.mark.parametrize(
    ("mariadb", "path"),
    [
        ({"listen_localhost": "yes"}, "webarch:mariadb:listen_localhost"),
        ({"require_prefix": 1}, "webarch:mariadb:require_prefix"),
        ({"dump_retention_days": 0}, "webarch:mariadb:dump_retention_days"),
        ({"port": 3306}, "webarch:mariadb:port"),
        ("on", "webarch:mariadb"),
    ],
)
def test_bad_server_settings(model, mariadb, path):
    found = problems(model, {"mariadb": mariadb})
    assert len(found) == 1 and found[0].startswith(path + ": "), found


def test_every_problem_reported_together(model):
    pillar = two_accounts(
        {
            "databases": {"alice_wp": None, "bob_x": None, "alice_" + "y" * 60: None},
            "db_privileges": ["SELECT", "FILE", "TELEPORT"],
        },
        {"databases": {"bob_x": None, "bob_ok": {"state": "maybe"}}},
    )
    found = problems(model, pillar)
    assert found == [
        "webarch:accounts:alice:databases:bob_x: database name must start with 'alice_' "
        "(the account's prefix)",
        "webarch:accounts:alice:databases:alice_" + "y" * 60
        + ": database name must be 1-64 lower-case letters, digits or underscores",
        "webarch:accounts:alice:db_privileges:1: FILE is never granted to an account "
        "(server-wide or delegating)",
        found[3],
        "webarch:accounts:bob:databases:bob_ok:state: must be one of present, absent, "
        "not 'maybe'",
    ]  # fmt: skip
    assert found[3].startswith(
        "webarch:accounts:alice:db_privileges:2: 'TELEPORT' is not a database privilege"
    )


def test_mysqli_socket_is_webarchs(model):
    found = problems(model, one_account(php={"admin_values": {"mysqli.default_socket": "/x"}}))
    assert found == [
        "webarch:accounts:alice:php:admin_values:mysqli.default_socket: is set by webarch "
        "(use the account's php keys)"
    ]


HASH = "*" + "A1" * 20


def test_an_existing_password_hash_is_kept_upper_case(model):
    built = model.build_model(one_account(db_password_hash=HASH.lower()), host(model), 12)
    assert built["accounts"]["alice"]["mariadb"]["password_hash"] == HASH


def test_no_password_hash_by_default(model):
    built = model.build_model(one_account(), host(model), 12)
    assert built["accounts"]["alice"]["mariadb"]["password_hash"] is None


@pytest.mark.parametrize("value", ["secret", "*A1", HASH[1:] + "A", 42, "*" + "G" * 40])
def test_a_bad_password_hash_is_named_never_echoed(model, value):
    found = problems(model, one_account(db_password_hash=value))
    assert len(found) == 1 and "webarch:accounts:alice:db_password_hash" in found[0], found
    assert str(value) not in found[0], found


def test_a_kept_password_and_a_new_one_exclude_each_other(model):
    pillar = one_account(db_password_hash=HASH, db_password=True, email="a@alice.example")
    found = problems(model, pillar)
    assert any("db_password_hash" in p and "not with db_password" in p for p in found), found
