"""Attack suite: alice attacks bob through her real entry points only.

alice logs in over SSH/SFTP with her key and uploads PHP and .htaccess files
to her own site, requested over HTTPS.  bob is a careless customer: secrets in
world-readable files, in his database and his logs.  Every attack checks for
the concrete secret (or a written file), never just an error code; control
checks prove alice's own files, PHP and database work, so the suite fails if
the services are simply down.  The summary line reads
``attacks=N blocked=N breaches=N leaks=N``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import apply, failed
from testhost import Host

pytestmark = pytest.mark.e2e

SECRET = "BOB-SECRET-7f3a"
RESULTS: dict[str, str] = {}  # attack -> blocked | breach | leak
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]  # fmt: skip
ALICE_DOCROOT = "/home/alice/sites/www"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def target(image: Path, repo: Path, key: Path) -> Iterator[Host]:
    """alice and bob converged; bob's secrets planted the careless way."""
    pillar = {
        "webarch": {
            "accounts": {
                "alice": {
                    "ssh_keys": [key.with_suffix(".pub").read_text().strip()],
                    "databases": {"alice_app": None},
                    "sites": {"www": {"server_name": "www.alice.example"}},
                },
                "bob": {
                    "databases": {"bob_shop": None},
                    "sites": {"shop": {"type": "wordpress", "server_name": "shop.bob.example"}},
                },
            }
        }
    }
    with Host(name="wa-attack", image=image, formula_dir=repo) as host:
        assert failed(apply(host, pillar)) == {}
        plant = f"""
set -e
printf '<?php define("DB_PASSWORD", "{SECRET}");' > /home/bob/sites/shop/wp-config.php
chmod 0644 /home/bob/sites/shop/wp-config.php
echo '<?php echo "bob shop";' > /home/bob/sites/shop/index.php
echo '{SECRET}' > /home/bob/private/notes.txt
chmod 0644 /home/bob/private/notes.txt
echo '<?php echo "{SECRET}-RAN";' > /home/bob/private/tool.php
chown -R bob /home/bob/sites/shop /home/bob/private
mysql bob_shop -e "CREATE TABLE s (v TEXT); INSERT INTO s VALUES ('{SECRET}')"
mysql alice_app -e "CREATE TABLE mine (v TEXT); INSERT INTO mine VALUES ('alice-row')"
"""
        host.run(["sh", "-c", plant], check=True)
        host.net_run(["curl", "-sk", "--resolve", "shop.bob.example:443:127.0.0.1",
                      f"https://shop.bob.example/index.php?{SECRET}"])  # fmt: skip
        yield host


def shell(host: Host, key: Path, command: str) -> str:
    """alice's SSH shell: stdout and stderr of ``command``."""
    result = host.net_run(["ssh", "-i", str(key), *SSH_OPTS, "alice@127.0.0.1", command])
    return result.stdout + result.stderr


def upload(host: Host, files: dict[str, str]) -> None:
    """Put ``files`` into alice's docroot/t, owned by alice (as her SFTP upload would)."""
    host.run(["rm", "-rf", f"{ALICE_DOCROOT}/t"])
    host.run(["mkdir", "-p", f"{ALICE_DOCROOT}/t"])
    for name, text in files.items():
        host.write_file(f"{ALICE_DOCROOT}/t/{name}", text)
    host.run(["chown", "-R", "alice:www-data", f"{ALICE_DOCROOT}/t"], check=True)


def get(host: Host, path: str) -> str:
    """GET https://www.alice.example/t/PATH from outside."""
    result = host.net_run(["curl", "-sk", "--max-time", "20", "--resolve",
                           "www.alice.example:443:127.0.0.1",
                           f"https://www.alice.example/t/{path}"])  # fmt: skip
    return result.stdout + result.stderr


def _web(host: Host, files: dict[str, str], path: str) -> str:
    upload(host, files)
    return get(host, path)


def php(body: str) -> dict[str, str]:
    """A PHP file for alice's site that prints what ``body`` finds."""
    return {"a.php": "<?php error_reporting(0); " + body}


