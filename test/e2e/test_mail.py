"""Mail from inside the chroots, and password notifications (masterless).

A real Exim on the test host relays through a smarthost that is an SMTP sink
on a relay next to the test host (e2e.helpers.relay_sink): what arrives there is what a
customer's recipient would get.  The relay is run as co-ops run theirs: it demands
STARTTLS (a certificate of a test CA the host trusts, for the relay's name) and then
AUTH with the host's login from the pillar.  Accounts send the way customers do: PHP's
mail() through their site over HTTPS, sendmail and msmtp in their SSH shell.
The master/reactor path is in test_notify_master.py.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from e2e.helpers import (
    RELAY_ADDRESS,
    RELAY_NETNS,
    SSH_OPTS,
    RelaySink,
    apply,
    changed,
    failed,
    files_containing,
    mariadb_login,
    password_in,
    password_login,
    relay_sink,
)
from testhost import Host
from testhost.mailsink import MailSink, make_tls

pytestmark = pytest.mark.e2e

HOSTNAME = "web1.coop.example"
NOTIFY_FROM = "hostmaster@coop.example"
#: Every state run's output in this module, searched for secrets at the end.
OUTPUTS: list[str] = []

#: The smarthost as the host knows it (its /etc/hosts), and the host's login there.
RELAY_NAME = "relay.coop.example"
RELAY_USER = "web1@coop.example"
RELAY_PASSWORD = "Rl-" + secrets.token_urlsafe(18)
WRONG_PASSWORD = "Wr-" + secrets.token_urlsafe(18)
#: The relay's own files (its key, its user list): another machine's, in real life.
RELAY_DIR = "/run/webarch-test-relay"
PASSWD_CLIENT = "/etc/exim4/passwd.client"


def converge(host: Host, pillar: dict) -> dict:
    """apply(), keeping the output for the secrets check."""
    ret = apply(host, pillar)
    OUTPUTS.append(str(ret) + host.last.stderr)
    return ret


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A key pair per account, on this machine."""
    folder = tmp_path_factory.mktemp("keys")
    found = {}
    for user in ("alice", "bob", "carol"):
        key = folder / user
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        found[user] = key
    return found


def mail_pillar(
    keys: dict[str, Path], sink: MailSink, relay_password: str = RELAY_PASSWORD, **resets: str
) -> dict:
    """alice: passwords mailed; bob: his own sender; carol: two messages an hour.

    Mail leaves through the relay, logged in (TLS required: the default with a login).
    """

    def key(user: str) -> list[str]:
        return [keys[user].with_suffix(".pub").read_text().strip()]

    return {
        "webarch": {
            "hostname": HOSTNAME,
            "admin_email": NOTIFY_FROM,
            "mail": {
                "smarthost": f"{RELAY_NAME}::{sink.port}",
                "smarthost_user": RELAY_USER,
                "smarthost_password": relay_password,
            },
            "notify": {
                "from_name": "Coop Hosting",
                "subject_tag": "[Coop]",
                "signature": "Coop Hosting, support@coop.example",
                "help_url": "https://coop.example/help/",
            },
            "accounts": {
                "alice": {
                    "fullname": "Alice Fernandez",
                    "email": "alice@alice.example",
                    "ssh_keys": key("alice"),
                    "ssh_password": True,
                    "db_password": True,
                    "databases": {"alice_app": None},
                    "resets": dict(resets),
                    "sites": {"www": {"type": "php", "server_name": "www.alice.example"}},
                },
                "bob": {
                    "email": "bob@bob.example",
                    "ssh_keys": key("bob"),
                    "mail": {"sender": "shop@bob.example"},
                    "sites": {"shop": {"type": "php", "server_name": "shop.bob.example"}},
                },
                "carol": {
                    "ssh_keys": key("carol"),
                    "mail": {"rate_limit": 2},
                    "outbound": {"deny_other": True},
                },
            },
        }
    }


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    """The smarthost: an SMTP sink on a relay host next to the test host, demanding
    STARTTLS and then AUTH as RELAY_USER.  The host trusts the relay's CA and finds
    it by name, as it would a real smarthost."""
    tls = make_tls(host, RELAY_DIR, [RELAY_NAME])
    auth_file = f"{RELAY_DIR}/users"
    host.write_file(auth_file, f"{RELAY_USER}:{RELAY_PASSWORD}\n", mode=0o600)
    ca = "/usr/local/share/ca-certificates/webarch-test-relay.crt"
    host.run(["cp", tls["ca"], ca], check=True)
    host.run(["update-ca-certificates"], check=True)
    host.run(["sh", "-c", f"echo '{RELAY_ADDRESS} {RELAY_NAME}' >> /etc/hosts"], check=True)
    return relay_sink(host, tls_cert=tls["cert"], tls_key=tls["key"], auth_file=auth_file)


