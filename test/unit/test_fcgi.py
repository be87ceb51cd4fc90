"""Unit tests of the FastCGI client (_utils/webarch_fcgi.py) against a fake pool.

The fake pool listens on a unix socket in tmp_path, decodes the records the
client sends with its own parser (each PARAMS record on its own, as PHP-FPM
does) and answers with records it builds by hand: several STDOUT records,
STDERR, padding, END_REQUEST.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import webarch_fcgi as fcgi

SECRET = "s3cr3t-T0ken-do-not-leak"
Record = tuple[int, int, bytes, int]  # type, request id, content, padding


def recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, "the client closed the connection in the middle of a record"
        data += chunk
    return data


def read_request(conn: socket.socket) -> list[Record]:
    """Every record up to the empty STDIN one."""
    records: list[Record] = []
    while not records or records[-1][0] != 5 or records[-1][2]:
        version, kind, rid, length, padding, _ = struct.unpack("!BBHHBB", recv_exact(conn, 8))
        assert version == 1
        content = recv_exact(conn, length + padding)[:length]
        records.append((kind, rid, content, padding))
    return records


def decode_pairs(content: bytes) -> dict[str, str]:
    """The name-value pairs of one PARAMS record: fails if a pair spans records."""
    pairs, pos = {}, 0

    def length() -> int:
        nonlocal pos
        if content[pos] < 128:
            pos += 1
            return content[pos - 1]
        pos += 4
        return struct.unpack("!I", content[pos - 4 : pos])[0] & 0x7FFFFFFF

    while pos < len(content):
        name_len, value_len = length(), length()
        assert pos + name_len + value_len <= len(content), "pair spans two records"
        name = content[pos : pos + name_len].decode()
        pairs[name] = content[pos + name_len : pos + name_len + value_len].decode()
        pos += name_len + value_len
    return pairs


def params_of(records: list[Record]) -> dict[str, str]:
    found: dict[str, str] = {}
    for kind, _, content, _ in records:
        if kind == 4:
            found.update(decode_pairs(content))
    return found


def stdin_of(records: list[Record]) -> bytes:
    return b"".join(content for kind, _, content, _ in records if kind == 5)


def record(
    kind: int, content: bytes = b"", padding: int = 0, version: int = 1, rid: int = 1
) -> bytes:
    header = struct.pack("!BBHHBx", version, kind, rid, len(content), padding)
    return header + content + b"\xee" * padding


def end_request(app_status: int = 0, protocol: int = 0) -> bytes:
    return record(3, struct.pack("!IB3x", app_status, protocol))


Answer = Callable[[socket.socket, list[Record]], None]


class FakePool:
    """One connection on a unix socket: reads the request, then ``answer`` writes."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = str(path)
        self.answer = answer
        self.records: list[Record] = []
        self.errors: list[BaseException] = []
        self.release = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                self.records = read_request(conn)
                self.answer(conn, self.records)
        except BaseException as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self.release.set()
        self.thread.join(5)
        self.listener.close()
        assert not self.errors, self.errors


@pytest.fixture
def pool(tmp_path: Path):
    pools: list[FakePool] = []

    def start(answer: Answer) -> FakePool:
        pools.append(FakePool(tmp_path / f"fpm{len(pools)}.sock", answer))
        return pools[-1]

    yield start
    for each in pools:
        each.close()


def replying(*chunks: bytes) -> Answer:
    def answer(conn: socket.socket, records: list[Record]) -> None:
        conn.sendall(b"".join(chunks))

    return answer


def test_request_round_trip_splits_and_terminates_streams(pool):
    body = bytes(range(256)) * 600  # 153600 bytes: three STDIN records
    params = {"SCRIPT_NAME": "/index.php", "LONG": "v" * 200, "EMPTY": "", "N" * 130: "x"}
    stdout = (
        b"Status: 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nhello\n\nworld\r\n\r\n"
    )
    fake = pool(
        replying(
            record(6, stdout[:20], padding=4),
            record(6, stdout[20:50]),
            record(7, b"PHP Notice: x", padding=3),
            record(6, stdout[50:], padding=7),
            record(6),
            end_request(app_status=3),
        )
    )
    response = fcgi.request(fake.path, params, body, timeout=5)
    fake.close()
    assert response == fcgi.Response(
        201,
        [("Status", "201 Created"), ("Content-Type", "text/plain"), ("X-A", "1")],
        b"hello\n\nworld\r\n\r\n",
        b"PHP Notice: x",
        3,
    )
    kinds = [kind for kind, _, _, _ in fake.records]
    assert kinds[0] == 1 and struct.unpack("!HB", fake.records[0][2][:3]) == (1, 0)
    assert {rid for _, rid, _, _ in fake.records} == {1}
    assert kinds == [1, 4, 4, 5, 5, 5, 5]  # PARAMS then empty; STDIN x3 then empty
    assert fake.records[2][2] == b"" and fake.records[-1][2] == b""
    assert params_of(fake.records) == params
    assert stdin_of(fake.records) == body
    assert all(len(c) + pad <= 65535 for _, _, c, pad in fake.records)
    assert all((len(c) + pad) % 8 == 0 for _, _, c, pad in fake.records)  # aligned, as nginx
    assert max(len(c) for _, _, c, _ in fake.records) > 65000


