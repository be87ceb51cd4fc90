"""Cron jobs inside the chroots, and the accounts' limits (issue 18).

Cron: systemd timers, no cron daemon.

A fresh host converges pillar.example plus jobs of alice's: one that reports
who and where it runs, every minute; one that fails; one disabled.  alice also
writes a job of her own into ~/private/crontab, which is taken up without a
Salt run.  Checked on the host: the units, the timers firing, what the jobs
wrote, the failure mail at the relay's SMTP sink.

Limits: alice's PHP-FPM (its own master), her SSH session and her cron jobs
in her slice (user-UID.slice) under her limits, as systemd reports them and
as the kernel applies them to the processes; a changed limit applied by the
next run.  (What the limits stop is the noisy-neighbour suite's business,
test/security/test_noisy.py.)

Suspension (issue 19), last: alice suspended from pillar and resumed, checked
from outside (HTTPS, SSH, mail from her chroot) and by checksums of her files
and databases; then the same two ways by a move's narrow steps (issue 20:
webarch_handover.hold and .serve), each followed by a run that changes nothing.
"""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path

import pytest
from e2e.helpers import (
    CHROOTS_NS,
    SSH_OPTS,
    RelaySink,
    changed,
    failed,
    relay_sink,
    relayed,
    state_results,
)
from testhost import Host

pytestmark = pytest.mark.e2e

LOG = "/home/alice/logs/cron.log"
OUT = "/home/alice/tmp"
#: What the probe writes: who and where it runs, as the kernel tells it.
PROBE = (
    "id -u > ~/tmp/probe.txt; grep -E '^(Uid|NoNewPrivs)' /proc/self/status >> ~/tmp/probe.txt;"
    ' ls / >> ~/tmp/probe.txt; echo "pct=100% dollar=$HOME" >> ~/tmp/probe.txt;'
    " grep -E '^Max (processes|data size)' /proc/self/limits >> ~/tmp/probe.txt;"
    " echo nice=$(cut -d' ' -f19 /proc/self/stat) oom=$(cat /proc/self/oom_score_adj)"
    " >> ~/tmp/probe.txt; sed 's/^/cgroup=/' /proc/self/cgroup >> ~/tmp/probe.txt"
)
#: alice's limits in this test (over pillar.example's).
LIMITS = {"tasks_max": 64, "nice": 7, "process_memory": "768M"}
DATA_BYTES = 768 << 20
CRONTAB = """# alice's own jobs
* * * * * echo from-crontab > ~/tmp/crontab.txt
FOO=bar
61 * * * * echo bad minute
"""


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    return relay_sink(host)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's SSH key pair, on this machine."""
    path = tmp_path_factory.mktemp("keys") / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def pillar(example_pillar: dict, sink: RelaySink, key: Path) -> dict:
    data = relayed(example_pillar, sink)
    alice = data["webarch"]["accounts"]["alice"]
    alice["ssh_keys"] = [key.with_suffix(".pub").read_text().strip()]
    alice["limits"] = {**alice.get("limits", {}), **LIMITS}
    jobs = alice["cron"]
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
    # In her slice, under her limits (systemd's unit properties at work).
    assert process_limits(text) == {"processes": "64", "data size": str(DATA_BYTES)}, text
    assert "nice=7 oom=500" in text
    assert any(line.startswith("cgroup=") and "/user-2001.slice/" in line for line in lines), text
    assert host.run(["stat", "-c", "%U", f"{OUT}/probe.txt"]).stdout.strip() == "alice"
    assert "cron probe: finished" in host.read_file(LOG)


def test_alices_own_crontab_runs_without_a_salt_run(host, first):
    """Taken up by webarch-cron sync, which its timer starts every minute (started
    here rather than waited for), then run by its own timer's service."""
    calendar = show(host, "webarch-cron.timer", "TimersCalendar", "ActiveState")
    assert "OnCalendar=*-*-* *:*:00" in calendar["TimersCalendar"], calendar
    assert calendar["ActiveState"] == "active"
    host.run(["systemctl", "start", "webarch-cron.service"], check=True)
    timers = host.run(["systemctl", "list-units", "--plain", "--no-legend", "--type=timer",
                       "webarch-cron-alice.u-*"], check=True).stdout.split()  # fmt: skip
    own = [unit for unit in timers if unit.endswith(".timer")]
    assert len(own) == 1, timers
    host.run(["systemctl", "start", own[0].removesuffix(".timer") + ".service"], check=True)
    assert host.read_file(f"{OUT}/crontab.txt").strip() == "from-crontab"
    log = host.read_file(LOG)
    assert "private/crontab: 1 job(s) taken" in log
    assert "private/crontab: line 3: environment lines are not supported" in log
    assert "private/crontab: line 4: minute '61' is not a number from 0 to 59" in log
    # The problems are written once, not every minute.
    assert log.count("private/crontab: line 4") == 1


# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------


def process_limits(text: str) -> dict[str, str]:
    """The soft values of "Max processes" and "Max data size" in a /proc/PID/limits text."""
    found = {}
    for line in text.splitlines():
        for name in ("processes", "data size"):
            if line.startswith(f"Max {name} "):
                found[name] = line[len(f"Max {name} ") :].split()[0]
    return found


def show(host: Host, unit: str, *props: str) -> dict[str, str]:
    out = host.run(["systemctl", "show", "-p", ",".join(props), unit], check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def php_master(host: Host, name: str = "alice") -> str:
    """The pid of the account's PHP-FPM master ("0" when it does not run)."""
    return show(host, f"webarch-php@{name}.service", "MainPID")["MainPID"]


#: A PHP page of each account (pillar.example's sites; bob's is written by the test).
PAGES = {"alice": "www.alice.example/", "bob": "shop.bob.example/pid.php"}


def wake(host: Host, name: str = "alice") -> str:
    """Make a request to a PHP page of the account (its socket starts its master); its pid."""
    if name == "bob":
        host.write_file("/home/bob/sites/shop/pid.php", "<?php echo getmypid();", 0o644)
        host.run(["chown", "bob:bob", "/home/bob/sites/shop/pid.php"], check=True)
    page = PAGES[name]
    code = host.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                     f"{page.split('/')[0]}:443:127.0.0.1", f"https://{page}"]).stdout  # fmt: skip
    assert code == "200", (page, code)
    pid = php_master(host, name)
    assert pid != "0"
    return pid


def test_alices_php_runs_in_her_slice_under_her_limits(host, first):
    assert show(host, "user-2001.slice", "TasksMax", "MemoryHigh", "MemoryMax",
                "CPUQuotaPerSecUSec", "CPUWeight", "IOWeight") == {
        "TasksMax": "64",
        "MemoryHigh": str(1536 << 20),
        "MemoryMax": str(2 << 30),
        "CPUQuotaPerSecUSec": "2s",
        "CPUWeight": "100",
        "IOWeight": "100",
    }  # fmt: skip
    assert show(host, "webarch-php@alice.service", "Slice", "LimitNPROC", "LimitDATA",
                "OOMScoreAdjust") == {
        "Slice": "user-2001.slice",
        "LimitNPROC": "64",
        "LimitDATA": str(DATA_BYTES),
        "OOMScoreAdjust": "500",
    }  # fmt: skip
    # Debian's shared php-fpm runs no pool any more; every account has its own
    # master, started by its socket, which systemd holds.
    assert host.run(["systemctl", "is-enabled", "php8.2-fpm.service", "php8.4-fpm.service"]
                    ).stdout.split().count("masked") == 1  # fmt: skip
    for name in ("alice", "bob", "carol-stats"):
        socket = show(host, f"webarch-php@{name}.socket", "ActiveState", "UnitFileState")
        assert socket == {"ActiveState": "active", "UnitFileState": "enabled"}, name
    # The kernel's view of the master, which every worker inherits.
    pid = wake(host)
    assert process_limits(host.read_file(f"/proc/{pid}/limits")) == {
        "processes": "64",
        "data size": str(DATA_BYTES),
    }
    assert host.read_file(f"/proc/{pid}/oom_score_adj").strip() == "500"
    assert "/user.slice/user-2001.slice/webarch-php@alice.service" in host.read_file(
        f"/proc/{pid}/cgroup"
    )
    # salt-call webarch_limits.show tells the same.
    shown = host.salt_call(["webarch_limits.show", "alice"])["local"]
    assert shown["user-2001.slice"]["TasksMax"] == "64"
    assert shown["webarch-php@alice.service"]["Slice"] == "user-2001.slice"


def test_alices_ssh_session_is_in_her_slice_under_her_limits(host, first, key):
    master = wake(host)
    args = ["ssh", "-i", str(key), "-o", "BatchMode=yes", *SSH_OPTS, "alice@127.0.0.1"]
    command = "cat /proc/self/limits; cut -d' ' -f19 /proc/self/stat; cat /proc/self/cgroup"
    done = host.net_run([*args, command])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert process_limits(out) == {"processes": "64", "data size": str(DATA_BYTES)}, out
    assert "\n7\n" in out, out
    assert "/user.slice/user-2001.slice/session-" in out, out
    # Her logging out (logind stops her user manager) leaves her PHP-FPM alone.
    time.sleep(3)
    assert php_master(host) == master
    assert show(host, "webarch-php@alice.service", "ActiveState")["ActiveState"] == "active"


