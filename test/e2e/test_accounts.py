"""Accounts as Unix users, converged by the real formula on a Debian test host."""

from __future__ import annotations

import pytest
import yaml
from e2e.helpers import apply, changed, failed, state_results
from testhost import Host

pytestmark = pytest.mark.e2e

# What a run may write outside the state it manages: Salt's own cache and logs,
# and what systemd and the services of a booted host touch on their own.
SNAPSHOT_CMD = r"""
set -e
getent passwd; getent group
dpkg-query -W -f '${Package} ${Version} ${Status}\n'
find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
  -o -path /var/cache/salt -o -path /var/log -o -path /var/lib/systemd \
  -o -path /var/tmp -o -path /srv/pillar -o -path '*/wp-content/uploads' \
  -o -path '/var/lib/mysql/*/*archive_*' \) -prune -o -printf '%p %m %u %g\n' | sort
find /etc /var/lib/webarch /home /chroots -xdev \( -path /etc/apache2/md \
  -o -path '*/home/*/logs' -o -path '*/wp-content/uploads' \) -prune \
  -o -type f -exec sha256sum {} + 2>/dev/null | sort
findmnt -rn -o TARGET,SOURCE,OPTIONS | grep -Ev '^/(sys|proc|dev)(/| )' | sort
"""


def snapshot(host: Host) -> list[str]:
    """Users, groups, packages, every file (with mode and owner) and mount on the host;
    the contents of all but mod_md's own store (its ACME jobs retry on their own) and the
    accounts' logs (their cron jobs, pillar.example's wp-cron every 15 minutes, write
    there on their own).  Left out too, as what runs on its own writes there: the
    WordPress sites' uploads (wp-cron makes the month's directory), Matomo's archive
    tables (its archiving job) and the container's own mounts under /sys, /proc, /dev."""
    return host.run(["bash", "-c", SNAPSHOT_CMD], check=True).stdout.splitlines()


def stat(host: Host, path: str) -> str:
    """``mode owner group`` of ``path`` on the host."""
    return host.run(["stat", "-c", "%a %U %G", path], check=True).stdout.strip()


def test_twenty_mistakes_are_reported_and_nothing_changes(host, twenty_mistakes):
    before = snapshot(host)
    ret = apply(host, twenty_mistakes)
    errors = ret["local"]
    assert isinstance(errors, list), "an invalid pillar must not compile"
    text = errors[0]
    assert "webarch pillar is invalid (20 problems); nothing was changed" in text
    assert text.count("\n  - webarch:") == 20
    for path in (
        "webarch:hostname:",
        "webarch:accounts:Bob: username must match ^[a-z][a-z0-9-]{1,30}$",
        "webarch:accounts:dave:sites:www:docroot:",
        "webarch:accounts:erin:sites:www:server_name:",
    ):
        assert f"\n  - {path}" in text
    after = snapshot(host)
    assert after == before, "an invalid pillar changed the host:\n" + "\n".join(
        sorted(set(after) ^ set(before))
    )


def test_test_mode_predicts_changes_and_changes_nothing(host, example_pillar):
    before = snapshot(host)
    ret = apply(host, example_pillar, "test=True")
    results = state_results(ret)
    predicted = {k for k, v in results.items() if v["result"] is None}
    assert "user_|-webarch-alice-user_|-alice_|-present" in predicted
    assert "file_|-webarch-bob-dir-home_|-/home/bob_|-directory" in predicted
    assert not [v for v in results.values() if v["result"] is False]
    assert snapshot(host) == before


def test_interrupted_run_reconverges(host, example_pillar):
    # A run cut short after alice's user was created (and the registry written)...
    host.set_pillar(example_pillar)
    partial = host.salt_call(["state.sls_id", "webarch-alice-user", "webarch.users"])
    assert failed(partial) == {}
    assert host.run(["getent", "passwd", "alice"]).returncode == 0
    assert host.run(["getent", "passwd", "bob"]).returncode != 0
    # ...is finished by the next full run, without complaints about alice.
    ret = apply(host, example_pillar)
    assert failed(ret) == {}
    assert "user_|-webarch-bob-user_|-bob_|-present" in changed(ret)
    assert "user_|-webarch-alice-user_|-alice_|-present" not in changed(ret)


