"""Disk quotas: limits from pillar on the file system of the homes, seen from the chroots.

Two test hosts, each with a file system of its own at /home (testhost.homefs:
an image on a loop device of this machine).

wa-quota-ext4: ext4, with the device node and nspawn's ``quotactl`` allowed.  With
a kernel that can mount ext4 with quotas (Debian's can: CONFIG_QFMT_V2) it has
journaled user quotas on, and the tests prove the limits; with one that
cannot, /home is a plain ext4 on the loop device and only the tests of a file
system without quotas run (the others are skipped, saying why).

wa-quota-btrfs: btrfs, its quotas (qgroups) off until the formula switches
them on; each home a subvolume limited by its qgroup.  btrfs needs nothing
more of the kernel, so these tests always run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import CHROOTS_NS, SSH_OPTS, apply, changed, failed, state_results
from testhost import Host
from testhost.homefs import HomeFs, kernel_quota_problem, loop_devices

pytestmark = pytest.mark.e2e

ACCOUNTS = ("alice", "bob")
#: alice's hard limit in the tests: 8M of space, 500 files.
ALICE = {"blocks_soft": "6M", "blocks_hard": "8M", "inodes_soft": 400, "inodes_hard": 500}


@pytest.fixture(scope="module")
def quota_problem() -> str | None:
    """Why this machine's kernel cannot do ext4 quotas, or None."""
    return kernel_quota_problem()


@pytest.fixture(scope="module")
def host(image: Path, repo: Path, quota_problem: str | None) -> Iterator[Host]:
    """The test host, its /home an ext4 on a loop device (with quotas if the kernel can)."""
    home_fs = HomeFs(size_mb=256, quota=quota_problem is None)
    with Host(name="wa-quota-ext4", image=image, formula_dir=repo, home_fs=home_fs) as running:
        yield running
    # Host.stop() waited for the loop device to go (it raises if it does not).
    assert not loop_devices(running.home_image)


@pytest.fixture
def quotas(host: Host, quota_problem: str | None) -> Host:
    """The host, for tests that need quotas on /home (skipped when the kernel has none)."""
    if quota_problem is not None:
        pytest.skip(f"this machine's kernel cannot mount ext4 with quotas: {quota_problem}")
    return host


def pillar(quota: dict | None = None, alice: dict | None = None) -> dict:
    """alice and bob; ``alice`` gives alice's quota, ``quota`` the webarch:quota block."""
    accounts: dict = {name: {} for name in ACCOUNTS}
    if alice is not None:
        accounts["alice"]["quota"] = alice
    data: dict = {"accounts": accounts}
    if quota is not None:
        data["quota"] = quota
    return {"webarch": data}


def as_account(host: Host, user: str, script: str):
    """Run ``script`` as ``user`` in the user's chroot (as its SSH logins are)."""
    chroot = ["chroot", f"--userspec={user}:{user}", f"/chroots/{user}"]
    return host.run([*CHROOTS_NS, *chroot, "/bin/sh", "-c", script])


def limits(host: Host, user: str) -> str:
    """``quota``'s line for ``user`` on /home, as root on the host."""
    return host.run(["quota", "-u", "-v", "-w", user]).stdout


# -- any /home ------------------------------------------------------------------


def test_home_is_its_own_file_system(host):
    out = host.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", "/home"], check=True).stdout
    assert out.split()[0].startswith("/dev/loop") and out.split()[1] == "ext4", out


def test_without_user_quotas_the_states_fail_naming_the_file_system(host, quota_problem):
    if quota_problem is None:  # quotas on: switch them off for this test
        host.run(["quotaoff", "-u", "/home"], check=True)
    try:
        for args in (["test=True"], []):
            ret = apply(host, pillar(alice=ALICE), *args)
            bad = {k: v["comment"] for k, v in state_results(ret).items() if v["result"] is False}
            quota_states = {k: v for k, v in bad.items() if "_|-webarch-" in k and "-quota_|" in k}
            assert {k.split("_|-")[1] for k in quota_states} == {
                "webarch-alice-quota",
                "webarch-bob-quota",
            }, bad
            device = host.run(["findmnt", "-n", "-o", "SOURCE", "/home"], check=True).stdout
            for comment in quota_states.values():
                assert f"/home (ext4 on {device.strip()})" in comment, comment
                assert "has no user quotas" in comment and "webarch:quota:enabled" in comment
            # Nothing else failed but what waits for those states.
            others = set(bad) - set(quota_states)
            assert all("requisite" in bad[k].lower() for k in others), bad
    finally:
        if quota_problem is None:
            host.run(["quotaon", "-u", "/home"], check=True)


