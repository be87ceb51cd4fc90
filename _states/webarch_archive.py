"""
Archive a removed hosting account's home, then delete it.

.. code-block:: yaml

    alice-home-archived:
      webarch_archive.home_archived:
        - name: alice
        - home: /home/alice
        - archive_dir: /var/backups/webarch

The home is deleted only after its archive was written and verified by
the ``webarch_archive.archive_dir_tree`` execution function;
on any failure the home stays where it is.
"""

from __future__ import annotations

import os

__virtualname__ = "webarch_archive"


def __virtual__() -> str | tuple[bool, str]:
    """Load only when the webarch_archive execution module is available."""
    if "webarch_archive.archive_dir_tree" in __salt__:
        return __virtualname__
    return (False, "the webarch_archive execution module is not available")


def _ret(name: str, result: bool | None, comment: str, changes: dict | None = None) -> dict:
    """Build a state return."""
    return {"name": name, "result": result, "comment": comment, "changes": changes or {}}


def _predict(name: str, home: str, archive_dir: str) -> dict:
    """The test-mode return: what would be archived and removed, or why not."""
    mounts = __salt__["webarch_archive.mounts_below"](home)
    if mounts:
        return _ret(name, False, f"{home} cannot be archived: mounted below it: {mounts}")
    planned = __salt__["webarch_archive.archive_path"](name, archive_dir)
    changes = {"archived": f"{home} -> {planned} (would be)", "removed": home}
    return _ret(name, None, f"{home} would be archived to {archive_dir} and removed", changes)


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
    if not os.path.lexists(home):
        return _ret(name, True, f"{home} does not exist; nothing to archive")
    if not os.path.isdir(home) or os.path.islink(home):
        return _ret(name, False, f"{home} is not a directory; refusing to archive or remove it")
    if __opts__["test"]:
        return _predict(name, home, archive_dir)
    try:
        archived = __salt__["webarch_archive.archive_dir_tree"](name, home, archive_dir)
    except Exception as exc:  # any failure leaves the home alone
        return _ret(name, False, f"archiving {home} failed; it was left in place: {exc}")
    changes = {"archived": archived["archive"], "files": archived["files"]}
    try:
        __salt__["webarch_archive.remove_tree"](home)
    except Exception as exc:  # the archive is safe; report
        comment = f"{home} was archived to {archived['archive']} but removing it failed: {exc}"
        return _ret(name, False, comment, changes)
    changes["removed"] = home
    return _ret(name, True, f"{home} archived to {archived['archive']} and removed", changes)
