"""Catch the mail a test host sends: an SMTP sink inside the host (``smtpsink.py``).

The sink runs as the transient unit ``webarch-test-smtpsink.service`` (default address
127.0.0.1:2525) and stores every message it is given as a JSON file; point Exim's
smarthost at it and read what arrived::

    sink = MailSink(host, address="127.0.0.2")  # default 127.0.0.1; Exim: see below
    sink.start()
    ...  # dc_smarthost='127.0.0.2::2525' (sink.exim_smarthost), then send mail
    (msg,) = sink.wait_for(1)
    assert msg["rcpt_tos"] == ["alice@example.org"]
    assert msg["message"]["Subject"] == "hello"
    body = msg["message"].get_content()
    sink.clear()
    sink.stop()  # stored messages stay (start() again lists them)

Facts this relies on:

* The sink accepts every envelope and never relays; it announces SIZE, 8BITMIME and
  PIPELINING but neither STARTTLS nor AUTH, so Exim's smarthost transport sends in clear
  without authentication.
* A sink made with ``tls_cert``/``tls_key`` and ``auth_file`` is a relay as real ones are
  run: it offers and *demands* STARTTLS, then AUTH PLAIN/LOGIN (see ``smtpsink.py``);
  :func:`make_tls` writes a test CA and a certificate for it, ``auth_file`` holds
  ``USER:PASSWORD`` lines.  Each stored message says how it came (``tls``: the TLS
  version, ``auth``: the user); :meth:`MailSink.events` lists the STARTTLS handshakes,
  AUTH attempts (user and outcome, never a password) and refused commands.
* Messages are files ``<dir>/<nanoseconds>-<n>.json`` written atomically (temp file, then
  rename); ``data`` is the message as received after dot-unstuffing, CRLF included.
* Exim refuses a smarthost on an address it listens on itself: Debian's smarthost router
  defers with "remote host address is the local host" (the message is frozen) for
  ``127.0.0.1::2525`` as long as ``dc_local_interfaces`` has 127.0.0.1 (the default).
  Use ``MailSink(host, address="127.0.0.2")`` (any 127/8 address is on ``lo``) and
  ``dc_smarthost='127.0.0.2::2525'`` (:attr:`MailSink.exim_smarthost`), or ``self = send``
  on that router.
* A transient unit is gone after a reboot of the host: call start() again then.
"""

from __future__ import annotations

import email.policy
import json
import subprocess
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

from .host import Host, HostError

#: The standalone server copied into the host.
SCRIPT = Path(__file__).with_name("smtpsink.py")

#: Tries one SMTP connection to $1:$2; exit 0 if it got a 220 greeting.
_PROBE_SCRIPT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as conn:
        conn.settimeout(2)
        greeting = conn.recv(512)
        conn.sendall(b"QUIT\r\n")
        conn.recv(512)
except OSError as exc:
    print(exc)
    sys.exit(1)
sys.exit(0 if greeting.startswith(b"220") else 2)
"""

#: Writes a test CA ($1/ca.pem) and a key pair for names $2... signed by it ($1/cert.pem,
#: $1/key.pem) unless they are there; names that are IPv4 addresses become IP names.
_TLS_SCRIPT = r"""
set -eu
dir=$1; shift
mkdir -p "$dir"
cd "$dir"
[ -s ca.pem ] && [ -s cert.pem ] && [ -s key.pem ] && exit 0
umask 077
san=
for name in "$@"; do
    case $name in
        *[!0-9.]*) san="$san${san:+,}DNS:$name" ;;
        *) san="$san${san:+,}IP:$name" ;;
    esac
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days 30 -subj "/CN=webarch test relay CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout key.pem -out cert.csr -subj "/CN=$1" 2>/dev/null
printf '%s\n' "subjectAltName=$san" 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' > cert.ext
openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -set_serial 1 -days 30 \
    -extfile cert.ext -out cert.pem 2>/dev/null
rm -f cert.csr cert.ext ca.key
chmod 644 ca.pem cert.pem
"""

#: Prints a JSON list of all stored messages of directory $1 (each with its "file" name).
_DUMP_SCRIPT = r"""
import glob, json, os, sys
out = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    try:
        with open(path, encoding="ascii") as f:
            record = json.load(f)
    except FileNotFoundError:  # cleared meanwhile
        continue
    record["file"] = os.path.basename(path)
    out.append(record)
