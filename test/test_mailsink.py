"""End-to-end: the SMTP sink of testhost.mailsink catches mail inside a test host.

Sends with Python's smtplib and with Exim (Debian's smarthost configuration) inside the
host and reads back what the sink stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testhost import Host
from testhost.mailsink import MailSink, MailSinkError, make_tls

pytestmark = pytest.mark.e2e

#: A message with 8-bit UTF-8, a byte that is no UTF-8, and lines smtplib must dot-stuff.
RAW_8BIT = (
    b"From: Sender <sender@example.org>\r\n"
    b"To: rcpt@example.net\r\n"
    b"Subject: 8bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b".leading dot\r\n"
    b"latin-1 byte: \xe9\r\n"
)

#: One SMTP dialog, command by command; prints [command, reply] pairs as JSON.
_DIALOG_SCRIPT = r"""
import json, socket, sys
commands = json.loads(sys.argv[1])
out = []
with socket.create_connection(("127.0.0.1", 2525), timeout=5) as conn:
    f = conn.makefile("rb")
    def reply():
        lines = []
        while True:
            line = f.readline().decode()
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return lines
    out.append([None, reply()])
    for command in commands:
        conn.sendall(command.encode() + b"\r\n")
        out.append([command, reply()])
print(json.dumps(out))
"""


def smtp_send(host: Host, code: str) -> None:
    """Run Python code in the host with ``smtp`` = an smtplib.SMTP to the sink."""
    script = "import smtplib\nwith smtplib.SMTP('127.0.0.1', 2525) as smtp:\n" + "".join(
        f"    {line}\n" for line in code.splitlines()
    )
    proc = host.run(["python3", "-c", script], timeout=60)
    assert proc.returncode == 0, proc.stderr


def dialog(host: Host, *commands: str) -> list[tuple[str | None, list[str]]]:
    """Speak raw SMTP to the sink in the host: [(command, reply lines)]."""
    proc = host.run(["python3", "-c", _DIALOG_SCRIPT, json.dumps(commands)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [(command, lines) for command, lines in json.loads(proc.stdout)]


@pytest.fixture(scope="module")
def host(image: Path) -> Iterator[Host]:
    """A plain test host (no formula) for this module."""
    with Host("wa-mailsink", image, formula_dir=None) as running:
        yield running


@pytest.fixture(scope="module")
def sink(host: Host) -> Iterator[MailSink]:
    """The sink, started once; each test clears it."""
    mailsink = MailSink(host)
    started = time.monotonic()
    mailsink.start()
    print(f"\nsmtpsink up in {time.monotonic() - started:.2f}s")
    yield mailsink
    mailsink.stop()


@pytest.fixture
def empty(sink: MailSink) -> MailSink:
    """The running sink without messages."""
    if not sink.is_running():
        sink.start()
    sink.clear()
    return sink


def test_dialog(empty):
    replies = dialog(
        empty.host,
        "MAIL FROM:<a@example.org>",
        "EHLO client.example",
        "STARTTLS",
        "AUTH PLAIN AGFAYg==",
        "VRFY root",
        "RCPT TO:<b@example.org>",
        "DATA",
        "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME",
        "MAIL FROM:<a@example.org>",
        "RSET",
        "MAIL FROM:<a@example.org> SIZE=999999999999",
        "NOOP",
        "HELO old.example",
        "FOO bar",
        "QUIT",
    )
    codes = {command: lines[-1][:3] for command, lines in replies}
    greeting = replies[0][1]
    assert greeting[0].startswith("220 wa-mailsink ")
    assert codes["MAIL FROM:<a@example.org>"] == "503"  # also the nested MAIL
    ehlo = dict(replies)["EHLO client.example"]
    assert ehlo[0].startswith("250-wa-mailsink")
    assert all(line.startswith("250-") for line in ehlo[:-1]) and ehlo[-1].startswith("250 ")
    keywords = {line[4:].split()[0] for line in ehlo[1:]}
    assert {"8BITMIME", "SIZE"} <= keywords
    assert not {"STARTTLS", "AUTH"} & keywords
    assert codes["STARTTLS"] == codes["AUTH PLAIN AGFAYg=="] == codes["VRFY root"] == "500"
    assert codes["FOO bar"] == "500"
    assert codes["RCPT TO:<b@example.org>"] == "503"  # no MAIL yet
    assert codes["DATA"] == "503"
    assert codes["MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME"] == "250"
    assert codes["RSET"] == codes["NOOP"] == codes["HELO old.example"] == "250"
    assert codes["MAIL FROM:<a@example.org> SIZE=999999999999"] == "552"
    assert codes["QUIT"] == "221"
    assert empty.messages() == []


def test_message_is_stored_with_envelope_and_headers(empty):
    smtp_send(
        empty.host,
        "from email.message import EmailMessage\n"
        "msg = EmailMessage()\n"
        "msg['From'] = 'Alice <alice@example.org>'\n"
        "msg['To'] = 'bob@example.net, carol@example.net'\n"
        "msg['Subject'] = 'Hello from the test host'\n"
        "msg['X-Webarch-Test'] = 'yes'\n"
        "msg.set_content('first line\\nsecond line\\n')\n"
        "smtp.send_message(msg, from_addr='bounce@example.org',"
        " to_addrs=['bob@example.net', 'dave@example.com'])\n",
    )
    (msg,) = empty.wait_for(1, timeout=10)
    assert msg["mail_from"] == "bounce@example.org"
    assert msg["rcpt_tos"] == ["bob@example.net", "dave@example.com"]
    assert msg["peer"] == "127.0.0.1"
    assert msg["received_at"].endswith("+00:00")
    assert msg["data"].endswith("first line\r\nsecond line\r\n")
    assert "\r\n\r\n" in msg["data"] and "\n" not in msg["data"].replace("\r\n", "")
    email = msg["message"]
    assert email["Subject"] == "Hello from the test host"
    assert email["From"].addresses[0].addr_spec == "alice@example.org"
    assert [a.addr_spec for a in email["To"].addresses] == [
        "bob@example.net",
        "carol@example.net",
    ]
    assert email["X-Webarch-Test"] == "yes"
    assert email.get_content() == "first line\nsecond line\n"


def test_eight_bit_body_and_dot_lines_survive(empty):
    smtp_send(
        empty.host,
        f"smtp.sendmail('sender@example.org', ['rcpt@example.net'], {RAW_8BIT!r},"
        " mail_options=['BODY=8BITMIME'])",
    )
    (msg,) = empty.wait_for(1, timeout=10)
    assert "BODY=8BITMIME" in msg["mail_options"]
    assert msg["data"].encode("utf-8", "surrogateescape") == RAW_8BIT
    assert "Grüße aus Köln\r\n.\r\n..two dots\r\n.leading dot\r\n" in msg["data"]
    body = msg["message"].get_content()
    assert body.startswith("Grüße aus Köln\n.\n..two dots\n.leading dot\nlatin-1 byte: ")


def test_messages_are_sorted_and_cleared(empty):
    for i in range(3):
        smtp_send(
            empty.host,
            f"smtp.sendmail('s@example.org', ['r{i}@example.net'], 'Subject: {i}\\r\\n\\r\\nx')",
        )
    found = empty.wait_for(3, timeout=10)
    assert [m["message"]["Subject"] for m in found] == ["0", "1", "2"]
    assert [m["received_at"] for m in found] == sorted(m["received_at"] for m in found)
    assert found[0]["data"] == "Subject: 0\r\n\r\nx\r\n"  # smtplib ends the last line
    empty.clear()
    assert empty.messages() == []
    assert not empty.host.run(["sh", "-c", f"ls -A {empty.directory} | grep ."]).stdout


def test_wait_for_times_out_with_diagnostics(empty):
    started = time.monotonic()
    with pytest.raises(MailSinkError, match=r"0 of 1 messages .*sink running: True"):
        empty.wait_for(1, timeout=0.5)
    assert time.monotonic() - started < 10


def test_stop_refuses_connections_and_restart_keeps_messages(empty):
    smtp_send(empty.host, "smtp.sendmail('a@example.org', ['b@example.net'], 'Subject: kept')")
    empty.wait_for(1, timeout=10)
    empty.stop()
    assert not empty.is_running()
    probe = empty.probe()
    assert probe.returncode == 1 and "Connection refused" in probe.stdout
    assert [m["message"]["Subject"] for m in empty.messages()] == ["kept"]
    empty.start()
    assert empty.is_running()
    smtp_send(empty.host, "smtp.sendmail('a@example.org', ['b@example.net'], 'Subject: new')")
    found = empty.wait_for(2, timeout=10)
    assert [m["message"]["Subject"] for m in found] == ["kept", "new"]
    assert "webarch-test-smtpsink.service" not in empty.host.failed_units()


#: smtplib inside the host against the demanding sink on 127.0.0.3:2526: $1 is the CA.
_SECURE_SCRIPT = r"""
import json, smtplib, ssl, sys
ca, out = sys.argv[1], {}
def by_login():
    return smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