def test_an_idle_master_is_stopped_and_the_next_request_starts_it(host, first):
    """An idle account costs no process: webarch-php-idle stops its master
    after an idle interval; its socket starts it again on the next request."""
    pid = wake(host, "bob")
    deadline = time.monotonic() + 60  # the workers leave after process_idle_timeout
    while time.monotonic() < deadline:
        if not host.run(["pgrep", "-P", pid]).stdout.strip():
            break
        time.sleep(2)
    assert host.run(["webarch-php-idle"], check=True).stdout == ""  # idle once: kept
    out = host.run(["webarch-php-idle"], check=True).stdout
    assert "stopped webarch-php@bob.service" in out, out
    assert php_master(host, "bob") == "0"
    assert host.run(["pgrep", "-f", "php-fpm: master process (/etc/webarch/php-fpm/bob.conf)"]
                    ).returncode == 1  # fmt: skip
    assert show(host, "webarch-php@bob.socket", "ActiveState")["ActiveState"] == "active"
    again = wake(host, "bob")
    assert again != pid


def test_a_changed_limit_is_applied_by_the_next_run(host, pillar):
    before = wake(host)
    data = copy.deepcopy(pillar)
    data["webarch"]["accounts"]["alice"]["limits"]["tasks_max"] = 80
    host.set_pillar(data)
    test_run = host.salt_call(["state.apply", "webarch", "test=True"])
    predicted = [k for k, v in state_results(test_run).items() if v["result"] is None]
    assert any("webarch-alice-limits" in k for k in predicted), predicted
    assert php_master(host) == before
    ret = host.salt_call(["state.apply", "webarch"])
    assert failed(ret) == {}
    limits = [v for k, v in changed(ret).items() if "webarch-alice-limits" in k]
    assert limits and limits[0]["restarted"] == "webarch-php@alice.service", changed(ret)
    assert show(host, "user-2001.slice", "TasksMax")["TasksMax"] == "80"
    pid = php_master(host)
    assert pid != before
    assert process_limits(host.read_file(f"/proc/{pid}/limits"))["processes"] == "80"
    assert "alice hard nproc 80" in host.read_file("/etc/security/limits.d/60-webarch.conf")
    again = host.salt_call(["state.apply", "webarch"])
    assert failed(again) == {} and changed(again) == {}


#: alice's sites in pillar.example.
ALICE_SITES = ("www.alice.example", "wiki.alice.example")
#: Mail from inside alice's chroot, as her processes send it (msmtp to the mail gate).
SEND = "printf 'Subject: suspended-probe\\n\\nhi\\n' | /usr/sbin/sendmail friend@example.net"
CHROOT_MAIL = [*CHROOTS_NS, "chroot", "/chroots/alice", "setpriv", "--reuid=alice", "--regid=alice",
               "--clear-groups", "sh", "-c", SEND]  # fmt: skip


def site_codes(host: Host) -> dict[str, str]:
    """Each of alice's sites' HTTP status and, for a 503, its text."""
    codes = {}
    for name in ALICE_SITES:
        resolve = f"{name}:443:127.0.0.1"
        out = host.net_run(["curl", "-sk", "--max-time", "20", "-w", " %{http_code}",
                            "--resolve", resolve, f"https://{name}/"]).stdout  # fmt: skip
        body, _, code = out.rpartition(" ")
        codes[name] = f"{code} {body}" if code == "503" else code
    return codes


def alice_data(host: Host) -> tuple[str, str]:
    """Checksums of alice's files (not her logs and scratch space) and of her databases."""
    files = host.run(["sh", "-c", "cd /home/alice && find . -xdev -type f ! -path './logs/*'"
                      " ! -path './tmp/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum"],
                     check=True).stdout  # fmt: skip
    dump = "mariadb-dump --skip-dump-date --skip-comments"
    dumps = host.run(["sh", "-c", "for db in $(mariadb -N -e \"SHOW DATABASES LIKE 'alice%'\");"
                      f" do {dump} \"$db\"; done | sha256sum"], check=True).stdout  # fmt: skip
    return files.split()[0], dumps.split()[0]


def alice_ssh(host: Host, key: Path) -> subprocess.CompletedProcess:
    args = ["ssh", "-i", str(key), "-o", "BatchMode=yes", *SSH_OPTS, "alice@127.0.0.1"]
    return host.net_run([*args, "echo in"])