def test_users_and_groups(host):
    passwd = host.run(["getent", "passwd", "alice", "bob", "carol-stats"]).stdout
    entries = {line.split(":")[0]: line.split(":") for line in passwd.splitlines()}
    assert set(entries) == {"alice", "bob", "carol-stats"}
    assert entries["alice"][2:4] == ["2001", "2001"]
    assert entries["alice"][4] == "Alice Fernandez"
    assert entries["alice"][5:] == ["/home/alice", "/bin/bash"]
    assert entries["carol-stats"][6] == "/bin/sh"
    group = host.run(["getent", "group", "alice"], check=True).stdout
    assert group.startswith("alice:x:2001:")
    # Without password logins the password is locked; bob may log in with one
    # and has an address: webarch generated his (and mailed it).
    shadow = host.run(["getent", "shadow", "alice"], check=True).stdout.split(":")
    assert shadow[1].startswith(("!", "*"))
    shadow = host.run(["getent", "shadow", "bob"], check=True).stdout.split(":")
    assert shadow[1].startswith("$y$") or shadow[1].startswith("$6$")
    assert host.exists("/home/bob/.notify_passwd")


def test_home_layout_and_modes(host):
    for user in ("alice", "bob", "carol-stats"):
        home = f"/home/{user}"
        assert stat(host, home) == f"750 root {user}"
        assert stat(host, f"{home}/sites") == f"2750 {user} www-data"
        assert stat(host, f"{home}/logs") == f"750 root {user}"
        assert stat(host, f"{home}/tmp") == f"700 {user} {user}"
        assert stat(host, f"{home}/private") == f"700 {user} {user}"
        assert stat(host, f"{home}/.ssh") == f"700 {user} {user}"
    assert stat(host, "/home/alice/sites/www/public") == "2750 alice www-data"
    assert stat(host, "/home/alice/sites/wiki") == "2750 alice www-data"
    assert stat(host, "/home/bob/sites/static") == "2750 bob www-data"
    assert stat(host, "/var/lib/webarch/managed-accounts") == "600 root root"


def test_account_cannot_change_its_home_but_can_use_it(host):
    def as_alice(cmd: str) -> int:
        return host.run(["runuser", "-u", "alice", "--", "bash", "-c", cmd]).returncode

    assert as_alice("chmod 0777 /home/alice") != 0
    assert as_alice("touch /home/alice/planted") != 0
    assert as_alice("rmdir /home/alice/logs") != 0
    assert as_alice("touch /home/alice/logs/fake.log") != 0
    assert as_alice("echo hi > /home/alice/sites/www/public/index.html") == 0
    assert as_alice("echo x > /home/alice/private/notes && cat /home/alice/private/notes") == 0
    # Other accounts cannot even look in.
    assert host.run(["runuser", "-u", "bob", "--", "ls", "/home/alice"]).returncode != 0


def test_second_run_changes_nothing(host, example_pillar):
    ret = apply(host, example_pillar)
    assert failed(ret) == {}
    assert changed(ret) == {}
    assert len(state_results(ret)) > 20


def test_manual_drift_is_repaired(host, example_pillar):
    host.run(["chmod", "0755", "/home/bob"], check=True)
    host.run(["rmdir", "/home/bob/private"], check=True)
    ret = apply(host, example_pillar)
    assert failed(ret) == {}
    assert set(changed(ret)) == {
        "file_|-webarch-bob-dir-home_|-/home/bob_|-directory",
        "file_|-webarch-bob-dir-private_|-/home/bob/private_|-directory",
    }
    assert stat(host, "/home/bob") == "750 root bob"


def test_absent_accounts_webarch_did_not_make_are_left_alone(host, example_pillar):
    host.run(["useradd", "-m", "legacy"], check=True)
    pillar = yaml.safe_load(yaml.safe_dump(example_pillar))
    pillar["webarch"]["accounts"]["legacy"] = {"state": "absent"}
    pillar["webarch"]["accounts"]["never-made"] = {"state": "absent"}
    before = snapshot(host)
    ret = apply(host, pillar)
    assert failed(ret) == {}
    assert changed(ret) == {}
    assert not any("legacy" in key or "never-made" in key for key in state_results(ret))
    assert snapshot(host) == before
    host.run(["userdel", "-r", "legacy"], check=True)


def test_unmanaged_user_is_never_taken_over(host, example_pillar):
    host.run(["useradd", "-m", "mallory"], check=True)
    pillar = yaml.safe_load(yaml.safe_dump(example_pillar))
    pillar["webarch"]["accounts"]["mallory"] = {"email": "m@mallory.example"}
    before = snapshot(host)
    ret = apply(host, pillar)
    assert isinstance(ret["local"], list)
    assert (
        "webarch:accounts:mallory: username 'mallory' clashes with existing user" in ret["local"][0]
    )
    assert snapshot(host) == before
