"""Disk quotas: limits from pillar on the file system of the homes, seen from the chroots.

The test host gets an ext4 file system of its own at /home (testhost.homefs:
an image on a loop device of this machine, with the device node and nspawn's
``quotactl`` allowed).  With a kernel that can mount ext4 with quotas (Debian's
can: CONFIG_QFMT_V2) it has journaled user quotas on, and the tests prove the
limits; with one that cannot, /home is a plain ext4 on the loop device and only
the tests of a file system without quotas run (the others are skipped, saying
why).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import apply, changed, failed, state_results
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
    with Host(name="wa-quota", image=image, formula_dir=repo, home_fs=home_fs) as running:
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
    return host.run(
        ["chroot", f"--userspec={user}:{user}", f"/chroots/{user}", "/bin/sh", "-c", script]
    )


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
    assert not [k for k in results if k.endswith("-quota_|-limits")]


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
    quota_changes = {k: v for k, v in changed(ret).items() if "-quota_|-limits" in k}
    assert list(quota_changes) == ["webarch_quota_|-webarch-alice-quota_|-alice_|-limits"]
    assert quota_changes[next(iter(quota_changes))] == {"blocks_hard": {"old": "8M", "new": "16M"}}
    assert " 16384 " in limits(converged, "alice")
    write = "dd if=/dev/zero of=/home/alice/private/big bs=1M count=12 2>&1; echo rc=$?"
    assert "rc=0" in as_account(converged, "alice", write).stdout
