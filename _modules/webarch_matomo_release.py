"""
Matomo for webarch: the instance's release, from a verified archive.

:py:func:`unpack` puts the pillar's release into the empty site on the first
run; :py:func:`upgrade` swaps in a new pinned release: unpacked beside the
site, the instance's ``config/config.ini.php`` (and plugins the new release
does not have) copied in, the directories swapped, then Matomo's own
``core:update`` run and PHP-FPM reloaded (its opcache knows the old code).
The old files are kept beside the site (``.matomo-VERSION-TIME``, hidden:
Apache never serves them), for a rollback: the one previous release only, older
ones are removed (:py:func:`prune`); the database and
its data are never touched but by ``core:update``.  Every file operation in
the account's site runs as the account (``setpriv``); the archive's SHA-256
is checked before anything is unpacked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from typing import Any

import webarch_matomo_api as api
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_matomo_release"

VERSION_RE = re.compile(r"const VERSION = '([^']+)'")
#: A version in the name of a kept release (empty: the old files had no core/Version.php).
RELEASE_VERSION = r"(?:\d+(?:\.\d+)*(?:-[0-9A-Za-z.]+)?)?"
#: How many previous releases an upgrade keeps beside the site (for a rollback).
KEEP = 1


def __virtual__() -> str:
    return __virtualname__


def _local() -> dict:
    local = __salt__["webarch.config"]()["matomo"]["local"]
    if not local:
        raise CommandExecutionError("this server runs no Matomo of its own (webarch:matomo)")
    return local


def _verify(archive: str, sha256: str) -> None:
    digest = hashlib.sha256()
    try:
        with open(archive, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise CommandExecutionError(f"{archive}: {exc.strerror}: not unpacked") from None
    if digest.hexdigest() != sha256:
        raise CommandExecutionError(
            f"{archive}: SHA-256 {digest.hexdigest()} is not the pillar's {sha256}: not unpacked"
        )


def _as_account(local: dict, argv: list[str], stdin: Any = None) -> None:
    """Run ``argv`` as the instance's account (its uid and gid, no other group)."""
    account = __salt__["user.info"](local["account"])
    if not account:
        raise CommandExecutionError(f"no Unix user {local['account']}")
    ids = [f"--reuid={account['uid']}", f"--regid={account['gid']}", "--clear-groups"]
    proc = subprocess.run(["setpriv", *ids, *argv], stdin=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        error = proc.stderr.decode("utf-8", "replace").strip()[-400:]
        raise CommandExecutionError(f"{' '.join(argv[:2])} as {local['account']}: {error}")


def _extract(local: dict, archive: str, target: str) -> None:
    _as_account(local, ["mkdir", "-p", target])
    with open(archive, "rb") as handle:
        _as_account(
            local,
            ["tar", "-xzf", "-", "-C", target, "--strip-components=1", "--touch",
             "--no-same-owner", "--no-same-permissions"],
            stdin=handle,
        )  # fmt: skip


def _archive_version(archive: str) -> str:
    """The Matomo version inside ``archive`` (its core/Version.php)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith("/core/Version.php"):
                    found = VERSION_RE.search(tar.extractfile(member).read().decode())  # type: ignore[union-attr]
                    if found:
                        return found.group(1)
    except (OSError, tarfile.TarError) as exc:
        raise CommandExecutionError(f"{archive}: not a readable release archive: {exc}") from None
    raise CommandExecutionError(f"{archive}: no core/Version.php: not a Matomo release")


def _record(sha256: str, version: str, updated: bool = True) -> None:
    """Remember the release the files are (``updated``: core:update has run for it)."""
    os.makedirs(os.path.dirname(paths.MATOMO_RELEASE_PATH), mode=0o700, exist_ok=True)
    entry = {"sha256": sha256, "version": version, "updated": updated}
    with open(paths.MATOMO_RELEASE_PATH, "w", encoding="utf-8") as handle:
        json.dump(entry, handle)
    os.chmod(paths.MATOMO_RELEASE_PATH, 0o600)


def unpack(archive: str, sha256: str) -> dict[str, Any]:
    """
    Unpack the release ``archive`` (a local file) into the instance's empty site.

    A site that has Matomo already is left alone (a new release is
    :py:func:`upgrade`); a site with other files is refused.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_release.unpack /var/lib/webarch/matomo/releases/m.tar.gz SHA256
    """
    local = _local()
    _verify(archive, sha256)
    docroot = local["docroot"]
    if os.path.exists(f"{docroot}/console"):
        return {"unpacked": False, "comment": f"{docroot} has Matomo already"}
    if os.path.isdir(docroot) and os.listdir(docroot):
        raise CommandExecutionError(f"{docroot} is not empty: Matomo is not unpacked over files")
    _extract(local, archive, docroot)
    _record(sha256, _archive_version(archive))
    return {"unpacked": True, "comment": f"Matomo unpacked into {docroot}"}


def due(archive: str, sha256: str) -> str:
    """
    The version ``archive`` would upgrade the installed instance to ('' when none).

    The same release (by SHA-256, or the same version in another archive) is no
    upgrade.  Another release whose archive is not fetched yet (a ``test=True``
    run before the first with it) is an upgrade to a version not known yet:
    ``the release SHA256[:16] (not fetched yet)``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_release.due /var/lib/webarch/matomo/releases/m.tar.gz SHA256
    """
    recorded = api.read_json(paths.MATOMO_RELEASE_PATH)
    if recorded.get("sha256") == sha256:
        # Swapped in, but core:update did not finish: it is still due.
        return "" if recorded.get("updated", True) else str(recorded.get("version"))
    if not os.path.exists(archive):
        return f"the release {sha256[:16]} (not fetched yet)"
    wanted = _archive_version(archive)
    installed = __salt__["webarch_matomo_setup.status"]()["version"]
    if _key(wanted) < _key(installed):
        raise CommandExecutionError(
            f"{archive} is Matomo {wanted}, older than the installed {installed}: Matomo "
            f"cannot go back (its database is {installed}'s); pin {installed} or newer"
        )
    return "" if wanted == installed else wanted


def _key(version: str) -> tuple[int, ...]:
    """``5.0.2`` -> (5, 0, 2) (a suffix such as ``-rc1`` is ignored)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:4])


