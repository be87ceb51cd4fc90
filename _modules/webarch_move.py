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

import functools
import gzip
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import webarch_move as move
import webarch_move_files as files
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_move"

HOME_ARTIFACT = "home.tar.gz"
MANIFEST = "manifest.json"
SECRETS = "secrets.json"
INCOMING = "incoming"
#: The pre-copy (the account still served): its archive and its owners' names, sent;
#: the old server's manifest of it and the new server's of its unpacked copy, kept.
PRE_ARTIFACT = "home-pre.tar.gz"
PRE_IDS = "pre-ids.json"
PRE = "pre"
PRE_INCOMING = "incoming-pre"
PRE_MANIFEST = "pre-manifest.json"
OUT = "out"


def __virtual__() -> str:
    return __virtualname__


def _salt_error(func: Callable) -> Callable:
    """A move's own error (``MoveError``) told as Salt tells a module's."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except move.MoveError as exc:
            raise CommandExecutionError(str(exc)) from None

    return wrapper


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
    pending = move.pending_moved(entries)
    if pending:
        raise CommandExecutionError(
            f"{name}'s {', '.join(pending)} password is not mailed yet here (pending): the "
            "new server would issue another; move once it is mailed"
        )
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


def _push(name: str, out: str, artifacts: dict[str, dict]) -> None:
    """Send the artifacts in ``out`` to the master (``cp.push``)."""
    for entry in artifacts:
        upload = f"{move.SALTENV}/{name}/{entry}"
        if not __salt__["cp.push"](os.path.join(out, entry), upload_path=upload):
            raise CommandExecutionError(
                f"cp.push of {entry} refused: the master needs file_recv: True and a "
                "file_recv_max_size (MB) above the artifact's size"
            )


@_salt_error
def precopy(name: str, push: bool = True) -> dict[str, Any]:
    """
    On the old server, the account still served: a first copy of its home (read
    while it works: a file changed meanwhile is sent again by :func:`pack`), pushed
    to the master with its owners' names; its manifest stays here for :func:`pack`.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.precopy alice
    """
    account, _model = _account(name)
    home = account["home"]
    out = _fresh_dir(os.path.join(move.MOVE_DIR, name, PRE))
    os.chmod(os.path.dirname(out), 0o700)
    # Walked before tar reads it: what changes after the walk, read by tar or not,
    # has a new ctime and is sent again.
    found = move.tree_manifest(home)
    archive = os.path.join(out, PRE_ARTIFACT)
    argv = [*files.CREATE, *files.LIVE, f"--file={archive}", f"--directory={os.path.dirname(home)}",
            os.path.basename(home)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):  # 1: some file changed while read
        raise CommandExecutionError(f"tar of {home} failed: {proc.stderr.strip()}")
    files.write_json(os.path.join(out, PRE_IDS), found["ids"])
    artifacts = _artifacts(out)
    files.write_json(os.path.join(move.MOVE_DIR, name, PRE_MANIFEST), found)
    if push:
        _push(name, out, artifacts)
    return {"artifacts": artifacts, "files": len(found["files"]),
            "bytes": artifacts[PRE_ARTIFACT]["bytes"]}  # fmt: skip


@_salt_error
def pack(name: str, push: bool = True) -> dict[str, Any]:
    """
    On the old server, the account suspended: what changed in its home since
    :func:`precopy` (every file without one), its databases dumped (verified,
    kept in ``archive_dir``), the manifest, pushed to the master (``cp.push``:
    the master needs ``file_recv``).  Returns the artifacts' SHA-256 and sizes.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.pack alice
    """
    account, model = _account(name)
    _quiet(name)
    home, archive_dir = account["home"], model["archive_dir"]
    before = files.read_json(os.path.join(move.MOVE_DIR, name, PRE_MANIFEST))
    out = _fresh_dir(os.path.join(move.MOVE_DIR, name, OUT))
    root = _stage_root(home)
    staged = os.path.join(root, name)
    if os.path.lexists(staged):
        raise CommandExecutionError(f"{staged} exists (an earlier move): look at it first")
    os.rename(home, staged)  # out of everyone's reach
    staged_at = time.monotonic()
    try:
        # The databases first: meanwhile the log splitter lets go of the logs it
        # has open (it writes to them until it sees them gone).
        databases = _databases(account)
        dumps = {}
        for db in databases:
            dump = __salt__["webarch_mariadb.dump"](db, os.path.join(archive_dir, "databases"))
            os.link(dump, os.path.join(out, f"{db}.sql.gz"))
            dumps[db] = dump
        tables = __salt__["webarch_mariadb.checksums"](databases)
        time.sleep(max(0.0, move.STAGE_SETTLE_S - (time.monotonic() - staged_at)))
        found = move.tree_manifest(staged, known=before)
        send, gone = move.delta(before or {}, found)
        files.tar_entries(root, name, send, os.path.join(out, HOME_ARTIFACT))
    finally:
        os.rename(staged, home)
    sent = {"files": found["files"], "ids": found["ids"], "sent": send, "gone": gone,
            "tables": tables, "databases": databases}  # fmt: skip
    files.write_json(os.path.join(out, MANIFEST), sent)
    files.write_json(os.path.join(out, SECRETS), {"shadow": _shadow_hash(name)})
    artifacts = _artifacts(out)
    if push:
        _push(name, out, artifacts)
    return {"dumps": dumps, "artifacts": artifacts, "files": len(found["files"]),
            "sent": len(send), "gone": len(gone), "tables": len(sent["tables"])}  # fmt: skip


def _other_accounts_pillar(name: str) -> dict:
    """This server's pillar without account ``name`` (moved away: its run is refused)."""
    pillar = dict(_fresh_pillar())
    accounts = pillar.get("accounts")
    if isinstance(accounts, dict):
        pillar["accounts"] = {k: v for k, v in accounts.items() if k != name}
    return pillar


