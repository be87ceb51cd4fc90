"""Chrooted accounts: real ssh/sftp clients against the test host's sshd.

The clients are this machine's ssh and sftp, run in the test host's network
namespace only (``Host.net_run``): they reach sshd over TCP as a customer would.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import SSH_OPTS, apply, changed, failed, password_login, state_results
from testhost import Host

pytestmark = pytest.mark.e2e

ACCOUNTS = ("alice", "bob")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh ed25519 key pair per account, on this machine."""
    folder = tmp_path_factory.mktemp("keys")
    found = {}
    for user in ACCOUNTS:
        key = folder / user
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{user}@test", "-f", str(key)],
            check=True,
        )
        found[user] = key
    return found


def pillar_for(keys: dict[str, Path], **overrides: dict) -> dict:
    """Two accounts with keys; bob may also log in with a password."""
    accounts = {
        "alice": {
            "uid": 3001,
            "ssh_keys": [keys["alice"].with_suffix(".pub").read_text().strip()],
            "sites": {"www": {"server_name": "www.alice.example", "docroot": "public"}},
        },
        "bob": {
            "ssh_keys": [keys["bob"].with_suffix(".pub").read_text().strip()],
            "ssh_password": True,
            "sites": {"shop": {"server_name": "shop.bob.example"}},
        },
    }
    for name, extra in overrides.items():
        accounts[name] = {**accounts[name], **extra}
    return {"webarch": {"accounts": accounts}}


@pytest.fixture(scope="module")
def converged(host: Host, keys: dict[str, Path]) -> Iterator[Host]:
    """The host with both accounts converged."""
    ret = apply(host, pillar_for(keys))
    assert failed(ret) == {}
    yield host


