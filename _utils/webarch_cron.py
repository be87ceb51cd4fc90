"""
Cron jobs of the hosting accounts, run by systemd timers inside their chroots.

No cron daemon and no setgid crontab: each job is a pair of systemd units
(``webarch-cron-ACCOUNT.JOB.service`` and ``.timer``) written by
``webarch-cron sync`` from the model (the pillar's jobs) and from the
account's own ``~/private/crontab``.  The service runs the command with
``/bin/sh -c`` as the account, in its chroot (``RootDirectory=``, with the
chroot's binds made by systemd: ``chroot_binds``), its output
appended to ``~/logs/cron.log`` with a line when it starts and when it ends;
a failed run mails the account.

This module is the shared part: schedules in crontab syntax turned into
systemd calendar expressions, commands checked and quoted for a unit file,
the crontab file parsed, the unit files' texts.  Plain Python, standard
library only (and webarch_paths, installed beside it): Salt imports it from
``_utils`` (the pillar's validation), the program from
``/usr/local/lib/webarch`` (the accounts' own files).
"""

from __future__ import annotations

import hashlib
import re

import webarch_paths as paths

#: A job's name in pillar: also part of its units' names.
JOB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
UNIT_PREFIX = "webarch-cron-"
#: The units of a job (not webarch-cron-failed@.service, the failure mailer).
JOB_UNIT_RE = re.compile(r"^webarch-cron-([a-z][a-z0-9-]*)\.([a-z0-9][a-z0-9-]*)\.(service|timer)$")
#: Started (``OnFailure=``) with the failed unit's name as its instance.
FAILED_UNIT = "webarch-cron-failed@"
#: Units of the account's own crontab: ``webarch-cron-ACCOUNT.u-HASH``.
USER_JOB_PREFIX = "u-"
COMMAND_MAX = 1000
#: Lines of an account's crontab that are taken (the rest are refused).
USER_JOBS_MAX = 20
CRONTAB_MAX_BYTES = 64 * 1024
#: The crontab an account writes itself (relative to its home).
USER_CRONTAB = "private/crontab"
LOG_NAME = "cron.log"
#: A job that runs longer is stopped (and counts as failed).
TIMEOUT = "1h"

SHORTCUTS = {
    "@hourly": "*-*-* *:00:00",
    "@daily": "*-*-* 00:00:00",
    "@midnight": "*-*-* 00:00:00",
    "@weekly": "Mon *-*-* 00:00:00",
    "@monthly": "*-*-01 00:00:00",
    "@yearly": "*-01-01 00:00:00",
    "@annually": "*-01-01 00:00:00",
}
#: minute, hour, day of month, month, day of week: (name, lowest, highest).
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))  # fmt: skip
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_NUMBER_RE = re.compile(r"^[0-9]{1,2}$")


class CronError(ValueError):
    """A schedule, command or crontab line that cannot be used (the message says why)."""


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------


def _value(text: str, index: int) -> int:
    """One value of field ``index``: a number, or a month or day name."""
    name, low, high = FIELDS[index]
    lowered = text.lower()
    if index == 3 and lowered in MONTHS:
        return MONTHS.index(lowered) + 1
    if index == 4 and lowered in DAYS:
        return DAYS.index(lowered)
    if not _NUMBER_RE.match(text) or not low <= int(text) <= high:
        raise CronError(f"{name} {text!r} is not a number from {low} to {high}")
    return int(text)


def _item(text: str, index: int) -> set[int]:
    """The values of one comma-separated item: ``*``, ``N``, ``A-B``, each with ``/STEP``."""
    name, low, high = FIELDS[index]
    base, _, step_text = text.partition("/")
    step = 1
    if step_text:
        if not _NUMBER_RE.match(step_text) or int(step_text) == 0:
            raise CronError(f"{name} step {step_text!r} is not a number from 1 to 99")
        step = int(step_text)
    if base == "*":
        first, last = low, high if index != 4 else 6
    elif "-" in base:
        start, _, end = base.partition("-")
        first, last = _value(start, index), _value(end, index)
        if first > last:
            raise CronError(f"{name} range {base!r} runs backwards")
    else:
        first = _value(base, index)
        last = high if step_text else first
    return set(range(first, last + 1, step))