@pytest.fixture(scope="module")
def mailhost(host: Host, sink: MailSink, keys: dict[str, Path]) -> Iterator[Host]:
    """The host converged with the three accounts; the first run's mail collected."""
    ret = converge(host, mail_pillar(keys, sink))
    assert failed(ret) == {}
    yield host


def ssh(
    host: Host, keys: dict[str, Path], user: str, command: str, **kw
) -> subprocess.CompletedProcess:
    """Run ``command`` in ``user``'s chroot over SSH, logged in by key."""
    args = ["ssh", "-i", str(keys[user]), "-o", "BatchMode=yes", *SSH_OPTS]
    return host.net_run([*args, f"{user}@127.0.0.1", command])


def notifications(sink: MailSink, to: str, kind: str) -> list[dict]:
    """The notification mails of ``kind`` (ssh or mariadb) that reached ``to``."""
    word = "SSH" if kind == "ssh" else "MariaDB"
    return [
        m
        for m in sink.messages()
        if m["rcpt_tos"] == [to] and f"Your new {word}" in str(m["message"]["Subject"])
    ]


def wait_quiet(sink: MailSink, count: int) -> list[dict]:
    """Wait for ``count`` messages, then make sure no more come."""
    found = sink.wait_for(count, timeout=30)
    assert len(found) == count, [m["message"]["Subject"] for m in found]
    return found


# --------------------------------------------------------------------------- notifications


def test_creating_the_account_mails_one_ssh_and_one_mariadb_password(mailhost, sink, tmp_path):
    sink.wait_for(2)
    ssh_mails = notifications(sink, "alice@alice.example", "ssh")
    db_mails = notifications(sink, "alice@alice.example", "mariadb")
    assert len(ssh_mails) == 1 and len(db_mails) == 1
    mail = ssh_mails[0]
    assert mail["mail_from"] == NOTIFY_FROM
    assert str(mail["message"]["From"]) == f"Coop Hosting <{NOTIFY_FROM}>"
    assert str(mail["message"]["Subject"]).startswith("[Coop] ")
    assert "https://coop.example/help/" in mail["message"].get_content()
    # Only alice has an address and passwords: bob and carol get none.
    assert {tuple(m["rcpt_tos"]) for m in sink.messages()} == {("alice@alice.example",)}
    ssh_password, db_password = password_in(mail), password_in(db_mails[0])
    assert ssh_password != db_password
    assert password_login(mailhost, "alice", ssh_password, tmp_path) == 0
    assert password_login(mailhost, "alice", ssh_password + "x", tmp_path) != 0
    assert mariadb_login(mailhost, "alice", db_password).stdout.strip() == "alice@localhost"
    assert mariadb_login(mailhost, "alice", ssh_password).returncode != 0


def test_applications_still_need_no_mariadb_password(mailhost, keys):
    out = ssh(mailhost, keys, "alice", "mariadb -N -e 'SELECT CURRENT_USER()'")
    assert out.stdout.strip() == "alice@localhost", out.stderr


def test_the_account_reads_where_its_passwords_went(mailhost, keys):
    for marker in (".notify_passwd", ".notify_mariadb"):
        path = f"/home/alice/{marker}"
        stat = mailhost.run(["stat", "-c", "%U:%G %a", path], check=True).stdout.split()
        assert stat == ["root:alice", "640"]
        text = ssh(mailhost, keys, "alice", f"cat {path}").stdout
        assert "was sent to a***@alice.example on " in text
    # The secrets left the spool once mailed; the ledger holds none.
    assert mailhost.run(["sh", "-c", "ls /var/lib/webarch/notify/spool"]).stdout == ""
    mode = mailhost.run(["stat", "-c", "%a", "/var/lib/webarch/notify"], check=True).stdout
    assert mode.strip() == "700"


