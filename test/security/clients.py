"""Small client programs alice uploads to her own home and runs in her chroot.

They are plain text here; the suite puts them in ``~/private`` as an SFTP upload
would.  ``@BOB_SOCKET@`` stands for the real path of bob's PHP-FPM socket,
which the attacker is assumed to know (worst case).
"""

from __future__ import annotations

#: Stands for bob's pool socket in attack texts (see real()).
SOCKET_TOKEN = "@BOB_SOCKET@"

#: A FastCGI client (python3): asks each socket given (default: bob's) to run
#: bob's private script, and prints whatever comes back.
FCGI_PY = r"""
import socket, struct, sys

def record(kind, content):
    return struct.pack("!BBHHBx", 1, kind, 1, len(content), 0) + content

def pair(key, value):
    key, value = key.encode(), value.encode()
    size = lambda n: bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
    return size(len(key)) + size(len(value)) + key + value

params = {
    "SCRIPT_FILENAME": "/home/bob/private/tool.php", "SCRIPT_NAME": "/tool.php",
    "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
    "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "x", "SERVER_PORT": "80",
    "DOCUMENT_ROOT": "/home/bob",
}
body = b"".join(pair(k, v) for k, v in params.items())
request = (record(1, struct.pack("!HB5x", 1, 0)) + record(4, body) + record(4, b"")
           + record(5, b""))
for path in sys.argv[1:] or ["@BOB_SOCKET@"]:
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(path)
            conn.sendall(request)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        print(path, answer.decode(errors="replace"))
    except OSError as exc:
        print(path, exc)
"""

#: The same FastCGI client in PHP: for php-cli in the shell and for alice's
#: site (stream_socket_client("unix://...") from her pool).
FCGI_PHP = r"""<?php error_reporting(0);
function record($kind, $content) {
    return pack("CCnnCx", 1, $kind, 1, strlen($content), 0) . $content;
}
function size($n) { return $n < 128 ? chr($n) : pack("N", $n | 0x80000000); }
function pair($k, $v) { return size(strlen($k)) . size(strlen($v)) . $k . $v; }
$params = ["SCRIPT_FILENAME" => "/home/bob/private/tool.php", "SCRIPT_NAME" => "/tool.php",
    "REQUEST_METHOD" => "GET", "SERVER_PROTOCOL" => "HTTP/1.1", "GATEWAY_INTERFACE" => "CGI/1.1",
    "QUERY_STRING" => "", "REMOTE_ADDR" => "127.0.0.1", "SERVER_NAME" => "x",
    "SERVER_PORT" => "80", "DOCUMENT_ROOT" => "/home/bob"];
$body = "";
foreach ($params as $k => $v) { $body .= pair($k, $v); }
$request = record(1, pack("nCx5", 1, 0)) . record(4, $body) . record(4, "") . record(5, "");
$paths = array_slice($argv ?? [], 1) ?: ["@BOB_SOCKET@"];
foreach ($paths as $path) {
    $conn = stream_socket_client("unix://$path", $errno, $errstr, 5);
    if (!$conn) { echo "$path: $errstr\n"; continue; }
    fwrite($conn, $request);
    echo "$path: ", stream_get_contents($conn), "\n";
}
"""

#: An SMTP client over the mail gate's socket.  ``send SENDER SUBJECT``: one
#: message to friend@example.net with that envelope sender; ``probe``: VRFY and
#: EXPN of bob.  Prints the server's answers only.
SMTP_PY = r"""
import socket, sys

conn = socket.socket(socket.AF_UNIX)
conn.settimeout(10)
conn.connect("/run/webarch-mail/submit.sock")
stream = conn.makefile("rwb")

def say(line):
    if line is not None:
        stream.write(line.encode() + b"\r\n")
        stream.flush()
    while True:
        answer = stream.readline()
        print(answer.decode(errors="replace").rstrip())
        if not answer or answer[3:4] != b"-":
            return

say(None)
say("EHLO alice.example")
if sys.argv[1] == "probe":
    for line in ("VRFY bob", "EXPN bob", "VRFY shop@bob.example", "VRFY postmaster"):
        say(line)
else:
    sender, subject = sys.argv[2], sys.argv[3]
    say(f"MAIL FROM:<{sender}>")
    say("RCPT TO:<friend@example.net>")
    say("DATA")
    say(f"From: <{sender}>\r\nSubject: {subject}\r\n\r\nhi\r\n.")
say("QUIT")
"""

#: SMTP over TCP to the host's own addresses (no listener expected there).
SMTP_TCP_PY = r"""
import smtplib, sys

for address in ("127.0.0.1", "::1"):
    for port in (25, 465, 587):
        try:
            with smtplib.SMTP(address, port, timeout=5) as smtp:
                message = f"Subject: {sys.argv[2]}\r\n\r\nhi\r\n"
                smtp.sendmail(sys.argv[1], ["friend@example.net"], message)
                print(address, port, "sent")
        except OSError as exc:
            print(address, port, exc)
"""

#: Every setuid program of the chroot, each tried for root (prints ``id`` and
#: the root-only file where one would give them).
SETUID_SH = r"""
R=/home/alice/root-only.txt
echo "setuid: $(find / -path /proc -prune -o -type f -perm -4000 -print 2>/dev/null | tr '\n' ' ')"
t() { timeout 5 "$@" </dev/null 2>&1; }
t su root -c "id; cat $R"
echo "id; cat $R" | timeout 5 newgrp webarch 2>&1
t chfn -f pwned; t chsh -s /bin/sh; t passwd -d alice; t passwd -S root; t gpasswd -a alice root
mkdir -p /tmp/m; t mount --bind "$R" /tmp/m; t mount -o remount,rw /usr; t umount /usr; t cat /tmp/m
t mount -t tmpfs none /tmp/m && echo mounted
t /usr/sbin/exim4 -be "\${readfile{$R}}"
t /usr/lib/openssh/ssh-keysign; t /usr/lib/dbus-1.0/dbus-daemon-launch-helper
"""


def real(text: str, bob_socket: str) -> str:
    """``text`` with the token replaced by bob's real socket path."""
    return text.replace(SOCKET_TOKEN, bob_socket)
