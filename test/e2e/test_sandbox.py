"""webarch's own services, sandboxed: ``systemd-analyze security`` of each unit (issue 21).

A fresh host whose /home is a btrfs (so that the quota report exists: its
qgroups need nothing of the kernel) converges pillar.example (Matomo, cron
jobs, database dumps, mail) with quotas on.  Every webarch service unit on
it, template units through an instance, is rated by ``systemd-analyze
security`` at most "OK" (exposure below 5.0); Apache's and MariaDB's, with
webarch's drop-ins, are rated too.  The table is printed in the run's figures.
Then each sandboxed service must still do its work: the oneshots are run and
what they write is checked, the sites answer over HTTPS through PHP and
MariaDB, an account's mail passes the gate, and the sandbox is in force on
the running processes.  (What the services do in detail is their own modules'
business: test_cron, test_mail, test_web, test_matomo, test_quota.)
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import CHROOTS_NS, changed, failed
from testhost import Host
from testhost.homefs import HomeFs, loop_devices
from testhost.matomo import provide_matomo

pytestmark = pytest.mark.e2e

#: Space limits only: btrfs qgroups count no files and have no soft limits.
BTRFS_QUOTA = {"enabled": True, "defaults": {"blocks_hard": "5G"}}
#: A cron job's unit (pillar.example's wp-cron of alice).
JOB = "webarch-cron-alice.wp-cron.service"
#: Template units, rated through an instance of each.
INSTANCES = {
    "webarch-php@.service": "webarch-php@alice.service",
    "webarch-mail@.service": "webarch-mail@0-1000-2001.service",
    "webarch-cron-failed@.service": f"webarch-cron-failed@{JOB}.service",
}
#: Third-party services with webarch's drop-in: rated and printed, not held to OK.
THIRD_PARTY = ("apache2.service", "mariadb.service")
#: The ratings a webarch unit may have (systemd-analyze: exposure below 5.0).
GOOD = ("PERFECT", "SAFE", "OK")
RATING_RE = re.compile(r"Overall exposure level for (\S+): ([0-9.]+) (\w+)")
SITES = ("www.alice.example", "stats.coop.example")
MAINLOG = "/var/log/exim4/mainlog"


def sandbox_pillar(example: dict) -> dict:
    """pillar.example with quotas on (btrfs: hard space limits only)."""
    data = copy.deepcopy(example)
    data["webarch"]["quota"] = copy.deepcopy(BTRFS_QUOTA)
    for account in data["webarch"]["accounts"].values():
        if "quota" in account:
            account["quota"] = {"blocks_hard": account["quota"]["blocks_hard"]}
    return data


@pytest.fixture(scope="module")
def host(image: Path, repo: Path) -> Iterator[Host]:
    """The test host, its /home a btrfs on a loop device (quotas through qgroups)."""
    home_fs = HomeFs(size_mb=2048, fstype="btrfs")
    with Host(name="wa-sandbox", image=image, formula_dir=repo, home_fs=home_fs) as running:
        provide_matomo(running)
        yield running
    assert not loop_devices(running.home_image)


@pytest.fixture(scope="module")
def converged(host: Host, example_pillar: dict) -> Host:
    """The host after a full run of pillar.example with quotas; a second run changes nothing."""
    host.set_pillar(sandbox_pillar(example_pillar))
    first = host.salt_call(["state.apply", "webarch"])
    assert failed(first) == {}
    again = host.salt_call(["state.apply", "webarch"])
    assert failed(again) == {} and changed(again) == {}
    return host


def rate(host: Host, unit: str) -> tuple[float, str]:
    """``systemd-analyze security UNIT``: its exposure and rating."""
    out = host.run(["systemd-analyze", "security", "--no-pager", unit])
    match = RATING_RE.search(out.stdout)
    assert match, f"{unit}: {out.stdout[-500:]} {out.stderr[-500:]}"
    return float(match.group(2)), match.group(3)


def webarch_services(host: Host) -> list[str]:
    """Every webarch service unit file on the host, a template as one of its instances."""
    out = host.run(
        ["systemctl", "list-unit-files", "--no-legend", "--plain", "webarch-*.service"], check=True
    ).stdout
    names = sorted(line.split()[0] for line in out.splitlines() if line.strip())
    return [INSTANCES.get(name, name) for name in names]


def test_every_webarch_unit_is_rated_at_most_ok(converged: Host, request) -> None:
    units = webarch_services(converged)
    # Each kind of unit the formula makes is there (pillar.example with quotas).
    for unit in (*INSTANCES.values(), "webarch-cron.service", JOB,
                 "webarch-db-dump.service", "webarch-firewall.service", "webarch-mail-log.service",
                 "webarch-htaccess-report.service", "webarch-quota-report.service",
                 "webarch-matomo-archive-carol-stats.service", "webarch-md-reload.service",
                 "webarch-php-idle.service"):  # fmt: skip
        assert unit in units, units
    rows = [(unit, *rate(converged, unit)) for unit in units]
    others = [(unit, *rate(converged, unit)) for unit in THIRD_PARTY]
    table = [f"{'unit':<62} {'exposure':>8}  rating"]
    table += [f"{unit:<62} {exposure:>8.1f}  {rating}" for unit, exposure, rating in rows]
    table += [f"{unit + ' (with drop-in)':<62} {exposure:>8.1f}  {rating}"
              for unit, exposure, rating in others]  # fmt: skip
    print("\n".join(table))
    request.config.webarch_summaries.append("systemd-analyze security\n" + "\n".join(table))
    bad = [(unit, exposure, rating) for unit, exposure, rating in rows
           if rating not in GOOD or exposure >= 5.0]  # fmt: skip
    assert bad == []


def process_status(host: Host, unit: str) -> dict[str, str]:
    """/proc/PID/status of the main process of ``unit`` (running)."""
    pid = host.run(["systemctl", "show", "-p", "MainPID", "--value", unit], check=True).stdout
    assert pid.strip() not in ("", "0"), f"{unit} is not running"
    text = host.read_file(f"/proc/{pid.strip()}/status")
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def capabilities(mask: str) -> set[int]:
    """The capability numbers of a /proc/PID/status mask (hex)."""
    value = int(mask, 16)
    return {bit for bit in range(64) if value >> bit & 1}


#: The most each running service's bounding set may hold (capability numbers,
#: linux/capability.h; MariaDB drops even its CAP_IPC_LOCK itself):
#: CHOWN 0, DAC_OVERRIDE 1, DAC_READ_SEARCH 2, FOWNER 3, KILL 5, SETGID 6, SETUID 7,
#: NET_BIND_SERVICE 10, IPC_LOCK 14, SYS_CHROOT 18, SYS_PTRACE 19.
BOUNDING = {
    "webarch-php@alice.service": {5, 6, 7, 18, 19},
    "webarch-mail-log.service": {0, 2},
    "apache2.service": {0, 1, 2, 3, 5, 6, 7, 10},
    "mariadb.service": {14},
}


def test_the_sandbox_is_in_force_on_the_running_services(converged: Host) -> None:
    for site in SITES:  # starts alice's and carol-stats' PHP-FPM masters
        assert https_status(converged, site) == 200, site
    for unit, expected in BOUNDING.items():
        status = process_status(converged, unit)
        assert status["NoNewPrivs"].strip() == "1", unit
        assert capabilities(status["CapBnd"]) <= expected, (unit, status["CapBnd"])


def https_status(host: Host, site: str, path: str = "/") -> int:
    """The HTTP status of https://SITE/PATH, asked from inside the host."""
    out = host.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
                    f"{site}:443:127.0.0.1", f"https://{site}{path}"], check=True)  # fmt: skip
    return int(out.stdout)