def test_a_second_run_sends_nothing(mailhost, sink, keys):
    before = len(sink.messages())
    ret = converge(mailhost, mail_pillar(keys, sink))
    assert failed(ret) == {} and changed(ret) == {}
    assert len(sink.messages()) == before


def test_a_new_reset_token_mails_one_new_password(mailhost, sink, keys, tmp_path):
    old = password_in(notifications(sink, "alice@alice.example", "ssh")[-1])
    before = len(sink.messages())
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="2026-11-28"))
    assert failed(ret) == {}
    assert "webarch-alice-notify-ssh" in "".join(changed(ret))
    wait_quiet(sink, before + 1)
    new = password_in(notifications(sink, "alice@alice.example", "ssh")[-1])
    assert new != old
    assert password_login(mailhost, "alice", new, tmp_path) == 0
    assert password_login(mailhost, "alice", old, tmp_path) != 0
    # The same token again: nothing.
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="2026-11-28"))
    assert changed(ret) == {}
    assert len(sink.messages()) == before + 1


def test_deleting_the_marker_mails_one_new_password(mailhost, sink, keys):
    old = password_in(notifications(sink, "alice@alice.example", "mariadb")[-1])
    before = len(sink.messages())
    mailhost.run(["rm", "/home/alice/.notify_mariadb"], check=True)
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="2026-11-28"))
    assert failed(ret) == {}
    wait_quiet(sink, before + 1)
    new = password_in(notifications(sink, "alice@alice.example", "mariadb")[-1])
    assert mariadb_login(mailhost, "alice", new).returncode == 0
    assert mariadb_login(mailhost, "alice", old).returncode != 0
    assert mailhost.exists("/home/alice/.notify_mariadb")


def test_relay_down_nothing_lost_then_exactly_one_mail(mailhost, sink, keys, tmp_path):
    before = len(sink.messages())
    sink.stop()
    try:
        ret = converge(mailhost, mail_pillar(keys, sink, ssh="relay-down"))
        assert failed(ret) == {}  # the run completes
        queue = mailhost.run(["exim4", "-bpc"], check=True).stdout.strip()
        assert queue == "1"  # Exim holds the mail: nothing is lost
    finally:
        sink.start()
    assert len(sink.messages()) == before
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="relay-down"))
    assert failed(ret) == {}
    assert (
        "delivered"
        in changed(ret)[
            "webarch_notify_|-webarch-notify-queue_|-" + NOTIFY_FROM + "_|-queue_delivered"
        ]
    )
    wait_quiet(sink, before + 1)
    new = password_in(notifications(sink, "alice@alice.example", "ssh")[-1])
    assert password_login(mailhost, "alice", new, tmp_path) == 0
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="relay-down"))
    assert changed(ret) == {}
    assert len(sink.messages()) == before + 1


def test_mta_refusing_keeps_the_password_pending_until_it_can_send(mailhost, sink, keys, tmp_path):
    before = len(sink.messages())
    mailhost.run(["mv", "/usr/sbin/sendmail", "/usr/sbin/sendmail.off"], check=True)
    try:
        ret = converge(mailhost, mail_pillar(keys, sink, ssh="mta-broken"))
    finally:
        mailhost.run(["mv", "/usr/sbin/sendmail.off", "/usr/sbin/sendmail"], check=True)
    problems = failed(ret)
    assert list(problems) == ["webarch_notify_|-webarch-alice-notify-ssh_|-alice_|-password_sent"]
    assert "pending, not mailed yet" in next(iter(problems.values()))
    assert len(sink.messages()) == before
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="mta-broken"))
    assert failed(ret) == {}
    wait_quiet(sink, before + 1)
    new = password_in(notifications(sink, "alice@alice.example", "ssh")[-1])
    assert password_login(mailhost, "alice", new, tmp_path) == 0
    assert changed(converge(mailhost, mail_pillar(keys, sink, ssh="mta-broken"))) == {}


