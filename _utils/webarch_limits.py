"""
The account model: each account's share of the machine (``webarch:limits``
and ``webarch:accounts:USERNAME:limits``).

Two layers, because they enforce in different places:

- the account's systemd slice, ``user-UID.slice`` (logind puts its SSH and
  SFTP sessions there; webarch puts its PHP-FPM and its cron jobs there too):
  CPU quota and weight, memory high and max, tasks, I/O weight.  systemd
  enforces them on cgroup v2, which Debian 12 and 13 boot with.
- per-process and per-uid limits that hold on any kernel: the number of the
  account's processes (``RLIMIT_NPROC``, counted per uid over all of them),
  the private memory of each process (``RLIMIT_DATA``), the niceness of its
  logins and cron jobs, and an ``oom_score_adj`` that makes its processes the
  first an out-of-memory kill picks.
"""

from __future__ import annotations

from typing import Any

import webarch_check as check
from webarch_check import Key

#: Sizes: like ``512M`` or ``2G`` (or ``0``: none) within these bounds.
SIZE_LOW, SIZE_HIGH = "16M", "1024G"
#: The account's processes lose an out-of-memory kill first (the host's keep 0).
OOM_SCORE_ADJUST = 500
#: What a PHP worker needs beyond its ``memory_limit`` (PHP itself, extensions).
PHP_HEADROOM = 256 << 20
#: Where pam_limits reads the accounts' limits for their SSH and SFTP sessions.
PAM_LIMITS_FILE = "/etc/security/limits.d/60-webarch.conf"
#: The drop-ins written for each account (``%s``: the unit).
DROPIN = "/etc/systemd/system/%s.d/50-webarch-limits.conf"

_SIZE_TYPE = "size like ``512M`` or ``2G``, or ``0``"

#: ``webarch:limits`` (the server's defaults) and ``webarch:accounts:USERNAME:limits``.
LIMIT_KEYS = check.key_table(
    Key(
        "cpu_quota",
        "percent 0-10000",
        100,
        "CPU time of the account's slice, in percent of one CPU (``CPUQuota=``): "
        "``100`` is one core's worth. ``0``: none.",
    ),
    Key(
        "cpu_weight",
        "1-10000",
        100,
        "The account's share of busy CPUs against the others (``CPUWeight=``; 100 is systemd's).",
    ),
    Key(
        "memory_high",
        _SIZE_TYPE,
        "768M",
        "Above this the account's slice is throttled and its memory reclaimed "
        "(``MemoryHigh=``). ``0``: none.",
    ),
    Key(
        "memory_max",
        _SIZE_TYPE,
        "1G",
        "The most memory of the account's slice: past it the kernel kills one of "
        "the account's processes, no other (``MemoryMax=``). ``0``: none.",
    ),
    Key(
        "tasks_max",
        "16-100000",
        128,
        "The most processes and threads of the account: its slice's ``TasksMax=``, "
        "and the per-user process limit (``RLIMIT_NPROC``) of its PHP workers, "
        "sessions and cron jobs, so that a fork bomb stops there on any kernel. "
        "More than ``php:max_children``.",
    ),
    Key(
        "io_weight",
        "1-10000",
        100,
        "The account's share of busy disks against the others (``IOWeight=``).",
    ),
    Key(
        "process_memory",
        _SIZE_TYPE,
        "1G",
        "The most private memory of any one process of the account (``RLIMIT_DATA``): "
        "an allocation past it fails (PHP workers, sessions, cron jobs). At least "
        "``php:memory_limit`` + 256M (raised to that when an account's own "
        "``limits`` do not give it). ``0``: none.",
    ),
    Key(
        "nice",
        "0-19",
        5,
        "The niceness of the account's SSH sessions and cron jobs (its PHP "
        "workers run at 0): batch work yields to the sites.",
    ),
)

#: Integer keys: (lowest, highest).
_INTEGERS = {
    "cpu_quota": (0, 10000),
    "cpu_weight": (1, 10000),
    "tasks_max": (16, 100000),
    "io_weight": (1, 10000),
    "nice": (0, 19),
}
_SIZES = ("memory_high", "memory_max", "process_memory")


def _size(value: Any, path: list[str], problems: check.Problems) -> int | None:
    """A size in bytes (``0``: none)."""
    if value == 0 or value == "0":
        return 0
    text = check.size(value, path, problems, SIZE_LOW, SIZE_HIGH)
    return check.size_bytes(text) if text else None


def _limits(value: Any, base: dict, path: list[str], problems: check.Problems) -> dict:
    """The limits in ``value`` over ``base`` (validated, sizes in bytes)."""
    data = check.mapping(value, path, problems)
    check.check_keys(data, LIMIT_KEYS, path, problems)
    found = dict(base)
    for key, (low, high) in _INTEGERS.items():
        if key in data:
            found[key] = check.integer(data[key], [*path, key], problems, low, high)
    for key in _SIZES:
        if key in data:
            found[key] = _size(data[key], [*path, key], problems)
    high, most = found["memory_high"], found["memory_max"]
    if high and most and high > most and ("memory_high" in data or "memory_max" in data):
        problems.add(
            [*path, "memory_high"],
            f"must not be above memory_max ({_human(most)}), not {_human(high)}",
        )
    return found


