"""
The account model: disk quotas (space and files) of the accounts on the file
system that holds their homes.

``webarch:quota`` switches them on and gives the default limits;
``webarch:accounts:USERNAME:quota`` changes them for one account.  Space is a
size (``500M``, ``5G``), files a count; ``0`` is no limit.  The model keeps
space in KiB, the kernel's (and ``setquota``'s) unit.

Two kinds of file system enforce them: one with user quotas (ext4, XFS:
``setquota``, all four limits) and btrfs, where each home is a subvolume
limited by its qgroup: there only ``blocks_hard`` exists (no file counts, no
soft limit or grace).  The model cannot know which file system the host has;
it records where each soft or file limit comes from in pillar
(:py:func:`limit_sources`), so that the state on btrfs fails naming it.
"""

from __future__ import annotations

import re
from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import Derived, Key

#: A space limit: a whole number and a unit (K, M, G, T), or 0 for none.
SPACE_RE = re.compile(r"^([1-9][0-9]{0,9})([KMGT])$")
SPACE_UNITS_KIB = {"K": 1, "M": 1 << 10, "G": 1 << 20, "T": 1 << 30}
#: Limits far beyond any disk are a typo (64 PiB, 2^32 - 1 files: ext4's inode numbers).
SPACE_MAX_KIB = 1 << 46
FILES_MAX = (1 << 32) - 1

LIMIT_NAMES = ("blocks_soft", "blocks_hard", "inodes_soft", "inodes_hard")
#: The limits a btrfs qgroup cannot give (it limits space only, with no grace).
NOT_ON_BTRFS = ("blocks_soft", "inodes_soft", "inodes_hard")

#: How often the accounts' ``~/logs/quota.txt`` is refreshed (systemd OnCalendar).
REPORT_CALENDAR = "*:0/10"
REPORT_FILE = "logs/quota.txt"

_SOFT_DOC = (
    "Soft limit of the {what}: above it the account may go on writing for the "
    "file system's grace period (7 days unless changed with ``setquota -t``), then "
    "writes fail as at the hard limit. ``0``: none. Not on btrfs (no soft limits there: "
    "the account's quota state fails naming this key)."
)
_HARD_DOC = (
    "Hard limit of the {what}: a write that would go above it fails with "
    "``Disk quota exceeded`` (EDQUOT), for this account only. ``0``: none."
)

#: ``webarch:quota:defaults`` and ``webarch:accounts:USERNAME:quota``: the limits.
LIMIT_KEYS = check.key_table(
    Key("blocks_soft", "size like ``500M`` or ``5G``, or ``0``", 0, _SOFT_DOC.format(what="space")),
    Key("blocks_hard", "size like ``500M`` or ``5G``, or ``0``", 0, _HARD_DOC.format(what="space")),
    Key(
        "inodes_soft",
        "number of files",
        0,
        _SOFT_DOC.format(what="number of files (and directories, links...)"),
    ),
    Key(
        "inodes_hard",
        "number of files",
        0,
        _HARD_DOC.format(what="number of files")
        + " Not on btrfs (qgroups count no files: the account's quota state fails naming "
        "this key).",
    ),
)

#: ``webarch:quota``: disk quotas of the accounts.
QUOTA_KEYS = check.key_table(
    Key(
        "enabled",
        "true or false",
        Derived("``true`` when a limit is given (in ``defaults`` or an account's ``quota``)"),
        "Apply the limits to every present account (limits it is not given are set to "
        "none) on the file system holding its home. Where that file system has no user "
        "quotas on (mounted without ``usrquota``, or of a kind without them), each "
        "account's quota state fails and says so: nothing passes silently. On btrfs the "
        "run switches its quotas (qgroups) on and makes each new home a subvolume "
        "limited by its qgroup. ``false``: the limits are checked but not applied, and "
        "the run says so.",
    ),
    Key(
        "defaults",
        "mapping",
        {},
        "The limits of every account that does not give its own: ``blocks_soft``, "
        "``blocks_hard``, ``inodes_soft``, ``inodes_hard`` (see `Quotas`_).",
    ),
)


def space_kib(value: Any, path: list[str], problems: check.Problems) -> int | None:
    """A space limit (``500M``, ``5G``, ``0``) in KiB."""
    if value == 0 or value == "0":
        return 0
    match = SPACE_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        problems.add(
            path, f"must be a size like 500M or 5G (K, M, G, T) or 0, not {check.describe(value)}"
        )
        return None
    kib = int(match.group(1)) * SPACE_UNITS_KIB[match.group(2)]
    if kib > SPACE_MAX_KIB:
        problems.add(path, f"{value} is more than 64P")
        return None
    return kib