def assert_alice_stopped(host: Host, key: Path) -> None:
    """Her sites 503, SSH refused, her cron jobs, PHP-FPM and processes gone, her mail
    refused; bob's site goes on."""
    assert site_codes(host) == {n: "503 This site is suspended." for n in ALICE_SITES}
    assert alice_ssh(host, key).returncode == 255
    assert host.run(["getent", "shadow", "alice"], check=True).stdout.split(":")[7] == "1"
    timers = host.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                       "webarch-cron-alice.*"]).stdout  # fmt: skip
    assert timers.strip() == "", timers
    socket = show(host, "webarch-php@alice.socket", "ActiveState", "UnitFileState")
    assert socket == {"ActiveState": "inactive", "UnitFileState": "disabled"}, socket
    assert host.run(["pgrep", "-u", "alice"]).returncode == 1
    mail = host.run(CHROOT_MAIL)
    assert mail.returncode != 0, mail
    assert wake(host, "bob") != "0"  # bob's site, PHP and all, go on


def assert_alice_served(host: Host, key: Path, codes: dict[str, str]) -> None:
    """Her sites as before, SSH in, her cron timer running, her mail sent."""
    assert site_codes(host) == codes
    assert alice_ssh(host, key).stdout.strip() == "in"
    assert timer(host, "webarch-cron-alice.probe.timer")["ActiveState"] == "active"
    sent = host.run(CHROOT_MAIL)
    assert sent.returncode == 0, sent


def test_a_suspended_account_is_refused_everywhere_its_data_unchanged(host, pillar, key, sink):
    """Issue 19: alice suspended from pillar: her sites 503, SSH refused, her cron
    jobs and PHP-FPM stopped, her mail refused, her files and databases as they
    were; a second run changes nothing; resumed, everything is back."""
    data = copy.deepcopy(pillar)
    data["webarch"]["accounts"]["alice"]["limits"]["tasks_max"] = 80  # as the test before
    wake(host)
    files_before, codes_before = alice_data(host)[0], site_codes(host)
    assert "503" not in str(codes_before)
    data["webarch"]["accounts"]["alice"]["suspended"] = True
    host.set_pillar(data)
    ret = host.salt_call(["state.apply", "webarch"])
    assert failed(ret) == {}
    during = alice_data(host)
    assert during[0] == files_before
    assert_alice_stopped(host, key)
    again = host.salt_call(["state.apply", "webarch"])
    assert failed(again) == {} and changed(again) == {}
    assert alice_data(host) == during
    # Resumed: everything back, and still her data.
    data["webarch"]["accounts"]["alice"]["suspended"] = False
    host.set_pillar(data)
    ret = host.salt_call(["state.apply", "webarch"])
    assert failed(ret) == {}
    assert alice_data(host)[0] == files_before
    assert_alice_served(host, key, codes_before)


def handover(host: Host, *args: str) -> dict:
    ret = host.salt_call(["webarch_handover." + args[0], "alice", *args[1:]])
    assert host.last.returncode == 0, host.last.stderr[-2000:]
    return ret["local"]


def test_a_moves_hold_and_serve_make_what_the_runs_make(host, pillar, key, sink):
    """Issue 20: a move's narrow steps.  ``hold`` stops alice as a suspended run does
    (that run then changes nothing); ``serve`` starts her as a run does (that run
    then changes nothing).  Their times (salt-call's start included) are printed."""
    data = copy.deepcopy(pillar)
    data["webarch"]["accounts"]["alice"]["limits"]["tasks_max"] = 80  # as the tests before
    wake(host)
    codes = site_codes(host)
    assert "503" not in str(codes)
    assert handover(host, "ready", "suspended=True")["suspended"] is True
    started = time.monotonic()
    assert handover(host, "hold") == {"site": True, "cron": True, "pool": True, "mail": True}
    print(f"\nHANDOVER hold_s={time.monotonic() - started:.2f} (salt-call included)")
    assert_alice_stopped(host, key)
    data["webarch"]["accounts"]["alice"]["suspended"] = True
    host.set_pillar(data)
    ret = host.salt_call(["state.apply", "webarch"])
    assert failed(ret) == {} and changed(ret) == {}
    data["webarch"]["accounts"]["alice"]["suspended"] = False
    host.set_pillar(data)
    assert handover(host, "ready")["suspended"] is False
    started = time.monotonic()
    served = handover(host, "serve")
    print(f"HANDOVER serve_s={time.monotonic() - started:.2f} (salt-call included)")
    assert served == {"site": True, "mail": True, "pool": True, "cron": True}
    assert_alice_served(host, key, codes)
    ret = host.salt_call(["state.apply", "webarch"])
    assert failed(ret) == {} and changed(ret) == {}
    # Each hand-over is rendered anew (its ready files went), and for one way only.
    for ready, refusal in ((False, "run ready first"), (True, "ready it with suspended=True")):
        if ready:
            handover(host, "ready")
        refused = host.run(["salt-call", "--local", "webarch_handover.hold", "alice"])
        assert refused.returncode != 0
        assert refusal in refused.stdout + refused.stderr