SHELL_ATTACKS: dict[str, str] = {
    "direct path to bob's config": "cat /home/bob/sites/shop/wp-config.php",
    "bob's home listing": "ls -la /home/bob /home/bob/private",
    "bob's private file": "cat /home/bob/private/notes.txt",
    "/proc/*/root of others": "cat /proc/*/root/home/bob/sites/shop/wp-config.php",
    "/proc/*/cwd of others": "ls -la /proc/*/cwd/ 2>&1",
    "/proc/*/environ": "cat /proc/*/environ | tr '\\0' '\\n'",
    "ps for bob's processes": "ps auxww",
    "find bob's files": "find / -xdev -name 'wp-config.php' -exec cat {} + 2>&1",
    "chroots of others": "ls -la /chroots /chroots/bob 2>&1; cat /chroots/bob/home/bob/notes.txt",
    "bob's logs": "cat /home/bob/logs/apache-access.log",
    "Apache's logs": "cat /var/log/apache2/*.log",
    "/etc/shadow": "cat /etc/shadow",
    "bob's database as alice": "mysql bob_shop -e 'SELECT * FROM s'",
    "MariaDB as bob": "mysql -u bob bob_shop -e 'SELECT * FROM s'",
    "MariaDB as root": "mysql -u root -e 'SELECT * FROM bob_shop.s'",
    "LOAD_FILE": "mysql alice_app -e \"SELECT LOAD_FILE('/home/bob/sites/shop/wp-config.php')\"",
    "LOAD DATA LOCAL INFILE": (
        'mysql --local-infile=1 alice_app -e "CREATE TABLE IF NOT EXISTS l (v TEXT);'
        " LOAD DATA LOCAL INFILE '/home/bob/sites/shop/wp-config.php' INTO TABLE l;"
        ' SELECT * FROM l"'
    ),
    "MariaDB over TCP": "mysql -h 127.0.0.1 -u bob bob_shop -e 'SELECT * FROM s'",
    "bob's pool socket from the shell": (
        "php -r 'var_dump(stream_socket_client(\"unix:///run/php/webarch-bob.sock\"));'"
        " ; ls -la /run/php"
    ),
    "su to bob": "su bob -c 'cat /home/bob/sites/shop/wp-config.php' </dev/null",
    "/tmp shared with bob": "ls -la /tmp /var/tmp /dev/shm; cat /tmp/* 2>&1 | head",
}

WRITE_ATTACKS: dict[str, tuple[str, str]] = {
    # name: (command, path on the host that must not appear)
    "write the chroot's /etc": ("echo pwned > /etc/pwned", "/chroots/alice/etc/pwned"),
    "write /usr": ("echo pwned > /usr/bin/pwned", "/usr/bin/pwned"),
    "write bob's site": ("echo pwned > /home/bob/sites/shop/pwned", "/home/bob/sites/shop/pwned"),
    "write her own home's top": ("echo pwned > /home/alice/pwned", "/home/alice/pwned"),
}

WEB_ATTACKS: dict[str, tuple[dict[str, str], str]] = {
    "PHP file_get_contents": (
        php("echo file_get_contents('/home/bob/sites/shop/wp-config.php');"), "a.php"),
    "PHP open_basedir bypass via ..": (
        php("echo file_get_contents('../../../../bob/sites/shop/wp-config.php');"), "a.php"),
    "PHP glob://": (
        php("foreach (new DirectoryIterator('glob:///home/*/sites/*/*') as $f) echo $f, ' ';"),
        "a.php"),
    "PHP symlink() then read": (
        php("@symlink('/home/bob/sites/shop/wp-config.php', '/tmp/l');"
            " echo file_get_contents('/tmp/l');"), "a.php"),
    "PHP reads bob's processes": (
        php("foreach (glob('/proc/[0-9]*/cmdline') as $c) echo file_get_contents($c), ' ';"
            " echo file_get_contents('/proc/1/environ');"), "a.php"),
    "PHP exec()": (php("echo exec('cat /home/bob/sites/shop/wp-config.php');"), "a.php"),
    "PHP as bob in MariaDB": (
        php("$m = new mysqli('localhost', 'bob', null, 'bob_shop');"
            " echo $m->query('SELECT v FROM s')->fetch_row()[0];"), "a.php"),
    "symlink in the docroot served by Apache": ({}, "link.txt"),
    "symlink with Options +FollowSymLinks": (
        {".htaccess": "Options +FollowSymLinks\n"}, "link.txt"),
    "SetHandler to bob's pool": (
        {".htaccess": 'SetHandler "proxy:unix:/run/php/webarch-bob.sock|fcgi://bob"\n',
         "a.php": "<?php echo 1;"}, "a.php"),
    "RewriteRule [H=] to bob's pool": (
        {".htaccess": "RewriteEngine on\nRewriteRule ^a\\.php$ - "
         "[H=proxy:unix:/run/php/webarch-bob.sock|fcgi://bob]\n",
         "a.php": "<?php echo 1;"}, "a.php"),
    "RewriteRule [P] to bob's private script": (
        {".htaccess": "RewriteEngine on\nRewriteRule ^a\\.php$ "
         '"unix:/run/php/webarch-bob.sock|fcgi://bob/home/bob/private/tool.php" [P]\n',
         "a.php": "<?php echo 1;"}, "a.php"),
    "SetEnv PHP_VALUE auto_prepend_file": (
        {".htaccess": 'SetEnv PHP_VALUE "auto_prepend_file=/home/bob/private/tool.php"\n',
         "a.php": "<?php echo 1;"}, "a.php"),
    "[E=PHP_ADMIN_VALUE] with [H=] to bob": (
        {".htaccess": "RewriteEngine on\nRewriteRule ^a\\.php$ - "
         "[H=proxy:unix:/run/php/webarch-bob.sock|fcgi://bob,"
         "E=PHP_ADMIN_VALUE:auto_prepend_file=/home/bob/sites/shop/wp-config.php]\n",
         "a.php": "<?php echo 1;"}, "a.php"),
}  # fmt: skip

