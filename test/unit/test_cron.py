"""Cron jobs (issue 18): schedules, commands, crontabs, units (_utils/webarch_cron.py),
the pillar's ``cron`` block (_utils/webarch_cron_model.py), and webarch-cron sync
run as a subprocess against a temporary tree (no systemctl)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import webarch_cron as cron
from unit.model_helpers import host, problems
from unit.program_helpers import program, program_env

SCRIPT = program("webarch_cron_jobs")


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("0 3 * * *", "*-*-* 03:00:00"),
        ("*/15 2 * * mon-fri", "Mon,Tue,Wed,Thu,Fri *-*-* 02:00,15,30,45:00"),
        ("5 4 1,15 * *", "*-*-01,15 04:05:00"),
        ("0 0 * * 7", "Sun *-*-* 00:00:00"),
        ("0 0 * * 0,7", "Sun *-*-* 00:00:00"),
        ("30 */6 * jan-mar *", "*-01,02,03-* 00,06,12,18:30:00"),
        ("10-20/5 * * * *", "*-*-* *:10,15,20:00"),
        ("  0   3 * *   * ", "*-*-* 03:00:00"),
        ("@daily", "*-*-* 00:00:00"),
        ("@weekly", "Mon *-*-* 00:00:00"),
    ],
)
def test_schedules_become_calendar_expressions(schedule, expected):
    assert cron.on_calendar(schedule) == expected


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("61 * * * *", "minute '61' is not a number from 0 to 59"),
        ("* 24 * * *", "hour '24' is not a number from 0 to 23"),
        ("* * 0 * *", "day of month '0' is not a number from 1 to 31"),
        ("* * * * funday", "day of week 'funday'"),
        ("* * * *", "has 4 fields, not five"),
        ("*/0 * * * *", "step '0'"),
        ("5-1 * * * *", "runs backwards"),
        ("0 0 1 * mon", "not both"),
        ("@reboot", "is not one of @hourly"),
        (15, "must be a crontab schedule"),
    ],
)
def test_bad_schedules_say_why(schedule, problem):
    with pytest.raises(cron.CronError, match=problem.replace("*", r"\*")):
        cron.on_calendar(schedule)


def test_commands_are_quoted_for_systemd():
    assert cron.exec_start('echo "a b" $HOME 100% \\x') == (
        '/bin/sh -c "echo \\"a b\\" $$HOME 100%% \\\\x"'
    )


@pytest.mark.parametrize("command", ["", "  ", "a\nb", "a\x00b", "x" * 1001, None])
def test_bad_commands_are_refused(command):
    with pytest.raises(cron.CronError):
        cron.check_command(command)


def test_a_crontab_is_parsed_line_by_line():
    jobs, found = cron.parse_crontab(
        "# comment\n\n*/5 * * * * echo  hi\n@daily php wp-cron.php\nFOO=1\n"
        "* * * echo\n1 2 3 4 5 x\n*/5 * * * * echo  hi\n"
    )
    assert [(j["schedule"], j["command"], j["origin"]) for j in jobs] == [
        ("*/5 * * * *", "echo  hi", "private/crontab:3"),
        ("@daily", "php wp-cron.php", "private/crontab:4"),
    ]
    assert jobs[0]["name"] == cron.user_job_name("*/5 * * * *", "echo  hi")
    assert found == [
        "line 5: environment lines are not supported: set it in the command",
        "line 6: needs a schedule and a command",
        "line 7: restrict the day of month or the day of week, not both (cron would run on either)",
    ]


def test_a_crontab_takes_at_most_twenty_jobs():
    jobs, found = cron.parse_crontab("".join(f"{i} * * * * echo {i}\n" for i in range(25)))
    assert len(jobs) == cron.USER_JOBS_MAX
    assert found == [f"line 21: more than {cron.USER_JOBS_MAX} jobs; the rest are skipped"]


def test_unit_names_round_trip():
    assert cron.unit_name("carol-stats", "wp-cron") == "webarch-cron-carol-stats.wp-cron"
    assert cron.parse_unit("webarch-cron-carol-stats.wp-cron.service") == ("carol-stats", "wp-cron")
    assert cron.parse_unit("webarch-cron-failed@x.service") is None
    assert cron.parse_unit("webarch-cron.service") is None


def test_the_service_runs_as_the_account_in_its_chroot():
    account = {"name": "alice", "home": "/home/alice", "chroot": "/chroots/alice"}
    job = {"name": "probe", "schedule": "* * * * *", "command": "echo $HOME", "origin": "pillar"}
    text = cron.service_text(account, job)
    for line in ("User=alice", "Group=alice", "RootDirectory=/chroots/alice",
                 "StandardOutput=append:/home/alice/logs/cron.log", "NoNewPrivileges=yes",
                 "OnFailure=webarch-cron-failed@%n.service",
                 'ExecStart=/bin/sh -c "echo $$HOME"',
                 # Sandboxed: no capability; the chroot's binds (in the chroots'
                 # namespace, which the account cannot enter) made by systemd.
                 "CapabilityBoundingSet=", "MountAPIVFS=yes", "ProtectProc=invisible",
                 "BindPaths=/home/alice /home/alice/tmp:/tmp",
                 "BindReadOnlyPaths=/usr -/run/mysqld -/run/webarch-mail"
                 " /usr/bin/msmtp:/usr/sbin/exim4",
                 "SystemCallFilter=@system-service"):  # fmt: skip
        assert f"\n{line}\n" in text, line
    # The account's whole home would not show through a PrivateTmp.
    for option in ("ProtectSystem=", "PrivateTmp="):
        assert f"\n{option}" not in text, option
    assert "+" not in "".join(line[:14] for line in text.splitlines() if line.startswith("Exec"))
    timer = cron.timer_text(account, {**job, "on_calendar": "*-*-* 03:00:00"})
    assert "OnCalendar=*-*-* 03:00:00\n" in timer
    # Its backup days, read-only where the chroot has them.
    text = cron.service_text({**account, "backups": "/var/lib/webarch-backups/alice/days"}, job)
    assert (
        "\nBindReadOnlyPaths=/usr -/run/mysqld -/run/webarch-mail /usr/bin/msmtp:/usr/sbin/exim4"
        " -/var/lib/webarch-backups/alice/days:/home/alice/backups/files\n"
    ) in text


# --------------------------------------------------------------------------
# The pillar
# --------------------------------------------------------------------------


def alice(cron_block: object) -> dict:
    return {"accounts": {"alice": {"email": "alice@alice.example", "cron": cron_block}}}


def test_pillar_jobs_are_in_the_model_and_its_cron_file(model):
    built = model.build_model(
        alice({"backup": {"schedule": "@daily", "command": "tar czf ~/private/b.tgz ~/sites"},
               "off": {"schedule": "0 * * * *", "command": "true", "enabled": False}}),
        host(model), 12,
    )  # fmt: skip
    jobs = built["accounts"]["alice"]["cron"]["jobs"]
    assert [(j["name"], j["on_calendar"], j["enabled"]) for j in jobs] == [
        ("backup", "*-*-* 00:00:00", True),
        ("off", "*-*-* *:00:00", False),
    ]
    data = built["cron"]["data"]["accounts"]["alice"]
    assert data["email"] == "alice@alice.example" and data["chroot"] == "/chroots/alice"
    assert data["crontab"] == "/home/alice/private/crontab"
    assert built["cron"]["path"] == "/etc/webarch/cron.json"
    assert data["backups"] is None  # no backups on this server
    backed_up = model.build_model({**alice(None), "backup": {"enabled": True}}, host(model), 12)
    days = backed_up["cron"]["data"]["accounts"]["alice"]["backups"]
    assert days == backed_up["accounts"]["alice"]["chroot"]["mounts"][-1]["device"]
    assert days.startswith("/var/lib/webarch-backups/alice")


def test_pillar_mistakes_are_named_by_path(model):
    found = problems(
        model,
        alice({"Bad_Name": {"schedule": "@daily", "command": "x"},
               "u-mine": {"schedule": "@daily", "command": "x"},
               "nightly": {"schedule": "0 25 * * *", "command": "a\nb", "when": 1},
               "empty": {}}),
    )  # fmt: skip
    assert found == [
        "webarch:accounts:alice:cron:Bad_Name: job name must be 1-40 lower-case letters, "
        "digits or hyphens",
        "webarch:accounts:alice:cron:empty:schedule: is required",
        "webarch:accounts:alice:cron:empty:command: is required",
        "webarch:accounts:alice:cron:nightly:when: unknown key (known keys: command, enabled, "
        "schedule)",
        "webarch:accounts:alice:cron:nightly:schedule: hour '25' is not a number from 0 to 23",
        "webarch:accounts:alice:cron:nightly:command: must be one line without control characters",
        "webarch:accounts:alice:cron:u-mine: job names starting with 'u-' are the crontab's",
    ]


# --------------------------------------------------------------------------
# webarch-cron sync (files only)
# --------------------------------------------------------------------------


def sync(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = program_env(WEBARCH_CRON_CONFIG=str(tmp_path / "cron.json"),
                      WEBARCH_CRON_UNIT_DIR=str(tmp_path / "units"),
                      WEBARCH_CRON_MEMO=str(tmp_path / "state" / "memo.json"),
                      WEBARCH_CRON_NO_SYSTEMCTL="1")  # fmt: skip
    return subprocess.run([sys.executable, str(SCRIPT), "sync", *args], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A home for the account "root" (this user owns the files: the program reads a
    crontab only if it is the account's own) with a root-owned logs directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the logs directory must be root's)")
    home = tmp_path / "home" / "root"
    (home / "logs").mkdir(parents=True)
    (home / "logs").chmod(0o750)
    (home / "private").mkdir()
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "webarch-cron-failed@.service").write_text("kept\n")
    (tmp_path / "units" / "webarch-cron-gone.old.timer").write_text("stale\n")
    account = {"name": "root", "home": str(home), "chroot": "/chroots/root", "email": None,
               "log": f"{home}/logs/cron.log", "crontab": f"{home}/private/crontab",
               "jobs": [{"name": "nightly", "schedule": "@daily", "on_calendar": "*-*-* 00:00:00",
                         "command": "true", "enabled": True, "origin": "pillar"}]}  # fmt: skip
    (tmp_path / "cron.json").write_text(json.dumps({"from": None, "accounts": {"root": account}}))
    return home


def test_sync_writes_the_units_removes_stale_ones_and_then_has_nothing_to_do(tmp_path, tree):
    assert sync(tmp_path, "--check").returncode == 1
    done = sync(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "write webarch-cron-root.nightly.service",
        "write webarch-cron-root.nightly.timer",
        "remove webarch-cron-gone.old.timer",
    ]
    assert sorted(os.listdir(tmp_path / "units")) == [
        "webarch-cron-failed@.service",
        "webarch-cron-root.nightly.service",
        "webarch-cron-root.nightly.timer",
    ]
    check = sync(tmp_path, "--check")
    assert (check.returncode, check.stdout) == (0, "")


def test_sync_takes_the_accounts_crontab_and_logs_its_problems_once(tmp_path, tree):
    (tree / "private" / "crontab").write_text("*/5 * * * * echo hi\n99 * * * * echo no\n")
    assert sync(tmp_path).returncode == 0
    name = cron.unit_name("root", cron.user_job_name("*/5 * * * *", "echo hi"))
    assert (tmp_path / "units" / f"{name}.timer").exists()
    assert sync(tmp_path).returncode == 0
    log = (tree / "logs" / "cron.log").read_text()
    assert log.count("private/crontab: 1 job(s) taken") == 1
    assert log.count("line 2: minute '99' is not a number from 0 to 59") == 1
    # A symlink in its place is not read (it could point at anyone's file).
    (tree / "private" / "crontab").unlink()
    (tree / "private" / "crontab").symlink_to(tmp_path / "cron.json")
    assert sync(tmp_path).stdout.splitlines() == [f"remove {name}.service", f"remove {name}.timer"]