@_salt_error
def keep(name: str) -> dict[str, Any]:
    """
    On the old server, once the new one serves the account: the verified archive
    of its home (the formula's, as before removing a home), kept in ``archive_dir``
    until the admin removes the account here.  The home is moved out of reach
    while it is read (the log splitter may still log a visitor's 503 there).

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_move.keep alice
    """
    move.checked_name(name)
    _quiet(name)
    model = __salt__["webarch.config"](pillar=_other_accounts_pillar(name))
    home = paths.home(name)
    staged = os.path.join(_stage_root(home), name)
    if os.path.lexists(staged):
        raise CommandExecutionError(f"{staged} exists (an earlier move): look at it first")
    os.rename(home, staged)
    try:
        time.sleep(move.STAGE_SETTLE_S)
        archived = __salt__["webarch_archive.archive_dir_tree"](name, staged, model["archive_dir"])
    finally:
        os.rename(staged, home)
    clean(name)  # what pack sent from here
    return {"archive": archived["archive"], "files": archived["files"]}


@_salt_error
def fetch(name: str, artifacts: dict[str, str], token: str, pre: bool = False) -> dict[str, Any]:
    """
    On the new server: get the artifacts ``{name: sha256}`` of a move from the
    master's ``webarch-move`` saltenv (directory ``token``) and check their SHA-256
    (``pre``: those of the pre-copy).

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.fetch alice '{"home.tar.gz": "ab12..."}' 3f9c...
    """
    if move.local_uid(move.checked_name(name)) is None:  # (no model: within the downtime)
        raise CommandExecutionError(f"{name!r} is not an account here")
    out = _fresh_dir(os.path.join(move.MOVE_DIR, name, PRE_INCOMING if pre else INCOMING))
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


def _into_home(name: str, home: str, archive: str, ids: dict, prune: bool) -> tuple[int, int]:
    """``archive`` unpacked beside ``home`` (the old server's owners given this server's
    ids of the same names) and moved into it (``files.merge``: what it replaces goes
    aside).  Returns how many entries were remapped and how many went aside."""
    root = _stage_root(home)
    staged = os.path.join(root, name)
    if os.path.lexists(staged):
        shutil.rmtree(staged)
    files.extract(archive, root)
    remapped = files.remap(staged, ids)
    return remapped, files.merge(staged, home, files.new_aside(root, name), prune=prune)