LEAK_CHECKS: dict[str, str] = {
    # name: a shell command whose output must not mention bob at all
    "other accounts in /etc/passwd": "cat /etc/passwd /etc/group",
    "other accounts in /home": "ls -a /home",
    "other accounts' processes": "ps -eo user,args",
}


def _record(name: str, breached: bool, leak: bool = False) -> None:
    RESULTS[name] = ("leak" if leak else "breach") if breached else "blocked"


def test_controls_alice_own_things_work(target, key):
    assert shell(target, key, "cat /etc/hostname >/dev/null && echo shell-ok").strip() == "shell-ok"
    assert "alice-row" in shell(target, key, "mysql alice_app -e 'SELECT v FROM mine'")
    out = _web(target, php("echo 'php-ok ', posix_getpwuid(posix_geteuid())['name'];"), "a.php")
    assert out.strip() == "php-ok alice"
    assert SECRET in target.read_file("/home/bob/sites/shop/wp-config.php"), "secret planted"


@pytest.mark.parametrize("name", sorted(SHELL_ATTACKS))
def test_shell_attack(target, key, name):
    out = shell(target, key, SHELL_ATTACKS[name])
    _record(name, SECRET in out)
    assert SECRET not in out, out[-2000:]


@pytest.mark.parametrize("name", sorted(WRITE_ATTACKS))
def test_write_attack(target, key, name):
    command, path = WRITE_ATTACKS[name]
    shell(target, key, command)
    written = target.exists(path)
    _record(name, written)
    assert not written


@pytest.mark.parametrize("name", sorted(WEB_ATTACKS))
def test_web_attack(target, name):
    files, path = WEB_ATTACKS[name]
    upload(target, files)
    if path == "link.txt":  # alice's symlink to bob's file, requested over HTTPS
        link = f"cd {ALICE_DOCROOT}/t && ln -s /home/bob/sites/shop/wp-config.php link.txt"
        target.run(["sh", "-c", link + " && chown -h alice link.txt"], check=True)
    out = get(target, path)
    breached = SECRET in out
    _record(name, breached)
    assert not breached, out[-2000:]


@pytest.mark.parametrize("name", sorted(LEAK_CHECKS))
def test_information_leak(target, key, name):
    out = shell(target, key, LEAK_CHECKS[name])
    leaked = "bob" in out
    _record(name, leaked, leak=True)
    assert not leaked, out[-2000:]


@pytest.mark.xfail(
    strict=True,
    reason="known leak, not fixed yet: /proc/self/net/unix in a chroot lists every unix "
    "socket of the host, other accounts' PHP-FPM socket names among them",
)
def test_information_leak_unix_sockets(target, key):
    out = shell(target, key, "cat /proc/self/net/unix")
    assert "webarch-bob" not in out


def test_summary(target, request):
    """Runs last: the figures of the whole suite."""
    attacks = {k: v for k, v in RESULTS.items() if k not in LEAK_CHECKS}
    blocked = sum(v == "blocked" for v in attacks.values())
    breaches = sum(v == "breach" for v in attacks.values())
    leaks = sum(v == "leak" for v in RESULTS.values())
    line = f"attacks={len(attacks)} blocked={blocked} breaches={breaches} leaks={leaks}"
    request.config.webarch_attack_summary = line  # printed by conftest at the end
    if len(attacks) != len(SHELL_ATTACKS) + len(WRITE_ATTACKS) + len(WEB_ATTACKS):
        pytest.skip(f"partial run: {line}")
    assert breaches == 0 and leaks == 0
