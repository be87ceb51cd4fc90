"""Nightly snapshots, read-only in the accounts' chroots (issue 17).

A fresh host converges pillar.example with ``backup: {enabled: true, days:
3}``.  Three nights are made with ``webarch-backup --date`` (after that
night's MariaDB dumps), alice's file and database changed between them; a
fourth, failing night (a file of root's in her home she cannot read) keeps
every day and mails the admin, as does one with the store full; the next,
the real service, completes and expires the oldest day.  Checked from
outside over SSH and SFTP as alice:
her three days with each day's file and dump, a copy back with cp, every
write into a snapshot refused, bob's invisible; her symlink to bob's file
stays a symlink, her setuid program is inert.  The store and the status on
the host; the admin's restore through salt-call, owners and modes as they were.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from e2e.helpers import CHROOTS_NS, SSH_OPTS, RelaySink, apply, changed, failed, relay_sink, relayed
from testhost import Host
from testhost.host import SALT_CALL

pytestmark = pytest.mark.e2e

STORE = "/var/lib/webarch-backups"
NOTE = "sites/www/note.txt"
SNAPS = "/home/alice/backups/files"
BOB_SECRET = "bob-secret-7f3a"
AS_ALICE = ["setpriv", "--reuid=alice", "--regid=alice", "--clear-groups"]


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    return relay_sink(host)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def pillar(example_pillar: dict, sink: RelaySink, key: Path) -> dict:
    data = relayed(example_pillar, sink)
    data["webarch"]["backup"] = {"enabled": True, "days": 3}
    data["webarch"]["accounts"]["alice"]["ssh_keys"] = [key.with_suffix(".pub").read_text().strip()]
    # A job that lists her days (started by hand below): cron sees them too.
    data["webarch"]["accounts"]["alice"].setdefault("cron", {})["days"] = {
        "schedule": "@yearly", "command": "ls -a ~/backups/files > ~/private/cron-days.txt"
    }  # fmt: skip
    return data


def today(host: Host) -> datetime.date:
    return datetime.date.fromisoformat(host.run(["date", "+%F"], check=True).stdout.strip())


@pytest.fixture(scope="module")
def nights(host: Host, pillar: dict) -> dict:
    """Converged, then three nights with changes between them: the days and figures."""
    ret = apply(host, pillar)
    assert failed(ret) == {}
    last = today(host)
    days = [(last - datetime.timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    # bob's secret, and alice's symlink to it and setuid copy of id (her attacks).
    host.write_file(f"/home/bob/private/{Path(NOTE).name}", BOB_SECRET + "\n", 0o600)
    host.run(["chown", "bob:bob", "/home/bob/private/note.txt"], check=True)
    as_alice(host, "ln -s /home/bob/private/note.txt ~/sites/www/bob-link;"
             " cp /usr/bin/id ~/private/myid && chmod 4755 ~/private/myid")  # fmt: skip
    # A setuid program of root's in her home (a home brought over from elsewhere).
    host.run(["sh", "-c", "cp /usr/bin/id /home/alice/private/rootid"
              " && chmod 4755 /home/alice/private/rootid"], check=True)  # fmt: skip
    # A copy left by an interrupted night: never shown, dropped by the next one.
    host.run(["mkdir", "-p", f"{STORE}/alice/.partial-{days[0]}/half"], check=True)
    figures = []
    for number, day in enumerate(days, 1):
        as_alice(host, f"echo night {number} > ~/{NOTE}; head -c {number}M /dev/urandom"
                 f" > ~/sites/www/big-{number}.bin")  # fmt: skip
        host.run(["mariadb", "alice_wp", "-e",
                  "CREATE TABLE IF NOT EXISTS probe (v VARCHAR(40)); DELETE FROM probe;"
                  f" INSERT INTO probe VALUES ('night-{number}')"], check=True)  # fmt: skip
        # The last night's owners and modes of two directories, for the restore.
        attrs = tree_attrs(host, "/home/alice", ["sites", "logs"])
        started = time.monotonic()
        night = run_night(host, day)
        assert night.returncode == 0, night.stdout + night.stderr
        figures.append((day, round(time.monotonic() - started, 1), night.stdout.strip()))
    return {"days": days, "today": last.isoformat(), "figures": figures, "attrs": attrs}


def tree_attrs(host: Host, top: str, names: list[str]) -> dict[str, str]:
    """Every entry of ``top/NAME...``: its owner, group, mode and type."""
    out = host.run(["sh", "-c", f"cd {top} && find {' '.join(names)} -printf '%p %u:%g %m %y\\n'"],
                   check=True).stdout  # fmt: skip
    return dict(line.split(" ", 1) for line in out.splitlines())


def as_alice(host: Host, script: str) -> None:
    host.run([*AS_ALICE, "sh", "-c", f"export HOME=/home/alice && cd && {script}"], check=True)


def run_night(host: Host, day: str) -> subprocess.CompletedProcess:
    """That night's dumps, then the snapshots dated ``day``."""
    host.run(["systemctl", "start", "webarch-db-dump.service"], check=True)
    time.sleep(1.1)  # the next dump gets another second in its name
    return host.run(["/usr/local/sbin/webarch-backup", "--date", day])


