"""
A small FastCGI client (responder role) to call a PHP-FPM pool over its unix socket.

Root uses it to drive a PHP application (Matomo's installer and HTTP API) in
an account's chrooted pool directly: no web server, no TLS.  :py:func:`http`
builds the CGI params the way Apache's mod_proxy_fcgi would for
``https://HOST/SCRIPT?QUERY``; :py:func:`request` sends any params and body.
One request per connection (flags 0: the pool closes it after the request).

Errors raise :py:class:`FastCGIError` (an ``OSError``): their messages name
the socket and the script, never a param value nor the body (they may hold
passwords or tokens).  PHP-FPM parses each PARAMS record on its own, so a
name-value pair never spans two records here.

Example::

    import webarch_fcgi as fcgi

    r = fcgi.http("/run/php/webarch-0123.sock", "POST", "stats.example.org",
                  "/index.php", query={"module": "API"},
                  form={"method": "API.getMatomoVersion", "token_auth": token},
                  document_root="/home/matomo/sites/stats")
    assert r.status == 200, r.stderr
    print(r.header("Content-Type"), r.body)
"""

from __future__ import annotations

import socket
import struct
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

VERSION = 1
BEGIN_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 3, 4, 5, 6, 7
RESPONDER = 1
REQUEST_ID = 1
#: The largest record content sent: a multiple of 8, so content + padding <= 65535.
MAX_CONTENT = 65528
PROTOCOL_STATUS = {1: "CANT_MPX_CONN", 2: "OVERLOADED", 3: "UNKNOWN_ROLE"}
_REASONS: dict[type[OSError], str] = {
    FileNotFoundError: "no such socket",
    ConnectionRefusedError: "connection refused (is the pool running?)",
    PermissionError: "permission denied",
}
_HEADER = struct.Struct("!BBHHBx")  # version, type, request id, content length, padding

Pairs = Mapping[str, str] | Sequence[tuple[str, str]]


class FastCGIError(OSError):
    """The pool could not be reached, or did not complete the request."""


class Response(NamedTuple):
    """A FastCGI response: the CGI headers and body of STDOUT, and STDERR.

    (A NamedTuple, not a dataclass: Salt's loader may import this module
    without registering it in ``sys.modules``, which dataclasses need.)
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stderr: bytes
    app_status: int

    def header(self, name: str) -> str | None:
        """The first header ``name`` (case-insensitive), or None."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def cookies(self) -> dict[str, str]:
        """Name -> value of the cookies the response sets (the last one of a name wins)."""
        found: dict[str, str] = {}
        for key, value in self.headers:
            if key.lower() == "set-cookie":
                name, _, val = value.split(";", 1)[0].partition("=")
                found[name.strip()] = val.strip()
        return found


def _record(kind: int, content: bytes = b"") -> bytes:
    """One record of ``kind``, padded to a multiple of 8 bytes."""
    padding = -len(content) % 8
    return (
        _HEADER.pack(VERSION, kind, REQUEST_ID, len(content), padding) + content + b"\0" * padding
    )


def _length(n: int) -> bytes:
    """A name or value length: 1 byte below 128, else 4 bytes with the high bit set."""
    return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)


def _params(params: Mapping[str, str]) -> Iterator[bytes]:
    """The PARAMS records of ``params`` (whole pairs only), then the empty one."""
    chunk = b""
    for name, value in params.items():
        key, val = name.encode(), value.encode()
        pair = _length(len(key)) + _length(len(val)) + key + val
        if len(pair) > MAX_CONTENT:
            raise FastCGIError(f"FastCGI param {name} is too long ({len(val)} bytes)")
        if len(chunk) + len(pair) > MAX_CONTENT:
            yield _record(PARAMS, chunk)
            chunk = b""
        chunk += pair
    if chunk:
        yield _record(PARAMS, chunk)
    yield _record(PARAMS)