def server_limits(value: Any, problems: check.Problems) -> dict:
    """``webarch:limits``: the defaults of every account."""
    path = ["webarch", "limits"]
    base = {key: None for key in LIMIT_KEYS}
    defaults = _limits(check.defaults(LIMIT_KEYS), base, path, problems)
    return _limits(value if value is not None else {}, defaults, path, problems)


def account_limits(
    name: str, value: Any, server: dict, php: dict, problems: check.Problems
) -> dict:
    """An account's ``limits`` over the server's; checked against its PHP pool."""
    path = ["webarch", "accounts", name, "limits"]
    own = value if isinstance(value, dict) else {}
    limits = _limits(value if value is not None else {}, server["limits"], path, problems)
    _check_php(limits, php, "process_memory" in own, path, problems)
    return limits


def _check_php(
    limits: dict, php: dict, own_memory: bool, path: list[str], problems: check.Problems
) -> None:
    """The pool must fit in the limits, or its workers would fail at random.

    A ``process_memory`` the account does not give itself is raised to leave a
    PHP worker room above its ``memory_limit``; one it gives must do so.
    """
    children, tasks = php.get("max_children"), limits["tasks_max"]
    if isinstance(children, int) and isinstance(tasks, int) and tasks <= children:
        problems.add(
            [*path, "tasks_max"],
            f"must be more than php:max_children ({children}), not {tasks}",
        )
    memory, most = php.get("memory_limit"), limits["process_memory"]
    if not isinstance(memory, str) or not most:
        return
    needed = check.size_bytes(memory) + PHP_HEADROOM
    if most >= needed:
        return
    if own_memory:
        problems.add(
            [*path, "process_memory"],
            f"must be at least php:memory_limit ({memory}) + {_human(PHP_HEADROOM)}, "
            f"not {_human(most)}",
        )
    else:
        limits["process_memory"] = needed


def _human(size: int) -> str:
    """``size`` bytes as the largest whole unit."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# --------------------------------------------------------------------------
# What the limits become
# --------------------------------------------------------------------------


def _infinity(size: int) -> str:
    """A systemd size: bytes, or ``infinity`` for 0 (none)."""
    return str(size) if size else "infinity"


def slice_properties(limits: dict) -> dict[str, str]:
    """The ``[Slice]`` properties of the account's ``user-UID.slice``."""
    return {
        "CPUQuota": f"{limits['cpu_quota']}%" if limits["cpu_quota"] else "",
        "CPUWeight": str(limits["cpu_weight"]),
        "MemoryHigh": _infinity(limits["memory_high"]),
        "MemoryMax": _infinity(limits["memory_max"]),
        "TasksMax": str(limits["tasks_max"]),
        "IOWeight": str(limits["io_weight"]),
    }


def process_properties(limits: dict, nice: int | None = None) -> dict[str, str]:
    """The limits of a service running the account's processes (pool, cron job)."""
    found = {
        "LimitNPROC": str(limits["tasks_max"]),
        "LimitDATA": _infinity(limits["process_memory"]),
        "OOMScoreAdjust": str(OOM_SCORE_ADJUST),
    }
    if nice is not None:
        found["Nice"] = str(nice)
    return found


def units(limits: dict) -> dict[str, dict[str, str]]:
    """The properties of the account's slice and of its PHP-FPM service."""
    return {"slice": slice_properties(limits), "service": process_properties(limits)}


def unit_text(section: str, properties: dict[str, str], what: str) -> str:
    """A drop-in with ``properties`` in ``section``."""
    lines = [f"# Managed by Salt (webarch): {what}.", f"[{section}]"]
    lines += [f"{key}={value}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def pam_lines(name: str, limits: dict) -> list[str]:
    """pam_limits lines for the account's SSH and SFTP sessions."""
    data = limits["process_memory"] // 1024 if limits["process_memory"] else "unlimited"
    return [
        f"{name} hard nproc {limits['tasks_max']}",
        f"{name} soft nproc {limits['tasks_max']}",
        f"{name} hard data {data}",
        f"{name} soft data {data}",
        f"{name} - priority {limits['nice']}",
    ]


def pam_file(present: list[dict]) -> dict:
    """``/etc/security/limits.d/60-webarch.conf``: every present account's lines."""
    lines = ["# Managed by Salt (webarch): the accounts' limits in their SSH and SFTP sessions."]
    for account in present:
        lines += pam_lines(account["name"], account["limits"])
    return {"path": PAM_LIMITS_FILE, "contents": "\n".join(lines) + "\n"}
