#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""Stop the PHP-FPM masters of accounts whose sites are idle.

Usage: webarch-php-idle [--dry-run]

Run by webarch-php-idle.timer (root).  Each account's PHP-FPM
(webarch-php@ACCOUNT.service) is started by its socket on the first request;
this stops it again once its pool has been idle for two runs in a row: no
worker now, and no worker ended since the last run (the CPU time of the
master's reaped children, /proc/PID/stat, has not grown).  The socket stays
with systemd, so the next request starts the master again (a few tens of
milliseconds).  Pools that keep workers (pm static or dynamic) are never
idle.  Prints the units it stopped; --dry-run stops nothing.

Environment (for tests): WEBARCH_PHP_IDLE_STATE (the memo of the last run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

STATE = os.environ.get("WEBARCH_PHP_IDLE_STATE", "/run/webarch-php-idle.json")
PATTERN = "webarch-php@*.service"
#: Runs in a row a pool must be found idle before its master is stopped.
IDLE_RUNS = 2


def systemctl(*args: str) -> str:
    """systemctl's output (raises CalledProcessError on failure)."""
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=True)
    return done.stdout


def running_masters() -> dict[str, int]:
    """Unit -> main pid of every running account PHP-FPM."""
    out = systemctl("list-units", "--state=active", "--plain", "--no-legend", PATTERN)
    found: dict[str, int] = {}
    for unit in (line.split()[0] for line in out.splitlines() if line.strip()):
        pid = int(systemctl("show", "--property=MainPID", "--value", unit).strip() or 0)
        if unit.startswith("webarch-php@") and pid:
            found[unit] = pid
    return found


def children_time(pid: int) -> int | None:
    """The CPU ticks of ``pid``'s reaped children (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[13]) + int(fields[14])  # cutime, cstime


def has_children(pid: int) -> bool:
    """Whether ``pid`` has a child process now (a worker)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return bool(handle.read().split())
    except OSError:
        return True  # cannot tell: not idle


def load() -> dict:
    """The memo of the last run: unit -> [pid, children's ticks, idle runs]."""
    try:
        with open(STATE, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def save(memo: dict) -> None:
    """Write the memo atomically."""
    tmp = f"{STATE}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(memo, handle)
    os.replace(tmp, STATE)


def step(memo: dict, masters: dict[str, int]) -> tuple[dict, list[str]]:
    """The new memo, and the units idle long enough to stop."""
    new: dict = {}
    idle: list[str] = []
    for unit, pid in sorted(masters.items()):
        ticks = children_time(pid)
        if ticks is None:
            continue
        last_pid, last_ticks, runs = memo.get(unit, [0, -1, 0])
        quiet = not has_children(pid) and last_pid == pid and last_ticks == ticks
        runs = runs + 1 if quiet else 0
        if quiet and runs >= IDLE_RUNS - 1:
            idle.append(unit)
        else:
            new[unit] = [pid, ticks, runs]
    return new, idle


def main(argv: list[str]) -> int:
    """Stop the idle masters; print them."""
    dry = argv[1:] == ["--dry-run"]
    if argv[1:] and not dry:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    memo, idle = step(load(), running_masters())
    for unit in idle:
        if not dry:
            systemctl("stop", unit)
        print(f"{'would stop' if dry else 'stopped'} {unit}")
    if not dry:
        save(memo)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