def _stream(kind: int, data: bytes) -> Iterator[bytes]:
    """The records of stream ``kind`` carrying ``data``, then the empty one."""
    for start in range(0, len(data), MAX_CONTENT):
        yield _record(kind, data[start : start + MAX_CONTENT])
    yield _record(kind)


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes; b"" at a clean end of the connection before any."""
    data = b""
    while len(data) < size:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(size - len(data))
        if not chunk:
            if data:
                raise FastCGIError("connection closed in the middle of a record")
            return b""
        data += chunk
    return data


def _exchange(sock: socket.socket, request: bytes, deadline: float) -> tuple[bytes, bytes, int]:
    """Send ``request``; STDOUT, STDERR and the app status, read until END_REQUEST."""
    sock.sendall(request)
    out, err = bytearray(), bytearray()
    while header := _read(sock, _HEADER.size, deadline):
        version, kind, request_id, length, padding = _HEADER.unpack(header)
        if version != VERSION:
            raise FastCGIError(f"malformed record: version {version}")
        content = _read(sock, length + padding, deadline)[:length] if length + padding else b""
        if len(content) != length:
            raise FastCGIError("connection closed in the middle of a record")
        if request_id != REQUEST_ID:
            raise FastCGIError(f"record of type {kind} for request id {request_id}")
        if kind == STDOUT:
            out += content
        elif kind == STDERR:
            err += content
        elif kind == END_REQUEST and length >= 5:
            app_status, protocol = struct.unpack("!IB", content[:5])
            if protocol:
                name = PROTOCOL_STATUS.get(protocol, str(protocol))
                raise FastCGIError(f"the pool refused the request: {name}")
            return bytes(out), bytes(err), app_status
        else:
            raise FastCGIError(f"malformed record: type {kind}, {length} bytes")
    raise FastCGIError("connection closed before the end of the request")


def _parse(stdout: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """The status, headers and body of a CGI response."""
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := stdout.find(sep)) >= 0]
    if not ends:
        raise FastCGIError(f"malformed CGI response: no end of headers in {len(stdout)} bytes")
    end, size = min(ends)
    headers: list[tuple[str, str]] = []
    for line in stdout[:end].decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise FastCGIError("malformed CGI response header line")
        headers.append((name.strip(), value.strip()))
    status = next((v for k, v in headers if k.lower() == "status"), None)
    location = any(k.lower() == "location" for k, _ in headers)
    try:
        code = int(status.split()[0]) if status else (302 if location else 200)
    except (ValueError, IndexError):
        raise FastCGIError("malformed CGI response: bad Status header") from None
    return code, headers, stdout[end + size :]


def request(
    socket_path: str, params: Mapping[str, str], body: bytes = b"", timeout: float = 30.0
) -> Response:
    """Send one responder request (``params``, ``body`` on STDIN) to the pool at ``socket_path``.

    ``timeout`` bounds the whole exchange, in seconds.  Raises FastCGIError.
    """
    script = params.get("SCRIPT_NAME") or params.get("SCRIPT_FILENAME", "?")
    where = f"FastCGI request for {script}: {socket_path}"
    deadline = time.monotonic() + timeout
    begin = _record(BEGIN_REQUEST, struct.pack("!HB5x", RESPONDER, 0))
    data = begin + b"".join(_params(params)) + b"".join(_stream(STDIN, body))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            out, err, app_status = _exchange(sock, data, deadline)
        status, headers, content = _parse(out)
    except FastCGIError as exc:
        raise FastCGIError(f"{where}: {exc}") from None
    except TimeoutError as exc:
        raise FastCGIError(f"{where}: timed out after {timeout}s") from exc
    except OSError as exc:
        reason = _REASONS.get(type(exc), exc.strerror or type(exc).__name__)
        raise FastCGIError(f"{where}: {reason}") from exc
    return Response(status, headers, content, err, app_status)


def http(
    socket_path: str,
    method: str,
    host: str,
    script: str,
    path_info: str = "",
    query: Pairs | str = "",
    form: Pairs | None = None,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    document_root: str = "",
    https: bool = True,
) -> Response:
    """``METHOD https://host/script/path_info?query``, as mod_proxy_fcgi would pass it.

    ``script`` is the script's URL path (``/index.php``), its file is
    ``document_root + script`` (a path as the chrooted pool sees it); ``form``
    is sent urlencoded; ``headers`` become ``HTTP_*`` params.
    """
    script, root = "/" + script.lstrip("/"), document_root.rstrip("/")
    query_string = query if isinstance(query, str) else urllib.parse.urlencode(query)
    body = b"" if form is None else urllib.parse.urlencode(form).encode()
    server_name, _, port = host.partition(":")
    uri = urllib.parse.quote(script + path_info) + (f"?{query_string}" if query_string else "")
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "webarch-fcgi",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": method.upper(),
        "REQUEST_SCHEME": "https" if https else "http",
        "REQUEST_URI": uri,
        "QUERY_STRING": query_string,
        "SCRIPT_NAME": script,
        "SCRIPT_FILENAME": root + script,
        "DOCUMENT_ROOT": root,
        "HTTP_HOST": host,
        "SERVER_NAME": server_name,
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": port or ("443" if https else "80"),
        "REMOTE_ADDR": "127.0.0.1",
    }
    if https:
        params["HTTPS"] = "on"
    if path_info:
        params["PATH_INFO"] = path_info
        params["PATH_TRANSLATED"] = root + path_info
    if form is not None:
        params["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    if body or params["REQUEST_METHOD"] in ("POST", "PUT", "PATCH"):
        params["CONTENT_LENGTH"] = str(len(body))
    if cookies:
        params["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        params[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    return request(socket_path, params, body, timeout)