def test_params_over_one_record_are_split_on_pair_boundaries(pool):
    params = {f"P{i}": chr(65 + i % 26) * 1000 for i in range(150)}  # ~150 kB of params
    fake = pool(replying(record(6, b"\n\nok"), end_request()))
    response = fcgi.request(fake.path, params, timeout=5)
    fake.close()
    assert (response.status, response.headers, response.body) == (200, [], b"ok")
    param_records = [c for kind, _, c, _ in fake.records if kind == 4]
    assert len(param_records) >= 4 and param_records[-1] == b""
    assert all(0 < len(c) <= 65535 for c in param_records[:-1])
    assert params_of(fake.records) == params  # decode_pairs fails on a split pair
    assert [kind for kind, _, c, _ in fake.records if kind == 5] == [5]  # empty STDIN only


def test_redirect_with_two_cookies(pool):
    stdout = (
        b"Status: 302 Found\nLocation: https://stats.example.org/index.php?module=Login\n"
        b"Set-Cookie: MATOMO_SESSID=abc123; path=/; secure; HttpOnly\n"
        b"Set-Cookie: matomo_lang=fr; path=/\n"
        b"Set-Cookie: MATOMO_SESSID=def456; path=/\n\n"
    )
    fake = pool(replying(record(6, stdout), end_request()))
    response = fcgi.request(fake.path, {"SCRIPT_NAME": "/index.php"}, timeout=5)
    fake.close()
    assert response.status == 302
    assert response.header("location") == "https://stats.example.org/index.php?module=Login"
    assert response.header("X-Missing") is None
    assert response.cookies() == {"MATOMO_SESSID": "def456", "matomo_lang": "fr"}  # last wins
    assert [k for k, _ in response.headers].count("Set-Cookie") == 3
    assert response.body == b""


def test_location_without_status_is_a_302(pool):
    fake = pool(replying(record(6, b"Location: https://example.org/\r\n\r\n"), end_request()))
    response = fcgi.request(fake.path, {"SCRIPT_NAME": "/index.php"}, timeout=5)
    fake.close()
    assert (response.status, response.header("Location")) == (302, "https://example.org/")


def test_http_builds_the_cgi_params(pool):
    form = [("login", "alice"), ("password", "p&ss w=rd")]
    fake = pool(replying(record(6, b"Content-Type: text/html\r\n\r\n<html>"), end_request()))
    response = fcgi.http(
        fake.path,
        "post",
        "stats.example.org",
        "index.php",
        query={"module": "Installation", "action": "setupSuperUser"},
        form=form,
        cookies={"MATOMO_SESSID": "abc", "x": "y"},
        headers={"X-Requested-With": "XMLHttpRequest", "Accept-Language": "en"},
        document_root="/sites/stats/",
        timeout=5,
    )
    fake.close()
    assert (response.status, response.body) == (200, b"<html>")
    params = params_of(fake.records)
    query = "module=Installation&action=setupSuperUser"
    body = b"login=alice&password=p%26ss+w%3Drd"
    assert stdin_of(fake.records) == body
    assert params == params | {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/index.php",
        "SCRIPT_FILENAME": "/sites/stats/index.php",
        "DOCUMENT_ROOT": "/sites/stats",
        "REQUEST_URI": f"/index.php?{query}",
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "stats.example.org",
        "SERVER_NAME": "stats.example.org",
        "SERVER_PORT": "443",
        "HTTPS": "on",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_COOKIE": "MATOMO_SESSID=abc; x=y",
        "HTTP_X_REQUESTED_WITH": "XMLHttpRequest",
        "HTTP_ACCEPT_LANGUAGE": "en",
    }
    assert "PATH_INFO" not in params


