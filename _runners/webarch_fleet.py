"""
webarch_fleet: checks across the hosting servers of one master.

``check`` compiles each targeted minion's pillar on the master (no minion
needs to be up) and reports every clash between them: an account on two
servers, a site name served by two.  Run it before a highstate of the fleet;
it fails (exit code 1) when it finds one.

``move_check``, ``move_seed``, ``move_precopy``, ``move_copy`` and
``move_switch`` are the steps of the orchestration ``webarch.orch.move``
(docs/fleet.rst) that involve more than one server; each takes the
``webarch_move`` request and returns ``{"Error": ...}`` (the orchestration
stops) when it fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from typing import Any

import salt.client
import salt.utils.minions
import webarch_fleet as fleet
import webarch_move as move

__virtualname__ = "webarch_fleet"


def __virtual__() -> str:
    return __virtualname__


def _pillars(tgt: str = "*", tgt_type: str = "glob") -> dict[str, Any]:
    """The targeted minions' pillars, compiled on the master, by minion id (sorted)."""
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    return {minion: __salt__["pillar.show_pillar"](minion) for minion in sorted(found["minions"])}


def check(tgt: str = "*", tgt_type: str = "glob") -> dict[str, Any]:
    """
    Every clash between the targeted minions' pillars (accounts present on
    two minions, site names served by two), each with its minions and pillar
    paths; ``ok`` is false and ``retcode`` (salt-run's exit code) 1 when
    there is one.

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.check
        salt-run webarch_fleet.check tgt='web*'
    """
    pillars = _pillars(tgt, tgt_type)
    minions = list(pillars)
    lines = fleet.clashes(pillars)
    retcode = 1 if lines else 0
    # success of the job's return event; salt-run exits with the return's retcode.
    __context__["retcode"] = retcode
    return {"ok": not lines, "minions": minions, "clashes": lines, "retcode": retcode}


# --------------------------------------------------------------------------
# Moving an account (webarch.orch.move)
# --------------------------------------------------------------------------


def _failed(message: str) -> dict[str, Any]:
    __context__["retcode"] = 1
    return {"Error": message}


def _call(minion: str, fun: str, *args: Any, timeout: int = 60) -> Any:
    """``fun`` on one minion; its return, or MoveError with the minion's error."""
    with salt.client.get_local_client(__opts__["conf_file"]) as client:
        ret = client.cmd(minion, fun, list(args), timeout=timeout, full_return=True)
    if minion not in ret:
        raise move.MoveError(f"{minion} did not answer {fun}")
    if ret[minion].get("retcode", 0) != 0:
        raise move.MoveError(f"{fun} on {minion} failed: {ret[minion].get('ret')}")
    return ret[minion]["ret"]


def move_check(request: Any = None) -> dict[str, Any]:
    """
    The fleet check of a move: the request is valid, the account is present in
    the pillars of both servers, and nothing else clashes once it left ``from``.

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.move_check \\
            request='{"account": "alice", "from": "web1", "to": "web2"}'
    """
    try:
        req = move.request(request)
    except move.MoveError as exc:
        return _failed(str(exc))
    pillars = _pillars()
    lines = move.move_clashes(pillars, req["account"], req["from"], req["to"])
    if lines:
        return _failed("; ".join(lines))
    return {"ok": True, "sites": move.site_names(pillars[req["to"]], req["account"])}


def move_seed(request: Any = None) -> dict[str, Any]:
    """
    The account's sent SSH and application passwords recorded on ``to`` (from
    ``from``'s ledger) before its first run there: none is mailed again.

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.move_seed \\
            request='{"account": "alice", "from": "web1", "to": "web2"}'
    """
    try:
        req = move.request(request)
        entries = _call(req["from"], "webarch_move.ledger", req["account"])
        return _call(req["to"], "webarch_move.seed", req["account"], entries)
    except move.MoveError as exc:
        return _failed(str(exc))


def _served_dir() -> str:
    roots = __opts__.get("file_roots", {}).get(move.SALTENV) or []
    if not roots:
        raise move.MoveError(
            f"the master has no file_roots for saltenv {move.SALTENV}: add a root-only "
            "directory of its own (docs/fleet.rst)"
        )
    return roots[0]


