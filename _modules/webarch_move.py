"""
Moving a hosting account between two servers: each server's part.

The orchestration ``webarch.orch.move`` (docs/fleet.rst) and the runner
``webarch_fleet`` call these in order:

* on the new server, :func:`ledger` of the old one is given to :func:`seed`
  (its password notifications already sent are not sent again);
* on the old server, the account suspended, :func:`pack` stages the home out
  of everyone's reach, walks it (:func:`manifest`), archives it (the verified
  archive of ``webarch_archive``, kept in ``archive_dir``), puts the home back,
  dumps each database (verified, kept in ``archive_dir/databases``), takes a
  ``CHECKSUM TABLE`` of every table, and pushes the artifacts to the master;
* on the new server, :func:`fetch` gets them from the master and checks their
  SHA-256; :func:`unpack` unpacks the home (old owners mapped to this server's
  ids by name), loads the databases as the account, sets its SSH password hash,
  and compares the manifests: a difference stops the move.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import time
from typing import Any

import webarch_move as move
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_move"

HOME_ARTIFACT = "home.tar.gz"
MANIFEST = "manifest.json"
SECRETS = "secrets.json"
INCOMING = "incoming"
#: Beside the staged home on the new server: what its home held before the copy.
ASIDE_SUFFIX = ".before-move"
EXTRACT = ("tar", "--extract", "--gzip", "--numeric-owner", "--same-owner",
           "--same-permissions", "--acls", "--xattrs")  # fmt: skip


def __virtual__() -> str:
    return __virtualname__


def _fresh_pillar() -> dict:
    """This minion's ``webarch`` pillar compiled now (a daemon's own is from its start)."""
    try:
        compiled = __salt__["pillar.items"](unmask=True)
    except TypeError:  # Salt before 3008: nothing is masked
        compiled = __salt__["pillar.items"]()
    return compiled.get("webarch", {})


def _account(name: str) -> tuple[dict, dict]:
    """The present account ``name`` of this server's model, and the model."""
    model = __salt__["webarch.config"](pillar=_fresh_pillar())
    account = model["accounts"].get(name)
    if account is None or account["state"] != "present":
        raise CommandExecutionError(f"{name!r} is not a present webarch account here")
    return account, model


