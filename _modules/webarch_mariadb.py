"""
MariaDB for webarch: verified dumps before anything is dropped.

saltext-mysql's states create users, databases and grants; what they cannot do
is keep a copy of a database before it goes.  This module dumps a database with
``mariadb-dump`` (as root, through the socket), gzips it into a root-only file
and verifies it (the gzip stream is whole and the dump ends with
``-- Dump completed``): :py:func:`drop_database` and :py:func:`drop_user` dump
first and drop nothing unless every dump is whole.

Database and user names reaching this module were validated by the account
model (``[a-z0-9_]`` and ``[a-z][a-z0-9-]``); they are quoted all the same.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import time

import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_mariadb"

SOCKET = paths.MARIADB_SOCKET
DUMP_OPTIONS = (
    "--single-transaction",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--default-character-set=utf8mb4",
)
DUMP_END = b"-- Dump completed"


def __virtual__() -> str:
    return __virtualname__


def _ident(name: str) -> str:
    """Quote an identifier for SQL."""
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    """Quote a string literal for SQL."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _query(sql: str) -> list[list[str]]:
    """Run ``sql`` as root through the socket; return the rows (tab-separated fields)."""
    proc = subprocess.run(
        ["mariadb", f"--socket={SOCKET}", "--user=root", "--batch", "--skip-column-names",
         "--raw", "-e", sql],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise CommandExecutionError(f"MariaDB refused {sql!r}: {proc.stderr.strip()}")
    return [line.split("\t") for line in proc.stdout.splitlines()]


#: The per-run picture of MariaDB's accounts (see :py:func:`in_place`).
_SNAPSHOT = "webarch_mariadb.snapshot"
SNAPSHOT_SQL = (
    "SELECT 'U', User, Host, plugin FROM mysql.user;"
    " SELECT 'D', SCHEMA_NAME, '', '' FROM information_schema.SCHEMATA;"
    " SELECT 'G', GRANTEE, TABLE_SCHEMA, PRIVILEGE_TYPE, IS_GRANTABLE"
    " FROM information_schema.SCHEMA_PRIVILEGES;"
)


def _snapshot() -> dict:
    """Users (with their plugin), databases and database grants: one client call per run.

    Kept in ``__context__`` for the state run; dropped whenever this module
    changes MariaDB.
    """
    if _SNAPSHOT not in __context__:
        users: dict[tuple[str, str], str] = {}
        databases: set[str] = set()
        grants: dict[tuple[str, str], set[str]] = {}
        for row in _query(SNAPSHOT_SQL):
            if row[0] == "U" and len(row) == 4:
                users[(row[1], row[2])] = row[3]
            elif row[0] == "D" and len(row) >= 2:
                databases.add(row[1])
            elif row[0] == "G" and len(row) == 5:
                held = grants.setdefault((row[1], row[2]), set())
                held.add(row[3])
                if row[4] == "YES":
                    held.add("GRANT OPTION")
        __context__[_SNAPSHOT] = {"users": users, "databases": databases, "grants": grants}
    return __context__[_SNAPSHOT]


def _changed() -> None:
    """Forget the snapshot: MariaDB was changed."""
    __context__.pop(_SNAPSHOT, None)


def in_place(
    what: str,
    user: str = "",
    host: str = "localhost",
    database: str = "",
    privileges: list[str] | None = None,
    unix_socket: bool = True,
) -> bool:
    """
    Tell whether a MariaDB user, database or grant is already exactly as wanted.

    For the ``unless`` of saltext-mysql's states: each of them opens four or
    five connections (each building a TLS context in PyMySQL) to check what one
    query per run shows for every account.  A ``True`` here is never wrong (a
    snapshot taken earlier in the run can only lack what the run made since);
    anything else lets the state check and act as usual.

    what
        ``user`` (``user@host`` exists, with the unix_socket plugin unless
        ``unix_socket`` is false), ``database`` (it exists) or ``grant``
        (``user@host`` holds exactly ``privileges`` on all of ``database``).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.in_place grant user=alice database=alice_wp privileges='[SELECT]'
    """
    try:
        snap = _snapshot()
    except CommandExecutionError:
        return False  # the state finds out and says why
    if what == "user":
        plugin = snap["users"].get((user, host))
        return plugin is not None and (not unix_socket or plugin == "unix_socket")
    if what == "database":
        return database in snap["databases"]
    if what == "grant":
        held = _held(snap, user, database, host)
        return held is not None and held == set(privileges or [])
    raise CommandExecutionError(f"in_place: what must be user, database or grant, not {what!r}")


def checksums(databases: list[str]) -> dict[str, str]:
    """
    ``CHECKSUM TABLE ... EXTENDED`` of every base table of ``databases``:
    {db.table: sum} (an account's move compares them on both servers).

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_mariadb.checksums '[alice_wp]'
    """
    found: dict[str, str] = {}
    for db in databases:
        tables = _query(f"SHOW FULL TABLES FROM {_ident(db)} WHERE Table_type = 'BASE TABLE'")
        names = [f"{_ident(db)}.{_ident(row[0])}" for row in tables]
        if names:
            rows = _query(f"CHECKSUM TABLE {', '.join(names)} EXTENDED")
            found.update({row[0]: row[1] for row in rows})
    return found


def held_beyond(user: str, database: str, privileges: list[str], host: str = "localhost") -> bool:
    """
    Tell whether ``user@host`` may hold more than ``privileges`` on ``database``.

    From the run's snapshot: ``False`` when it holds nothing beyond them.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.held_beyond alice alice_wp '[SELECT]'
    """
    held = _held(_snapshot(), user, database, host)
    return held is not None and not held <= set(privileges)


def _held(snap: dict, user: str, database: str, host: str) -> set[str] | None:
    """What ``user@host`` holds on all of ``database`` in the snapshot (None: nothing)."""
    return snap["grants"].get((f"'{user}'@'{host}'", _db_pattern(database)))


def _db_pattern(database: str) -> str:
    """How MariaDB stores a grant on ``database`` (``_`` escaped, as saltext-mysql grants it)."""
    return database.replace("_", "\\_")


def database_exists(name: str) -> bool:
    """Tell whether the database ``name`` exists.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.database_exists alice_wp
    """
    rows = _query(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = " + _literal(name)
    )
    return bool(rows)


def user_exists(user: str, host: str = "localhost") -> bool:
    """Tell whether the MariaDB user ``user@host`` exists.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.user_exists alice
    """
    rows = _query(
        f"SELECT User FROM mysql.global_priv WHERE User = {_literal(user)} "
        f"AND Host = {_literal(host)}"
    )
    return bool(rows)


def has_password_hash(user: str, host: str, password_hash: str) -> bool:
    """
    Whether ``user@host`` logs in by unix_socket or by the password of
    ``password_hash`` (and nothing else).  The hash is compared here, never
    sent to MariaDB.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.has_password_hash alice localhost "$HASH"
    """
    if not user_exists(user, host):
        return False
    rows = _query(f"SHOW CREATE USER {_literal(user)}@{_literal(host)}")
    wanted = f"IDENTIFIED VIA unix_socket OR mysql_native_password USING '{password_hash}'"
    return bool(rows) and rows[0][0].rstrip().endswith(wanted)


def set_password_hash(user: str, host: str, password_hash: str) -> None:
    """
    Let ``user@host`` log in by unix_socket first, or by the password of ``password_hash``.

    The hash (``*`` and 40 hex digits, mysql_native_password) goes to the client
    on standard input, never on its command line; the statement is not logged.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.set_password_hash alice localhost "$HASH"
    """
    if (
        len(password_hash) != 41
        or password_hash[0] != "*"
        or not all(c in "0123456789ABCDEF" for c in password_hash[1:])
    ):
        raise CommandExecutionError("not a mysql_native_password hash")
    _changed()
    sql = (
        f"SET SESSION sql_log_off = 1; ALTER USER {_literal(user)}@{_literal(host)} "
        f"IDENTIFIED VIA unix_socket OR mysql_native_password USING {_literal(password_hash)};"
    )
    proc = subprocess.run(
        ["mariadb", f"--socket={SOCKET}", "--user=root", "--batch"],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CommandExecutionError(f"MariaDB refused the new password of {user}@{host}")


def user_databases(user: str, host: str = "localhost") -> list[str]:
    """The existing databases ``user@host`` has privileges on (grants are LIKE patterns).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.user_databases alice
    """
    patterns = [
        row[0]
        for row in _query(
            f"SELECT Db FROM mysql.db WHERE User = {_literal(user)} AND Host = {_literal(host)}"
        )
    ]
    found: set[str] = set()
    for pattern in patterns:
        rows = _query(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE "
            + _literal(pattern)
        )
        found.update(row[0] for row in rows)
    return sorted(found - {"mysql", "information_schema", "performance_schema", "sys"})


def _dump_path(name: str, archive_dir: str) -> str:
    """Where a dump of ``name`` made now goes."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(archive_dir, f"{name}-{stamp}.sql.gz")


def verify_dump(path: str) -> None:
    """Raise unless ``path`` is a whole gzip stream whose dump ends with ``-- Dump completed``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.verify_dump /var/backups/webarch/databases/alice_wp-X.sql.gz
    """
    last = b""
    try:
        with gzip.open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    last = line
    except (OSError, EOFError) as exc:
        raise CommandExecutionError(f"dump {path} is not a whole gzip file: {exc}") from None
    if not last.startswith(DUMP_END):
        raise CommandExecutionError(
            f"dump {path} is incomplete (no '-- Dump completed' at its end)"
        )


def dump(name: str, archive_dir: str) -> str:
    """
    Dump the database ``name`` into ``archive_dir`` (root only), verify it, return its path.

    The directory is created root:root 0700, the dump is 0600.  Restore it
    into any database with ``zcat DUMP | mariadb NEWDB``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.dump alice_wp /var/backups/webarch/databases
    """
    os.makedirs(archive_dir, mode=0o700, exist_ok=True)
    os.chmod(archive_dir, 0o700)
    path = _dump_path(name, archive_dir)
    partial = path + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
            with subprocess.Popen(
                ["mariadb-dump", f"--socket={SOCKET}", "--user=root", *DUMP_OPTIONS, name],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ) as proc:
                assert proc.stdout is not None and proc.stderr is not None
                for chunk in iter(lambda: proc.stdout.read(1 << 16), b""):
                    out.write(chunk)
                errors = proc.stderr.read().decode(errors="replace").strip()
            if proc.returncode != 0:
                raise CommandExecutionError(f"mariadb-dump {name} failed: {errors}")
        verify_dump(partial)
        os.rename(partial, path)
    except BaseException:
        if os.path.lexists(partial):
            os.unlink(partial)
        raise
    return path


def _drop_database(name: str) -> None:
    """Drop the database ``name`` and every grant on it (only after a verified dump)."""
    _changed()
    _query(f"DROP DATABASE IF EXISTS {_ident(name)}")
    rows = _query(
        "SELECT Db, User, Host FROM mysql.db"
        f" WHERE Db IN ({_literal(name)}, {_literal(_db_pattern(name))})"
    )
    for db, user, host in rows:
        _query(f"REVOKE ALL PRIVILEGES ON {_ident(db)}.* FROM {_literal(user)}@{_literal(host)}")


def drop_database(name: str, archive_dir: str) -> str:
    """
    Dump the database ``name`` into ``archive_dir`` (verified), then drop it.

    Returns the dump's path.  Nothing is dropped unless the dump is whole: the
    dump and the drop are one call, so no caller can drop without a dump.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.drop_database alice_old /var/backups/webarch/databases
    """
    path = dump(name, archive_dir)
    try:
        _drop_database(name)
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"dumped to {path} but not dropped: {exc}") from None
    return path


def empty_database(name: str, archive_dir: str) -> str:
    """
    Make the database ``name`` as empty as a new one (no table, view, routine or
    event), keeping its character set, collation and grants; when it held
    anything, a verified dump of it goes to ``archive_dir`` first.  Returns the
    dump's path, or "" when there was nothing to keep.  (A move loads the old
    server's dump into the new server's database: what the new server's first run
    put there, such as a fresh application install, must not remain beside it.)

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.empty_database alice_wp /var/backups/webarch/databases
    """
    lit = _literal(name)
    held = _query(
        f"SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit})"
        f" + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit})"
        f" + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit})"
    )
    if int(held[0][0]) == 0:
        return ""
    path = dump(name, archive_dir)
    rows = _query(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
        f" FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {lit}"
    )
    charset, collation = rows[0]
    if not re.match(r"^[a-z0-9_]+$", charset + collation):
        raise CommandExecutionError(f"{name}: odd character set {charset!r} / {collation!r}")
    _changed()
    try:
        _query(
            f"DROP DATABASE {_ident(name)};"
            f" CREATE DATABASE {_ident(name)} CHARACTER SET {charset} COLLATE {collation}"
        )
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"dumped to {path} but not emptied: {exc}") from None
    return path


def _db_grant_object(database: str) -> str:
    """How MariaDB names the grants on ``database`` (``_`` escaped, as saltext-mysql does)."""
    return _ident(_db_pattern(database)) + ".*"


def database_privileges(user: str, database: str, host: str = "localhost") -> list[str]:
    """The privileges ``user@host`` holds on the whole of ``database`` (GRANT OPTION too).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.database_privileges alice alice_wp
    """
    if not user_exists(user, host):
        return []
    target = f" ON {_db_grant_object(database)} TO "
    found: list[str] = []
    for (line,) in _query(f"SHOW GRANTS FOR {_literal(user)}@{_literal(host)}"):
        if not line.startswith("GRANT ") or target not in line:
            continue
        # ALL PRIVILEGES stays as it is: revoked whole, whatever it holds on
        # this MariaDB version.
        found += line[len("GRANT ") : line.index(target)].split(", ")
        if line.endswith(" WITH GRANT OPTION"):
            found.append("GRANT OPTION")
    return found


def revoke(user: str, database: str, privileges: list[str], host: str = "localhost") -> None:
    """Revoke ``privileges`` on ``database`` from ``user@host`` (GRANT OPTION first).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.revoke alice alice_wp '["DROP", "GRANT OPTION"]'
    """
    _changed()
    for privilege in sorted(privileges, key=lambda p: p != "GRANT OPTION"):
        _query(
            f"REVOKE {privilege} ON {_db_grant_object(database)} "
            f"FROM {_literal(user)}@{_literal(host)}"
        )


def drop_user(user: str, archive_dir: str, host: str = "localhost") -> list[str]:
    """
    Dump every database ``user@host`` can use into ``archive_dir``, then drop the user.

    Returns the dumps' paths.  The databases themselves stay; the user is
    dropped only when every dump is whole.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_mariadb.drop_user alice /var/backups/webarch/databases
    """
    dumps = [dump(name, archive_dir) for name in user_databases(user, host)]
    _changed()
    _query(f"DROP USER IF EXISTS {_literal(user)}@{_literal(host)}")
    return dumps