@_salt_error
def preunpack(name: str) -> dict[str, Any]:
    """
    On the new server, before the old one suspends the account: unpack the
    pre-copy (owners mapped by name) and make the home it (what the home held
    goes aside, as in :func:`unpack`), then walk it, so that :func:`unpack`
    reads again only what the last copy changes.

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.preunpack alice
    """
    account, _model = _account(name)
    _quiet(name)
    incoming = os.path.join(move.MOVE_DIR, name, PRE_INCOMING)
    ids = files.read_json(os.path.join(incoming, PRE_IDS))
    home = account["home"]
    remapped, put_aside = _into_home(name, home, os.path.join(incoming, PRE_ARTIFACT), ids, True)
    # Out of the racy window (see webarch_move.RACY_NS): every file is trusted next time.
    time.sleep(move.RACY_NS / 1e9)
    found = move.tree_manifest(home)
    pre_manifest = os.path.join(move.MOVE_DIR, name, PRE_MANIFEST)
    if os.path.lexists(pre_manifest):
        os.unlink(pre_manifest)
    files.write_json(pre_manifest, found)
    shutil.rmtree(incoming)
    return {"files": len(found["files"]), "remapped": remapped, "put_aside": put_aside}


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


@_salt_error
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
    # With a pre-copy (merged into the home by preunpack): what is gone since is
    # removed, what changed comes in (the stale copy goes aside).  Without one,
    # the home becomes the copy sent (what it held goes aside).
    before = files.read_json(os.path.join(move.MOVE_DIR, name, PRE_MANIFEST))
    for rel in expected["gone"] if before else []:
        files.remove(os.path.join(home, rel))
    archive = os.path.join(incoming, HOME_ARTIFACT)
    remapped, put_aside = _into_home(name, home, archive, expected["ids"], before is None)
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
    # Read again: what the last copy changed, and what was moved in by name.
    found = move.tree_manifest(home, known=before)
    found["tables"] = __salt__["webarch_mariadb.checksums"](expected["databases"])
    differences = move.compare(expected, found)
    if differences:
        raise CommandExecutionError(
            "the move stopped: the new server's copy differs:\n" + "\n".join(differences)
        )
    shutil.rmtree(os.path.join(move.MOVE_DIR, name))
    return {"equal": True, "files": len(found["files"]), "read": len(found["read"]),
            "tables": len(found["tables"]),
            "remapped": remapped, "put_aside": put_aside,
            "replaced_dumps": {db: p for db, p in replaced.items() if p}}  # fmt: skip


def settle(name: str) -> dict[str, Any]:
    """
    On the new server, once it serves the account: what its home held before the
    move's copy replaced it (its first run's files: a fresh application install,
    empty logs), put aside by :func:`unpack` (``NAME.before-move-STAMP`` beside the
    staged home, one per unpack), goes into one verified archive in ``archive_dir``
    (``NAME.before-move-STAMP.tar.gz``) and is then removed.

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_move.settle alice
    """
    account, model = _account(name)
    root = _stage_root(account["home"])
    asides = [e for e in sorted(os.listdir(root)) if e.startswith(f"{name}{files.ASIDE_SUFFIX}-")]
    if not asides:
        return {"archive": ""}
    # All of them in one archive (each under its own name).
    kept = os.path.join(root, name + files.ASIDE_SUFFIX)
    os.makedirs(kept, mode=0o700, exist_ok=True)
    for entry in asides:
        os.replace(os.path.join(root, entry), os.path.join(kept, entry))
    archived = __salt__["webarch_archive.archive_dir_tree"](
        name + files.ASIDE_SUFFIX, kept, model["archive_dir"]
    )
    shutil.rmtree(kept)
    return {"archive": archived["archive"], "files": archived["files"]}


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