def test_switched_off_in_pillar_nothing_fails_and_the_run_says_so(host):
    ret = apply(host, pillar(quota={"enabled": False}, alice=ALICE))
    assert failed(ret) == {}
    results = state_results(ret)
    notice = [v["comment"] for k, v in results.items() if "webarch-quota-off" in k]
    assert notice and "switched off" in notice[0], notice
    assert not [k for k in results if k.startswith("webarch_quota_|-") and k.endswith("_|-limits")]


# -- /home with user quotas -----------------------------------------------------


@pytest.fixture(scope="module")
def converged(host: Host, quota_problem: str | None) -> Host:
    """alice with her quota (bob: none), converged."""
    if quota_problem is not None:
        pytest.skip(f"this machine's kernel cannot mount ext4 with quotas: {quota_problem}")
    ret = apply(host, pillar(alice=ALICE))
    assert failed(ret) == {}
    return host


def test_limits_are_applied_and_a_second_run_changes_nothing(converged):
    line = limits(converged, "alice").split("\n")
    assert any(" 6144 " in f" {row} " and " 8192 " in f" {row} " for row in line), line
    ret = apply(converged, pillar(alice=ALICE))
    assert failed(ret) == {}
    assert changed(ret) == {}


def test_alice_write_past_her_quota_fails_bob_write_succeeds(converged):
    write = "dd if=/dev/zero of=$HOME/private/big bs=1M count=12 2>&1; echo rc=$?"
    alice = as_account(converged, "alice", f"HOME=/home/alice; {write}").stdout
    assert "Disk quota exceeded" in alice and "rc=1" in alice, alice
    bob = as_account(converged, "bob", f"HOME=/home/bob; {write}").stdout
    assert "rc=0" in bob, bob
    for user in ACCOUNTS:
        as_account(converged, user, f"rm -f /home/{user}/private/big")


def test_alice_sees_her_usage_in_her_chroot(converged):
    as_account(converged, "alice", "head -c 3000000 /dev/zero > /home/alice/private/three")
    converged.run(["systemctl", "start", "webarch-quota-report.service"], check=True)
    report = as_account(converged, "alice", "cat /home/alice/logs/quota.txt")
    assert report.returncode == 0, report.stderr
    assert "Disk quotas for user alice" in report.stdout, report.stdout
    assert "8192K" in report.stdout or "8M" in report.stdout, report.stdout
    # bob cannot read it (nor could he reach it from his chroot).
    assert converged.run(
        ["runuser", "-u", "bob", "--", "cat", "/home/alice/logs/quota.txt"]
    ).returncode
    assert (
        converged.run(["systemctl", "is-active", "webarch-quota-report.timer"]).stdout.strip()
        == "active"
    )


def test_a_changed_quota_is_applied_by_the_next_run(converged):
    bigger = {**ALICE, "blocks_hard": "16M"}
    ret = apply(converged, pillar(alice=bigger))
    assert failed(ret) == {}
    quota_changes = {k: v for k, v in changed(ret).items() if k.endswith("-quota_|-alice_|-limits")}
    assert list(quota_changes) == ["webarch_quota_|-webarch-alice-quota_|-alice_|-limits"]
    assert quota_changes[next(iter(quota_changes))] == {"blocks_hard": {"old": "8M", "new": "16M"}}
    assert " 16384 " in limits(converged, "alice")
    write = "dd if=/dev/zero of=/home/alice/private/big bs=1M count=12 2>&1; echo rc=$?"
    assert "rc=0" in as_account(converged, "alice", write).stdout


# -- btrfs: subvolumes and qgroups ------------------------------------------------

#: alice's quota on btrfs: a hard space limit, the only limit a qgroup has.
BTRFS_ALICE = {"blocks_hard": "8M"}
MIB = 1 << 20


@pytest.fixture(scope="module")
def btrfs(image: Path, repo: Path) -> Iterator[Host]:
    """The btrfs test host: /home a btrfs on a loop device, its quotas off."""
    home_fs = HomeFs(size_mb=256, fstype="btrfs")
    with Host(name="wa-quota-btrfs", image=image, formula_dir=repo, home_fs=home_fs) as running:
        yield running
    assert not loop_devices(running.home_image)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh ed25519 key pair for alice, on this machine."""
    key = tmp_path_factory.mktemp("keys") / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return {"alice": key}


def btrfs_pillar(keys: dict[str, Path], alice: dict, **extra: dict) -> dict:
    """alice (her key, her quota) and bob (no limit), with more accounts or blocks."""
    data = pillar(alice=alice, quota=extra.pop("quota", None))
    data["webarch"]["accounts"]["alice"]["ssh_keys"] = [
        keys["alice"].with_suffix(".pub").read_text().strip()
    ]
    data["webarch"]["accounts"].update(extra)
    return data


def qgroup(host: Host, home: str) -> list[str]:
    """The home's qgroup row of ``btrfs qgroup show --raw``: id, rfer, excl, max_rfer, ..."""
    rootid = host.run(["btrfs", "inspect-internal", "rootid", home], check=True).stdout.strip()
    out = host.run(["btrfs", "qgroup", "show", "--raw", "-re", "-f", home], check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(f"0/{rootid} ")]
    assert len(rows) == 1, out
    return rows[0]