def _transfer(source: str, target: str, account: str, artifacts: dict[str, dict],
              pre: bool, timeout: int) -> dict[str, Any]:  # fmt: skip
    """The artifacts ``source`` pushed, served to ``target`` only for the time of its
    fetch (a random directory of the ``webarch-move`` saltenv), fetched and their
    SHA-256 checked there (``webarch_move.fetch``); then gone from the master."""
    served = _served_dir()
    pushed = os.path.join(__opts__["cachedir"], "minions", source, "files", move.SALTENV, account)
    door = os.path.join(served, secrets.token_hex(16))
    try:
        os.makedirs(door, mode=0o700)
        for name in artifacts:
            shutil.move(os.path.join(pushed, name), os.path.join(door, name))
        digests = {name: a["sha256"] for name, a in artifacts.items()}
        token = os.path.basename(door)
        return _call(target, "webarch_move.fetch", account, digests, token, pre, timeout=timeout)
    finally:
        shutil.rmtree(door, ignore_errors=True)
        shutil.rmtree(pushed, ignore_errors=True)


def _sent(request: Any, fun: str, pre: bool, timeout: int) -> tuple[dict, dict, dict]:
    """The request checked, ``fun`` run on ``from`` (it pushes its artifacts) and what
    it pushed fetched by ``to``: (request, ``fun``'s return, the fetch's)."""
    req = move.request(request)
    account, source, target = req["account"], req["from"], req["to"]
    packed = _call(source, fun, account, timeout=timeout)
    return req, packed, _transfer(source, target, account, packed["artifacts"], pre, timeout)


def move_precopy(request: Any = None, timeout: int = 3600) -> dict[str, Any]:
    """
    While ``from`` still serves the account: a first copy of its home
    (``webarch_move.precopy``), sent to ``to`` through the master and made its
    home there (``webarch_move.preunpack``), so that the copy after the
    suspension sends what changed since only.

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.move_precopy \\
            request='{"account": "alice", "from": "web1", "to": "web2"}'
    """
    started = time.monotonic()
    try:
        req, _packed, fetched = _sent(request, "webarch_move.precopy", True, timeout)
        unpacked = _call(req["to"], "webarch_move.preunpack", req["account"], timeout=timeout)
    except move.MoveError as exc:
        return _failed(str(exc))
    return {"files": unpacked["files"], "precopy_bytes": fetched["bytes"],
            "precopy_s": round(time.monotonic() - started, 2)}  # fmt: skip


def move_copy(request: Any = None, timeout: int = 3600) -> dict[str, Any]:
    """
    On ``from`` (the account suspended): what changed in the home since the
    pre-copy, the dumps and the manifest (``webarch_move.pack``), sent to ``to``
    through the master (as in ``move_precopy``).

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.move_copy \\
            request='{"account": "alice", "from": "web1", "to": "web2"}'
    """
    started = time.monotonic()
    try:
        # (Its copy on "from" goes with webarch_move.keep: out of the downtime.)
        _req, packed, fetched = _sent(request, "webarch_move.pack", False, timeout)
    except move.MoveError as exc:
        return _failed(str(exc))
    return {"dumps": packed["dumps"], "files": packed["files"], "sent": packed["sent"],
            "gone": packed["gone"], "tables": packed["tables"], "copy_bytes": fetched["bytes"],
            "copy_s": round(time.monotonic() - started, 2)}  # fmt: skip


def move_switch(request: Any = None) -> dict[str, Any]:
    """
    The switch of a move: ``from`` records that the account moved (its pillar
    there is refused until it says absent), then ``switch_cmd`` of the request
    runs on the master (a shell command that points DNS or the front-end at
    ``to``; environment WEBARCH_MOVE_ACCOUNT, _FROM, _TO and _SITES, the site
    names); none: the admin points them at ``to`` now.

    CLI Example:

    .. code-block:: bash

        salt-run webarch_fleet.move_switch \\
            request='{"account": "alice", "from": "web1", "to": "web2",
                      "switch_cmd": "/usr/local/sbin/dns-point"}'
    """
    try:
        req = move.request(request)
    except move.MoveError as exc:
        return _failed(str(exc))
    sites = move.site_names(__salt__["pillar.show_pillar"](req["to"]), req["account"])
    try:  # before the switch: the old copy is never served again by mistake
        _call(req["from"], "webarch_move.mark_moved", req["account"], req["to"])
    except move.MoveError as exc:
        return _failed(str(exc))
    if not req["switch_cmd"]:
        where = f"no switch_cmd: point {' '.join(sites)} at {req['to']}"
        return {"switched": False, "comment": where}
    env = {**os.environ, **move.switch_env(req, sites)}
    proc = subprocess.run(req["switch_cmd"], shell=True, env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    if proc.returncode != 0:
        return _failed(f"switch_cmd exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return {"switched": True, "sites": sites, "output": proc.stdout.strip()[-2000:]}