json.dump(out, sys.stdout)
"""


class MailSinkError(HostError):
    """The SMTP sink did not come up, or the expected mail did not arrive in time."""


def make_tls(host: Host, directory: str, names: list[str]) -> dict[str, str]:
    """Make (once) a test CA and a certificate for ``names`` in ``directory`` of the host.

    Returns the paths in the host: ``ca`` (the CA certificate, to trust), ``cert`` and
    ``key`` (for :class:`MailSink`'s ``tls_cert`` and ``tls_key``).  The CA's key is
    deleted: nothing else can be signed with it.
    """
    host.run(["sh", "-c", _TLS_SCRIPT, "sh", directory, *names], check=True)
    return {kind: f"{directory}/{kind}.pem" for kind in ("ca", "cert", "key")}


@dataclass
class MailSink:
    """The SMTP sink of one test host (see the module docstring)."""

    host: Host
    port: int = 2525
    address: str = "127.0.0.1"
    directory: str = "/var/lib/webarch-test/sink"
    script_path: str = "/usr/local/lib/webarch-test/smtpsink.py"
    unit: str = "webarch-test-smtpsink"
    #: PEM files in the host: offer and require STARTTLS (see :func:`make_tls`).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: ``USER:PASSWORD`` lines in the host: offer and require AUTH.
    auth_file: str | None = None

    @property
    def exim_smarthost(self) -> str:
        """The sink as an Exim smarthost (``dc_smarthost``): ``127.0.0.1::2525``."""
        return f"{self.address}::{self.port}"

    def command(self) -> list[str]:
        """The command line of the sink inside the host."""
        options = {
            "--host": self.address,
            "--port": str(self.port),
            "--dir": self.directory,
            "--tls-cert": self.tls_cert,
            "--tls-key": self.tls_key,
            "--auth-file": self.auth_file,
        }
        args = [arg for option, value in options.items() if value for arg in (option, value)]
        return ["/usr/bin/python3", self.script_path, *args]

    def start(self, timeout: float = 20.0) -> None:
        """Copy the script into the host, (re)start the unit, wait for the SMTP greeting."""
        self.host.write_file(self.script_path, SCRIPT.read_text(), mode=0o755)
        self._stop_unit()
        cmd = [
            "systemd-run",
            f"--unit={self.unit}",
            "--collect",
            "--quiet",
            "--property=Type=exec",
            f"--description=webarch test SMTP sink on {self.address}:{self.port}",
            *self.command(),
        ]
        proc = self.host.run(cmd)
        if proc.returncode != 0:
            raise MailSinkError(f"cannot start {self.unit}: {proc.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while True:
            probe = self.probe()
            if probe.returncode == 0:
                return
            if not self.is_running():
                raise MailSinkError(f"{self.unit} exited:\n{self.journal()}")
            if time.monotonic() > deadline:
                raise MailSinkError(
                    f"{self.unit}: no SMTP greeting on {self.address}:{self.port} after "
                    f"{timeout:.0f}s ({probe.stdout.strip()})\n{self.journal()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the sink; stored messages stay."""
        self._stop_unit()

    def is_running(self) -> bool:
        """Tell whether the unit is active."""
        return self.host.run(["systemctl", "is-active", "--quiet", self.unit]).returncode == 0

    def probe(self) -> subprocess.CompletedProcess[str]:
        """One SMTP connection attempt in the host (CompletedProcess; returncode 0: greeted)."""
        cmd = ["python3", "-c", _PROBE_SCRIPT, self.address, str(self.port)]
        return self.host.run(cmd, timeout=30)

    def messages(self) -> list[dict[str, Any]]:
        """All stored messages, oldest first.

        Each is the stored record (``mail_from``, ``rcpt_tos``, ``data``, ``received_at``,
        ``helo``, ``mail_options``, ``peer``, ``tls``, ``auth``) plus ``file`` (its name in the sink
        directory) and ``message``: ``data`` parsed as an :class:`EmailMessage`
        (``email.policy.default``, from the received bytes with CRLF turned into LF, so
        ``get_content()`` has ``\\n`` line ends).
        """
        proc = self.host.run(["python3", "-c", _DUMP_SCRIPT, self.directory], check=True)
        records: list[dict[str, Any]] = json.loads(proc.stdout)
        for record in records:
            raw = record["data"].encode("utf-8", "surrogateescape").replace(b"\r\n", b"\n")
            parser = BytesParser(policy=email.policy.default)
            record["message"] = cast(EmailMessage, parser.parsebytes(raw))
        records.sort(key=lambda r: (r["received_at"], r["file"]))
        return records

    def wait_for(self, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` messages are stored; return all of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise MailSinkError(
                    f"{len(found)} of {count} messages in {self.directory} after "
                    f"{timeout:.0f}s (sink running: {self.is_running()})\n{self.journal()}"
                    + self._exim_queue()
                )
            time.sleep(0.2)

    def events(self) -> list[dict[str, Any]]:
        """What the sink saw besides messages, oldest first (see ``smtpsink.py``)."""
        proc = self.host.run(["cat", f"{self.directory}/events.jsonl"])
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def clear(self) -> None:
        """Delete all stored messages and events."""
        script = 'rm -f -- "$1"/*.json "$1"/events.jsonl'
        self.host.run(["sh", "-c", script, "sh", self.directory], check=True)

    def journal(self, lines: int = 30) -> str:
        """The end of the unit's journal (for error messages)."""
        cmd = ["journalctl", "-u", self.unit, "-n", str(lines), "--no-pager", "-o", "cat"]
        return f"--- journal of {self.unit} ---\n" + self.host.run(cmd).stdout

    def _exim_queue(self) -> str:
        """Exim's queue listing, if Exim is installed (for error messages)."""
        proc = self.host.run(["sh", "-c", "command -v exim4 >/dev/null && exim4 -bp"])
        return f"\n--- exim4 -bp ---\n{proc.stdout}" if proc.returncode == 0 else ""

    def _stop_unit(self) -> None:
        """Stop the unit (if loaded) and forget a failed state."""
        self.host.run(["systemctl", "stop", self.unit])
        self.host.run(["systemctl", "reset-failed", self.unit])
