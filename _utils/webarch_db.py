"""
The account model: MariaDB (server settings, an account's user, databases and grants).
"""

from __future__ import annotations

import re
from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import Key

DB_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")

#: Databases of the server itself: never an account's, whatever the prefix rule.
DB_NAMES_RESERVED = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

#: What an account gets on each of its databases unless it says otherwise.
DB_PRIVILEGES_DEFAULT = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER",
    "CREATE TEMPORARY TABLES", "LOCK TABLES", "EXECUTE", "CREATE VIEW", "SHOW VIEW",
    "CREATE ROUTINE", "ALTER ROUTINE", "EVENT", "TRIGGER", "REFERENCES",
)  # fmt: skip

#: The database-level privileges of MariaDB an account may have.  Not DELETE
#: HISTORY: with all of these it makes ALL PRIVILEGES, which saltext-mysql's
#: mysql_grants.present cannot match against the list it was given.
DB_PRIVILEGES_KNOWN = DB_PRIVILEGES_DEFAULT

#: Privileges MariaDB knows that are never an account's: server-wide or delegating.
DB_PRIVILEGES_REFUSED = frozenset(
    " ".join(name.split())
    for name in """
    ALL|ALL PRIVILEGES|GRANT OPTION|USAGE|PROXY|FILE|SUPER|PROCESS|RELOAD|SHUTDOWN|
    CREATE USER|SHOW DATABASES|CREATE TABLESPACE|REPLICATION CLIENT|REPLICATION SLAVE|
    REPLICATION REPLICA|BINLOG ADMIN|BINLOG MONITOR|BINLOG REPLAY|CONNECTION ADMIN|
    FEDERATED ADMIN|READ_ONLY ADMIN|REPLICATION MASTER ADMIN|REPLICATION SLAVE ADMIN|
    SET USER|SLAVE MONITOR|REPLICA MONITOR
    """.split("|")
)


#: ``webarch:mariadb``: the MariaDB server.
MARIADB_KEYS = check.key_table(
    Key(
        "listen_localhost",
        "true or false",
        False,
        "``false``: the socket only (``skip-networking``); ``true``: listen on "
        "127.0.0.1:3306 as well.",
    ),
    Key(
        "require_prefix",
        "true or false",
        True,
        "Every database name starts with the account's prefix: its name, ``-`` "
        "written ``_``, and ``_`` (``alice_``, ``carol_stats_``).",
    ),
    Key(
        "dump_retention_days",
        "integer 1-3650",
        7,
        "How many days the nightly dumps of the databases are kept.",
    ),
)


def mariadb_settings(value: Any, problems: check.Problems) -> dict:
    """Server-wide MariaDB settings: TCP on 127.0.0.1 or not, the name prefix rule, dumps."""
    path = ["webarch", "mariadb"]
    _, get = check.block(value, MARIADB_KEYS, path, problems)
    return {
        "listen_localhost": check.boolean(
            get("listen_localhost"), [*path, "listen_localhost"], problems
        ),
        "require_prefix": check.boolean(get("require_prefix"), [*path, "require_prefix"], problems),
        "dump_retention_days": check.integer(
            get("dump_retention_days"), [*path, "dump_retention_days"], problems, 1, 3650
        ),
        "socket": paths.MARIADB_SOCKET,
        "conf": paths.MARIADB_CONF,
    }


def db_prefix(account: str) -> str:
    """The prefix every database name of ``account`` starts with (by default)."""
    return account.replace("-", "_") + "_"


#: Each database of ``webarch:accounts:USERNAME:databases`` (``NAME:`` alone is present).
DATABASE_KEYS = check.key_table(
    Key(
        "state",
        check.one_of(check.STATES),
        "present",
        "``absent``: the database is dumped (verified, root-only, into "
        "``archive_dir/databases``) and only then dropped.",
    ),
)


def _databases(
    value: Any, account: str, require_prefix: bool, path: list[str], problems: check.Problems
) -> dict[str, str]:
    """An account's databases: NAME -> present or absent (``null`` is present)."""
    found: dict[str, str] = {}
    prefix = db_prefix(account)
    for name, item in check.mapping(value, path, problems).items():
        dpath = [*path, str(name)]
        if not isinstance(name, str) or not DB_NAME_RE.fullmatch(name):
            problems.add(
                dpath, "database name must be 1-64 lower-case letters, digits or underscores"
            )
            continue
        if name in DB_NAMES_RESERVED:
            problems.add(dpath, f"{name!r} is a database of the server itself")
            continue
        if require_prefix and (not name.startswith(prefix) or name == prefix):
            problems.add(dpath, f"database name must start with {prefix!r} (the account's prefix)")
            continue
        _, get = check.block(item, DATABASE_KEYS, dpath, problems)
        state = check.choice(get("state"), [*dpath, "state"], problems, check.STATES)
        if state:
            found[name] = state
    return dict(sorted(found.items()))


