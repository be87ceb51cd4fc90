"""Nightly snapshots on btrfs (issue 17, ``webarch:backup:method: btrfs``).

A host whose /home is a btrfs (testhost.homefs, a loop device), quotas on
(each home a subvolume), and the store on the same btrfs: the subvolume
``/home/.webarch-backups`` mounted at /var/lib/webarch-backups (the pillar's
store, outside /home).  The same three nights as test_backup (its fixtures and
helpers, and its tests that do not depend on the method, run here too): each
day a read-only snapshot of the home made by the kernel.  Then alice's view
over SSH and SFTP, the attacks, an interrupted and a failed night, the
expiry, the admin's restore with owners and modes, and the explicit method
refused on a store off the btrfs, naming the pillar path.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e import test_backup as rsync
from e2e.helpers import CHROOTS_NS, apply, relayed, state_results
from e2e.test_backup import AS_ALICE, SNAPS, STORE, admin_mails, listing, ssh, ssh_ok
from e2e.test_sandbox import sandbox_pillar
from testhost import Host
from testhost.homefs import HomeFs, loop_devices
from testhost.matomo import provide_matomo

pytestmark = pytest.mark.e2e

#: The store's subvolume on the btrfs of the homes (mounted at STORE).
SUBVOLUME = "/home/.webarch-backups"

# test_backup's fixtures (the relay, alice's key, the three nights) over this host.
sink, key, nights = rsync.sink, rsync.key, rsync.nights


@pytest.fixture(scope="module")
def host(image: Path, repo: Path) -> Iterator[Host]:
    """The host: /home a btrfs, the store a subvolume of it mounted at STORE."""
    with Host(name="wa-backup-btrfs", image=image, formula_dir=repo,
              home_fs=HomeFs(size_mb=2048, fstype="btrfs")) as running:  # fmt: skip
        provide_matomo(running)
        running.run(["sh", "-ec", f"btrfs -q subvolume create {SUBVOLUME} && chmod 0700 "
                     f"{SUBVOLUME} && mkdir -p {STORE} && mount --bind {SUBVOLUME} {STORE}"],
                    check=True)  # fmt: skip
        yield running
    assert not loop_devices(running.home_image)


@pytest.fixture(scope="module")
def pillar(example_pillar: dict, sink, key: Path) -> dict:
    data = relayed(sandbox_pillar(example_pillar), sink)
    data["webarch"]["backup"] = {"enabled": True, "days": 3, "method": "btrfs"}
    data["webarch"]["accounts"]["alice"]["ssh_keys"] = [key.with_suffix(".pub").read_text().strip()]
    return data


def subvolume(host: Host, path: str) -> str:
    return host.run(["btrfs", "subvolume", "show", path], check=True).stdout


def test_each_day_is_a_read_only_snapshot_with_that_days_file_and_dump(host, key, nights):
    days = nights["days"]
    rsync.assert_three_days(host, key, days)
    for day in days:
        shown = subvolume(host, f"{STORE}/alice/days/{day}")
        assert re.search(r"Flags:\s+readonly", shown), shown
    # Nothing but the days: no record of owners (each snapshot keeps its
    # own), and the interrupted rsync night's copy is gone.
    assert listing(host, f"{STORE}/alice") == ["days"]
    status = host.salt_call(["webarch_backup.status"])["local"]["accounts"]["alice"]
    assert status["method"] == "btrfs" and status["days"] == days, status
    assert isinstance(status["store_bytes"], int) and "qgroup" in status["store_counted"]
    config = host.run(["cat", "/etc/webarch/backup.json"], check=True).stdout
    assert '"method": "btrfs"' in config


# The method's own behaviour seen from alice's chroot: as with rsync.
test_sftp_lists_and_gets_yesterdays_file_and_cp_restores_it = (
    rsync.test_sftp_lists_and_gets_yesterdays_file_and_cp_restores_it
)
test_alice_cannot_change_her_snapshots = rsync.test_alice_cannot_change_her_snapshots
test_a_hard_link_out_of_a_snapshot_is_refused = rsync.test_a_hard_link_out_of_a_snapshot_is_refused
test_bobs_days_are_out_of_alices_reach = rsync.test_bobs_days_are_out_of_alices_reach


def test_a_hard_link_to_bobs_file_cannot_even_be_made(host, nights):
    """Each home is a subvolume: no hard link crosses from one to another, even root's."""
    made = host.run(["ln", "/home/bob/private/note.txt", "/home/alice/private/bobs"])
    assert made.returncode != 0 and "Invalid cross-device link" in made.stderr, made.stderr


