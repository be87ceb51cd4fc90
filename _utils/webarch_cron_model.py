"""
The account model: an account's cron jobs (``webarch:accounts:USERNAME:cron``).

Each job runs as the account inside its chroot, from a systemd timer that
``webarch-cron sync`` writes (see :py:mod:`webarch_cron`); the model gives
that program its input, ``/etc/webarch/cron.json``.
"""

from __future__ import annotations

from typing import Any

import webarch_check as check
import webarch_cron as cron
import webarch_limits as limits
import webarch_paths as paths
from webarch_check import REQUIRED, Key

#: ``webarch:accounts:USERNAME:cron:JOB``: one job.
CRON_JOB_KEYS = check.key_table(
    Key(
        "schedule",
        "crontab schedule",
        REQUIRED,
        "When: five crontab fields (``MIN HOUR DOM MON DOW``: numbers, ``*``, lists, "
        "ranges, ``/STEP``, month and day names; not both a day of month and a day of "
        "week) or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``. "
        "The server's time zone.",
    ),
    Key(
        "command",
        "command line",
        REQUIRED,
        f"Run by ``/bin/sh -c`` as the account in its chroot, in its home (one line, at "
        f"most {cron.COMMAND_MAX} characters). Its output goes to ``~/logs/cron.log``; "
        f"a run that fails (or runs over {cron.TIMEOUT}) mails the account's ``email``.",
    ),
    Key("enabled", "true or false", True, "``false`` keeps the job but stops its timer."),
)


def _job(name: Any, value: Any, path: list[str], problems: check.Problems) -> dict | None:
    """One pillar job, validated."""
    if not isinstance(name, str) or not cron.JOB_NAME_RE.fullmatch(name):
        problems.add(path, "job name must be 1-40 lower-case letters, digits or hyphens")
        return None
    if name.startswith(cron.USER_JOB_PREFIX):
        problems.add(path, f"job names starting with {cron.USER_JOB_PREFIX!r} are the crontab's")
        return None
    data, get = check.block(value, CRON_JOB_KEYS, path, problems)
    job: dict[str, Any] = {"name": name, "origin": "pillar"}
    for key, convert in (("schedule", cron.on_calendar), ("command", cron.check_command)):
        if key not in data:
            problems.add([*path, key], "is required")
            continue
        try:
            job["on_calendar" if key == "schedule" else key] = convert(data[key])
        except cron.CronError as exc:
            problems.add([*path, key], str(exc))
    job["schedule"] = " ".join(str(data.get("schedule", "")).split())
    job["enabled"] = check.boolean(get("enabled"), [*path, "enabled"], problems)
    return job if {"on_calendar", "command"} <= set(job) else None


def account_cron(name: str, data: dict, chroot: str, problems: check.Problems) -> dict:
    """An account's cron: its pillar jobs, its own crontab, its log."""
    path = ["webarch", "accounts", name, "cron"]
    jobs = [
        _job(job, value, [*path, str(job)], problems)
        for job, value in sorted(
            check.mapping(data.get("cron"), path, problems).items(), key=lambda kv: str(kv[0])
        )
    ]
    home = paths.home(name)
    return {
        "name": name,
        "home": home,
        "chroot": chroot,
        "log": f"{home}/logs/{cron.LOG_NAME}",
        "crontab": f"{home}/{cron.USER_CRONTAB}",
        "jobs": [job for job in jobs if job],
    }


def cron_file(present: list[dict], email_from: str | None) -> dict:
    """``/etc/webarch/cron.json``: what ``webarch-cron sync`` makes units of."""
    return {
        "path": paths.CRON_CONFIG_PATH,
        "data": {
            "from": email_from,
            "accounts": {
                a["name"]: {
                    **a["cron"],
                    "email": a["email"],
                    # The unit binds the days read-only, as the chroot does.
                    "backups": next(
                        (m["device"] for m in a["chroot"]["mounts"] if m["id"] == "backups"), None
                    ),
                    "properties": limits.process_properties(a["limits"], a["limits"]["nice"]),
                }
                for a in present
            },
        },
    }
