"""Brute-force bans with fail2ban (issue 21): SSH/SFTP, basic auth, WordPress, Matomo.

A fresh host converges pillar.example with short ban times and an allow list.
The clients are two network namespaces inside the host, each joined by a veth
pair (the harness itself reaches the host through nsenter, which a ban cannot
lock out): BAD fails its logins and is banned, OK (on the allow list) fails
as often and never is.  Six failed SSH password logins (two connections of
three tries: sshd's MaxAuthTries is 3), six wrong basic auth credentials, six
failed WordPress logins: the seventh connection is refused, and accepted again
once the ban time is over.  Requests and SSH user names crafted to write
another address into the logs (alice's access log shows it) ban nobody but
their sender; ``fail2ban-regex`` on the host takes only the real addresses
from the logs fail2ban reads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import quote

import pytest
from e2e.helpers import SSH_OPTS, apply, changed, failed
from testhost import Host

pytestmark = pytest.mark.e2e

#: The clients: a namespace each, its address, and the host's address it talks to.
CLIENTS = {"bad": ("10.251.0.2", "10.251.0.1"), "ok": ("10.251.0.6", "10.251.0.5")}
BAD = CLIENTS["bad"][0]
OK = CLIENTS["ok"][0]
#: Addresses the crafted lines try to get banned (never a client).
FORGED = ("192.0.2.77", "192.0.2.78", "192.0.2.79")
BANTIME = 30
NETNS_SCRIPT = """
set -e
for spec in bad:0 ok:4; do
  n=${spec%%:*}; o=${spec#*:}
  ip netns list | grep -qw "f2b-$n" && continue
  ip netns add "f2b-$n"
  ip link add "f2b-$n-h" type veth peer name "f2b-$n-c"
  ip link set "f2b-$n-c" netns "f2b-$n"
  ip addr add "10.251.0.$((o + 1))/30" dev "f2b-$n-h"
  ip link set "f2b-$n-h" up
  ip -n "f2b-$n" addr add "10.251.0.$((o + 2))/30" dev "f2b-$n-c"
  ip -n "f2b-$n" link set "f2b-$n-c" up
  ip -n "f2b-$n" link set lo up
done
printf '#!/bin/sh\\necho wrong-password\\n' > /root/f2b-askpass
chmod 700 /root/f2b-askpass
"""
JAILS = ("webarch-sshd", "webarch-basic-auth", "webarch-wordpress", "webarch-matomo")
WP = "www.alice.example"
AUTH_SITE = "bob.example"
STATS = "stats.coop.example"
FAKE_DATE = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())


@pytest.fixture(scope="module")
def pillar(example_pillar: dict) -> dict:
    data = {**example_pillar, "webarch": dict(example_pillar["webarch"])}
    data["webarch"]["fail2ban"] = {
        "maxretry": 6,
        "findtime": 600,
        "bantime": BANTIME,
        "ignoreip": [OK],
    }
    return data


@pytest.fixture(scope="module")
def first(host: Host, pillar: dict) -> dict:
    ret = apply(host, pillar)
    host.run(["sh", "-c", NETNS_SCRIPT], check=True)
    return ret


def in_client(host: Host, who: str, *cmd: str, **kw: object):
    """Run ``cmd`` in the host, from client ``who``'s network namespace."""
    return host.run(["ip", "netns", "exec", f"f2b-{who}", *cmd], **kw)


def ssh_tries(host: Host, who: str, user: str = "bob") -> str:
    """One SSH connection with three wrong passwords; ssh's stderr."""
    env = "SSH_ASKPASS=/root/f2b-askpass SSH_ASKPASS_REQUIRE=force DISPLAY=:0"
    args = [*SSH_OPTS, "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=3"]
    out = in_client(
        host, who, "env", *env.split(), "ssh", *args, "-l", user, CLIENTS[who][1], "true"
    )
    assert out.returncode == 255, out
    return out.stderr


def curl(host: Host, who: str, name: str, path: str, *args: str) -> str:
    """An HTTPS request from ``who`` to site ``name``: the status, or curl's failure."""
    target = CLIENTS[who][1]
    out = in_client(
        host, who, "curl", "-skg", "--max-time", "30", "--resolve", f"{name}:443:{target}",
        "-o", "/dev/null", "-w", "%{http_code}", *args, f"https://{name}{path}",
    )  # fmt: skip
    return out.stdout if out.returncode == 0 else f"curl exit {out.returncode}"


def banned(host: Host, jail: str) -> set[str]:
    """The addresses ``jail`` bans now."""
    out = host.run(["fail2ban-client", "status", jail], check=True).stdout
    found = re.search(r"Banned IP list:\s*(.*)", out)
    assert found, out
    return set(found.group(1).split())


def wait_for(what: Callable[[], bool], timeout: float, message: str) -> float:
    """Wait until ``what()`` holds; the seconds it took."""
    started = time.monotonic()
    while not what():
        assert time.monotonic() - started < timeout, message
        time.sleep(0.5)
    return time.monotonic() - started


def check_ban_and_lift(host: Host, jail: str, refused: Callable[[str], bool]) -> dict:
    """BAD is banned by ``jail`` (its next connection refused), OK never; the ban lifts."""
    try:
        wait_for(lambda: BAD in banned(host, jail), 60, f"{BAD} not banned by {jail}")
    except AssertionError:
        log = host.run(["sh", "-c", "tail -n 40 /var/log/fail2ban.log; journalctl -n 30"])
        raise AssertionError(f"{BAD} not banned by {jail}:\n{log.stdout}") from None
    # fail2ban lists the ban before its nftables action has run: wait for that.
    wait_for(lambda: refused("bad"), 30, f"{jail}: the banned client still gets through")
    assert not refused("ok"), f"{jail}: the allowed client is refused"
    assert OK not in banned(host, jail)
    lifted = wait_for(lambda: not refused("bad"), BANTIME + 30, f"{jail}: the ban never lifts")
    assert BAD not in banned(host, jail)
    return {"lifted_after": lifted}


def test_converges_with_the_jails_and_a_second_run_changes_nothing(host, pillar, first):
    assert failed(first) == {}
    assert host.run(["systemctl", "is-active", "fail2ban"]).stdout.strip() == "active"
    status = host.run(["fail2ban-client", "status"], check=True).stdout
    assert sorted(re.search(r"Jail list:\s*(.*)", status).group(1).split(", ")) == sorted(JAILS)
    again = apply(host, pillar)
    assert failed(again) == {} and changed(again) == {}
    # The formula's own nftables table is still there, untouched.
    assert "meta skuid @accounts" in host.run(["nft", "list", "table", "inet", "webarch"]).stdout


def test_the_logs_fail2ban_reads_are_root_only(host, first):
    for jail in JAILS[1:]:
        log = f"/var/log/apache2/webarch-ban-{jail.removeprefix('webarch-')}.log"
        stat = host.run(["stat", "-c", "%U:%G %a", log], check=True).stdout.split()
        assert stat == ["root:adm", "640"], log
        write = host.run(["setpriv", "--reuid=alice", "--regid=alice", "--clear-groups",
                          "sh", "-c", f"echo {FORGED[0]} >> {log}"])  # fmt: skip
        assert write.returncode != 0, log
    assert host.run(["stat", "-c", "%U:%G %a", "/var/log/apache2"]).stdout.split() == [
        "root:adm",
        "750",
    ]


def test_six_failed_ssh_logins_ban_the_address_until_its_time_is_over(host, first):
    # Three tries with a user name that writes another address into sshd's line.
    # The allowed client first (the ban time runs from BAD's sixth failure).
    for _ in range(2):
        assert "Connection refused" not in ssh_tries(host, "ok")
    forged_user = f"bob from {FORGED[0]} port 22 ssh2"
    ssh_tries(host, "bad", forged_user)
    ssh_tries(host, "bad")

    def refused(who: str) -> bool:
        return "Connection refused" in ssh_tries(host, who)

    check_ban_and_lift(host, "webarch-sshd", refused)
    # sshd wrote the forged address into its log; the filter took only the real one.
    assert FORGED[0] in host.run(["journalctl", "-u", "ssh", "--no-pager"]).stdout
    regex = host.run(["fail2ban-regex", "-o", "ip", "systemd-journal",
                      "/etc/fail2ban/filter.d/webarch-sshd.conf"], check=True)  # fmt: skip
    assert set(regex.stdout.split()) == {BAD, OK}, regex.stdout


def test_six_wrong_basic_auth_credentials_ban_the_address(host, first):
    for _ in range(8):
        assert curl(host, "ok", AUTH_SITE, "/", "-u", "staff:wrong") == "401"
    assert curl(host, "bad", AUTH_SITE, "/") == "401"  # no credentials: not a failure
    for i in range(6):
        user = "staff" if i % 2 else f"{FORGED[1]} - - [{FAKE_DATE}]"
        assert curl(host, "bad", AUTH_SITE, "/", "-u", f"{user}:wrong") == "401"

    def refused(who: str) -> bool:
        return curl(host, who, AUTH_SITE, "/", "-u", "staff:wrong") == "curl exit 7"

    check_ban_and_lift(host, "webarch-basic-auth", refused)


def test_six_failed_wordpress_logins_ban_the_address(host, first):
    # Crafted: the forged address in the path and the user agent, as alice's log shows.
    agent = f'{FORGED[2]} - - [{FAKE_DATE}] "POST /wp-login.php HTTP/1.1" 200'
    form = ["-d", "log=alice", "-d", "pwd=wrong", "-A", agent]
    forged = f"{FORGED[2]} [{FAKE_DATE}]"
    for _ in range(8):
        assert curl(host, "ok", WP, "/wp-login.php", *form) == "200"
    for i in range(6):
        path = "/wp-login.php" if i % 2 else "/wp-login.php?" + quote(forged, safe="/:[]")
        assert curl(host, "bad", WP, path, *form) == "200"
    assert FORGED[2] in host.read_file("/home/alice/logs/apache-access.log")

    def refused(who: str) -> bool:
        return curl(host, who, WP, "/wp-login.php", *form) == "curl exit 7"

    check_ban_and_lift(host, "webarch-wordpress", refused)


def test_xmlrpc_posts_and_a_failed_matomo_login_are_counted(host, first):
    assert curl(host, "bad", WP, "/xmlrpc.php", "-d", "<x/>") == "200"
    jar = ["-c", "/root/f2b-jar", "-b", "/root/f2b-jar"]
    resolve = f"{STATS}:443:{CLIENTS['bad'][1]}"
    page = in_client(host, "bad", "curl", "-sk", "--max-time", "60", *jar, "--resolve",
                     resolve, f"https://{STATS}/index.php?module=Login")  # fmt: skip
    nonce = re.search(r'name="form_nonce"[^>]*value="([0-9a-f]+)"', page.stdout)
    assert nonce, page.stdout[:500]
    # Matomo's failed login answers 403; the query is matched decoded (%4c = L).
    form = ["-d", "form_login=admin", "-d", "form_password=wrong", "-d", f"form_nonce={nonce[1]}"]
    assert curl(host, "bad", STATS, "/index.php?module=%4cogin", *jar, *form) == "403"
    for jail in ("webarch-wordpress", "webarch-matomo"):
        name = jail.removeprefix("webarch-")
        wait_for(
            lambda jail=jail: (
                "Currently failed:\t1" in host.run(["fail2ban-client", "status", jail]).stdout
            ),
            15,
            f"{jail} did not count the failure",
        )
        log = host.read_file(f"/var/log/apache2/webarch-ban-{name}.log")
        assert log.splitlines()[-1].startswith(f"{BAD} ["), log


def test_the_filters_take_only_the_address_apache_wrote(host, first):
    for jail in JAILS[1:]:
        name = jail.removeprefix("webarch-")
        regex = host.run(["fail2ban-regex", "-o", "ip", f"/var/log/apache2/webarch-ban-{name}.log",
                          f"/etc/fail2ban/filter.d/{jail}.conf"], check=True)  # fmt: skip
        assert set(regex.stdout.split()) <= {BAD, OK}, regex.stdout
        assert BAD in regex.stdout.split()
    # Lines crafted as a visitor could make them: only the first field counts.
    crafted = "\n".join(
        [
            f'{BAD} [{FAKE_DATE}] {WP} 200 "POST /wp-login.php?{FORGED[0]} HTTP/1.1"',
            f'{BAD} [{FAKE_DATE}] {WP} 200 "POST /{FORGED[1]} [{FAKE_DATE}] x HTTP/1.1"',
            f'{WP} {FORGED[2]} - - [{FAKE_DATE}] "POST /wp-login.php HTTP/1.1" 200',
        ]
    )
    host.write_file("/root/f2b-crafted.log", crafted + "\n")
    regex = host.run(["fail2ban-regex", "-o", "ip", "/root/f2b-crafted.log",
                      "/etc/fail2ban/filter.d/webarch-wordpress.conf"], check=True)  # fmt: skip
    assert regex.stdout.split() == [BAD, BAD], regex.stdout
    for jail in JAILS:
        assert not banned(host, jail) & set(FORGED), jail


def test_switched_off_fail2ban_stops(host, pillar, first):
    data = {**pillar, "webarch": {**pillar["webarch"], "fail2ban": {"enabled": False}}}
    ret = apply(host, data)
    assert failed(ret) == {}
    assert host.run(["systemctl", "is-active", "fail2ban"]).stdout.strip() == "inactive"
    assert host.run(["systemctl", "is-enabled", "fail2ban"]).stdout.strip() == "disabled"
    assert not host.exists("/etc/fail2ban/jail.d/webarch.local")
    again = apply(host, pillar)
    assert failed(again) == {}
    assert host.run(["systemctl", "is-active", "fail2ban"]).stdout.strip() == "active"