def code(call):
    try:
        return call()[0]
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
with smtplib.SMTP("127.0.0.3", 2526, timeout=10) as smtp:
    smtp.ehlo("client.example")
    out["clear"] = sorted(smtp.esmtp_features)
    out["mail_in_clear"] = code(lambda: smtp.docmd("MAIL FROM:<a@example.org>"))
    out["auth_in_clear"] = code(lambda: smtp.docmd("AUTH PLAIN AHUAcA=="))
    smtp.starttls(context=ssl.create_default_context(cafile=ca))
    smtp.ehlo("client.example")
    out["tls"] = sorted(smtp.esmtp_features)
    out["auth"] = smtp.esmtp_features.get("auth")
    out["mail_without_auth"] = code(lambda: smtp.docmd("MAIL FROM:<a@example.org>"))
    smtp.user, smtp.password = "relay@example.org", "wrong"
    out["wrong_plain"] = code(lambda: smtp.auth("PLAIN", smtp.auth_plain))
    out["wrong_login"] = code(by_login)
    smtp.password = "Pass:w0rd^x"
    out["login"] = code(by_login)
    smtp.sendmail("a@example.org", ["b@example.net"], "Subject: secure\r\n\r\nx\r\n")
with smtplib.SMTP("127.0.0.3", 2526, timeout=10) as smtp:
    smtp.starttls(context=ssl.create_default_context(cafile=ca))
    out["plain"] = code(lambda: smtp.login("relay@example.org", "Pass:w0rd^x"))
    smtp.sendmail("a@example.org", ["b@example.net"], "Subject: again\r\n\r\nx\r\n")