#: The SLS files of the homes and their quotas: a second run changes nothing in them.
#: (Whole-run idempotence is test_upgrade's and each feature's own check; here
#: it would fail on any other feature's bug.)
QUOTA_SLS = {"webarch.quota", "webarch.users", "webarch.chroot"}


def changed_here(ret: dict) -> dict:
    """The changes of a run in the states of QUOTA_SLS."""
    results = state_results(ret)
    return {
        k: v["changes"]
        for k, v in results.items()
        if v["changes"] and v.get("__sls__") in QUOTA_SLS
    }


def by_id(ret: dict) -> dict[str, dict]:
    """A run's results by state ID."""
    return {key.split("_|-")[1]: value for key, value in state_results(ret).items()}


def test_btrfs_first_run_in_test_mode_predicts_and_changes_nothing(btrfs, keys):
    ret = apply(btrfs, btrfs_pillar(keys, BTRFS_ALICE), "test=True")
    results = by_id(ret)
    assert not [k for k, v in results.items() if v["result"] is False], failed(ret)
    assert results["webarch-quota-homes"]["changes"] == {"qgroups": {"old": "off", "new": "on"}}
    for user in ACCOUNTS:
        assert results[f"webarch-{user}-home-subvolume"]["changes"] == {
            "subvolume": {"old": None, "new": f"/home/{user}"}
        }
    assert results["webarch-alice-quota"]["changes"] == {
        "blocks_hard": {"old": "none", "new": "8M"}
    }
    assert results["webarch-alice-quota"]["result"] is None
    # Nothing done: the quotas still off, no home.
    show = btrfs.run(["btrfs", "qgroup", "show", "/home"])
    assert show.returncode != 0 and "not enabled" in show.stderr, show
    assert btrfs.run(["test", "-e", "/home/alice"]).returncode == 1


@pytest.fixture(scope="module")
def btrfs_converged(btrfs: Host, keys: dict[str, Path]) -> dict:
    """The btrfs host converged with alice's 8M quota; the run's results by state ID."""
    ret = apply(btrfs, btrfs_pillar(keys, BTRFS_ALICE))
    assert failed(ret) == {}
    return by_id(ret)


def test_btrfs_homes_are_subvolumes_limited_by_their_qgroups(btrfs, keys, btrfs_converged):
    results = btrfs_converged
    assert results["webarch-quota-homes"]["changes"] == {"qgroups": {"old": "off", "new": "on"}}
    assert "were off: switched on" in results["webarch-quota-homes"]["comment"]
    for user in ACCOUNTS:
        assert results[f"webarch-{user}-home-subvolume"]["changes"], results
        btrfs.run(["btrfs", "subvolume", "show", f"/home/{user}"], check=True)
    assert qgroup(btrfs, "/home/alice")[3] == str(8 * MIB)
    assert qgroup(btrfs, "/home/bob")[3] == "none"
    ret = apply(btrfs, btrfs_pillar(keys, BTRFS_ALICE))
    assert failed(ret) == {}
    assert {v.get("__sls__") for v in state_results(ret).values()} >= QUOTA_SLS
    assert changed_here(ret) == {}


def test_btrfs_alice_write_past_her_quota_fails_bob_write_succeeds(btrfs, btrfs_converged):
    write = "dd if=/dev/zero of=$HOME/private/big bs=1M count=12 2>&1; sync; echo rc=$?"
    alice = as_account(btrfs, "alice", f"HOME=/home/alice; {write}").stdout
    assert "Disk quota exceeded" in alice, alice
    bob = as_account(btrfs, "bob", f"HOME=/home/bob; {write}").stdout
    assert "Disk quota exceeded" not in bob and "12582912 bytes" in bob, bob
    size = as_account(btrfs, "alice", "stat -c %s /home/alice/private/big").stdout
    assert int(size) <= 8 * MIB, size
    for user in ACCOUNTS:
        as_account(btrfs, user, f"rm -f /home/{user}/private/big; sync")