def test_a_run_interrupted_while_issuing_re_converges(mailhost, sink, keys, tmp_path):
    """As if the run died after spooling a new password, before it was put in place."""
    interrupted = "Interrupted9Password7xyz"
    script = (
        "import json; p='/var/lib/webarch/notify/ledger.json'; d=json.load(open(p));"
        "e=d['alice']['ssh']; e['state']='pending'; e['serial']+=1;"
        "json.dump(d, open(p, 'w'))"
    )
    mailhost.run(["python3", "-c", script], check=True)
    mailhost.write_file("/var/lib/webarch/notify/spool/alice.ssh", interrupted, mode=0o600)
    assert password_login(mailhost, "alice", interrupted, tmp_path) != 0
    before = len(sink.messages())
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="mta-broken"))
    assert failed(ret) == {}
    wait_quiet(sink, before + 1)
    assert password_in(notifications(sink, "alice@alice.example", "ssh")[-1]) == interrupted
    assert password_login(mailhost, "alice", interrupted, tmp_path) == 0
    assert changed(converge(mailhost, mail_pillar(keys, sink, ssh="mta-broken"))) == {}


# --------------------------------------------------------------------------- mail from the chroot


PHP_MAIL = """<?php
$headers = "From: Bob <shop@bob.example>\\r\\nX-Webarch-Test: crlf-ok";
$ok = mail('friend@example.net', 'php-mail-test', "line one\\nline two\\n", $headers,
           '-f shop@bob.example');
echo $ok ? "sent" : "failed";
"""


def test_php_mail_leaves_with_the_accounts_own_sender(mailhost, sink):
    mailhost.write_file("/home/alice/sites/www/mail.php", PHP_MAIL)
    mailhost.run(["chown", "alice:www-data", "/home/alice/sites/www/mail.php"], check=True)
    before = len(sink.messages())
    url = "https://www.alice.example/mail.php"
    out = mailhost.run(
        ["curl", "-sk", "--resolve", "www.alice.example:443:127.0.0.1", url], check=True
    )
    assert out.stdout == "sent"
    mail = sink.wait_for(before + 1)[-1]
    assert mail["mail_from"] == f"alice@{HOSTNAME}"
    assert mail["rcpt_tos"] == ["friend@example.net"]
    message = mail["message"]
    assert message["Subject"] == "php-mail-test"
    assert message["X-Webarch-Test"] == "crlf-ok"  # PHP 8's CRLF header lines arrive whole
    assert message.get_content().rstrip("\n") == "line one\nline two"
    # The From: header is alice's to choose, but Exim names the real sender.
    assert f"alice@{HOSTNAME}" in str(message["Sender"])


def test_sendmail_in_the_shell_cannot_take_another_sender(mailhost, sink, keys):
    before = len(sink.messages())
    script = (
        "printf 'To: friend@example.net\\nSubject: shell-mail-test\\n\\nhi\\n'"
        " | sendmail -t -f shop@bob.example"
    )
    out = ssh(mailhost, keys, "alice", f"PATH=/usr/sbin:$PATH; {script}")
    assert out.returncode == 0, out.stderr
    out = ssh(
        mailhost,
        keys,
        "bob",
        "printf 'Subject: bob-mail-test\\n\\nhi\\n' | /usr/sbin/sendmail friend@example.net",
    )
    assert out.returncode == 0, out.stderr
    mails = sink.wait_for(before + 2)[before:]
    senders = {str(m["message"]["Subject"]): m["mail_from"] for m in mails}
    assert senders == {"shell-mail-test": f"alice@{HOSTNAME}", "bob-mail-test": "shop@bob.example"}


def test_raw_smtp_from_the_shell_cannot_take_another_sender(mailhost, sink, keys):
    before = len(sink.messages())
    # msmtp pointed straight at the gate with bob's address as envelope sender.
    raw = (
        "printf 'Subject: raw-smtp-test\\n\\nhi\\n' | msmtp -C /dev/null --host=localhost"
        " --socket=/run/webarch-mail/submit.sock --from=shop@bob.example friend@example.net"
    )
    out = ssh(mailhost, keys, "alice", raw)
    assert out.returncode == 0, out.stderr
    mail = sink.wait_for(before + 1)[-1]
    assert mail["message"]["Subject"] == "raw-smtp-test"
    assert mail["mail_from"] == f"alice@{HOSTNAME}"
    # No SMTP listener on the loopback to talk to instead.
    tcp = ssh(mailhost, keys, "alice", "exec 3<>/dev/tcp/127.0.0.1/25 && echo connected")
    assert "connected" not in tcp.stdout


