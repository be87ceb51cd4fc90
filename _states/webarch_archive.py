"""
Archive a removed hosting account's home (or a removed site's tree), then delete it.

.. code-block:: yaml

    alice-home-archived:
      webarch_archive.home_archived:
        - name: alice
        - home: /home/alice
        - archive_dir: /var/backups/webarch

    alice-www-archived:
      webarch_archive.tree_archived:
        - name: alice.www
        - path: /home/alice/sites/www
        - archive_dir: /var/backups/webarch
        - databases: [alice_wp]
        - dump_dir: /var/backups/webarch/databases

The tree is deleted only after its archive was written and verified by
the ``webarch_archive.archive_dir_tree`` execution function (and the
databases' dumps by ``webarch_mariadb.dump``); on any failure the tree
stays where it is.
"""

from __future__ import annotations

import os
import stat

__virtualname__ = "webarch_archive"


def __virtual__() -> str | tuple[bool, str]:
    """Load only when the webarch_archive execution module is available."""
    if "webarch_archive.archive_dir_tree" in __salt__:
        return __virtualname__
    return (False, "the webarch_archive execution module is not available")


def _ret(name: str, result: bool | None, comment: str, changes: dict | None = None) -> dict:
    """Build a state return."""
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _predict(name: str, path: str, archive_dir: str, databases: list[str]) -> dict:
    """The test-mode return: what would be dumped, archived and removed, or why not."""
    mounts = __salt__["webarch_archive.mounts_below"](path)
    if mounts:
        return _ret(name, False, f"{path} cannot be archived: mounted below it: {mounts}")
    planned = __salt__["webarch_archive.archive_path"](name, archive_dir)
    changes: dict = {"archived": f"{path} -> {planned} (would be)", "removed": path}
    dumped = [db for db in databases if __salt__["webarch_mariadb.database_exists"](db)]
    if dumped:
        changes["dumped"] = [f"{db} (would be)" for db in dumped]
    return _ret(name, None, f"{path} would be archived to {archive_dir} and removed", changes)


def _dump(databases: list[str], dump_dir: str) -> list[str]:
    """Dump (verified) each of ``databases`` that exists; return the dumps' paths."""
    return [
        __salt__["webarch_mariadb.dump"](db, dump_dir)
        for db in databases
        if __salt__["webarch_mariadb.database_exists"](db)
    ]


def _stage(path: str, stage_dir: str) -> str:
    """Move ``path`` into ``stage_dir`` (root's 0700), out of its owner's reach; return
    where it is now.  A symlink planted at ``path`` is moved too, and refused."""
    staged = os.path.join(stage_dir, os.path.basename(path))
    if os.path.lexists(path):
        if os.path.lexists(staged):
            raise OSError(f"{staged} exists already (an earlier removal): look at it first")
        os.makedirs(stage_dir, mode=0o700, exist_ok=True)
        os.chmod(stage_dir, 0o700)
        os.rename(path, staged)
    info = os.lstat(staged)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"{path} was not a directory (moved to {staged}, left there)")
    return staged


def tree_archived(
    name: str,
    path: str,
    archive_dir: str,
    databases: list[str] | None = None,
    dump_dir: str | None = None,
    stage_dir: str | None = None,
) -> dict:
    """
    Ensure the tree ``path`` is archived into ``archive_dir`` and gone.

    name
        The archive's name: ``<archive_dir>/<name>-<timestamp>.tar.gz``.

    path
        The directory to archive and then remove.

    archive_dir
        Where archives are kept (created root:root 0700 if missing).

    databases
        MariaDB databases to dump (verified) into ``dump_dir`` first, those
        that exist; if a dump fails, nothing is archived or removed.

    stage_dir
        For a tree in a directory its owner can write (a site in ``~/sites``):
        a directory of root's on the same file system where the tree is moved
        first, so that the owner cannot swap it for a symlink to someone else's
        tree while it is archived and removed.  A tree left there by a failed
        run is taken up by the next.
    """
    databases = list(databases or [])
    staged = os.path.join(stage_dir, os.path.basename(path)) if stage_dir else None
    if not os.path.lexists(path) and not (staged and os.path.lexists(staged)):
        return _ret(name, True, f"{path} does not exist; nothing to archive")
    if os.path.lexists(path) and (not os.path.isdir(path) or os.path.islink(path)):
        return _ret(name, False, f"{path} is not a directory; refusing to archive or remove it")
    if __opts__["test"]:
        where = path if os.path.lexists(path) or not staged else staged
        return _predict(name, where, archive_dir, databases)
    changes: dict = {}
    origin = path
    try:
        if stage_dir:
            path = _stage(path, stage_dir)
        if databases:
            changes["dumped"] = _dump(databases, dump_dir or archive_dir)
        archived = __salt__["webarch_archive.archive_dir_tree"](name, path, archive_dir)
    except Exception as exc:  # any failure leaves the tree alone
        return _ret(name, False, f"archiving {path} failed; it was left in place: {exc}", changes)
    changes.update({"archived": archived["archive"], "files": archived["files"]})
    try:
        __salt__["webarch_archive.remove_tree"](path)
        if stage_dir and not os.listdir(stage_dir):
            os.rmdir(stage_dir)
    except Exception as exc:  # the archive is safe; report
        comment = f"{path} was archived to {archived['archive']} but removing it failed: {exc}"
        return _ret(name, False, comment, changes)
    changes["removed"] = origin
    return _ret(name, True, f"{origin} archived to {archived['archive']} and removed", changes)


def home_archived(name: str, home: str, archive_dir: str) -> dict:
    """
    Ensure the home of account ``name`` is archived into ``archive_dir`` and gone.

    name
        The account name; the archive is ``<archive_dir>/<name>-<timestamp>.tar.gz``.

    home
        The home directory to archive and then remove.

    archive_dir
        Where archives are kept (created root:root 0700 if missing).
    """
    return tree_archived(name, home, archive_dir)
