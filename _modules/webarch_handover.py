"""
A moving account's hand-over: the narrow steps of a move's downtime.

The orchestration ``webarch.orch.move`` (docs/fleet.rst) stops serving the
account on the old server and starts on the new one with these, not with
whole ``state.apply`` runs (3 s each on the test fleet):

* :func:`ready`, before the downtime: the account's Apache site file rendered
  as the run of that server renders it (suspended on the old server, as its
  pillar says on the new), with the facts the other two need, into
  ``/var/lib/webarch/move-ready`` (root's only);
* :func:`hold`, on the old server (the downtime starts): that file live
  (checked with the whole configuration, Apache reloaded), the PHP-FPM pool
  stopped and not started at boot, the user expired and every process of it
  ended, its cron jobs and its mail stopped;
* :func:`serve`, on the new server (before the switch): that file live, and
  unless the account is suspended there, the user open, its mail let through,
  its PHP-FPM socket started, its cron jobs made.  The ``state.apply`` that
  follows (out of the downtime) finds these done and makes the rest (such as
  its applications' checks).

A move stopped after :func:`hold` leaves the old server as a highstate there
puts it back: every change of it is one that run makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import webarch_handover as handover
import webarch_move as move
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_handover"

#: How long :func:`hold` waits for the account's processes to end.
QUIET_WAIT_S = 10.0


def __virtual__() -> str:
    return __virtualname__


def _run(*argv: str, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        message = (proc.stderr or proc.stdout).strip()[-2000:]
        raise CommandExecutionError(f"{' '.join(argv)} exited {proc.returncode}: {message}")
    return proc.stdout


def _write(path: str, text: str, mode: int) -> bool:
    """Write ``text`` to ``path`` (beside it, then renamed) unless it is there; changed?"""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.webarch-tmp"
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _ready_path(name: str, suffix: str) -> str:
    if not move.NAME_RE.match(name):
        raise CommandExecutionError(f"{name!r} is not an account name")
    return f"{handover.READY_DIR}/{name}.{suffix}"


def ready(name: str, suspended: bool = False) -> dict[str, Any]:
    """
    Render account ``name``'s Apache site file as this server's run will, the
    account suspended (``suspended``) or as the pillar says, into
    ``/var/lib/webarch/move-ready/NAME.conf``, and the facts :func:`hold` and
    :func:`serve` need into ``NAME.json``.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_handover.ready alice suspended=True
    """
    conf, facts_path = _ready_path(name, "conf"), _ready_path(name, "json")
    pillar = __salt__["pillar.items"](unmask=True).get("webarch", {})
    model = __salt__["webarch.config"](pillar=handover.variant_pillar(pillar, name, suspended))
    account = model["accounts"].get(name)
    if account is None or account["state"] != "present":
        raise CommandExecutionError(f"{name!r} is not a present webarch account here")
    source = __salt__["cp.get_file_str"](handover.SITE_TEMPLATE)
    if not source:
        raise CommandExecutionError(f"{handover.SITE_TEMPLATE} not found")
    context = handover.site_file_context(model, json.loads(json.dumps(account)))
    text = __salt__["file.apply_template_on_contents"](source, "jinja", context, {}, "base")
    _write(conf, text, 0o600)
    _write(facts_path, json.dumps(handover.facts(model, name), sort_keys=True), 0o600)
    return {"ready": conf, "suspended": account["suspended"]}


def _facts(name: str) -> dict[str, Any]:
    try:
        with open(_ready_path(name, "json"), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise CommandExecutionError(f"no hand-over is ready for {name}: run ready first") from None


def _site_live(name: str, facts: dict[str, Any]) -> bool:
    """The ready site file staged and, unless it is live already, put live after one
    check of the whole configuration, Apache reloaded; refused: an error quoting Apache."""
    with open(_ready_path(name, "conf"), encoding="utf-8") as handle:
        written = _write(facts["staged"], handle.read(), 0o600)
    program = f"{paths.PROGRAM_DIR}/webarch-apache-sites"
    if not written and _live(program):
        return False
    _run(program, "install")
    _run(program, "refused")
    _run("systemctl", "reload", "apache2")
    return True


def _live(program: str) -> bool:
    """Whether every staged site file is live (``webarch-apache-sites current``)."""
    return subprocess.run([program, "current"], capture_output=True, check=False).returncode == 0


def _done(name: str) -> None:
    """The hand-over carried out: its ready files go (the next move renders its own)."""
    for suffix in ("conf", "json"):
        os.unlink(_ready_path(name, suffix))


def _mail(facts: dict[str, Any], allowed: bool) -> bool:
    with open(paths.MAIL_ACCOUNTS_PATH, encoding="utf-8") as handle:
        text = handle.read()
    lines = handover.mail_lines(text, facts["name"], facts["home"], allowed)
    return _write(paths.MAIL_ACCOUNTS_PATH, lines, 0o644) if lines != text else False


def _cron(facts: dict[str, Any]) -> bool:
    """Its jobs in /etc/webarch/cron.json as they are ready (none: suspended), and
    their timers made, started or stopped by webarch-cron."""
    with open(paths.CRON_CONFIG_PATH, encoding="utf-8") as handle:
        text = handle.read()
    wanted = handover.cron_text(handover.cron_with(json.loads(text), facts["name"], facts["cron"]))
    if wanted == text:
        return False
    _write(paths.CRON_CONFIG_PATH, wanted, 0o600)
    _run(f"{paths.PROGRAM_DIR}/webarch-cron", "sync")
    return True


def _wait_quiet(name: str) -> None:
    deadline = time.monotonic() + QUIET_WAIT_S
    while _run("pgrep", "-u", name, ok=(0, 1)).strip():
        if time.monotonic() > deadline:
            raise CommandExecutionError(f"{name}'s processes did not end in {QUIET_WAIT_S:.0f} s")
        time.sleep(0.05)


def hold(name: str) -> dict[str, Any]:
    """
    Stop serving account ``name`` here (a move's old server; :func:`ready` with
    ``suspended=True`` first): its sites answer 503, its PHP-FPM pool stops
    (and does not start at boot), its user expires (no SSH) and its processes
    end, its cron jobs and its mail stop.

    CLI Example:

    .. code-block:: bash

        salt web1 webarch_handover.hold alice
    """
    facts = _facts(name)
    if not facts["suspended"]:
        raise CommandExecutionError(
            f"the hand-over ready for {name} serves it: ready it with suspended=True"
        )
    changes = {"site": _site_live(name, facts)}
    # Its cron timers first (a job they start meanwhile ends below with the rest).
    changes["cron"] = _cron(facts)
    _run("systemctl", "stop", facts["socket_unit"], facts["unit"])
    changes["pool"] = os.path.lexists(facts["socket_wants"])
    if changes["pool"]:
        os.unlink(facts["socket_wants"])
    _run("usermod", "--expiredate", "1", name)
    _run("pkill", "-KILL", "-u", name, ok=(0, 1))
    changes["mail"] = _mail(facts, allowed=False)
    _wait_quiet(name)
    _done(name)
    return changes


def serve(name: str) -> dict[str, Any]:
    """
    Serve account ``name`` here (a move's new server, its home and databases in;
    :func:`ready` first): its sites' file live, and unless its pillar suspends
    it, its user open (SSH), its mail let through, its PHP-FPM socket started
    (and at boot), its cron jobs made.

    CLI Example:

    .. code-block:: bash

        salt web2 webarch_handover.serve alice
    """
    facts = _facts(name)
    changes = {"site": _site_live(name, facts)}
    if facts["suspended"]:
        _done(name)
        return changes
    _run("usermod", "--expiredate", "", name)
    changes["mail"] = _mail(facts, allowed=True)
    changes["pool"] = not os.path.lexists(facts["socket_wants"])
    if changes["pool"]:
        os.symlink(facts["socket_template"], facts["socket_wants"])
    _run("systemctl", "start", facts["socket_unit"])
    changes["cron"] = _cron(facts)
    _done(name)
    return changes