def test_a_mail_submission_runs_in_the_accounts_slice(mailhost, keys):
    """alice's SMTP session through the gate: its Exim in her slice, first for the OOM killer."""
    uid = mailhost.run(["id", "-u", "alice"], check=True).stdout.strip()
    hold = (
        'python3 -c "import socket, time; s = socket.socket(socket.AF_UNIX);'
        " s.connect('/run/webarch-mail/submit.sock'); print(s.recv(200).decode().split()[0]);"
        " time.sleep(6); s.sendall(b'QUIT\\r\\n')\""
    )
    probe = (
        "for p in $(pgrep -f '^/usr/sbin/exim4 -bs$'); do"
        " echo $p $(cat /proc/$p/oom_score_adj) $(cat /proc/$p/cgroup); done"
    )
    with ThreadPoolExecutor(1) as pool:
        session = pool.submit(ssh, mailhost, keys, "alice", hold)
        found = ""
        for _ in range(100):
            found = mailhost.run(["sh", "-c", probe]).stdout.strip()
            if found:
                break
            time.sleep(0.1)
        out = session.result(timeout=60)
    assert out.stdout.strip() == "220", out.stderr
    assert found.split()[1] == "500", found
    assert f"/user.slice/user-{uid}.slice/run-" in found, found


def test_each_account_has_its_own_mail_log(mailhost, sink, keys):
    sink.wait_for(1)
    # webarch-mail-log follows Exim's log; give it a moment.
    for _ in range(50):
        log = mailhost.run(["cat", "/home/alice/logs/mail.log"]).stdout
        if "friend@example.net" in log and "=>" in log:
            break
        mailhost.run(["sleep", "0.2"])
    assert f"<= alice@{HOSTNAME} U=alice" in log
    assert "friend@example.net" in log
    stat = mailhost.run(["stat", "-c", "%U:%G %a", "/home/alice/logs/mail.log"], check=True)
    assert stat.stdout.split() == ["root:alice", "640"]
    bob_log = mailhost.run(["cat", "/home/bob/logs/mail.log"]).stdout
    assert "U=alice" not in bob_log and "U=bob" in bob_log
    # alice reads hers from her chroot.
    assert "U=alice" in ssh(mailhost, keys, "alice", "cat ~/logs/mail.log").stdout


def test_the_hourly_limit_is_enforced_by_the_mta(mailhost, sink, keys):
    before = len(sink.messages())
    send = "printf 'Subject: limit-%s\\n\\nhi\\n' {n} | /usr/sbin/sendmail friend@example.net"
    results = [ssh(mailhost, keys, "carol", send.format(n=n)).returncode for n in range(3)]
    assert results[:2] == [0, 0] and results[2] != 0
    sink.wait_for(before + 2)
    mailhost.run(["sleep", "1"])
    assert len(sink.messages()) == before + 2
    for _ in range(50):
        log = mailhost.run(["cat", "/home/carol/logs/mail.log"]).stdout
        if "send limit" in log:
            break
        mailhost.run(["sleep", "0.2"])
    assert "send limit of 2 messages per hour reached" in log


def test_no_generated_password_in_state_output_or_logs(mailhost, sink):
    passwords = {
        password_in(m) for m in sink.messages() if "Your new" in str(m["message"]["Subject"])
    }
    assert len(passwords) >= 4
    # Salt's and Exim's logs, the minion's cache, webarch's ledger and spool,
    # the accounts' homes and logs, /etc; the journal; every state run's output.
    paths = ("/var/log", "/var/cache/salt", "/var/lib/webarch", "/etc", "/home")
    assert files_containing(mailhost, {"U=alice", '"state": "sent"'}, *paths)
    assert files_containing(mailhost, passwords, *paths) == []
    journal = mailhost.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    outputs = "\n".join(OUTPUTS)
    assert len(OUTPUTS) >= 8
    for password in passwords:
        assert password not in journal
        assert password not in outputs


def test_mail_to_an_account_reaches_its_holder(mailhost, sink):
    """ACCOUNT@hostname (where bounces of its own mail go) forwards to its email."""
    before = len(sink.messages())
    message = f"To: alice@{HOSTNAME}\nSubject: local-delivery-test\n\nhi\n"
    mailhost.run(["/usr/sbin/sendmail", "-t", "-oi"], input=message, check=True)
    mail = sink.wait_for(before + 1)[-1]
    assert mail["message"]["Subject"] == "local-delivery-test"
    assert mail["rcpt_tos"] == ["alice@alice.example"]


# --------------------------------------------------------------------------- the relay's login


