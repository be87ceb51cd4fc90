"""
Drop MariaDB databases and users only after a verified dump.

.. code-block:: yaml

    alice-old-db:
      webarch_mariadb.database_absent:
        - name: alice_old
        - archive_dir: /var/backups/webarch/databases

    alice-db-user:
      webarch_mariadb.user_absent:
        - name: alice
        - archive_dir: /var/backups/webarch/databases

    alice-wp-privileges:
      webarch_mariadb.privileges_limited:
        - name: alice
        - database: alice_wp
        - privileges: [SELECT, INSERT]

``database_absent`` dumps the database (gzip, root-only 0600, verified: whole
gzip stream ending with ``-- Dump completed``), then drops it and revokes the
grants on it.  ``user_absent`` dumps every existing database the user has
privileges on, then drops the user (the databases stay).  On any failure
nothing is dropped.  ``privileges_limited`` revokes what a user holds on a
database beyond ``privileges`` (``mysql_grants.present`` only ever adds).
saltext-mysql's ``mysql_database.absent`` and
``mysql_user.absent`` drop without a copy: webarch never uses them.
"""

from __future__ import annotations

__virtualname__ = "webarch_mariadb"


def __virtual__() -> str | tuple[bool, str]:
    """Load only when the webarch_mariadb execution module is available."""
    if "webarch_mariadb.dump" in __salt__:
        return __virtualname__
    return (False, "the webarch_mariadb execution module is not available")


def _ret(name: str, result: bool | None, comment: str, changes: dict | None = None) -> dict:
    """Build a state return."""
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def database_absent(name: str, archive_dir: str) -> dict:
    """
    Ensure the database ``name`` is gone, dumped into ``archive_dir`` first.

    name
        The database.

    archive_dir
        Where the dump goes (created root:root 0700): ``NAME-TIMESTAMP.sql.gz``.
    """
    mod = __salt__
    try:
        if not mod["webarch_mariadb.database_exists"](name):
            return _ret(name, True, f"database {name} is already absent")
        if __opts__["test"]:
            changes = {"dumped": f"into {archive_dir} (would be)", "dropped": name}
            return _ret(name, None, f"database {name} would be dumped and dropped", changes)
        # Dumped (verified) first: nothing is dropped without a whole dump.
        path = mod["webarch_mariadb.drop_database"](name, archive_dir)
    except Exception as exc:  # any failure: say why
        return _ret(name, False, f"database {name} not dropped: {exc}")
    return _ret(
        name,
        True,
        f"database {name} dumped to {path} (verified) and dropped",
        {"dumped": path, "dropped": name},
    )


def user_absent(name: str, archive_dir: str, host: str = "localhost") -> dict:
    """
    Ensure the MariaDB user ``name@host`` is gone, its databases dumped first.

    Every existing database the user has privileges on is dumped into
    ``archive_dir`` (verified) before the user is dropped; the databases
    themselves are left alone.
    """
    mod = __salt__
    account = f"{name}@{host}"
    try:
        if not mod["webarch_mariadb.user_exists"](name, host):
            return _ret(name, True, f"MariaDB user {account} is already absent")
        databases = mod["webarch_mariadb.user_databases"](name, host)
        if __opts__["test"]:
            changes = {"dumped": databases, "dropped": account}
            return _ret(name, None, f"MariaDB user {account} would be dropped", changes)
        # Its databases dumped (verified) first: nothing goes without a whole dump.
        dumps = mod["webarch_mariadb.drop_user"](name, archive_dir, host)
    except Exception as exc:  # any failure: say why
        return _ret(name, False, f"MariaDB user {account} not dropped: {exc}")
    return _ret(
        name,
        True,
        f"MariaDB user {account} dropped after its databases were dumped: {dumps or 'none'}",
        {"dumped": dumps, "dropped": account},
    )


def privileges_limited(
    name: str, database: str, privileges: list[str], host: str = "localhost"
) -> dict:
    """
    Ensure ``name@host`` holds nothing on ``database`` beyond ``privileges``.

    Revokes the rest (GRANT OPTION included); adds nothing: that is
    ``mysql_grants.present``'s job.
    """
    account = f"{name}@{host}"
    try:
        if not __salt__["webarch_mariadb.held_beyond"](name, database, privileges, host):
            return _ret(name, True, f"{account} holds nothing more on {database}")
        held = __salt__["webarch_mariadb.database_privileges"](name, database, host)
        extra = [p for p in held if p not in privileges]
        if not extra:
            return _ret(name, True, f"{account} holds nothing more on {database}")
        changes = {"revoked": extra}
        if __opts__["test"]:
            return _ret(name, None, f"{', '.join(extra)} on {database} would be revoked", changes)
        __salt__["webarch_mariadb.revoke"](name, database, extra, host)
    except Exception as exc:  # any failure: say why
        return _ret(name, False, f"privileges of {account} on {database} not limited: {exc}")
    return _ret(name, True, f"revoked {', '.join(extra)} on {database} from {account}", changes)