def test_setuid_programs_in_a_snapshot_are_inert(host, key, nights):
    options = host.run([*CHROOTS_NS, "findmnt", "-no", "OPTIONS", f"/chroots/alice{SNAPS}"],
                       check=True).stdout.split(",")  # fmt: skip
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(options), options
    day = nights["days"][0]
    # The kernel's copy keeps root's setuid program in her home as it is ...
    rootid = f"{STORE}/alice/days/{day}/private/rootid"
    assert host.run(["stat", "-c", "%U %a", rootid], check=True).stdout.split() == ["root", "4755"]
    # ... and it runs from no snapshot; the store is root's alone on the host.
    for program in ("rootid", "myid"):
        result = ssh(host, key, f"~/backups/files/{day}/private/{program}")
        assert result.returncode != 0 and "Permission denied" in result.stderr, program
    denied = host.run([*AS_ALICE, "ls", STORE])
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_a_night_killed_at_any_moment_leaves_no_partial_day(host, key, nights):
    """A missed night caught up (the day before the first: it expires none), killed
    after a while: either no day of it or the whole, read-only, and nothing else."""
    days = nights["days"]
    day = (datetime.date.fromisoformat(days[0]) - datetime.timedelta(days=1)).isoformat()
    for delay in ("0.02", "0.1", "0.2", "0.4"):
        script = (f"/usr/local/sbin/webarch-backup --date {day} alice & pid=$!;"
                  f" sleep {delay}; kill -KILL $pid; wait; echo killed")  # fmt: skip
        assert host.run(["sh", "-c", script], check=True).stdout.strip().endswith("killed")
        seen = ssh_ok(host, key, "ls -a ~/backups/files").split()
        assert seen in ([".", "..", *days], [".", "..", day, *days]), seen
        for entry in seen[2:]:  # every day shown is a whole read-only snapshot
            assert "readonly" in subvolume(host, f"{STORE}/alice/days/{entry}")
        host.run(["sh", "-c", f"btrfs -q subvolume delete {STORE}/alice/days/{day} || true"])
    assert listing(host, f"{STORE}/alice") == ["days"]


def test_a_failed_night_keeps_every_day_and_mails_the_admin(host, nights, sink):
    """No snapshot can be made into alice's days (made immutable): her night fails."""
    days, day = nights["days"], nights["today"]
    host.run(["chattr", "+i", f"{STORE}/alice/days"], check=True)
    try:
        night = rsync.run_night(host, day)
    finally:
        host.run(["chattr", "-i", f"{STORE}/alice/days"], check=True)
    assert night.returncode == 1 and "alice" in night.stdout and "FAILED" in night.stdout
    assert listing(host, f"{STORE}/alice/days") == days
    assert host.run(["test", "-d", f"{STORE}/bob/days/{day}"]).returncode == 0
    mails = admin_mails(host, sink)
    assert len(mails) == 1
    body = mails[0]["message"].get_payload(decode=True).decode()
    assert "alice: PermissionError" in body and "bob" not in body, body


# The next night (the service) expires only the oldest day, each deleted whole.
test_the_next_night_completes_and_expires_only_the_oldest_day = (
    rsync.test_the_next_night_completes_and_expires_only_the_oldest_day
)


def test_an_expired_day_is_a_deleted_subvolume(host, nights):
    listed = host.run(["btrfs", "subvolume", "list", "-o", SUBVOLUME], check=True).stdout
    alices = sorted(line.rsplit("/", 1)[-1] for line in listed.splitlines() if "/alice/" in line)
    assert alices == [*nights["days"][1:], nights["today"]], listed


# The admin's restore of a directory: owners and modes from the snapshot itself.
test_a_restored_directory_has_its_owners_and_modes_as_they_were = (
    rsync.test_a_restored_directory_has_its_owners_and_modes_as_they_were
)
test_the_service_is_sandboxed = rsync.test_the_service_is_sandboxed
test_a_second_run_changes_nothing = rsync.test_a_second_run_changes_nothing


def test_an_explicit_btrfs_method_off_the_btrfs_fails_naming_the_pillar_path(host, pillar):
    data = copy.deepcopy(pillar)
    data["webarch"]["backup"]["store"] = "/srv/webarch-backups"
    results = state_results(apply(host, data, "test=True"))
    bad = {k: v["comment"] for k, v in results.items() if v["result"] is False}
    method = [c for k, c in bad.items() if "webarch-backup-method" in k]
    assert method and "webarch:backup:method is btrfs" in method[0], bad
    assert "/srv/webarch-backups is not on a btrfs" in method[0], method
    # What would write the config and the units waits for it.
    waiting = {k.split("_|-")[1] for k in bad if "webarch-backup" in k}
    assert {"webarch-backup-config", "webarch-backup-units"} <= waiting, bad


test_a_removed_accounts_days_are_retired_then_expire = (
    rsync.test_a_removed_accounts_days_are_retired_then_expire
)