def ssh(host: Host, keys: dict[str, Path], user: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` over SSH as ``user``, logged in with the user's key."""
    args = ["ssh", "-i", str(keys[user]), "-o", "BatchMode=yes", *SSH_OPTS]
    return host.net_run([*args, f"{user}@127.0.0.1", command])


def ssh_ok(host: Host, keys: dict[str, Path], user: str, command: str) -> str:
    """Like ssh() but the command must succeed; returns its output."""
    result = ssh(host, keys, user, command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


#: Where webarch-chroots.service pins the chroots' mount namespace.
NAMESPACE = "/run/webarch/ns/chroots"
CHROOTS_FSTAB = "/etc/webarch/chroots.fstab"


def in_namespace(*argv: str) -> list[str]:
    """``argv`` run in the chroots' mount namespace."""
    return ["nsenter", f"--mount={NAMESPACE}", "--", *argv]


def host_mounts(host: Host, namespace: bool = True) -> set[str]:
    """The mount points under /chroots in the chroots' namespace (or PID 1's)."""
    cmd = ["findmnt", "-rn", "-o", "TARGET"]
    out = host.run(in_namespace(*cmd) if namespace else cmd, check=True).stdout
    return {line for line in out.splitlines() if line.startswith("/chroots/")}


def wanted_mounts(user: str) -> set[str]:
    """The mount points of ``user``'s chroot."""
    inside = ("usr", f"home/{user}", "tmp", "run/mysqld", "run/webarch-mail", "usr/sbin/exim4")
    return {f"/chroots/{user}/{m}" for m in (*inside, "proc")}


def test_second_run_changes_nothing(converged, keys):
    ret = apply(converged, pillar_for(keys))
    assert failed(ret) == {}
    assert changed(ret) == {}


def test_every_mount_is_there(converged):
    mounts = host_mounts(converged)
    for user in ACCOUNTS:
        assert wanted_mounts(user) <= mounts
    assert len(mounts) == 7 * len(ACCOUNTS)
    fstab = converged.read_file(CHROOTS_FSTAB)
    assert fstab.count("/chroots/alice/") == 7
    # None of them in PID 1's namespace (systemd's) nor in /etc/fstab.
    assert host_mounts(converged, namespace=False) == set()
    assert "/chroots/" not in converged.read_file("/etc/fstab")


def namespace_of(host: Host, pid: str) -> str:
    """The mount namespace of process ``pid`` (``mnt:[INODE]``)."""
    return host.run(["readlink", f"/proc/{pid}/ns/mnt"], check=True).stdout.strip()


def test_sshd_runs_in_the_chroots_namespace_and_admins_see_the_host(converged, tmp_path):
    pid = converged.run(["systemctl", "show", "-P", "MainPID", "ssh"], check=True).stdout.strip()
    pinned = converged.run(["stat", "-L", "-c", "mnt:[%i]", NAMESPACE], check=True).stdout.strip()
    assert namespace_of(converged, pid) == pinned
    assert namespace_of(converged, "1") != pinned
    # A mount made on the host after sshd started reaches its sessions.
    converged.run(["mkdir", "-p", "/mnt/late"], check=True)
    converged.run(["mount", "-t", "tmpfs", "late", "/mnt/late"], check=True)
    try:
        seen = converged.run(in_namespace("findmnt", "-rn", "-o", "SOURCE", "/mnt/late"))
    finally:
        converged.run(["umount", "/mnt/late"], check=True)
    assert seen.stdout.strip() == "late"


@pytest.mark.parametrize("user", ACCOUNTS)
def test_login_by_key_lands_in_the_chroot(converged, keys, user):
    other = next(u for u in ACCOUNTS if u != user)
    out = ssh_ok(converged, keys, user, "id -un; pwd; ls -A /home; cut -d: -f1 /etc/passwd")
    lines = out.split()
    assert lines[:3] == [user, f"/home/{user}", user], out
    assert sorted(lines[3:]) == sorted(["root", "www-data", user])
    assert other not in ssh_ok(
        converged, keys, user, "cat /etc/group; ls -R / 2>/dev/null | head -2000"
    )


@pytest.mark.parametrize("user", ACCOUNTS)
def test_shell_tools_work_in_the_chroot(converged, keys, user):
    site = "sites/www/public" if user == "alice" else "sites/shop"
    script = (
        f"cd ~/{site} && printf 'hello %s\\n' {user} > hello.txt && sed -i s/hello/hi/ hello.txt"
        " && tar czf ~/private/t.tgz hello.txt && rsync -a hello.txt ~/private/"
        ' && php -r \'echo posix_getpwuid(posix_geteuid())["name"], " ", getcwd(), PHP_EOL;\''
        " && command -v bash nano tar rsync mysql php awk >/dev/null && echo tools-ok"
    )
    out = ssh_ok(converged, keys, user, script)
    assert f"{user} /home/{user}/{site}" in out and "tools-ok" in out
    on_host = converged.read_file(f"/home/{user}/{site}/hello.txt")
    assert on_host == f"hi {user}\n"
    owner = converged.run(["stat", "-c", "%U", f"/home/{user}/private/t.tgz"], check=True)
    assert owner.stdout.strip() == user


def test_sftp_upload(converged, keys, tmp_path):
    local = tmp_path / "upload.txt"
    local.write_text("uploaded by sftp\n")
    args = ["sftp", "-i", str(keys["alice"]), *SSH_OPTS, "-b", "-", "alice@127.0.0.1"]
    batch = f"put {local} sites/www/public/upload.txt\nls sites/www/public\n"
    result = converged.net_run(args, input=batch)
    assert result.returncode == 0, result.stderr
    assert converged.read_file("/home/alice/sites/www/public/upload.txt") == "uploaded by sftp\n"
    stat = converged.run(["stat", "-c", "%U", "/home/alice/sites/www/public/upload.txt"])
    assert stat.stdout.strip() == "alice"


def test_other_accounts_processes_are_invisible(converged, keys):
    converged.run(["systemd-run", "--uid=bob", "--unit=bob-sleeper", "sleep", "300"], check=True)
    try:
        wait = "for i in $(seq 50); do pgrep -u bob -x sleep && exit; sleep 0.1; done; exit 1"
        on_host = converged.run(["sh", "-c", wait]).stdout.split()
        assert on_host, "control: bob's process runs on the host"
        seen = ssh_ok(converged, keys, "alice", "ps -eo user=,pid=,comm=; ls /proc")
        assert "bob" not in seen and "sleep" not in seen
        assert on_host[0] not in seen.split()
        assert "root" not in seen, "not even root's processes are visible"
    finally:
        converged.run(["systemctl", "stop", "bob-sleeper"])


def test_chroot_cannot_be_changed_by_its_account(converged, keys):
    for attempt in (
        "touch /etc/passwd",
        "touch /etc/new",
        "touch /usr/bin/new",
        "touch /new",
        "mkdir /home/new",
        "touch /home/alice/new",
        "chmod 777 /home/alice",
        "rm -f /dev/null",
        "echo x > /proc/1/comm",
    ):
        result = ssh(converged, keys, "alice", attempt)
        assert result.returncode != 0, attempt
    assert ssh(converged, keys, "alice", "touch ~/private/control").returncode == 0


def test_password_logins_follow_the_switch(converged, tmp_path):
    for user in ACCOUNTS:
        converged.run(["chpasswd"], input=f"{user}:Correct-Horse-9\n", check=True)
    assert password_login(converged, "bob", "Correct-Horse-9", tmp_path) == 0
    assert password_login(converged, "bob", "wrong-password", tmp_path) != 0
    assert password_login(converged, "alice", "Correct-Horse-9", tmp_path) != 0


def test_no_forwarding(converged, keys):
    args = ["ssh", "-i", str(keys["alice"]), "-o", "BatchMode=yes", *SSH_OPTS]
    tunnel = converged.net_run([*args, "-W", "127.0.0.1:22", "alice@127.0.0.1"], timeout=30)
    assert tunnel.returncode != 0
    assert "SSH-2.0" not in tunnel.stdout


def release(host: Host) -> int:
    """The host's Debian major release."""
    return int(host.read_file("/etc/debian_version").split(".")[0])


def sshd_settings(host: Host, *match: str) -> dict[str, str]:
    """``sshd -T`` (for a connection described by ``match``, as ``-C`` takes it)."""
    cmd = ["sshd", "-T", *(["-C", ",".join(match)] if match else [])]
    out = host.run(cmd, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


KEX = ["curve25519-sha256", "curve25519-sha256@libssh.org"]
KEX_FIXED_GROUPS = ["diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512"]
CIPHERS = (
    "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
    "aes256-ctr,aes192-ctr,aes128-ctr"
)
MACS = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com"


def test_sshd_runs_with_the_hardened_settings(converged):
    hybrids = (
        ["mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"]
        if release(converged) >= 13
        else ["sntrup761x25519-sha512@openssh.com"]
    )
    settings = sshd_settings(converged)
    assert settings["kexalgorithms"] == ",".join(hybrids + KEX + KEX_FIXED_GROUPS)
    assert settings["ciphers"] == CIPHERS
    assert settings["macs"] == MACS
    hostkeys = settings["hostkeyalgorithms"].split(",")
    assert "ssh-rsa" not in hostkeys and "ssh-rsa-cert-v01@openssh.com" not in hostkeys
    assert {"ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"} <= set(hostkeys)
    expected = {
        "maxauthtries": "3",
        "loglevel": "VERBOSE",
        "logingracetime": "30",
        "maxstartups": "10:30:60",
        "x11forwarding": "no",
        "permituserenvironment": "no",
        # What lynis (test_lynis) asks for, for everyone.
        "maxsessions": "2",
        "clientaliveinterval": "300",
        "clientalivecountmax": "2",
        "tcpkeepalive": "no",
        "compression": "no",
        "allowtcpforwarding": "no",
        "allowagentforwarding": "no",
    }
    assert {key: settings[key] for key in expected} == expected
    # The accounts: no forwarding of any kind; root (the host's admins): as Debian has it.
    alice = sshd_settings(converged, "user=alice", "host=client", "addr=127.0.0.1")
    assert alice["disableforwarding"] == "yes"
    assert alice["chrootdirectory"] in ("/chroots/%u", "/chroots/alice")
    assert (alice["allowtcpforwarding"], alice["maxsessions"]) == ("no", "2")
    root = sshd_settings(converged, "user=root", "host=client", "addr=127.0.0.1")
    assert (root["disableforwarding"], root["chrootdirectory"]) == ("no", "none")
    assert root["permitrootlogin"] == "without-password"
    admin = {
        key: root[key] for key in ("allowtcpforwarding", "allowagentforwarding", "maxsessions")
    }
    assert admin == {
        "allowtcpforwarding": "yes",
        "allowagentforwarding": "yes",
        "maxsessions": "10",
    }


#: SSH_OPTS without its LogLevel=ERROR: ssh says why it gave up at INFO
#: (and the first LogLevel given wins over -vv).
TALKATIVE_OPTS = [
    word
    for pair in zip(SSH_OPTS[::2], SSH_OPTS[1::2], strict=True)
    if not pair[1].startswith("LogLevel=")
    for word in pair
]


def server_offer(host: Host) -> dict[str, list[str]]:
    """What sshd offers a client (its KEXINIT, as ``ssh -vv`` logs it)."""
    args = ["ssh", "-vv", "-o", "BatchMode=yes", *TALKATIVE_OPTS]
    out = host.net_run([*args, "nobody@127.0.0.1", "true"], timeout=30).stderr
    offer = out.split("peer server KEXINIT proposal", 1)[1]
    found = {}
    for line in offer.splitlines()[1:8]:
        name, _, value = line.removeprefix("debug2: ").partition(": ")
        found[name] = [
            item for item in value.split(",") if not item.startswith(("ext-info-", "kex-strict-"))
        ]
    return found


def test_sshd_offers_only_modern_algorithms(converged):
    offer = server_offer(converged)
    print(json.dumps(offer, indent=1))
    assert "curve25519-sha256" in offer["KEX algorithms"]
    assert not [a for a in offer["KEX algorithms"] if "sha1" in a or a.startswith("ecdh-")]
    assert offer["ciphers ctos"] == offer["ciphers stoc"] == CIPHERS.split(",")
    assert offer["MACs ctos"] == offer["MACs stoc"] == MACS.split(",")
    # Signatures by the host's keys: no ssh-rsa (SHA-1), no NIST curve (ssh-audit).
    assert set(offer["host key algorithms"]) == {"rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519"}


@pytest.fixture
def forgiven(converged: Host) -> Iterator[None]:
    """After a test whose connections fail on purpose, sshd forgets them.

    OpenSSH 9.8 and later (Debian 13) refuse a source address for a while once
    its connections failed too often (``PerSourcePenalties``): the next tests
    come from the same 127.0.0.1.
    """
    yield
    # (reset-failed: so many restarts would hit the unit's start limit.)
    converged.run(["systemctl", "reset-failed", "ssh"])
    converged.run(["systemctl", "restart", "ssh"], check=True)


@pytest.mark.usefixtures("forgiven")
@pytest.mark.parametrize(
    "option",
    [
        "KexAlgorithms=diffie-hellman-group14-sha1",
        "KexAlgorithms=diffie-hellman-group-exchange-sha1",
        "KexAlgorithms=ecdh-sha2-nistp256",
        "Ciphers=aes128-cbc",
        "Ciphers=3des-cbc",
        "MACs=hmac-sha2-256",
        "MACs=hmac-sha1-etm@openssh.com",
        "HostKeyAlgorithms=ssh-rsa",
    ],
)
def test_weak_ssh_clients_are_refused(converged, keys, option):
    args = ["ssh", "-i", str(keys["alice"]), "-o", "BatchMode=yes", *TALKATIVE_OPTS]
    # A MAC matters only with a cipher that has none of its own.
    cipher = ["-o", "Ciphers=aes128-ctr"] if option.startswith("MACs") else []
    result = converged.net_run([*args, "-o", option, *cipher, "alice@127.0.0.1", "id -un"])
    assert result.returncode != 0 and "alice" not in result.stdout
    assert "no matching" in result.stderr, result.stderr
    # The same client with its defaults logs in.
    assert ssh_ok(converged, keys, "alice", "id -un").strip() == "alice"


@pytest.mark.usefixtures("forgiven")
def test_three_wrong_keys_end_the_connection(converged, keys, tmp_path):
    wrong = []
    for index in range(3):
        key = tmp_path / f"wrong{index}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        wrong += ["-i", str(key)]
    args = ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", *TALKATIVE_OPTS]
    right = ["-i", str(keys["alice"]), "alice@127.0.0.1", "id -un"]
    # Two wrong keys, then the right one: in.
    result = converged.net_run([*args, *wrong[:4], *right])
    assert result.stdout.strip() == "alice", result.stderr
    # Three wrong keys: sshd hangs up before the right one is tried.
    result = converged.net_run([*args, *wrong, *right])
    assert result.returncode != 0 and "alice" not in result.stdout
    assert "Too many authentication failures" in result.stderr, result.stderr


def test_root_keeps_its_key_login(converged, tmp_path):
    """The host's admins log in as before: root by key, not chrooted, not limited."""
    key = tmp_path / "root"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = "/root/.ssh/authorized_keys"
    before = converged.run(["cat", path]).stdout
    converged.run(["install", "-d", "-m", "0700", "/root/.ssh"], check=True)
    converged.write_file(path, before + key.with_suffix(".pub").read_text(), mode=0o600)
    try:
        args = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]
        result = converged.net_run([*args, *SSH_OPTS, "root@127.0.0.1", "id -un; ls -d /chroots"])
    finally:
        if before:
            converged.write_file(path, before, mode=0o600)
        else:
            converged.run(["rm", "-f", path], check=True)
    assert result.stdout.split() == ["root", "/chroots"], result.stderr


def test_mounts_come_back_after_reboot(converged, keys):
    converged.reboot()
    mounts = host_mounts(converged)
    for user in ACCOUNTS:
        assert wanted_mounts(user) <= mounts, sorted(mounts)
    assert "/run/mysqld" in ssh_ok(converged, keys, "alice", "findmnt -rn -o TARGET /run/mysqld")
    assert ssh_ok(converged, keys, "bob", "pwd").strip() == "/home/bob"


def test_a_mount_removed_by_hand_is_restored_and_reported(converged, keys):
    # /usr and the sendmail bind inside it.
    converged.run(in_namespace("umount", "-R", "/chroots/alice/usr"), check=True)
    assert ssh(converged, keys, "alice", "true").returncode != 0, "no shell without /usr"
    ret = apply(converged, pillar_for(keys))
    assert failed(ret) == {}
    assert sorted(changed(ret)) == [
        "webarch_mount_|-webarch-alice-mount-sendmail_|-/chroots/alice/usr/sbin/exim4_|-mounted",
        "webarch_mount_|-webarch-alice-mount-usr_|-/chroots/alice/usr_|-mounted",
    ]
    # Back as a slave of the host's /usr (fstab's option).
    propagation = converged.run(
        in_namespace("findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", "/chroots/alice/usr"),
        check=True,
    )
    assert "shared" not in propagation.stdout
    assert ssh_ok(converged, keys, "alice", "echo back").strip() == "back"


def test_a_shared_usr_bind_is_made_a_slave_again(converged, keys):
    """A /usr bind that shares mount events with the host's /usr (as binds made
    before webarch asked for ``slave`` did) would pass the sendmail bind on to
    the host's /usr and every chroot: the run makes it a slave, once."""
    usr = "/chroots/alice/usr"
    converged.run(in_namespace("mount", "--make-shared", usr), check=True)
    ret = apply(converged, pillar_for(keys))
    assert failed(ret) == {}
    key = f"webarch_mount_|-webarch-alice-mount-usr_|-{usr}_|-mounted"
    assert changed(ret) == {key: {"propagation": "shared -> slave"}}
    propagation = converged.run(
        in_namespace("findmnt", "-n", "-o", "PROPAGATION", "--mountpoint", usr), check=True
    )
    assert "shared" not in propagation.stdout
    assert changed(apply(converged, pillar_for(keys))) == {}


#: The chroots' skeletons as the host's namespace shows them (no mounts there).
SKELETON = "find /chroots -printf '%p %m %u\\n'"


def test_bad_ssh_input_is_refused_before_anything_changes(converged, keys):
    pillar = pillar_for(keys, alice={"ssh_keys": ["ssh-ed25519 AAAAnotakey alice"]})
    pillar["webarch"]["chroot_base"] = "/home/chroots"
    before = converged.run(
        ["sh", "-c", f"cat /etc/fstab {CHROOTS_FSTAB} /etc/passwd; {SKELETON}"]
    ).stdout
    ret = apply(converged, pillar)
    errors = ret["local"]
    assert isinstance(errors, list)
    assert "webarch:chroot_base: '/home/chroots' must not be inside /home" in errors[0]
    assert "webarch:accounts:alice:ssh_keys:0: key data" in errors[0]
    after = converged.run(
        ["sh", "-c", f"cat /etc/fstab {CHROOTS_FSTAB} /etc/passwd; {SKELETON}"]
    ).stdout
    assert after == before


def test_removed_account_is_archived_first(converged, keys, tmp_path):
    listing = (
        "cd /home/bob && find . -printf '%P|%y|%m|%U|%G|%s|%l\\n' | sort"
        " && find . -type f -print0 | sort -z | xargs -0 sha256sum"
    )
    converged.run(["runuser", "-u", "bob", "--", "sh", "-c",
                   "mkdir -p ~/sites/shop/img && echo data > ~/sites/shop/img/a.txt"
                   " && ln -s img/a.txt ~/sites/shop/link && chmod 640 ~/sites/shop/img/a.txt"],
                  check=True)  # fmt: skip
    before = converged.run(["sh", "-c", listing], check=True).stdout
    assert "sites/shop/img/a.txt" in before
    uid = converged.run(["id", "-u", "bob"], check=True).stdout.strip()
    limits = f"/etc/systemd/system/user-{uid}.slice.d/50-webarch-limits.conf"
    assert converged.exists(limits)
    ret = apply(converged, pillar_for(keys, bob={"state": "absent"}))
    assert failed(ret) == {}
    assert "webarch_archive_|-webarch-bob-archive-home_|-bob_|-home_archived" in changed(ret)
    assert converged.run(["getent", "passwd", "bob"]).returncode != 0
    assert converged.run(["getent", "group", "bob"]).returncode != 0
    assert not converged.exists("/home/bob") and not converged.exists("/chroots/bob")
    assert not any(m.startswith("/chroots/bob/") for m in host_mounts(converged))
    assert "/chroots/bob/" not in converged.read_file(CHROOTS_FSTAB)
    assert "bob" not in converged.read_file("/var/lib/webarch/managed-accounts").split()
    # Nothing of his limits or PHP-FPM units is left for a later user of his uid.
    assert not converged.exists(limits)
    assert not converged.exists("/etc/systemd/system/webarch-php@bob.service.d")
    assert not converged.exists("/etc/systemd/system/sockets.target.wants/webarch-php@bob.socket")
    archives = converged.run(["sh", "-c", "ls /var/backups/webarch/bob-*.tar.gz"]).stdout.split()
    assert len(archives) == 1
    stat = converged.run(["stat", "-c", "%a %U", archives[0]], check=True).stdout.strip()
    assert stat == "600 root"
    converged.run(["sh", "-c", f"mkdir -p /root/restore && tar -xpzf {archives[0]} -C /root/restore"
                   " && mv /root/restore/bob /home/bob-restored"], check=True)  # fmt: skip
    restored = converged.run(["sh", "-c", listing.replace("/home/bob", "/home/bob-restored")])
    assert restored.stdout == before
    # alice is untouched, and a further run has nothing left to do.
    assert ssh_ok(converged, keys, "alice", "id -un").strip() == "alice"
    again = apply(converged, pillar_for(keys, bob={"state": "absent"}))
    assert failed(again) == {} and changed(again) == {}
    assert not [k for k in state_results(again) if "bob" in k]