def sendmail(host: Host, keys: dict[str, Path], subject: str) -> None:
    """bob sends one message to friend@example.net from his shell."""
    send = f"printf 'Subject: {subject}\\n\\nhi\\n' | /usr/sbin/sendmail friend@example.net"
    out = ssh(host, keys, "bob", send)
    assert out.returncode == 0, out.stderr


def deferred(host: Host, timeout: float = 30.0) -> str:
    """Wait until Exim has tried and deferred the one message in its queue: its log lines."""
    deadline = time.monotonic() + timeout
    while True:
        # `exim4 -bp`: "AGE SIZE ID <SENDER>" per message, then its recipients.
        queue = host.run(["exim4", "-bp"], check=True).stdout.splitlines()
        ids = [line.split()[2] for line in queue if line.rstrip().endswith(">")]
        log = host.run(["grep", "-F", ids[0], "/var/log/exim4/mainlog"]).stdout if ids else ""
        if len(ids) == 1 and " == " in log:
            return log
        assert time.monotonic() < deadline, (ids, log)
        time.sleep(0.2)


def test_every_mail_left_over_tls_logged_in(mailhost, sink):
    mails = sink.messages()
    assert len(mails) >= 10
    assert {m["auth"] for m in mails} == {RELAY_USER}
    assert all(m["tls"] in ("TLSv1.2", "TLSv1.3") for m in mails)
    events = sink.events()
    assert {(e["event"], e["ok"]) for e in events} == {("starttls", True), ("auth", True)}
    # Exim checked the relay's certificate, and logged in over TLS.
    deliveries = [
        line
        for line in mailhost.read_file("/var/log/exim4/mainlog").splitlines()
        if " => " in line and f"H={RELAY_NAME} " in line
    ]
    assert deliveries and all(" CV=yes " in line and " A=" in line for line in deliveries)
    options = mailhost.run(["exim4", "-bP", "transport", "remote_smtp_smarthost"], check=True)
    assert "hosts_require_tls = *" in options.stdout.splitlines()
    assert "hosts_require_auth = <; " in options.stdout


def test_a_relay_without_tls_gets_no_mail_and_no_password(mailhost, sink, keys):
    """An impostor at the relay's address that offers no STARTTLS and takes anything."""
    before, seen = len(sink.messages()), len(sink.events())
    impostor = dataclasses.replace(sink, tls_cert=None, tls_key=None, auth_file=None)
    impostor.start()  # in place of the relay
    try:
        sendmail(mailhost, keys, "no-tls-test")
        log = deferred(mailhost)
        assert "TLS" in log, log
        assert len(impostor.messages()) == before and len(sink.events()) == seen
    finally:
        impostor.stop()
        sink.start()
    mailhost.run(["exim4", "-qf"], check=True)
    mail = sink.wait_for(before + 1)[-1]
    assert mail["message"]["Subject"] == "no-tls-test"
    assert mail["auth"] == RELAY_USER and mail["tls"]
    assert mailhost.run(["exim4", "-bpc"], check=True).stdout.strip() == "0"


def test_a_wrong_relay_password_keeps_the_mail_queued(mailhost, sink, keys):
    before, seen = len(sink.messages()), len(sink.events())
    # (The tests above left alice's reset token at "mta-broken": no new password.)
    ret = converge(mailhost, mail_pillar(keys, sink, WRONG_PASSWORD, ssh="mta-broken"))
    assert failed(ret) == {}
    login = f"webarch_smarthost_|-webarch-mail-smarthost-login_|-{PASSWD_CLIENT}_|-login"
    assert changed(ret) == {login: {"login": f"{RELAY_USER} at {RELAY_NAME} (password not shown)"}}
    sendmail(mailhost, keys, "wrong-password-test")
    log = deferred(mailhost)
    assert "authentication required" in log, log
    events = sink.events()[seen:]
    assert ("starttls", True) in [(e["event"], e["ok"]) for e in events]
    tried = [e for e in events if e["event"] != "starttls"]
    # Logins refused, over TLS only; no MAIL without one: nothing was relayed.
    assert tried and all(e["event"] == "auth" and not e["ok"] and e["tls"] for e in tried)
    assert {e["user"] for e in tried} == {RELAY_USER}
    assert len(sink.messages()) == before
    # The right password again: the mail that waited leaves, logged in.
    ret = converge(mailhost, mail_pillar(keys, sink, ssh="mta-broken"))
    assert failed(ret) == {} and list(changed(ret)) == [login]
    mailhost.run(["exim4", "-qf"], check=True)
    mail = sink.wait_for(before + 1)[-1]
    assert mail["message"]["Subject"] == "wrong-password-test"
    assert mail["auth"] == RELAY_USER
    assert mailhost.run(["exim4", "-bpc"], check=True).stdout.strip() == "0"