def upgrade(archive: str, sha256: str) -> dict[str, Any]:
    """
    Swap in the release ``archive`` and run Matomo's ``core:update``.

    The old files are kept beside the site (``.NAME-VERSION-TIME``); older
    releases kept by earlier upgrades are removed: one previous release stays.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_release.upgrade /var/lib/webarch/matomo/releases/m.tar.gz SHA256
    """
    local = _local()
    _verify(archive, sha256)
    wanted = due(archive, sha256)
    if not wanted:
        return {"upgraded": False, "comment": "Matomo runs this release already"}
    old_version = __salt__["webarch_matomo_setup.status"]()["version"]
    kept = ""
    if old_version != wanted:
        kept = _swap(local, archive, old_version)
        _record(sha256, wanted, updated=False)
    __salt__["webarch_matomo_setup.console"]("core:update", "--yes")
    # The pool's opcache may hold the old code under the same paths (a master
    # that does not run has none: its socket starts it afresh).
    fpm = local["fpm_unit"]
    if __salt__["cmd.retcode"](["systemctl", "try-reload-or-restart", fpm], python_shell=False):
        raise CommandExecutionError(f"Matomo upgraded, but {fpm} did not reload")
    _record(sha256, wanted)
    where = f"; the old files are in {kept}" if kept else ""
    try:
        removed = _prune(local)
    except CommandExecutionError as exc:
        raise CommandExecutionError(f"Matomo {old_version} -> {wanted}{where}, but {exc}") from None
    return {
        "upgraded": True,
        "removed": removed,
        "comment": f"Matomo {old_version} -> {wanted}{where}",
    }


def _swap(local: dict, archive: str, old_version: str) -> str:
    """Unpack ``archive`` beside the site, carry the config and extra plugins over, swap."""
    docroot = local["docroot"].rstrip("/")
    parent, name = os.path.split(docroot)
    new = f"{parent}/.{name}-new"
    kept = f"{parent}/.{name}-{old_version}-{time.strftime('%Y%m%d%H%M%S')}"
    if os.path.exists(new):
        shutil.rmtree(new)  # a swap that did not happen: unpacked again
    _extract(local, archive, new)
    _as_account(local, ["cp", "-p", local["config"], f"{new}/config/"])
    for plugin in sorted(os.listdir(f"{docroot}/plugins")):
        if not os.path.exists(f"{new}/plugins/{plugin}"):
            _as_account(local, ["cp", "-a", f"{docroot}/plugins/{plugin}", f"{new}/plugins/"])
    os.chmod(new, os.stat(docroot).st_mode & 0o7777)  # the site's directory, as it was
    os.rename(docroot, kept)
    os.rename(new, docroot)
    return kept


def _stale(entries: list[str], name: str, keep: int = KEEP) -> list[str]:
    """
    The release trees among ``entries`` (names in the site's parent directory)
    beyond the ``keep`` newest, oldest first: what a prune removes.

    Only names an upgrade gives (``.NAME-VERSION-YYYYmmddHHMMSS``, ``NAME``
    the site's directory, ``VERSION`` Matomo's) count; the newest is the
    latest timestamp.
    """
    pattern = re.compile(rf"\.{re.escape(name)}-(?P<version>{RELEASE_VERSION})-(?P<time>\d{{14}})")
    found = []
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match:
            found.append((match["time"], _key(match["version"] or "0"), entry))
    found.sort()
    return [entry for _, _, entry in found[: max(len(found) - max(keep, 0), 0)]]


def _old_trees(local: dict, keep: int) -> list[str]:
    """The paths of the release trees beside the site a prune keeping ``keep`` removes."""
    parent, name = os.path.split(local["docroot"].rstrip("/"))
    try:
        with os.scandir(parent) as found:
            trees = [e.name for e in found if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return [f"{parent}/{entry}" for entry in _stale(trees, name, keep)]


def _prune(local: dict) -> list[str]:
    """Remove the release trees beyond the newest :data:`KEEP` (as the account); their paths."""
    removed = []
    for path in _old_trees(local, KEEP):
        try:
            _as_account(local, ["rm", "-rf", "--one-file-system", "--", path])
        except CommandExecutionError as exc:
            raise CommandExecutionError(f"the old release {path} was not removed: {exc}") from None
        removed.append(path)
    return removed


def old_releases(swap: bool = False) -> list[str]:
    """
    The old release trees beside the site that a prune removes (all but the newest).

    ``swap``: as after an upgrade that swaps in new files (its old files are
    then the newest kept, so every tree there now goes).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_release.old_releases
        salt '*' webarch_matomo_release.old_releases swap=True
    """
    return _old_trees(_local(), KEEP - 1 if swap else KEEP)


def prune() -> dict[str, Any]:
    """
    Remove the old release trees beside the site but the newest (the rollback material).

    Run as the instance's account; an upgrade prunes by itself.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_release.prune
    """
    removed = _prune(_local())
    return {"removed": removed, "comment": f"removed {', '.join(removed)}" if removed else ""}