print(json.dumps(out))
"""


def test_a_relay_that_demands_starttls_then_auth(host, empty):
    tls = make_tls(host, "/run/wt-relay", ["127.0.0.3", "relay.example"])
    host.write_file("/run/wt-relay/users", "relay@example.org:Pass:w0rd^x\n", mode=0o600)
    relay = MailSink(
        host,
        address="127.0.0.3",
        port=2526,
        unit="webarch-test-smtpsink-tls",
        directory="/var/lib/wt-sink-tls",
        tls_cert=tls["cert"],
        tls_key=tls["key"],
        auth_file="/run/wt-relay/users",
    )
    relay.start()
    try:
        proc = host.run(["python3", "-c", _SECURE_SCRIPT, tls["ca"]], timeout=60)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert "starttls" in out["clear"] and "auth" not in out["clear"]
        assert out["mail_in_clear"] == 530 and out["auth_in_clear"] == 538
        assert "starttls" not in out["tls"] and out["auth"].split() == ["PLAIN", "LOGIN"]
        assert out["mail_without_auth"] == 530
        assert out["wrong_plain"] == out["wrong_login"] == 535
        assert out["login"] == out["plain"] == 235
        found = relay.wait_for(2, timeout=10)
        assert [m["message"]["Subject"] for m in found] == ["secure", "again"]
        assert {(m["auth"], m["tls"]) for m in found} == {("relay@example.org", "TLSv1.3")}
        events = [(e["event"], e.get("command") or e.get("mechanism"), e["ok"])
                  for e in relay.events()]  # fmt: skip
        assert events == [
            ("refused", "MAIL", False),
            ("refused", "AUTH", False),
            ("starttls", None, True),
            ("refused", "MAIL", False),
            ("auth", "PLAIN", False),
            ("auth", "LOGIN", False),
            ("auth", "LOGIN", True),
            ("starttls", None, True),
            ("auth", "PLAIN", True),
        ]
        # The relay keeps who logged in, never a password.
        leaks = host.run(["grep", "-rlF", "w0rd", relay.directory]).stdout
        assert leaks == ""
        relay.clear()
        assert relay.events() == [] and relay.messages() == []
    finally:
        relay.stop()


EXIM_SMARTHOST = r"""
set -eu
conf=/etc/exim4/update-exim4.conf.conf
sed -i -e "s/^dc_eximconfig_configtype=.*/dc_eximconfig_configtype='smarthost'/" \
       -e "s/^dc_smarthost=.*/dc_smarthost='$1'/" "$conf"
update-exim4.conf
systemctl restart exim4
"""


def exim_send(host: Host, raw: bytes) -> None:
    """Hand ``raw`` to Exim's sendmail in the host, delivered at once (-odi)."""
    cmd = ["/usr/sbin/sendmail", "-odi", "-f", "sender@example.org", "rcpt@example.net"]
    proc = host.run(cmd, input=raw.decode("utf-8", "surrogateescape"), timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_exim_smarthost_delivers_into_the_sink(host, empty):
    """Debian's smarthost router refuses a smarthost on an address Exim listens on itself
    ("remote host address is the local host": 127.0.0.1 here); 127.0.0.2 works.
    """
    other = MailSink(
        host, address="127.0.0.2", unit="webarch-test-smtpsink2", directory="/var/lib/wt-sink2"
    )
    other.start()
    try:
        host.run(["sh", "-c", EXIM_SMARTHOST, "sh", other.exim_smarthost], check=True)
        message = b"Subject: via exim\n\n.leading dot\nGr\xc3\xbc\xc3\x9fe\n"
        exim_send(host, message)
        (msg,) = other.wait_for(1, timeout=30)
        assert msg["mail_from"] == "sender@example.org"
        assert msg["rcpt_tos"] == ["rcpt@example.net"]
        assert msg["helo"] == "wa-mailsink"
        assert msg["message"]["Subject"] == "via exim"
        assert msg["message"]["Received"].startswith("from root by wa-mailsink with local")
        assert msg["data"].endswith("\r\n\r\n.leading dot\r\nGrüße\r\n")

        host.run(["sh", "-c", EXIM_SMARTHOST, "sh", empty.exim_smarthost], check=True)
        exim_send(host, b"Subject: to 127.0.0.1\n\nx\n")
        mainlog = host.read_file("/var/log/exim4/mainlog")
        assert "R=smarthost defer (-1): remote host address is the local host" in mainlog
        assert empty.messages() == []
    finally:
        other.stop()
        host.run(["sh", "-c", "exiqgrep -i | xargs -r exim4 -Mrm"])