def listing(host: Host, path: str) -> list[str]:
    return host.run(["ls", "-A", path], check=True).stdout.split()


def ssh(host: Host, key: Path, command: str) -> subprocess.CompletedProcess:
    args = ["ssh", "-i", str(key), "-o", "BatchMode=yes", *SSH_OPTS]
    return host.net_run([*args, "alice@127.0.0.1", command])


def ssh_ok(host: Host, key: Path, command: str) -> str:
    result = ssh(host, key, command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def no_partial(host: Host, account: str = "alice") -> bool:
    """Whether the account's part of the store holds no night's partial copy."""
    return not [e for e in listing(host, f"{STORE}/{account}") if e.startswith(".partial-")]


def assert_three_days(host: Host, key: Path, days: list[str]) -> None:
    """alice lists her days over SSH, each with that night's file and dump."""
    assert ssh_ok(host, key, "ls -a ~/backups/files").split() == [".", "..", *days]
    for number, day in enumerate(days, 1):
        snap = f"~/backups/files/{day}"
        assert ssh_ok(host, key, f"cat {snap}/{NOTE}") == f"night {number}\n"
        dump = ssh_ok(host, key, f"ls {snap}/backups/mariadb/alice_wp-*.sql.gz | tail -n 1")
        text = ssh_ok(host, key, f"zcat {dump.strip()} | grep -o \"'night-[0-9]'\"")
        assert text.split() == [f"'night-{number}'"], (day, text)


def admin_mails(host: Host, sink: RelaySink) -> list[dict]:
    """The failure mails of the nights the relay got (waiting up to a minute for one)."""
    deadline = time.monotonic() + 60
    mails: list[dict] = []
    while time.monotonic() < deadline and not mails:
        host.run(["exim4", "-qff"])
        mails = [m for m in sink.messages() if "Backup of" in str(m["message"]["Subject"])]
        time.sleep(1)
    return mails


def test_alice_lists_her_three_days_each_with_that_days_file_and_dump(host, key, nights):
    days = nights["days"]
    assert_three_days(host, key, days)
    # Unchanged files are one file on disk across the days (hard links).
    inodes = {host.run(["stat", "-c", "%i %h", f"{STORE}/alice/days/{d}/sites/www/big-1.bin"],
                       check=True).stdout.split()[0] for d in days}  # fmt: skip
    assert len(inodes) == 1
    # The store's use, counted night by night, is what du counts (within its
    # directories' own blocks).
    status = json.loads(host.read_file("/var/lib/webarch/backup-status.json"))["accounts"]
    du = int(host.run(["du", "-sB1", f"{STORE}/alice"], check=True).stdout.split()[0])
    assert abs(du - status["alice"]["store_bytes"]) <= 16384, (du, status["alice"])
    # The interrupted night's copy is gone; none is left by the good ones.
    assert listing(host, f"{STORE}/alice") == [".owners", "days"]


def test_her_cron_jobs_see_the_days_read_only_too(host, nights):
    """A cron job runs in a mount namespace systemd makes: the days are bound there too."""
    host.run(["systemctl", "start", "webarch-cron-alice.days.service"], check=True)
    listed = host.read_file("/home/alice/private/cron-days.txt").split()
    assert listed == [".", "..", *nights["days"]]


def test_sftp_lists_and_gets_yesterdays_file_and_cp_restores_it(host, key, nights, tmp_path):
    day = nights["days"][1]
    local = tmp_path / "note.txt"
    args = ["sftp", "-i", str(key), *SSH_OPTS, "-b", "-", "alice@127.0.0.1"]
    batch = f"ls -1 backups/files\nget backups/files/{day}/{NOTE} {local}\n"
    result = host.net_run(args, input=batch)
    assert result.returncode == 0, result.stderr
    assert all(d in result.stdout for d in nights["days"])
    assert local.read_text() == "night 2\n"
    ssh_ok(host, key, f"cp ~/backups/files/{day}/{NOTE} ~/{NOTE}")
    assert host.read_file(f"/home/alice/{NOTE}") == "night 2\n"


REFUSED = re.compile(r"Read-only file system|Operation not permitted|Permission denied")


@pytest.mark.parametrize(
    "command",
    [
        "echo x > ~/backups/files/{day}/" + NOTE,
        "echo x >> ~/backups/files/{day}/" + NOTE,
        "touch ~/backups/files/{day}/new",
        "mkdir ~/backups/files/{day}/new",
        "rm -f ~/backups/files/{day}/" + NOTE,
        "rm -rf ~/backups/files/{day}",
        "mv ~/backups/files/{day} ~/backups/files/2000-01-01",
        "chmod 777 ~/backups/files/{day}/sites",
        "touch -d 2000-01-01 ~/backups/files/{day}/" + NOTE,
        "ln ~/backups/files/{day}/" + NOTE + " ~/backups/files/{day}/hard",
        "ln -s /etc/passwd ~/backups/files/{day}/soft",
        "rmdir ~/backups/files",
        "mv ~/backups/files ~/backups/other",
    ],
)
def test_alice_cannot_change_her_snapshots(host, key, nights, command):
    day = nights["days"][2]
    result = ssh(host, key, command.format(day=day))
    assert result.returncode != 0, command
    assert REFUSED.search(result.stderr), (command, result.stderr)
    assert host.read_file(f"{STORE}/alice/days/{day}/{NOTE}") == "night 3\n"


def test_a_hard_link_out_of_a_snapshot_is_refused(host, key, nights):
    day = nights["days"][2]
    result = ssh(host, key, f"ln ~/backups/files/{day}/{NOTE} ~/sites/www/linked")
    assert result.returncode != 0 and "Invalid cross-device link" in result.stderr


def test_the_mount_is_read_only_and_inert_and_the_store_root_only(host, key, nights):
    options = host.run([*CHROOTS_NS, "findmnt", "-no", "OPTIONS", f"/chroots/alice{SNAPS}"],
                       check=True).stdout.split(",")  # fmt: skip
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(options), options
    assert host.run(["stat", "-c", "%U:%G %a", STORE], check=True).stdout.split() == [
        "root:root", "711"]  # fmt: skip
    for path in (STORE, f"{STORE}/bob"):
        listing = host.run([*AS_ALICE, "ls", path])
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, path
    # Her setuid copy of id is kept (mode and all) but runs from no snapshot;
    # root's setuid id in her home is hers there (its setuid bit then gives her uid).
    day = nights["days"][0]
    mode = host.run(["stat", "-c", "%a", f"{STORE}/alice/days/{day}/private/myid"], check=True)
    assert mode.stdout.strip() == "4755"
    rootid = f"{STORE}/alice/days/{day}/private/rootid"
    assert host.run(["stat", "-c", "%U %a", rootid], check=True).stdout.split() == ["alice", "4755"]
    result = ssh(host, key, f"~/backups/files/{day}/private/myid")
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_bobs_days_are_out_of_alices_reach(host, key, nights):
    day = nights["days"][0]
    assert host.run(["test", "-f", f"{STORE}/bob/days/{day}/private/note.txt"]).returncode == 0
    for path in (f"{STORE}/bob", "/home/bob/backups/files", "/chroots/bob"):
        assert ssh(host, key, f"ls {path}").returncode != 0, path
    # Her symlink to bob's file stays a symlink: nothing of bob's in her days.
    link = ssh_ok(host, key, f"readlink ~/backups/files/{day}/sites/www/bob-link")
    assert link.strip() == "/home/bob/private/note.txt"
    found = host.run(["grep", "-rl", BOB_SECRET, f"{STORE}/alice"])
    assert found.returncode == 1, found.stdout


def test_alice_cannot_ptrace_her_nights_rsync(host, nights):
    """Her night's rsync runs as her, outside her chroot, writing her days: started with
    nogroup as real gid, it is non-dumpable, and her processes cannot attach to it (a
    process of hers started as usual, they can).  The night is the last one again."""
    uid = host.run(["id", "-u", "alice"], check=True).stdout.strip()
    attach = (
        "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True);"
        " pid = int(sys.argv[1]); r = libc.ptrace(16, pid, 0, 0); e = ctypes.get_errno();"
        " r == 0 and (os.waitpid(pid, 0), libc.ptrace(17, pid, 0, 0)); print(r, e)"
    )
    as_alice = " ".join(AS_ALICE)
    script = f"""
        webarch-backup --date {nights["days"][-1]} alice >/dev/null 2>&1 & night=$!
        for i in $(seq 200); do
          pid=$(pgrep -u {uid} -x rsync | head -n 1); [ -n "$pid" ] && break; sleep 0.05
        done
        echo "night $({as_alice} python3 -c '{attach}' $pid)"
        {as_alice} sleep 30 & control=$!; sleep 0.5
        echo "control $({as_alice} python3 -c '{attach}' $control)"
        kill $control; wait $night; echo "exit $?"
    """
    out = host.run(["bash", "-c", script], check=True).stdout.splitlines()
    assert out == ["night -1 1", "control 0 0", "exit 0"], out


def test_a_failed_night_keeps_every_day_and_mails_the_admin(host, nights, sink):
    days, day = nights["days"], nights["today"]
    host.write_file("/home/alice/private/root-only", "root's\n", 0o600)
    try:
        night = run_night(host, day)
    finally:
        host.run(["rm", "-f", "/home/alice/private/root-only"], check=True)
    assert night.returncode == 1, night.stdout
    assert "alice" in night.stdout and "FAILED" in night.stdout
    assert host.run(["ls", "-A", f"{STORE}/alice/days"], check=True).stdout.split() == days
    assert listing(host, f"{STORE}/alice") == [".owners", "days"]
    # bob's night went on and completed.
    assert host.run(["test", "-d", f"{STORE}/bob/days/{day}"]).returncode == 0
    mails = admin_mails(host, sink)
    assert len(mails) == 1
    assert "hostmaster@coop.example" in str(mails[0]["message"]["To"])
    body = mails[0]["message"].get_payload(decode=True).decode()
    assert "alice: rsync exited 23" in body and "bob" not in body
    log = host.run(["stat", "-c", "%U %a", "/var/log/webarch-backup/backup.log"], check=True)
    assert log.stdout.split() == ["root", "600"]


def test_a_night_killed_half_way_leaves_no_day(host, key, nights):
    days, day = nights["days"], nights["today"]
    script = (
        f"/usr/local/sbin/webarch-backup --date {day} alice & pid=$!;"
        f" for i in $(seq 200); do [ -d {STORE}/alice/.partial-{day} ] && break; sleep 0.05; done;"
        " sleep 0.3; kill -KILL $pid; pkill -KILL -u alice -x rsync; wait; echo killed"
    )
    assert host.run(["sh", "-c", script], check=True).stdout.strip().endswith("killed")
    assert host.run(["test", "-d", f"{STORE}/alice/.partial-{day}"]).returncode == 0
    assert ssh_ok(host, key, "ls -a ~/backups/files").split() == [".", "..", *days]


def test_a_night_with_the_store_full_fails_clearly_and_keeps_every_day(host, nights):
    """The store's file system full: alice's part of the store moved onto a small
    tmpfs (a copy with its hard links and records: 4 MiB free), and 16 MiB new
    in her home."""
    days, day = nights["days"], nights["today"]
    mine, small = f"{STORE}/alice", "/run/webarch-test-full"
    fill = f"{small} && cp -a {mine}/. {small}/ && used=$(df --output=used -k {small} | tail -n 1)"
    host.run(["sh", "-ec", f"mkdir -p {small} && mount -t tmpfs -o size=1G,mode=0700 full {fill}"
              f" && mount -o remount,size=$((used + 4096))k {small}"
              f" && mount --bind {small} {mine}"], check=True)  # fmt: skip
    try:
        as_alice(host, "head -c 16M /dev/urandom > ~/private/big.bin")
        night = run_night(host, day)
        kept = host.run(["ls", "-A", f"{mine}/days"], check=True).stdout.split()
        left = host.run(["ls", "-A", mine], check=True).stdout.split()
    finally:
        host.run(["sh", "-c", f"umount {mine}; umount {small}; rm -f /home/alice/private/big.bin"])
    assert night.returncode == 1, night.stdout
    assert "alice" in night.stdout and "No space left on device" in night.stdout, night.stdout
    assert kept == days and left == [".owners", "days"]
    status = host.salt_call(["webarch_backup.status"])["local"]["accounts"]["alice"]
    assert status["last_ok"] is False and "No space left" in status["error"], status


def test_the_next_night_completes_and_expires_only_the_oldest_day(host, nights):
    days = nights["days"]
    run = host.run(["systemctl", "start", "webarch-backup.service"])
    assert run.returncode == 0, host.run(["journalctl", "-u", "webarch-backup", "-n", "30"]).stdout
    kept = host.run(["ls", "-A", f"{STORE}/alice/days"], check=True).stdout.split()
    assert kept == [*days[1:], nights["today"]]
    assert no_partial(host)


def test_status_and_restore_through_salt(host, nights, request):
    status = host.salt_call(["webarch_backup.status"])["local"]
    alice = status["accounts"]["alice"]
    assert alice["days"] == [*nights["days"][1:], nights["today"]]
    assert alice["last_ok"] is True and alice["store_bytes"] > 6 << 20
    day = nights["days"][1]
    ret = host.salt_call(["webarch_backup.restore", "alice", "sites/www", day])["local"]
    restored = f"/home/alice/private/restored/{day}/sites/www"
    assert ret["restored"] == restored, ret
    assert host.read_file(f"{restored}/note.txt") == "night 2\n"
    stat = host.run(["stat", "-c", "%U %a", f"{restored}/note.txt"], check=True).stdout.split()
    assert stat[0] == "alice"
    # Never over what is there, unless asked.
    host.write_file(f"{restored}/note.txt", "changed since\n")
    again = host.run([SALT_CALL, "--local", "webarch_backup.restore", "alice", "sites/www", day])
    assert again.returncode != 0 and f"{restored} exists" in again.stderr, again.stderr
    assert host.read_file(f"{restored}/note.txt") == "changed since\n"
    over = ["webarch_backup.restore", "alice", f"sites/www/{Path(NOTE).name}", day,
            f"target={restored}", "overwrite=True"]  # fmt: skip
    assert host.salt_call(over)["local"]["restored"] == f"{restored}/note.txt"
    assert host.read_file(f"{restored}/note.txt") == "night 2\n"
    lines = [f"{d}: {s}s  {out}" for d, s, out in nights["figures"]]
    lines.append(f"restore of {day}: {ret}")
    lines.append(f"store use of alice after 3 days: {alice['store_bytes']} bytes")
    request.config.webarch_summaries.append("backup nights\n" + "\n".join(lines))


def test_a_restored_directory_has_its_owners_and_modes_as_they_were(host, nights):
    """Root's logs and the web server's group of the sites come back as that night
    had them (a night's copy is the account's: root records them); a setuid bit
    of a file of root's never."""
    day = nights["days"][2]
    for name in ("sites", "logs"):
        ret = host.salt_call(["webarch_backup.restore", "alice", name, day])["local"]
        assert ret["restored"] == f"/home/alice/private/restored/{day}/{name}", ret
        assert ret["attributes_set"] > 0, ret
    restored = tree_attrs(host, f"/home/alice/private/restored/{day}", ["sites", "logs"])
    assert restored == nights["attrs"]
    assert restored["logs"] == "root:alice 750 d" and restored["sites"] == "alice:www-data 2750 d"
    # root's setuid program comes back root's, without its setuid bit.
    ret = host.salt_call(["webarch_backup.restore", "alice", "private/rootid", day])["local"]
    assert host.run(["stat", "-c", "%U %a", ret["restored"]], check=True).stdout.split() == [
        "root", "755"]  # fmt: skip


def test_the_service_is_sandboxed(host, nights, request):
    out = host.run(["systemd-analyze", "security", "--no-pager", "webarch-backup.service"])
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out.stdout)
    assert match and match.group(2) in ("PERFECT", "SAFE", "OK"), out.stdout[-300:]
    request.config.webarch_summaries.append(
        f"webarch-backup.service: {match.group(1)} {match.group(2)}"
    )


def test_a_second_run_changes_nothing(host, pillar, nights):
    ret = apply(host, pillar)
    assert failed(ret) == {} and changed(ret) == {}


def test_a_removed_accounts_days_are_retired_then_expire(host, pillar, nights):
    data = copy.deepcopy(pillar)
    data["webarch"]["accounts"]["bob"]["state"] = "absent"
    assert failed(apply(host, data)) == {}
    assert host.run(["test", "-e", f"{STORE}/bob"]).returncode == 1
    retired = host.run(["sh", "-c", f"ls -d {STORE}/.retired-bob-*"], check=True).stdout.split()
    assert len(retired) == 1
    owner = host.run(["stat", "-c", "%U:%G %a", retired[0]], check=True).stdout.split()
    assert owner == ["root:root", "700"]
    # Still there the next night; gone once its last day is past its time.
    later = datetime.date.fromisoformat(nights["today"]) + datetime.timedelta(days=1)
    assert run_night(host, later.isoformat()).returncode == 0
    assert host.run(["test", "-d", retired[0]]).returncode == 0
    later += datetime.timedelta(days=3)
    assert run_night(host, later.isoformat()).returncode == 0
    assert host.run(["test", "-e", retired[0]]).returncode == 1
