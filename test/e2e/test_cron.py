"""Cron jobs inside the chroots (issue 18): systemd timers, no cron daemon.

A fresh host converges pillar.example plus jobs of alice's: one that reports
who and where it runs, every minute; one that fails; one disabled.  alice also
writes a job of her own into ~/private/crontab, which is taken up without a
Salt run.  Checked on the host: the units, the timers firing, what the jobs
wrote, the failure mail at the relay's SMTP sink.
"""

from __future__ import annotations

import time

import pytest
from e2e.helpers import RelaySink, changed, failed, relay_sink, relayed
from testhost import Host

pytestmark = pytest.mark.e2e

LOG = "/home/alice/logs/cron.log"
OUT = "/home/alice/tmp"
#: What the probe writes: who and where it runs, as the kernel tells it.
PROBE = (
    "id -u > ~/tmp/probe.txt; grep -E '^(Uid|NoNewPrivs)' /proc/self/status >> ~/tmp/probe.txt;"
    ' ls / >> ~/tmp/probe.txt; echo "pct=100% dollar=$HOME" >> ~/tmp/probe.txt'
)
CRONTAB = """# alice's own jobs
* * * * * echo from-crontab > ~/tmp/crontab.txt
FOO=bar
61 * * * * echo bad minute
"""


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    return relay_sink(host)


@pytest.fixture(scope="module")
def pillar(example_pillar: dict, sink: RelaySink) -> dict:
    data = relayed(example_pillar, sink)
    jobs = data["webarch"]["accounts"]["alice"]["cron"]
    jobs["probe"] = {"schedule": "* * * * *", "command": PROBE}
    jobs["broken"] = {"schedule": "@daily", "command": "echo about to fail; exit 3"}
    jobs["paused"] = {"schedule": "@hourly", "command": "true", "enabled": False}
    return data


@pytest.fixture(scope="module")
def first(host: Host, pillar: dict) -> dict:
    host.set_pillar(pillar)
    return host.salt_call(["state.apply", "webarch"])


def timer(host: Host, unit: str) -> dict[str, str]:
    out = host.run(["systemctl", "show", "-p", "ActiveState,UnitFileState", unit]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_the_jobs_get_timers_and_a_second_run_changes_nothing(host, pillar, first):
    assert failed(first) == {}
    for job in ("probe", "broken", "wp-cron"):
        unit = f"webarch-cron-alice.{job}.timer"
        assert timer(host, unit) == {"ActiveState": "active", "UnitFileState": "enabled"}, unit
    assert timer(host, "webarch-cron-alice.paused.timer")["ActiveState"] == "inactive"
    # No cron daemon and no crontab program in any chroot.
    assert host.run(["test", "-e", "/chroots/alice/usr/bin/crontab"]).returncode == 1
    assert host.run(["pgrep", "-x", "cron"]).returncode == 1
    again = host.salt_call(["state.apply", "webarch"])
    assert failed(again) == {} and changed(again) == {}
    # alice's own crontab, written as alice after the last run: no Salt run takes it up.
    host.run(["setpriv", "--reuid=alice", "--regid=alice", "--clear-groups", "sh", "-c",
              "cat > /home/alice/private/crontab"], input=CRONTAB, check=True)  # fmt: skip
    first["crontab_written"] = time.monotonic()


def test_a_failing_job_is_logged_and_mailed_once(host, first, sink):
    run = host.run(["systemctl", "start", "webarch-cron-alice.broken.service"])
    assert run.returncode != 0
    deadline = time.monotonic() + 60
    mails: list[dict] = []
    while time.monotonic() < deadline and not mails:
        host.run(["sh", "-c", "exim4 -qff"])
        mails = [m for m in sink.messages() if "Cron job broken" in str(m["message"]["Subject"])]
        time.sleep(2)
    assert len(mails) == 1, [m["message"]["Subject"] for m in sink.messages()]
    assert "alice@alice.example" in str(mails[0]["message"]["To"])
    body = mails[0]["message"].get_payload(decode=True).decode()
    assert "about to fail" in body and "cron broken: failed (exit-code, exited 3)" in body
    log = host.read_file(LOG)
    assert "cron broken: started" in log and "about to fail" in log


def test_the_pillar_job_runs_by_its_timer_as_alice_in_her_chroot(host, first):
    deadline = time.monotonic() + 130
    while time.monotonic() < deadline:
        if host.run(["test", "-s", f"{OUT}/probe.txt"]).returncode == 0:
            break
        time.sleep(3)
    text = host.read_file(f"{OUT}/probe.txt")
    lines = text.splitlines()
    assert lines[0] == "2001", text
    assert "Uid:\t2001\t2001\t2001\t2001" in text and "NoNewPrivs:\t1" in text
    # The chroot's root: no /srv (the host's formula), no /boot; its /usr.
    assert "usr" in lines and "home" in lines and "srv" not in lines and "boot" not in lines
    assert "pct=100% dollar=/home/alice" in text
    assert host.run(["stat", "-c", "%U", f"{OUT}/probe.txt"]).stdout.strip() == "alice"
    assert "cron probe: finished" in host.read_file(LOG)


def test_alices_own_crontab_runs_without_a_salt_run(host, first):
    deadline = first["crontab_written"] + 150
    while time.monotonic() < deadline:
        if host.run(["test", "-s", f"{OUT}/crontab.txt"]).returncode == 0:
            break
        time.sleep(3)
    assert host.read_file(f"{OUT}/crontab.txt").strip() == "from-crontab"
    log = host.read_file(LOG)
    assert "private/crontab: 1 job(s) taken" in log
    assert "private/crontab: line 3: environment lines are not supported" in log
    assert "private/crontab: line 4: minute '61' is not a number from 0 to 59" in log
    # The problems are written once, not every minute.
    assert log.count("private/crontab: line 4") == 1
