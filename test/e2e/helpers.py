"""Helpers for end-to-end tests: reading salt-call state results."""

from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testhost import Host
from testhost.mailsink import MailSink

SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
]  # fmt: skip

#: Enters the chroots' mount namespace (webarch-chroots.service), where the
#: accounts' chroots have their mounts: put before a ``chroot`` command.
CHROOTS_NS = ["nsenter", "--mount=/run/webarch/ns/chroots", "--"]


def password_login(host: Host, user: str, password: str, tmp_path: Path) -> int:
    """Try a password-only SSH login from outside; return ssh's exit status."""
    askpass = tmp_path / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    env = {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    args = ["ssh", *SSH_OPTS, "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"]
    return host.net_run([*args, f"{user}@127.0.0.1", "true"], env=env).returncode


def state_results(ret: dict) -> dict:
    """The per-state results of a salt-call --out=json state run.

    Fails the test with the render errors when the run did not compile.
    """
    local = ret["local"]
    assert isinstance(local, dict), "state run did not compile:\n" + "\n".join(local)
    return local


def failed(ret: dict) -> dict:
    """The states of a run whose result is not True, with their comments."""
    return {k: v["comment"] for k, v in state_results(ret).items() if v["result"] is not True}


def changed(ret: dict) -> dict:
    """The states of a run that reported changes."""
    return {k: v["changes"] for k, v in state_results(ret).items() if v["changes"]}


def apply(host: Host, pillar: dict, *args: str) -> dict:
    """Install ``pillar`` on the host and run ``state.apply webarch``."""
    host.set_pillar(pillar)
    return host.salt_call(["state.apply", "webarch", *args])


#: The relay host of the mail tests: a network namespace inside the test host,
#: joined by a veth pair.  (Exim refuses a smarthost on one of its own
#: addresses, loopback included: a relay is another machine.)
RELAY_NETNS = "relay"
RELAY_ADDRESS = "10.250.0.2"
RELAY_SCRIPT = f"""
set -e
ip netns list | grep -qw {RELAY_NETNS} && exit 0
ip netns add {RELAY_NETNS}
ip link add relay0 type veth peer name relay1
ip link set relay1 netns {RELAY_NETNS}
ip addr add 10.250.0.1/30 dev relay0
ip link set relay0 up
ip -n {RELAY_NETNS} addr add {RELAY_ADDRESS}/30 dev relay1
ip -n {RELAY_NETNS} link set relay1 up
ip -n {RELAY_NETNS} link set lo up
"""


@dataclass
class RelaySink(MailSink):
    """The SMTP sink on the relay host (see RELAY_NETNS): Exim's smarthost in tests."""

    address: str = RELAY_ADDRESS
    netns: str = RELAY_NETNS

    def command(self) -> list[str]:
        """The sink's command, run in the relay's network namespace."""
        return ["ip", "netns", "exec", self.netns, *super().command()]


def relay_sink(host: Host, **options: Any) -> RelaySink:
    """Make the relay host (once) and start its SMTP sink (``options``: see MailSink)."""
    host.run(["sh", "-c", RELAY_SCRIPT], check=True)
    sink = RelaySink(host, **options)
    sink.start()
    return sink


def relayed(pillar: dict, sink: RelaySink) -> dict:
    """A copy of ``pillar`` whose Exim relays through ``sink`` (mails are seen there)."""
    data = copy.deepcopy(pillar)
    data["webarch"]["mail"] = {"smarthost": sink.exim_smarthost}
    return data


def files_containing(host: Host, needles: set[str], *paths: str) -> list[str]:
    """Files under ``paths`` on the host holding any of ``needles`` (binary files too)."""
    args = [arg for needle in sorted(needles) for arg in ("-e", needle)]
    out = host.run(["grep", "-rlaF", *args, "--", *paths])
    assert out.returncode in (0, 1), out.stderr
    return out.stdout.split()


def pool_socket(host: Host, account: str) -> str:
    """The real path of ``account``'s PHP-FPM socket (a keyed name), from its Apache config."""
    conf = f"/etc/apache2/sites-available/webarch-{account}.conf"
    found = re.findall(r"unix:(/run/php/webarch-[0-9a-f]+\.sock)", host.read_file(conf))
    assert found, conf
    return found[0]


PASSWORD_RE = re.compile(r"password: (\S+)")


def password_in(mail: dict) -> str:
    """The password a notification mail (as stored by the SMTP sink) brings."""
    match = PASSWORD_RE.search(mail["message"].get_content())
    assert match, mail["message"].get_content()
    return match.group(1)


def mariadb_login(host: Host, user: str, password: str) -> subprocess.CompletedProcess:
    """Log in to MariaDB as ``user`` by password (as root: unix_socket cannot match)."""
    cmd = ["mariadb", "-u", user, "--batch", "--skip-column-names", "-e", "SELECT CURRENT_USER()"]
    return host.run(["env", f"MYSQL_PWD={password}", *cmd])