def files(value: Any, path: list[str], problems: check.Problems) -> int | None:
    """A file-count limit."""
    return check.integer(value, path, problems, 0, FILES_MAX)


def limits(value: Any, base: dict, path: list[str], problems: check.Problems) -> dict:
    """The limits of a block (``defaults`` or an account's ``quota``) over ``base``."""
    data = check.mapping(value, path, problems)
    check.check_keys(data, LIMIT_KEYS, path, problems)
    result = dict(base)
    for name in LIMIT_NAMES:
        if name in data:
            parse = space_kib if name.startswith("blocks") else files
            result[name] = parse(data[name], [*path, name], problems)
    for kind in ("blocks", "inodes"):
        soft, hard = result[f"{kind}_soft"], result[f"{kind}_hard"]
        if soft and hard and soft > hard and (f"{kind}_soft" in data or f"{kind}_hard" in data):
            problems.add(
                [*path, f"{kind}_soft"],
                f"must not be above {kind}_hard ({show(kind, hard)}), not {show(kind, soft)}",
            )
    return result


def quota_settings(value: Any, accounts_raw: Any, problems: check.Problems) -> dict:
    """``webarch:quota``: whether quotas are applied and the default limits."""
    path = ["webarch", "quota"]
    data, get = check.block(value, QUOTA_KEYS, path, problems)
    defaults = limits(get("defaults"), dict.fromkeys(LIMIT_NAMES, 0), [*path, "defaults"], problems)
    raw = accounts_raw.values() if isinstance(accounts_raw, dict) else ()
    given = any(defaults.values()) or any(isinstance(a, dict) and a.get("quota") for a in raw)
    enabled = (
        check.boolean(data["enabled"], [*path, "enabled"], problems)
        if "enabled" in data
        else bool(given)
    )
    return {"enabled": bool(enabled), "limits_given": bool(given), "defaults": defaults}


def account_quota(data: dict, server: dict, path: list[str], problems: check.Problems) -> dict:
    """``webarch:accounts:USERNAME:quota``: the account's limits (KiB and files)."""
    return limits(data.get("quota"), server["quota"]["defaults"], [*path, "quota"], problems)


def limit_sources(data: dict, server: dict, path: list[str]) -> dict[str, str]:
    """Where each soft or file limit of an account (not 0) is given in pillar.

    ``{"inodes_hard": "webarch:quota:defaults:inodes_hard"}``: on btrfs, which
    has none of them, the account's quota state fails naming these.
    """
    own = data.get("quota") if isinstance(data.get("quota"), dict) else {}
    defaults = server["quota"]["defaults"]
    found = {}
    for name in NOT_ON_BTRFS:
        if name in own and own[name] not in (0, "0"):
            found[name] = ":".join([*path, "quota", name])
        elif name not in own and defaults.get(name):
            found[name] = f"webarch:quota:defaults:{name}"
    return found


def quota(server: dict, present: list[dict]) -> dict:
    """What quota.sls renders: the switch, the accounts, the report timer."""
    settings = server["quota"]
    return {
        **settings,
        # The directory of the homes: on btrfs its quotas (qgroups) are switched on.
        "homes": paths.HOME_BASE,
        # Switched off while limits are given: the run says so (never silently).
        "off_notice": not settings["enabled"] and settings["limits_given"],
        "accounts": sorted(a["name"] for a in present) if settings["enabled"] else [],
        # webarch-quota-report's arguments: ACCOUNT:HOME of every present account.
        "report_args": [
            f"{a['name']}:{a['home']}" for a in sorted(present, key=lambda a: a["name"])
        ]
        if settings["enabled"]
        else [],
        "report_calendar": REPORT_CALENDAR,
        "report_file": REPORT_FILE,
    }


def show(kind: str, value: int) -> str:
    """A limit as the pillar writes it (space in the largest whole unit)."""
    if kind.startswith("inodes") or value == 0:
        return str(value)
    for unit in "TGMK":
        if value % SPACE_UNITS_KIB[unit] == 0:
            return f"{value // SPACE_UNITS_KIB[unit]}{unit}"
    return f"{value}K"  # pragma: no cover (every KiB count ends in K)