def test_http_get_with_path_info_and_plain_http(pool):
    fake = pool(replying(record(6, b"Status: 404 Not Found\r\n\r\nFile not found."), end_request()))
    response = fcgi.http(
        fake.path, "GET", "example.org:8080", "/app.php", "/a b", "x=1", https=False, timeout=5
    )
    fake.close()
    assert response.status == 404
    params = params_of(fake.records)
    assert params["REQUEST_URI"] == "/app.php/a%20b?x=1"
    assert (params["PATH_INFO"], params["SERVER_NAME"], params["SERVER_PORT"]) == (
        "/a b",
        "example.org",
        "8080",
    )
    assert "HTTPS" not in params and "CONTENT_LENGTH" not in params
    assert stdin_of(fake.records) == b""


def test_server_closing_early_is_an_error(pool):
    fake = pool(replying(record(6, b"Status: 200 OK\r\n\r\npartial")))
    with pytest.raises(fcgi.FastCGIError, match="closed before the end") as caught:
        fcgi.request(fake.path, {"SCRIPT_NAME": "/index.php", "QUERY_STRING": SECRET}, timeout=5)
    fake.close()
    assert fake.path in str(caught.value) and SECRET not in str(caught.value)


def test_server_closing_mid_record_is_an_error(pool):
    fake = pool(replying(record(6, b"Status: 200 OK\r\n\r\npartial")[:12]))
    with pytest.raises(fcgi.FastCGIError, match="middle of a record"):
        fcgi.request(fake.path, {"SCRIPT_NAME": "/index.php"}, timeout=5)
    fake.close()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (end_request(protocol=2), "OVERLOADED"),
        (record(6, b"\n\n", version=2) + end_request(), "version 2"),
        (record(6, b"no end of headers") + end_request(), "no end of headers"),
        (record(6, b"Bad header\r\n\r\n") + end_request(), "header line"),
        (record(6, b"Status: abc\r\n\r\n") + end_request(), "bad Status"),
        (record(9, b"12345678") + end_request(), "type 9"),
        (record(6, b"\n\n", rid=2) + end_request(), "request id 2"),
    ],
)
def test_bad_answers_are_errors(pool, reply, message):
    fake = pool(replying(reply))
    with pytest.raises(fcgi.FastCGIError, match=message) as caught:
        fcgi.request(fake.path, {"SCRIPT_NAME": "/index.php", "HTTP_COOKIE": SECRET}, timeout=5)
    fake.close()
    assert "/index.php" in str(caught.value) and SECRET not in str(caught.value)


def test_missing_socket_names_the_path_not_the_params(tmp_path):
    path = str(tmp_path / "absent.sock")
    params = {"SCRIPT_NAME": "/index.php", "QUERY_STRING": f"token_auth={SECRET}"}
    with pytest.raises(fcgi.FastCGIError) as caught:
        fcgi.request(path, params, SECRET.encode(), timeout=5)
    message = str(caught.value)
    assert isinstance(caught.value, OSError)
    assert path in message and "no such socket" in message and "/index.php" in message
    assert SECRET not in message


def test_refused_socket(tmp_path):
    path = str(tmp_path / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(path)  # bound, not listening: connect() is refused
        with pytest.raises(fcgi.FastCGIError, match="refused") as caught:
            fcgi.request(path, {"SCRIPT_NAME": "/x.php"}, timeout=5)
    assert path in str(caught.value)


def test_timeout_when_the_pool_never_answers(pool):
    def hang(conn: socket.socket, records: list[Record]) -> None:
        fake.release.wait(10)

    fake = pool(hang)
    start = time.monotonic()
    with pytest.raises(fcgi.FastCGIError, match="timed out") as caught:
        fcgi.request(fake.path, {"SCRIPT_NAME": "/index.php", "X": SECRET}, timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 3
    assert fake.path in str(caught.value) and SECRET not in str(caught.value)
    fake.close()


def test_a_param_too_long_for_php_fpm_is_refused_without_its_value(tmp_path):
    value = urllib.parse.quote(SECRET) * 5000  # one pair over 65535 bytes
    with pytest.raises(fcgi.FastCGIError, match="QUERY_STRING is too long") as caught:
        fcgi.request(str(tmp_path / "x.sock"), {"QUERY_STRING": value}, timeout=5)
    assert SECRET not in str(caught.value)