def _field(text: str, index: int) -> str:
    """One cron field as a systemd calendar component (``*`` when unrestricted)."""
    if text == "*":
        return "*"
    values: set[int] = set()
    for item in text.split(","):
        values |= _item(item, index)
    if index == 4:
        return ",".join(SYSTEMD_DAYS[v] for v in sorted({v % 7 for v in values}))
    return ",".join(f"{v:02d}" for v in sorted(values))


def on_calendar(schedule: str) -> str:
    """The systemd ``OnCalendar=`` of a crontab schedule (five fields or ``@daily``...).

    >>> on_calendar("*/15 2 * * mon-fri")
    'Mon,Tue,Wed,Thu,Fri *-*-* 02:00,15,30,45:00'
    """
    if not isinstance(schedule, str):
        raise CronError("must be a crontab schedule (five fields, or @hourly, @daily...)")
    text = " ".join(schedule.split())
    if text.startswith("@"):
        if text not in SHORTCUTS:
            raise CronError(f"{text!r} is not one of {', '.join(SHORTCUTS)}")
        return SHORTCUTS[text]
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(f"{schedule!r} has {len(fields)} fields, not five (m h dom mon dow)")
    minute, hour, dom, month, dow = (_field(f, i) for i, f in enumerate(fields))
    if dom != "*" and dow != "*":
        raise CronError(
            "restrict the day of month or the day of week, not both (cron would run on either)"
        )
    calendar = f"*-{month}-{dom} {hour}:{minute}:00"
    return calendar if dow == "*" else f"{dow} {calendar}"


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def check_command(command: object) -> str:
    """The command, if it is one line of printable text of at most COMMAND_MAX characters."""
    if not isinstance(command, str) or not command.strip():
        raise CronError("must be a command (one line of text)")
    if len(command) > COMMAND_MAX:
        raise CronError(f"is longer than {COMMAND_MAX} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in command):
        raise CronError("must be one line without control characters")
    return command.strip()


def exec_start(command: str) -> str:
    """``/bin/sh -c "COMMAND"``, quoted for a unit file: systemd's own escapes
    (backslash, double quote), specifiers (``%``) and variables (``$``) doubled."""
    quoted = command.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'/bin/sh -c "{quoted}"'


# --------------------------------------------------------------------------
# The account's own crontab
# --------------------------------------------------------------------------


def user_job_name(schedule: str, command: str) -> str:
    """A stable name for a crontab line (the same line keeps its units)."""
    digest = hashlib.sha256(f"{' '.join(schedule.split())}\0{command}".encode()).hexdigest()
    return f"{USER_JOB_PREFIX}{digest[:10]}"


def _split_line(line: str) -> tuple[str, str]:
    """A crontab line's schedule and command."""
    words = line.split()
    count = 1 if words[0].startswith("@") else 5
    if len(words) <= count:
        raise CronError("needs a schedule and a command")
    schedule = " ".join(words[:count])
    rest = line.strip()
    for word in words[:count]:
        rest = rest[rest.index(word) + len(word) :]
    return schedule, rest.strip()


def parse_crontab(text: str) -> tuple[list[dict], list[str]]:
    """The jobs of an account's crontab and the problems of its other lines.

    Lines: ``MIN HOUR DOM MON DOW COMMAND`` or ``@daily COMMAND``; blank lines
    and ``#`` comments are skipped.  Environment lines (``NAME=value``) are
    refused: a command sets what it needs.
    """
    jobs: list[dict] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            if re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=", line):
                raise CronError("environment lines are not supported: set it in the command")
            schedule, command = _split_line(line)
            job = {"name": user_job_name(schedule, command), "schedule": schedule,
                   "on_calendar": on_calendar(schedule), "command": check_command(command),
                   "enabled": True, "origin": f"{USER_CRONTAB}:{number}"}  # fmt: skip
        except CronError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if len(jobs) == USER_JOBS_MAX:
            problems.append(f"line {number}: more than {USER_JOBS_MAX} jobs; the rest are skipped")
            break
        if all(j["name"] != job["name"] for j in jobs):
            jobs.append(job)
    return jobs, problems


# --------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------


def unit_name(account: str, job: str) -> str:
    """The units' name without suffix: ``webarch-cron-ACCOUNT.JOB``."""
    return f"{UNIT_PREFIX}{account}.{job}"


#: The sandbox of a job's service (``systemd-analyze security``: OK): the account,
#: in its chroot, with no capability.  The chroot's mounts are in the chroots'
#: own mount namespace (webarch_mountns), which a unit running as the account
#: cannot enter: systemd gives the unit's namespace the same binds
#: (``chroot_binds``) over the skeleton, a /proc that shows the account's
#: processes only (ProtectProc=invisible) and a /dev of its own.  That
#: namespace is a copy of the host's, which has few mounts now (not every
#: chroot's): cheap to make at each start.  API file systems first, then the
#: binds (systemd orders them by path): /run's tmpfs does not hide the
#: chroot's /run/mysqld and mail socket.  No RestrictSUIDSGID: a job's
#: application copies the sites' setgid mode onto the directories it makes
#: (see webarch-php@.service).
SANDBOX = """MountAPIVFS=yes
ProtectProc=invisible
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
CapabilityBoundingSet=
NoNewPrivileges=yes
DevicePolicy=closed
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
"""


def chroot_binds(home: str, backups: str | None = None) -> str:
    """The chroot's binds (as webarch_layout.chroot_spec has them) for a unit with
    ``RootDirectory=`` the chroot: lines of [Service], destinations inside the chroot.
    ``backups``: the account's days in the backup store, read-only at ~/backups/files."""
    sockets = f"-{paths.MARIADB_SOCKET_DIR} -{paths.MAIL_GATE_DIR}"
    days = f" -{backups}:{home}/{paths.BACKUP_MOUNT_DIR}" if backups else ""
    return (
        f"BindReadOnlyPaths=/usr {sockets} /usr/bin/msmtp:/usr/sbin/exim4{days}\n"
        f"BindPaths={home} {home}/tmp:/tmp\n"
    )


def service_text(account: dict, job: dict) -> str:
    """The service that runs ``job`` of ``account`` (its ``name``, ``home``, ``chroot``).

    Everything runs as the account in its chroot: the start and end lines too
    (systemd's ``+`` would not leave the chroot).  A failure starts
    ``webarch-cron-failed@UNIT.service`` (root, outside), which mails the account.
    """
    name, job_name = account["name"], job["name"]
    log = f"{account['home']}/logs/{LOG_NAME}"
    stamp = "$$(date +%%Y-%%m-%%dT%%H:%%M:%%S%%:z) cron " + job_name
    end = (
        f'if [ "$$SERVICE_RESULT" = success ]; then echo "{stamp}: finished"; '
        f'else echo "{stamp}: failed ($$SERVICE_RESULT, $$EXIT_CODE $$EXIT_STATUS)"; fi'
    )
    return f"""# Written by webarch-cron sync (webarch): do not edit by hand.
# {job.get("origin", "pillar")}: {job["schedule"]}
[Unit]
Description=Cron job {job_name} of {name}
ConditionPathExists={account["chroot"]}/etc/passwd
OnFailure={FAILED_UNIT}%n.service

[Service]
Type=oneshot
User={name}
Group={name}
RootDirectory={account["chroot"]}
WorkingDirectory=~
ExecStartPre=/bin/sh -c 'echo "{stamp}: started"'
ExecStart={exec_start(job["command"])}
ExecStopPost=/bin/sh -c '{end}'
StandardInput=null
StandardOutput=append:{log}
StandardError=inherit
TimeoutStartSec={TIMEOUT}
{chroot_binds(account["home"], account.get("backups"))}{SANDBOX}IOSchedulingClass=best-effort
IOSchedulingPriority=7
{_limits(account)}"""


def _limits(account: dict) -> str:
    """The account's slice and limits (``slice``, ``properties``): lines of [Service]."""
    found = dict(account.get("properties") or {"Nice": "10"})
    if account.get("slice"):
        found["Slice"] = account["slice"]
    return "".join(f"{key}={value}\n" for key, value in sorted(found.items()))


def parse_unit(unit: str) -> tuple[str, str] | None:
    """The account and job of a job's unit name (``webarch-cron-ACCOUNT.JOB.service``)."""
    match = JOB_UNIT_RE.match(unit)
    return (match.group(1), match.group(2)) if match else None


def timer_text(account: dict, job: dict) -> str:
    """The timer of ``job``."""
    return f"""# Written by webarch-cron sync (webarch): do not edit by hand.
[Unit]
Description=Timer of cron job {job["name"]} of {account["name"]}

[Timer]
OnCalendar={job["on_calendar"]}
AccuracySec=1s

[Install]
WantedBy=timers.target
"""