def start(host: Host, unit: str) -> None:
    """Start ``unit`` and wait for it (a oneshot: its run); fail with its journal."""
    run = host.run(["systemctl", "start", unit])
    if run.returncode != 0:
        journal = host.run(["journalctl", "-u", unit, "-n", "30", "--no-pager"]).stdout
        pytest.fail(f"{unit} failed:\n{journal}")


def mtime(host: Host, path: str) -> float:
    return float(host.run(["stat", "-c", "%.9Y", path], check=True).stdout)


def test_the_sandboxed_oneshots_still_do_their_work(converged: Host) -> None:
    host = converged
    before = time.time() - 1
    start(host, "webarch-db-dump.service")
    dumps = host.run(["find", "/home/alice/backups/mariadb", "-name", "alice_wp-*.sql.gz",
                      "-newermt", f"@{before:.0f}"], check=True).stdout.split()  # fmt: skip
    assert dumps, "no new dump of alice_wp"
    quota = mtime(host, "/home/alice/logs/quota.txt")
    time.sleep(1)
    start(host, "webarch-quota-report.service")
    assert mtime(host, "/home/alice/logs/quota.txt") > quota
    start(host, "webarch-cron.service")
    start(host, JOB)
    log = host.read_file("/home/alice/logs/cron.log")
    last = log[log.rfind("cron wp-cron: started") :]
    # WordPress's cron reached MariaDB through the chroot's /run/mysqld.
    assert "cron wp-cron: finished" in last and "database connection" not in last, last
    start(host, "webarch-matomo-archive-carol-stats.service")
    start(host, "webarch-htaccess-report.service")
    start(host, "webarch-php-idle.service")
    assert host.exists("/run/webarch-php-idle.json")
    start(host, "webarch-md-reload.service")
    assert host.run(["systemctl", "is-active", "apache2"]).stdout.strip() == "active"
    host.run(["systemctl", "restart", "webarch-firewall.service"], check=True)
    assert "table inet webarch" in host.run(["nft", "list", "tables"], check=True).stdout
    # The failure mail of a cron job goes to Exim, for alice (its delivery waits:
    # no DNS here; Debian 13's Exim may not even have tried yet).
    lines = len(host.read_file(MAINLOG).splitlines())
    start(host, INSTANCES["webarch-cron-failed@.service"])
    new = host.read_file(MAINLOG).splitlines()[lines:]
    ids = [line.split()[2] for line in new if " <= " in line and " U=root " in line]
    assert ids, new
    headers = host.run(["exim4", "-Mvh", ids[-1]]).stdout
    assert "alice@alice.example" in headers + "\n".join(new), (headers, new)


def test_mail_passes_the_gate_and_the_sites_answer(converged: Host) -> None:
    host = converged
    lines = len(host.read_file(MAINLOG).splitlines())
    mail = "To: someone@example.org\nSubject: sandbox\n\nhello\n"
    host.run([*CHROOTS_NS, "chroot", "--userspec=alice:alice", "/chroots/alice",
              "/usr/sbin/sendmail", "-t"], input=mail, check=True)  # fmt: skip
    new = host.read_file(MAINLOG).splitlines()[lines:]
    assert any(" <= " in line and "U=alice" in line for line in new), new
    for site in SITES:
        assert https_status(converged, site) == 200, site
    assert host.run(["systemctl", "is-active", "webarch-mail-log", "mariadb"]).returncode == 0