def test_the_relay_password_is_only_in_its_root_only_file(mailhost):
    stat = mailhost.run(["stat", "-c", "%U:%G %a", PASSWD_CLIENT], check=True).stdout.split()
    assert stat == ["root:Debian-exim", "640"]
    lines = mailhost.read_file(PASSWD_CLIENT).splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        f"{RELAY_NAME}:{RELAY_USER}:{RELAY_PASSWORD}"
    ]
    # Each password (the wrong one too) as given, and as AUTH LOGIN and PLAIN send it.
    needles = set()
    for password in (RELAY_PASSWORD, WRONG_PASSWORD):
        for sent in (password, f"\0{RELAY_USER}\0{password}"):
            needles.add(base64.b64encode(sent.encode()).decode())
        needles.add(password)
    # All of /etc, /var (logs, Salt's caches, Exim's spool, ...), the homes, root's and
    # the temporary files; /run but for the relay's own files (and the namespace
    # handles: its network's, the chroots' mounts', which read as errors).  (The
    # pillar, in /srv/pillar, is where it comes from.)
    args = [arg for needle in sorted(needles) for arg in ("-e", needle)]
    where = ["/etc", "/var", "/home", "/root", "/tmp", "/run"]
    skip = ["-D", "skip", "--exclude-dir=webarch-test-relay", "--exclude-dir=netns",
            "--exclude-dir=ns"]  # fmt: skip
    cmd = ["grep", "-rlaF", *skip, *args, "--", *where]
    out = mailhost.run(cmd)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [PASSWD_CLIENT]
    journal = mailhost.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    outputs = "\n".join(OUTPUTS)
    for needle in needles:
        assert needle not in journal and needle not in outputs


#: A listener on the relay host: says hello on SMTP's ports and on 8080.
LISTENER = """
import selectors, socket
sel = selectors.DefaultSelector()
for port in (25, 465, 587, 8080):
    s = socket.create_server(('0.0.0.0', port))
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(b'220 listener\\r\\n')
        conn.close()
"""


def connects(host: Host, keys: dict[str, Path], user: str | None, port: int) -> str:
    """What ``user`` (its SSH session, in its chroot; None: root on the host) reads
    from the relay host's ``port``: the greeting, or why not."""
    probe = (f"timeout 5 bash -c 'exec 3<>/dev/tcp/{RELAY_ADDRESS}/{port} && head -c 12 <&3'"
             " 2>&1 || echo ' failed'")  # fmt: skip
    if user is None:
        return host.run(["bash", "-c", probe]).stdout
    return ssh(host, keys, user, probe).stdout


def test_smtp_leaves_only_through_the_hosts_exim(mailhost, keys):
    """alice's own SMTP connections to another server are refused (her mail goes
    through Exim: the tests above); her other connections are open; carol, with
    outbound:deny_other, opens none; root is not limited."""
    unit = "--unit=webarch-test-listener"
    mailhost.run(["systemd-run", unit, "ip", "netns", "exec", RELAY_NETNS,
                  "python3", "-c", LISTENER], check=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while "220 listener" not in connects(mailhost, keys, None, 8080):
        assert time.monotonic() < deadline, "the relay host's listener did not start"
        time.sleep(0.5)
    for port in (25, 465, 587):
        assert "220 listener" in connects(mailhost, keys, None, port), port
        answer = connects(mailhost, keys, "alice", port)
        assert "220" not in answer and "Connection refused" in answer, (port, answer)
    assert "220 listener" in connects(mailhost, keys, "alice", 8080)
    assert "220" not in connects(mailhost, keys, "carol", 8080)
    # The refusals are the formula's rule's (its counter), not a missing listener's.
    rules = mailhost.run(["nft", "list", "table", "inet", "webarch"], check=True).stdout
    counted = re.search(r"@accounts tcp dport \{ 25, 465, 587 \} counter packets (\d+)", rules)
    assert counted and int(counted.group(1)) >= 3, rules