def test_btrfs_alice_reads_her_usage_in_her_chroot_over_ssh(btrfs, keys, btrfs_converged):
    as_account(btrfs, "alice", "head -c 3000000 /dev/zero > /home/alice/private/three; sync")
    btrfs.run(["systemctl", "start", "webarch-quota-report.service"], check=True)
    args = ["ssh", "-i", str(keys["alice"]), "-o", "BatchMode=yes", *SSH_OPTS]
    login = btrfs.net_run(
        [*args, "alice@127.0.0.1", "cat ~/logs/quota.txt; ls /dev/loop* 2>&1 || true"]
    )
    assert login.returncode == 0, (login.stdout, login.stderr)
    report = login.stdout
    assert "Disk quota of alice: /home/alice, btrfs subvolume (qgroup 0/" in report, report
    used = qgroup(btrfs, "/home/alice")[1]
    assert f"of 8.0M ({used} of {8 * MIB} bytes" in report, report
    assert 3000000 <= int(used) < 4 * MIB, used
    assert "no limit of the number of files" in report
    assert "No such file" in report  # from her chroot, no device to reach
    assert btrfs.run(["runuser", "-u", "bob", "--", "cat", "/home/alice/logs/quota.txt"]).returncode


def test_btrfs_a_changed_quota_is_predicted_then_applied_by_the_next_run(
    btrfs, keys, btrfs_converged
):
    bigger = {"blocks_hard": "16M"}
    predicted = by_id(apply(btrfs, btrfs_pillar(keys, bigger), "test=True"))
    assert predicted["webarch-alice-quota"]["result"] is None
    assert predicted["webarch-alice-quota"]["changes"] == {
        "blocks_hard": {"old": "8M", "new": "16M"}
    }
    assert qgroup(btrfs, "/home/alice")[3] == str(8 * MIB)
    ret = apply(btrfs, btrfs_pillar(keys, bigger))
    assert failed(ret) == {}
    quota_changes = {k: v for k, v in changed(ret).items() if k.endswith("-quota_|-alice_|-limits")}
    assert quota_changes == {
        "webarch_quota_|-webarch-alice-quota_|-alice_|-limits": {
            "blocks_hard": {"old": "8M", "new": "16M"}
        }
    }
    assert qgroup(btrfs, "/home/alice")[3] == str(16 * MIB)
    write = "dd if=/dev/zero of=/home/alice/private/big bs=1M count=12 2>&1; sync; echo rc=$?"
    assert "rc=0" in as_account(btrfs, "alice", write).stdout
    as_account(btrfs, "alice", "rm -f /home/alice/private/big")
    again = apply(btrfs, btrfs_pillar(keys, bigger))
    assert failed(again) == {} and changed_here(again) == {}


def test_btrfs_a_file_limit_fails_naming_its_pillar_path(btrfs, keys, btrfs_converged):
    data = btrfs_pillar(keys, BTRFS_ALICE, quota={"defaults": {"inodes_hard": 500}})
    results = by_id(apply(btrfs, data, "test=True"))
    bad = {k: v["comment"] for k, v in results.items() if v["result"] is False}
    assert set(bad) == {"webarch-alice-quota", "webarch-bob-quota"}, bad
    for comment in bad.values():
        assert "webarch:quota:defaults:inodes_hard is 500" in comment, comment
        assert "no soft limit, grace period or file count" in comment


def test_btrfs_an_older_plain_home_fails_saying_how_and_the_howto_converts_it(
    btrfs, keys, btrfs_converged
):
    btrfs.run(["sh", "-c", "mkdir -m 0750 /home/carol && echo kept > /home/carol/note"], check=True)
    data = btrfs_pillar(keys, BTRFS_ALICE, carol={})
    results = by_id(apply(btrfs, data))
    bad = {k: v["comment"] for k, v in results.items() if v["result"] is not True}
    howto = bad.pop("webarch-carol-home-subvolume")
    assert "is a plain directory, not a subvolume" in howto, howto
    # The others' states only wait for carol's (sshd's configuration, her cron...).
    assert all("carol" in k or "requisite failed" in v for k, v in bad.items()), bad
    assert btrfs.run(["cat", "/home/carol/note"], check=True).stdout == "kept\n"
    # The how-to's commands, as the sysadmin would type them (carol has no binds yet).
    binds = "binds of it (nsenter --mount=/run/webarch/ns/chroots findmnt -R /chroots/carol), then "
    commands = howto.split(binds)[1].split("; run")[0]
    btrfs.run(["sh", "-ec", commands], check=True)
    ret = apply(btrfs, data)
    assert failed(ret) == {}
    btrfs.run(["btrfs", "subvolume", "show", "/home/carol"], check=True)
    assert btrfs.run(["cat", "/home/carol/note"], check=True).stdout == "kept\n"
    btrfs.run(["rm", "-rf", "/home/carol.old"], check=True)