def _quiet(name: str) -> None:
    """Refuse while any process of the account runs (it must be suspended)."""
    proc = subprocess.run(["pgrep", "-u", name], capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        raise CommandExecutionError(
            f"{name} still has processes ({' '.join(proc.stdout.split())}): suspend it first"
        )


def _fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _stage_root(home: str) -> str:
    root = os.path.join(os.path.dirname(home), move.STAGE_NAME)
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    return root


def manifest(name: str) -> dict[str, Any]:
    """
    The account's home as a manifest (path, type, owner, group, mode, size, SHA-256)
    and ``CHECKSUM TABLE`` of its present databases: what a move compares.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.manifest alice
    """
    account, _model = _account(name)
    found = move.tree_manifest(account["home"])
    found["tables"] = __salt__["webarch_mariadb.checksums"](_databases(account))
    return found


def _databases(account: dict) -> list[str]:
    present = account["mariadb"]["present"]
    return [db for db in present if __salt__["webarch_mariadb.database_exists"](db)]


def ledger(name: str) -> dict[str, dict]:
    """
    The account's entries of the notification ledger that move with it (sent SSH and
    application passwords: when, to whom; no secret).

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.ledger alice
    """
    try:
        with open(f"{paths.NOTIFY_DIR}/ledger.json", encoding="utf-8") as handle:
            entries = json.load(handle).get(name, {})
    except FileNotFoundError:
        entries = {}
    return move.moved_ledger(entries)


def mark_moved(name: str, target: str) -> str:
    """
    Record on this (the old) server that account ``name`` moved to ``target``:
    from now on a run that has it present here is refused (validation names
    ``webarch:accounts:NAME:state``) until its pillar says absent, so that this
    copy is never served again by mistake.  Returns the marker's path.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.mark_moved alice web2
    """
    os.makedirs(paths.MOVED_DIR, mode=0o700, exist_ok=True)
    path = os.path.join(paths.MOVED_DIR, move.checked_name(name))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(f"{path}.new", "w", encoding="utf-8") as handle:
        handle.write(f"to {target} on {stamp} by webarch.orch.move\n")
    os.replace(f"{path}.new", path)
    return path


def unmark_moved(name: str) -> bool:
    """
    Forget that account ``name`` once moved away from this server (it is moving
    back here); whether there was a marker.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.unmark_moved alice
    """
    path = os.path.join(paths.MOVED_DIR, move.checked_name(name))
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def seed(name: str, entries: dict[str, dict]) -> dict[str, Any]:
    """
    Before the account's first run on this server: its ledger entries from the old
    server and a placeholder of each marker, so that no password sent already is
    issued and mailed again (the home's real markers come with the home).

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.seed alice '{"ssh": {"state": "sent", "token": ""}}'
    """
    import fcntl

    unmark_moved(name)  # coming back to a server it once left
    account, _model = _account(name)
    entries = move.moved_ledger(entries)
    kinds = account["notify"]["kinds"]
    os.makedirs(paths.NOTIFY_SPOOL_DIR, mode=0o700, exist_ok=True)
    path = f"{paths.NOTIFY_DIR}/ledger.json"
    with open(f"{paths.NOTIFY_DIR}/lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as handle:
                current = json.load(handle)
        except FileNotFoundError:
            current = {}
        current.setdefault(name, {}).update(entries)
        fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(current, indent=1, sort_keys=True) + "\n")
        os.replace(f"{path}.new", path)
    markers = []
    if not os.path.lexists(account["home"]):
        os.makedirs(account["home"], mode=0o750)
    for kind in entries:
        marker = kinds.get(kind, {}).get("marker")
        if marker and not os.path.lexists(marker):
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            markers.append(marker)
    return {"kinds": sorted(entries), "markers": markers}


def _shadow_hash(name: str) -> str:
    with open("/etc/shadow", encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split(":")
            if fields[0] == name:
                return fields[1]
    return ""


def _artifacts(out: str) -> dict[str, dict]:
    return {
        entry: {
            "sha256": move.sha256_file(os.path.join(out, entry)),
            "bytes": os.path.getsize(os.path.join(out, entry)),
        }
        for entry in sorted(os.listdir(out))
    }


def _write_json(path: str, data: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)


def pack(name: str, push: bool = True) -> dict[str, Any]:
    """
    On the old server, the account suspended: archive its home (verified, kept in
    ``archive_dir``), dump its databases (verified, kept), write the manifest, and
    push the artifacts to the master (``cp.push``: the master needs ``file_recv``).
    Returns the artifacts' SHA-256 and sizes.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.pack alice
    """
    account, model = _account(name)
    _quiet(name)
    home, archive_dir = account["home"], model["archive_dir"]
    out = _fresh_dir(os.path.join(move.MOVE_DIR, name))
    staged = os.path.join(_stage_root(home), name)
    if os.path.lexists(staged):
        raise CommandExecutionError(f"{staged} exists (an earlier move): look at it first")
    os.rename(home, staged)  # out of everyone's reach
    try:
        # The log splitter writes to the logs it has open until it sees them gone.
        time.sleep(move.STAGE_SETTLE_S)
        found = move.tree_manifest(staged)
        archived = __salt__["webarch_archive.archive_dir_tree"](name, staged, archive_dir)
    finally:
        os.rename(staged, home)
    os.link(archived["archive"], os.path.join(out, HOME_ARTIFACT))
    databases = _databases(account)
    dumps = {}
    for db in databases:
        dump = __salt__["webarch_mariadb.dump"](db, os.path.join(archive_dir, "databases"))
        os.link(dump, os.path.join(out, f"{db}.sql.gz"))
        dumps[db] = dump
    found["tables"] = __salt__["webarch_mariadb.checksums"](databases)
    found["databases"] = databases
    _write_json(os.path.join(out, MANIFEST), found)
    _write_json(os.path.join(out, SECRETS), {"shadow": _shadow_hash(name)})
    artifacts = _artifacts(out)
    if push:
        for entry in artifacts:
            upload = f"{move.SALTENV}/{name}/{entry}"
            if not __salt__["cp.push"](os.path.join(out, entry), upload_path=upload):
                raise CommandExecutionError(
                    f"cp.push of {entry} refused: the master needs file_recv: True and a "
                    "file_recv_max_size (MB) above the artifact's size"
                )
    return {"archive": archived["archive"], "dumps": dumps, "artifacts": artifacts,
            "files": len(found["files"]), "tables": len(found["tables"])}  # fmt: skip


def fetch(name: str, artifacts: dict[str, str], token: str) -> dict[str, Any]:
    """
    On the new server: get the artifacts ``{name: sha256}`` of a move from the
    master's ``webarch-move`` saltenv (directory ``token``) and check their SHA-256.

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.fetch alice '{"home.tar.gz": "ab12..."}' 3f9c...
    """
    _account(name)
    out = _fresh_dir(os.path.join(move.MOVE_DIR, name, INCOMING))
    os.chmod(os.path.dirname(out), 0o700)
    total = 0
    for entry, digest in sorted(artifacts.items()):
        if "/" in entry or entry.startswith("."):
            raise CommandExecutionError(f"no such artifact name: {entry!r}")
        dest = os.path.join(out, entry)
        got = __salt__["cp.get_file"](f"salt://{token}/{entry}", dest, saltenv=move.SALTENV)
        if not got:
            raise CommandExecutionError(f"{entry}: not served by the master")
        os.chmod(dest, 0o600)
        found = move.sha256_file(dest)
        if found != digest:
            raise CommandExecutionError(f"{entry}: SHA-256 {found} here, {digest} on the source")
        total += os.path.getsize(dest)
    return {"fetched": sorted(artifacts), "bytes": total}


def _remap(root: str, ids: dict[str, dict[str, str]]) -> int:
    """Give the old server's owners this server's ids of the same names; return how many."""
    users = move.id_map(ids["users"], move.local_uid)
    groups = move.id_map(ids["groups"], move.local_gid)
    changed = 0
    for top, dirs, names in os.walk(root):
        for path in [top] + [os.path.join(top, n) for n in dirs + names]:
            if path != top and os.path.isdir(path) and not os.path.islink(path):
                continue  # visited as a top
            info = os.lstat(path)
            uid, gid = users.get(info.st_uid, info.st_uid), groups.get(info.st_gid, info.st_gid)
            if (uid, gid) != (info.st_uid, info.st_gid):
                os.lchown(path, uid, gid)
                if not stat.S_ISLNK(info.st_mode):  # chown clears set-id bits
                    os.chmod(path, stat.S_IMODE(info.st_mode))
                changed += 1
    return changed


def _put_aside(path: str, aside: str) -> None:
    """Move ``path`` to ``aside`` (its parents made root 0700)."""
    os.makedirs(os.path.dirname(aside), mode=0o700, exist_ok=True)
    os.replace(path, aside)


def _merge(src: str, dst: str, aside: str) -> int:
    """Make the directory ``dst`` the tree ``src`` (moved in: both root's to handle):
    what ``dst`` held that ``src`` has not, or has as another file, goes to the same
    place under ``aside`` (nothing is deleted).  ``dst`` itself stays the same
    directory (the chroot's bind mount of a home holds on to it).  Returns how many
    entries went aside."""
    moved = 0
    for entry in sorted(set(os.listdir(dst)) - set(os.listdir(src))):
        _put_aside(os.path.join(dst, entry), os.path.join(aside, entry))
        moved += 1
    for entry in sorted(os.listdir(src)):
        old, new = os.path.join(src, entry), os.path.join(dst, entry)
        info = os.lstat(old)
        if stat.S_ISDIR(info.st_mode) and os.path.isdir(new) and not os.path.islink(new):
            moved += _merge(old, new, os.path.join(aside, entry))
            continue
        if os.path.lexists(new):
            _put_aside(new, os.path.join(aside, entry))
            moved += 1
        os.replace(old, new)
    info = os.lstat(src)
    os.lchown(dst, info.st_uid, info.st_gid)
    os.chmod(dst, stat.S_IMODE(info.st_mode))
    os.rmdir(src)
    return moved


def _load(db: str, dump: str, name: str) -> None:
    """Load a dump into ``db`` as the account (unix_socket: its own privileges only)."""
    uid, gid = move.local_uid(name), move.local_gid(name)
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", "mariadb",
           "--no-defaults", f"--socket={paths.MARIADB_SOCKET}", f"--user={name}", db]  # fmt: skip
    with gzip.open(dump, "rb") as source:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
        assert proc.stdin is not None and proc.stderr is not None
        try:
            shutil.copyfileobj(source, proc.stdin, 1 << 16)
        finally:
            proc.stdin.close()
        errors = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            raise CommandExecutionError(f"loading {db} as {name} failed: {errors}")


def unpack(name: str) -> dict[str, Any]:
    """
    On the new server, the account suspended: unpack the fetched home into the home
    the formula made (owners mapped by name), load the databases as the account, set
    its SSH password hash, and compare the manifests: any difference fails, listed.

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.unpack alice
    """
    account, model = _account(name)
    _quiet(name)
    incoming = os.path.join(move.MOVE_DIR, name, INCOMING)
    with open(os.path.join(incoming, MANIFEST), encoding="utf-8") as handle:
        expected = json.load(handle)
    missing = [db for db in expected["databases"] if db not in _databases(account)]
    if missing:
        raise CommandExecutionError(f"databases {missing} are not in this server's pillar")
    home = account["home"]
    root = _stage_root(home)
    staged = os.path.join(root, name)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = os.path.join(root, f"{name}{ASIDE_SUFFIX}-{stamp}")
    if os.path.lexists(staged):
        shutil.rmtree(staged)
    archive = os.path.join(incoming, HOME_ARTIFACT)
    proc = subprocess.run([*EXTRACT, f"--file={archive}", f"--directory={root}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise CommandExecutionError(f"unpacking {archive} failed: {proc.stderr.strip()}")
    remapped = _remap(staged, expected["ids"])
    put_aside = _merge(staged, home, aside)
    # What this server's first run put in the databases (a fresh application
    # install) is dumped and dropped: the old server's dump is loaded alone.
    replaced = {}
    for db in expected["databases"]:
        replaced[db] = __salt__["webarch_mariadb.empty_database"](
            db, os.path.join(model["archive_dir"], "databases")
        )
        _load(db, os.path.join(incoming, f"{db}.sql.gz"), name)
    with open(os.path.join(incoming, SECRETS), encoding="utf-8") as handle:
        shadow = json.load(handle)["shadow"]
    if shadow and shadow not in ("!", "*", "!*"):
        proc = subprocess.run(["chpasswd", "-e"], input=f"{name}:{shadow}\n",
                              capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise CommandExecutionError(f"chpasswd -e for {name} failed: {proc.stderr.strip()}")
    found = move.tree_manifest(home)
    found["tables"] = __salt__["webarch_mariadb.checksums"](expected["databases"])
    differences = move.compare(expected, found)
    if differences:
        raise CommandExecutionError(
            "the move stopped: the new server's copy differs:\n" + "\n".join(differences)
        )
    shutil.rmtree(incoming)
    return {"equal": True, "files": len(found["files"]), "tables": len(found["tables"]),
            "remapped": remapped, "put_aside": put_aside,
            "replaced_dumps": {db: p for db, p in replaced.items() if p}}  # fmt: skip


def settle(name: str) -> dict[str, Any]:
    """
    On the new server, once it serves the account: what its home held before the
    move's copy replaced it (its first run's files: a fresh application install,
    empty logs), put aside by :func:`unpack` (``NAME.before-move-STAMP`` beside the
    staged home, one per unpack), goes into verified archives in ``archive_dir``
    (``NAME.before-move-STAMP.tar.gz``) and is then removed.

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.settle alice
    """
    account, model = _account(name)
    root = _stage_root(account["home"])
    archives = []
    for entry in sorted(os.listdir(root)):
        if entry.startswith(f"{name}{ASIDE_SUFFIX}-"):
            aside = os.path.join(root, entry)
            archived = __salt__["webarch_archive.archive_dir_tree"](
                name + ASIDE_SUFFIX, aside, model["archive_dir"]
            )
            shutil.rmtree(aside)
            archives.append(archived["archive"])
    return {"archives": archives}


def clean(name: str) -> bool:
    """
    Remove the artifacts of a move of ``name`` from this server's move directory (the
    verified archive and dumps stay in ``archive_dir``).

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.clean alice
    """
    if not move.NAME_RE.match(name):
        raise CommandExecutionError(f"{name!r} is not an account name")
    shutil.rmtree(os.path.join(move.MOVE_DIR, name), ignore_errors=True)
    return True
