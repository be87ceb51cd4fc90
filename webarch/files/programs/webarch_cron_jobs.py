#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""The hosting accounts' cron jobs: systemd timers that run them in their chroots.

Usage: webarch-cron sync [--check]
       webarch-cron failed UNIT

sync (root; run by Salt, and every minute by webarch-cron.timer): makes the
units of every job of /etc/webarch/cron.json (the pillar's, written by Salt)
and of each account's own HOME/private/crontab (crontab lines: five fields or
@daily..., then the command; at most 20 jobs), a pair per job:
/etc/systemd/system/webarch-cron-ACCOUNT.JOB.service and .timer.  It writes
the units that differ, removes those of jobs that are gone (their timers
stopped first), reloads systemd when a file changed, and starts and enables
the timers of enabled jobs (stops and disables the others).  A crontab is
read only if it is a regular file of the account's, not a symlink, with one
link, at most 64 KiB; its problems (by line) are written once per change of
the file into HOME/logs/cron.log.  Prints what it changed, one line each.
--check changes nothing and exits 1 if sync would change anything (0 if not).

Each job's service runs its command with /bin/sh -c as the account in its
chroot, output appended to HOME/logs/cron.log between a "TIME cron JOB:
started" line and "TIME cron JOB: finished" or "... failed (RESULT, ...)".