def _db_privileges(value: Any, path: list[str], problems: check.Problems) -> list[str]:
    """Database-level privileges, normalised to MariaDB's spelling (upper case)."""
    if value is None:
        return list(DB_PRIVILEGES_DEFAULT)
    if not isinstance(value, list) or not value:
        problems.add(path, "must be a non-empty list of database privileges")
        return []
    found: list[str] = []
    for index, item in enumerate(value):
        ipath = [*path, str(index)]
        if not isinstance(item, str):
            problems.add(ipath, f"must be a string, not {type(item).__name__}")
            continue
        privilege = " ".join(item.upper().split())
        if privilege in DB_PRIVILEGES_REFUSED:
            problems.add(
                ipath,
                f"{privilege} is never granted to an account (server-wide or delegating)",
            )
        elif privilege == "DELETE HISTORY":
            problems.add(ipath, "DELETE HISTORY is not granted by webarch")
        elif privilege not in DB_PRIVILEGES_KNOWN:
            problems.add(
                ipath,
                f"{check.describe(item)} is not a database privilege of MariaDB "
                f"(known: {', '.join(DB_PRIVILEGES_KNOWN)})",
            )
        elif privilege in found:
            problems.add(ipath, f"repeats {privilege}")
        else:
            found.append(privilege)
    return found


#: A mysql_native_password hash, as SHOW CREATE USER shows it.
PASSWORD_HASH_RE = re.compile(r"^\*[0-9A-F]{40}$")


def _password_hash(data: dict, path: list[str], problems: check.Problems) -> str | None:
    """``db_password_hash``: an existing password kept (upper-case hex), or None."""
    value = data.get("db_password_hash")
    if value is None:
        return None
    hpath = [*path, "db_password_hash"]
    if not isinstance(value, str) or not PASSWORD_HASH_RE.fullmatch(value.upper()):
        # Never echo the value: it is a password's hash.
        problems.add(hpath, "must be a mysql_native_password hash: '*' and 40 hex digits")
        return None
    if data.get("db_password") is True:
        problems.add(hpath, "keeps an existing password: not with db_password: true")
    return value.upper()


def account_mariadb(name: str, data: dict, server: dict, problems: check.Problems) -> dict:
    """An account's MariaDB user (``NAME@localhost``, unix_socket), databases, ~/.my.cnf."""
    path = ["webarch", "accounts", name]
    require_prefix = server["mariadb"]["require_prefix"] is not False
    databases = _databases(
        data.get("databases"), name, require_prefix, [*path, "databases"], problems
    )
    home = f"{paths.HOME_BASE}/{name}"
    return {
        "user": name,
        "host": "localhost",
        "password_hash": _password_hash(data, path, problems),
        "prefix": db_prefix(name),
        "privileges": _db_privileges(data.get("db_privileges"), [*path, "db_privileges"], problems),
        "databases": databases,
        "present": [db for db, state in databases.items() if state == "present"],
        "absent": [db for db, state in databases.items() if state == "absent"],
        "my_cnf": {
            "path": f"{home}/.my.cnf",
            "lines": [
                "# Managed by Salt (webarch): MariaDB logs you in by your Unix user.",
                "[client]",
                f"socket={paths.MARIADB_SOCKET}",
                f"user={name}",
            ],
        },
        "backups": f"{home}/backups",
        "dump_dir": f"{home}/backups/mariadb",
    }


def check_unique_databases(accounts: dict[str, dict], problems: check.Problems) -> None:
    """Report database names that more than one account names."""
    seen: dict[str, str] = {}
    for name, account in accounts.items():
        for db in account["mariadb"]["databases"]:
            other = seen.setdefault(db, name)
            if other != name:
                problems.add(
                    ["webarch", "accounts", name, "databases", db],
                    f"is also a database of account {other!r}",
                )


def dump_dir(archive_dir: str) -> str:
    """Where the dumps of dropped and removed databases go."""
    return f"{archive_dir}/databases"


def db_dumps(server: dict, present: list[dict]) -> dict:
    """The nightly dumps: the map webarch-db-dump reads, where dropped databases go."""
    return {
        "path": paths.DB_DUMP_MAP_PATH,
        "archive_dir": dump_dir(server["archive_dir"]),
        "lines": [paths.DB_DUMP_MAP_HEADER]
        + [f"{a['name']} {name}" for a in present for name in a["mariadb"]["present"]],
    }
