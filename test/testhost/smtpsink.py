#!/usr/bin/python3
"""A tiny SMTP server that accepts every message and stores it as a JSON file.

Standalone, standard library only (runs on the test host's /usr/bin/python3: 3.11 on
Debian 12, 3.13 on Debian 13, which has no ``smtpd`` module any more)::

    python3 smtpsink.py --port 2525 --dir /var/lib/webarch-test/sink

It speaks enough ESMTP for Exim's smarthost transport: EHLO (SIZE, 8BITMIME, PIPELINING),
HELO, MAIL FROM, RCPT TO, DATA (dot-unstuffed), RSET, NOOP, QUIT; anything else is
answered with 500.  Each accepted message becomes ``<dir>/<ns>-<n>.json`` (written to a
temporary name first, then renamed: readers never see half a file)::

    {"mail_from": "a@example.org", "rcpt_tos": ["b@example.org"],
     "data": "Subject: ...\\r\\n\\r\\nbody\\r\\n", "received_at": "2025-...+00:00",
     "helo": "client.example", "mail_options": ["BODY=8BITMIME"], "peer": "127.0.0.1",
     "tls": null, "auth": null}

A relay as real ones are run (both optional; without them STARTTLS and AUTH are unknown
commands, answered with 500):

* ``--tls-cert FILE --tls-key FILE``: STARTTLS is offered and required: MAIL and AUTH
  before it are refused (530, 538).  ``tls`` of a message is the TLS version it came in.
* ``--auth-file FILE`` (lines ``USER:PASSWORD``): AUTH PLAIN and LOGIN are offered (only
  over TLS when TLS is on) and required: MAIL before a successful AUTH gets 530, wrong
  credentials 535.  ``auth`` of a message is the user it came from.

What the relay saw besides messages is appended to ``<dir>/events.jsonl``, one JSON
object a line: ``{"at", "peer", "event", "ok", ...}`` with event ``starttls`` (``error``
when the handshake failed), ``auth`` (``mechanism``, ``user``, ``tls``) or ``refused``
(``command``, ``reply``, ``tls``).  No password is ever written anywhere.

``data`` is the message exactly as received after dot-unstuffing, line endings included
(CRLF from a conforming client), without the final ``.`` line; bytes that are not UTF-8
are kept as lone surrogates (``surrogateescape``): ``data.encode("utf-8",
"surrogateescape")`` gives back the received bytes.  The program prints one line on
startup and nothing else (unexpected handler errors go to stderr).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime
import hmac
import itertools
import json
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from typing import Any

#: Largest message accepted (announced with the SIZE extension).
MAX_SIZE = 50 * 1024 * 1024
#: Longest command line read (RFC 5321 allows 512 octets; be lenient).
MAX_LINE = 64 * 1024
#: Seconds a client may stay silent before the connection is dropped.
IDLE_TIMEOUT = 300.0


class Sink(socketserver.ThreadingTCPServer):
    """The listening server: one thread per SMTP session."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        directory: str,
        hostname: str,
        tls: ssl.SSLContext | None = None,
        credentials: dict[str, str] | None = None,
    ) -> None:
        """Bind to ``address``; store messages in ``directory``; TLS and AUTH if given."""
        self.directory = directory
        self.hostname = hostname
        self.tls = tls
        self.credentials = credentials
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(address, Session)

    def check(self, user: str, password: str) -> bool:
        """Tell whether ``user`` and ``password`` are a known login (constant time)."""
        known = (self.credentials or {}).get(user)
        return known is not None and hmac.compare_digest(known.encode(), password.encode())

    def log_event(self, record: dict[str, Any]) -> None:
        """Append one event (never a password) to ``events.jsonl``."""
        record = {"at": datetime.datetime.now(datetime.UTC).isoformat(), **record}
        with self._lock, open(os.path.join(self.directory, "events.jsonl"), "a") as out:
            out.write(json.dumps(record, ensure_ascii=True) + "\n")

    def store(self, record: dict[str, Any]) -> str:
        """Write one message atomically; return the file name."""
        with self._lock:
            name = f"{time.time_ns():020d}-{next(self._counter):06d}.json"
        tmp = os.path.join(self.directory, f".{name}.tmp")
        with open(tmp, "w", encoding="ascii") as out:
            json.dump(record, out, ensure_ascii=True, indent=1)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, os.path.join(self.directory, name))
        return name

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report an unexpected error of a session in one line (no traceback spam)."""
        exc = sys.exc_info()[1]
        print(f"smtpsink: session {client_address}: {exc!r}", file=sys.stderr, flush=True)


class Session(socketserver.StreamRequestHandler):
    """One SMTP session."""

    timeout = IDLE_TIMEOUT
    server: Sink

    def setup(self) -> None:
        """Initialise the session state."""
        super().setup()
        self.helo: str | None = None
        self.tls_version: str | None = None
        self.user: str | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the current envelope (RSET, after a message, new HELO/EHLO)."""
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.rcpt_tos: list[str] = []

    def reply(self, *lines: str) -> None:
        """Send a (multi-line) reply: every line but the last gets ``-`` after the code."""
        out = []
        for i, line in enumerate(lines):
            code, text = line[:3], line[4:]
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{code}{sep}{text}\r\n")
        self.wfile.write("".join(out).encode("utf-8", "surrogateescape"))
        self.wfile.flush()

    def event(self, event: str, **data: Any) -> None:
        """Record what happened in this session (see the module docstring)."""
        self.server.log_event({"peer": self.client_address[0], "event": event, **data})

    def refuse(self, command: str, reply: str) -> None:
        """Refuse ``command`` with ``reply``, and record it."""
        self.event("refused", ok=False, command=command, reply=reply, tls=self.tls_version)
        self.reply(reply)

    def read_line(self) -> str | None:
        """The next command line without its line end; None when the client is gone."""
        raw = self.rfile.readline(MAX_LINE)
        if not raw:
            return None
        if not raw.endswith(b"\n"):
            self.reply("500 5.5.2 Line too long")
            return None
        return raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")

    def handle(self) -> None:
        """Greet, then answer commands until QUIT or the client goes away."""
        try:
            self.reply(f"220 {self.server.hostname} ESMTP webarch-test smtpsink")
            while True:
                line = self.read_line()
                if line is None:
                    return
                verb, _, arg = line.partition(" ")
                method = getattr(self, f"smtp_{verb.upper()}", None)
                if not verb.isalpha() or method is None:
                    self.reply("500 5.5.2 Error: command not recognized")
                    continue
                if method(arg.strip()) is False:
                    return
        except (ConnectionError, TimeoutError, ssl.SSLError):
            return

    def finish(self) -> None:
        """Close the files, and the TLS socket that replaced the server's one."""
        with contextlib.suppress(OSError):
            super().finish()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.close()

    def offers_auth(self) -> bool:
        """AUTH is offered once configured, and over TLS when TLS is on."""
        return self.server.credentials is not None and (
            self.server.tls is None or self.tls_version is not None
        )

    # ----------------------------------------------------------------- commands

    def smtp_EHLO(self, arg: str) -> None:
        """Greet with the extensions Exim looks at."""
        if not arg:
            self.reply("501 5.5.4 Syntax: EHLO hostname")
            return
        self.helo = arg
        self.reset()
        extensions = [f"250 SIZE {MAX_SIZE}", "250 8BITMIME", "250 PIPELINING"]
        if self.server.tls is not None and self.tls_version is None:
            extensions.append("250 STARTTLS")
        if self.offers_auth():
            extensions.append("250 AUTH PLAIN LOGIN")
        self.reply(f"250 {self.server.hostname} Hello {arg}", *extensions, "250 HELP")

    def smtp_HELO(self, arg: str) -> None:
        """Plain SMTP greeting."""
        if not arg:
            self.reply("501 5.5.4 Syntax: HELO hostname")
            return
        self.helo = arg
        self.reset()
        self.reply(f"250 {self.server.hostname}")

    def smtp_MAIL(self, arg: str) -> None:
        """MAIL FROM:<address> [parameters]."""
        if self.helo is None:
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.mail_from is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return
        if self.server.tls is not None and self.tls_version is None:
            self.refuse("MAIL", "530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.server.credentials is not None and self.user is None:
            self.refuse("MAIL", "530 5.7.0 Authentication required")
            return
        parsed = _path(arg, "FROM:")
        if parsed is None:
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        address, options = parsed
        for option in options:
            key, _, value = option.partition("=")
            if key.upper() == "SIZE" and value.isdigit() and int(value) > MAX_SIZE:
                self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
                return
        self.mail_from, self.mail_options = address, options
        self.reply("250 2.1.0 OK")

    def smtp_RCPT(self, arg: str) -> None:
        """RCPT TO:<address> [parameters]."""
        if self.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        parsed = _path(arg, "TO:")
        if parsed is None or not parsed[0]:
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        self.rcpt_tos.append(parsed[0])
        self.reply("250 2.1.5 OK")

    def smtp_DATA(self, arg: str) -> bool | None:
        """Read the message up to the lone dot, unstuff it, store it."""
        if arg:
            self.reply("501 5.5.4 Syntax: DATA")
            return None
        if self.mail_from is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return None
        if not self.rcpt_tos:
            self.reply("503 5.5.1 Error: need RCPT command")
            return None
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        chunks: list[bytes] = []
        size = 0
        while True:
            raw = self.rfile.readline(MAX_SIZE + 3)
            if not raw:
                return False  # client gone in the middle: nothing stored
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]
            size += len(raw)
            if size <= MAX_SIZE:
                chunks.append(raw)
        if size > MAX_SIZE:
            self.reset()
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size")
            return None
        record = {
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "data": b"".join(chunks).decode("utf-8", "surrogateescape"),
            "received_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds"),
            "helo": self.helo,
            "mail_options": list(self.mail_options),
            "peer": self.client_address[0],
            "tls": self.tls_version,
            "auth": self.user,
        }
        name = self.server.store(record)
        self.reset()
        self.reply(f"250 2.0.0 OK: queued as {name[:-5]}")
        return None

    def smtp_STARTTLS(self, arg: str) -> None:
        """Switch the connection to TLS (RFC 3207): the client greets again after it."""
        if self.server.tls is None:
            self.reply("500 5.5.2 Error: command not recognized")
            return
        if self.tls_version is not None:
            self.reply("503 5.5.1 Error: TLS already active")
            return
        self.reply("220 2.0.0 Ready to start TLS")
        try:
            conn = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self.event("starttls", ok=False, error=str(exc))
            raise ConnectionError("TLS handshake failed") from None
        self.connection = self.request = conn
        self.rfile = conn.makefile("rb")
        self.wfile = conn.makefile("wb")
        self.tls_version = conn.version()
        self.helo = None
        self.reset()
        self.event("starttls", ok=True, version=self.tls_version)

    def smtp_AUTH(self, arg: str) -> None:
        """AUTH PLAIN or LOGIN, with or without an initial response."""
        if self.server.credentials is None:
            self.reply("500 5.5.2 Error: command not recognized")
            return
        if not self.offers_auth():
            self.refuse("AUTH", "538 5.7.11 Encryption required for requested authentication")
            return
        if self.helo is None or self.user is not None or self.mail_from is not None:
            self.reply("503 5.5.1 Error: AUTH not allowed now")
            return
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            self.reply("504 5.5.4 Unrecognized authentication type")
            return
        login = self._auth_plain(initial) if mechanism == "PLAIN" else self._auth_login(initial)
        if login is None:
            return
        user, password = login
        ok = self.server.check(user, password)
        self.event("auth", ok=ok, mechanism=mechanism, user=user, tls=self.tls_version)
        if ok:
            self.user = user
            self.reply("235 2.7.0 Authentication successful")
        else:
            self.reply("535 5.7.8 Authentication credentials invalid")

    def _response(self, challenge: str, given: str = "") -> str | None:
        """A base64 answer of the client: ``given`` or the line after a 334 ``challenge``."""
        if not given:
            self.reply(f"334 {challenge}")
            given = self.read_line() or "*"
        if given == "*":
            self.reply("501 5.7.0 Authentication aborted")
            return None
        try:
            return base64.b64decode(given, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            self.reply("501 5.5.2 Cannot decode response")
            return None

    def _auth_plain(self, initial: str) -> tuple[str, str] | None:
        """RFC 4616: ``authzid NUL authcid NUL passwd``."""
        text = self._response("", initial)
        if text is None:
            return None
        parts = text.split("\0")
        if len(parts) != 3:
            self.reply("501 5.5.2 Malformed PLAIN response")
            return None
        return parts[1], parts[2]

    def _auth_login(self, initial: str) -> tuple[str, str] | None:
        """The LOGIN mechanism: user name, then password, each after its prompt."""
        user = self._response("VXNlcm5hbWU6", initial)  # "Username:"
        if user is None:
            return None
        password = self._response("UGFzc3dvcmQ6")  # "Password:"
        return None if password is None else (user, password)

    def smtp_RSET(self, arg: str) -> None:
        """Drop the current envelope."""
        self.reset()
        self.reply("250 2.0.0 OK")

    def smtp_NOOP(self, arg: str) -> None:
        """Do nothing."""
        self.reply("250 2.0.0 OK")

    def smtp_QUIT(self, arg: str) -> bool:
        """Say goodbye and close."""
        self.reply(f"221 2.0.0 {self.server.hostname} closing connection")
        return False


def _path(arg: str, prefix: str) -> tuple[str, list[str]] | None:
    """Parse ``FROM:<addr> PARAM...`` / ``TO:<addr> PARAM...``: (address, parameters)."""
    if arg[: len(prefix)].upper() != prefix:
        return None
    rest = arg[len(prefix) :].strip()
    if rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            return None
        address, params = rest[1:end], rest[end + 1 :]
    else:  # lenient: a bare address
        address, _, params = rest.partition(" ")
    return address, params.split()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, listen, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=2525, help="TCP port (default 2525)")
    parser.add_argument("--dir", required=True, help="directory for the JSON messages")
    parser.add_argument("--hostname", default=socket.getfqdn(), help="name in the greeting")
    parser.add_argument("--tls-cert", help="PEM certificate (chain): offer and require STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--auth-file", help="USER:PASSWORD lines: offer and require AUTH")
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    credentials = None
    if args.auth_file:
        with open(args.auth_file, encoding="utf-8") as lines:
            pairs = [line.rstrip("\n").split(":", 1) for line in lines if ":" in line]
        credentials = {user: password for user, password in pairs}
    server = Sink((args.host, args.port), args.dir, args.hostname, tls, credentials)

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    extras = "".join(
        f", {name}" for name, on in (("STARTTLS", tls), ("AUTH", credentials)) if on is not None
    )
    print(
        f"smtpsink listening on {args.host}:{args.port}{extras}, storing in {args.dir}",
        flush=True,
    )
    try:
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