failed UNIT (root; webarch-cron-failed@UNIT.service, started by a job's
service when it fails): mails the account's email the end of its cron.log
since the job started (through the host's MTA, from webarch:notify:from).

Environment (for tests): WEBARCH_CRON_CONFIG, WEBARCH_CRON_UNIT_DIR,
WEBARCH_CRON_MEMO, WEBARCH_CRON_NO_SYSTEMCTL=1 (write files only).
"""

from __future__ import annotations

import datetime
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_cron as cron  # noqa: E402
import webarch_paths as paths  # noqa: E402
import webarch_progs as progs  # noqa: E402

CONFIG = os.environ.get("WEBARCH_CRON_CONFIG", paths.CRON_CONFIG_PATH)
UNIT_DIR = os.environ.get("WEBARCH_CRON_UNIT_DIR", paths.SYSTEMD_DIR)
MEMO = os.environ.get("WEBARCH_CRON_MEMO", f"{paths.STATE_DIR}/cron-crontabs.json")
MAIL_TAIL_BYTES = 8192


def now() -> str:
    """The local time, as the log lines give it."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def read_config() -> dict:
    """The model's cron file."""
    with open(CONFIG, encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------
# The accounts' logs
# --------------------------------------------------------------------------


def log_line(account: dict, text: str) -> None:
    """Append ``TIME cron TEXT`` to the account's cron.log (no symlink followed)."""
    gid = grp.getgrnam(account["name"]).gr_gid
    logs = progs.open_logs_dir(account["home"])
    try:
        fd, _ = progs.open_log(cron.LOG_NAME, logs, lambda: (gid, 0o640))
        try:
            progs.write_all(fd, f"{now()} cron {text}\n".encode(errors="replace"))
        finally:
            os.close(fd)
    finally:
        os.close(logs)


def log_tail(account: dict, job: str) -> str:
    """The end of the account's cron.log from the last start of ``job``."""
    logs = progs.open_logs_dir(account["home"])
    try:
        fd = os.open(cron.LOG_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=logs)
    finally:
        os.close(logs)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(max(0, size - MAIL_TAIL_BYTES))
        text = handle.read().decode(errors="replace")
    start = text.rfind(f" cron {job}: started")
    return text[text.rfind("\n", 0, start) + 1 :] if start >= 0 else text


# --------------------------------------------------------------------------
# The accounts' own crontabs
# --------------------------------------------------------------------------


def read_crontab(account: dict) -> bytes | None:
    """The account's crontab, if it is a regular file of its own (else None)."""
    try:
        uid = pwd.getpwnam(account["name"]).pw_uid
        fd = os.open(account["crontab"], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (KeyError, OSError):
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_nlink != 1:
            return None
        return handle.read(cron.CRONTAB_MAX_BYTES + 1)


def crontab_jobs(account: dict, memo: dict, report: bool) -> list[dict]:
    """The jobs of the account's crontab; its problems logged once per change."""
    data = read_crontab(account)
    if data is None:
        memo.pop(account["name"], None)
        return []
    problems: list[str] = []
    if len(data) > cron.CRONTAB_MAX_BYTES:
        problems.append(f"larger than {cron.CRONTAB_MAX_BYTES} bytes: not read")
        jobs: list[dict] = []
    else:
        jobs, problems = cron.parse_crontab(data.decode(errors="replace"))
    digest = hashlib.sha256(data).hexdigest()
    if report and memo.get(account["name"]) != digest:
        memo[account["name"]] = digest
        log_line(account, f"{cron.USER_CRONTAB}: {len(jobs)} job(s) taken")
        for problem in problems:
            log_line(account, f"{cron.USER_CRONTAB}: {problem}")
    return jobs


# --------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------


def account_slice(name: str) -> str | None:
    """The account's slice (logind's ``user-UID.slice``), where its limits are."""
    try:
        return f"user-{pwd.getpwnam(name).pw_uid}.slice"
    except KeyError:
        return None


def wanted_units(config: dict, memo: dict, report: bool) -> tuple[dict[str, str], set[str]]:
    """Unit file name -> text of every job, and the timers that should run."""
    files: dict[str, str] = {}
    running: set[str] = set()
    for account in config["accounts"].values():
        account = {**account, "slice": account_slice(account["name"])}
        for job in account["jobs"] + crontab_jobs(account, memo, report):
            unit = cron.unit_name(account["name"], job["name"])
            files[f"{unit}.service"] = cron.service_text(account, job)
            files[f"{unit}.timer"] = cron.timer_text(account, job)
            if job["enabled"]:
                running.add(f"{unit}.timer")
    return files, running


def present_units() -> dict[str, str]:
    """Unit file name -> text of the job units in the unit directory."""
    found = {}
    for name in os.listdir(UNIT_DIR):
        if cron.JOB_UNIT_RE.match(name):
            with open(os.path.join(UNIT_DIR, name), encoding="utf-8", errors="replace") as handle:
                found[name] = handle.read()
    return found


def systemctl(*args: str) -> str:
    """Run systemctl (nothing with WEBARCH_CRON_NO_SYSTEMCTL=1)."""
    if os.environ.get("WEBARCH_CRON_NO_SYSTEMCTL") == "1":
        return ""
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and args[0] not in ("show", "reset-failed"):
        raise RuntimeError(f"systemctl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def timer_states(timers: list[str]) -> dict[str, tuple[str, str]]:
    """Timer -> (UnitFileState, ActiveState), one systemctl call."""
    if not timers or os.environ.get("WEBARCH_CRON_NO_SYSTEMCTL") == "1":
        return {}
    out = systemctl("show", "-p", "Id,UnitFileState,ActiveState", "--", *timers)
    states: dict[str, tuple[str, str]] = {}
    for block in out.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[fields.get("Id", "")] = (
            fields.get("UnitFileState", ""),
            fields.get("ActiveState", ""),
        )
    return states


def plan(config: dict, memo: dict, report: bool) -> tuple[dict[str, list[str]], dict[str, str]]:
    """What sync has to do (files to write and remove, timers to start and stop),
    and the texts of the files."""
    wanted, running = wanted_units(config, memo, report)
    present = present_units()
    timers = sorted(n for n in set(wanted) | set(present) if n.endswith(".timer"))
    if os.environ.get("WEBARCH_CRON_NO_SYSTEMCTL") == "1":
        timers, running = [], set()  # files only
    states = timer_states(timers)
    todo = {
        "write": sorted(n for n, text in wanted.items() if present.get(n) != text),
        "remove": sorted(set(present) - set(wanted)),
        "start": sorted(t for t in running if states.get(t, ("", "")) != ("enabled", "active")),
        "stop": sorted(
            t
            for t in timers
            if t not in running and states.get(t, ("", ""))[1] not in ("", "inactive")
        ),
    }
    return todo, wanted


def apply(todo: dict[str, list[str]], wanted: dict[str, str]) -> None:
    """Carry out a plan."""
    for timer in todo["stop"]:
        systemctl("disable", "--now", "--", timer)
    for name in todo["remove"]:
        os.unlink(os.path.join(UNIT_DIR, name))
    for name in todo["write"]:
        progs.replace_file(os.path.join(UNIT_DIR, name), wanted[name].encode())
        os.chmod(os.path.join(UNIT_DIR, name), 0o644)
    if todo["write"] or todo["remove"]:
        systemctl("daemon-reload")
    # A removed job's failed run is forgotten with it (no "not-found failed" unit left).
    removed = [name for name in todo["remove"] if name.endswith(".service")]
    if removed:
        systemctl("reset-failed", "--", *removed)
    for timer in todo["start"]:
        systemctl("enable", "--now", "--", timer)


def sync(check: bool) -> int:
    """``webarch-cron sync [--check]``."""
    config = read_config()
    with progs.locked(f"{MEMO}.lock", wait=True):
        try:
            with open(MEMO, encoding="utf-8") as handle:
                memo = json.load(handle)
        except (OSError, ValueError):
            memo = {}
        before = dict(memo)
        todo, wanted = plan(config, memo, report=not check)
        changes = [f"{verb} {name}" for verb in ("write", "remove", "start", "stop")
                   for name in todo[verb]]  # fmt: skip
        for line in changes:
            print(line if not check else f"would {line}")
        if check:
            return 1 if changes else 0
        apply(todo, wanted)
        if memo != before:
            progs.replace_file(MEMO, json.dumps(memo, sort_keys=True).encode())
    return 0


# --------------------------------------------------------------------------
# A job's start and end
# --------------------------------------------------------------------------


def failed(unit: str) -> int:
    """``webarch-cron failed UNIT`` (webarch-cron-failed@UNIT.service): log and mail it."""
    parsed = cron.parse_unit(unit)
    config = read_config()
    if parsed is None or parsed[0] not in config["accounts"]:
        print(f"webarch-cron: {unit!r} is no job of an account", file=sys.stderr)
        return 1
    account = config["accounts"][parsed[0]]
    if not account.get("email"):
        return 0
    sender = config.get("from") or f"root@{os.uname().nodename}"
    refused = progs.send_mail(
        sender,
        account["email"],
        f"Cron job {parsed[1]} of {account['name']} failed",
        f"The cron job {parsed[1]} of the hosting account {account['name']} failed.\n\n"
        f"The end of ~/logs/{cron.LOG_NAME}:\n\n{log_tail(account, parsed[1])}",
    )
    if refused:
        print(f"webarch-cron: {refused}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Dispatch the subcommands."""
    if argv[:1] == ["sync"] and argv[1:] in ([], ["--check"]):
        return sync(check=argv[1:] == ["--check"])
    if argv[:1] == ["failed"] and len(argv) == 2:
        return failed(argv[1])
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
