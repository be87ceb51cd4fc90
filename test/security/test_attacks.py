"""Attack suite: alice attacks bob through her real entry points only.

alice logs in over SSH/SFTP with her key and uploads PHP and .htaccess files
to her own site, requested over HTTPS.  bob is a careless customer: secrets in
world-readable files, in his database, his logs, his mailbox and shared
memory.  Every attack checks for the concrete secret (or a written file, or
mail that reached the relay with bob's envelope sender), never just an error
code; control checks prove alice's own files, PHP, database, mail and the
attack tools themselves work, so the suite fails if the services are simply
down.  The summary line reads ``attacks=N blocked=N breaches=N leaks=N``.

The server's Matomo runs in a third account's site (carol-stats,
stats.coop.example).  alice attacks it too: its config.ini.php (the salt),
webarch's root-only API token and superuser password, its database, and bob's
statistics through Matomo's API over HTTPS with her own token (made with her
own mailed password).  A visit tracked on bob's site carries bob's secret in
its URL: it is in Matomo's database, its raw visit log and its reports.

The attacks through what alice's .htaccess and .user.ini files may hold (handlers
and types towards bob's pool, tricks to show her PHP source to a visitor, PHP
settings against the pool's php_admin_* ones) are in attacks_htaccess.py; no web
answer may show alice's PHP source (SOURCE_MARK, in a comment of her pages).

Three tests switch one real defence off, show that the matching attack then
breaches, and converge again (not counted in the figures).  docs/security.rst
lists every attack with the defence that stops it.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from e2e.conftest import MATOMO_ARCHIVE, MATOMO_ON_HOST, MATOMO_SHA256, provide_matomo
from e2e.helpers import RelaySink, apply, failed, password_in, pool_socket, relay_sink
from security import attacks_htaccess
from security.attacks_htaccess import PAGES, SOURCE_MARK
from security.clients import (
    FCGI_PHP,
    FCGI_PY,
    SETUID_SH,
    SMTP_PY,
    SMTP_TCP_PY,
    SOCKET_TOKEN,
    real,
)
from testhost import Host
from testhost.host import SALT_CALL

pytestmark = pytest.mark.e2e

SECRET = "BOB-SECRET-7f3a"
#: In a root-only file that alice can see but not read (setuid attacks).
ROOT_SECRET = "ROOT-ONLY-5e1b"
#: What no output of an attack may show: bob's and root's secrets, and (added
#: by the ``target`` fixture, read as root) the Matomo instance's salt,
#: webarch's Matomo API token and its superuser's password.
SECRETS: list[str] = [SECRET, ROOT_SECRET]
#: bob's applications, installed by the formula (issue 16).
BOB_BLOG = "blog.bob.example"
BOB_WIKI = "wiki.bob.example"
BOB_WP_CONFIG = "/home/bob/sites/blog/wp-config.php"
BOB_LOCAL_SETTINGS = "/home/bob/sites/wiki/LocalSettings.php"
HOSTNAME = "web1.coop.example"
#: bob's configured envelope sender: no mail of alice's may leave with it.
BOB_SENDER = "shop@bob.example"
ALICE_SENDER = f"alice@{HOSTNAME}"
#: The key of bob's System V shared memory segment (mode 0644, as careless as his files).
SHM_KEY = 0x5EC7E7
RESULTS: dict[str, str] = {}  # attack -> blocked | breach | leak
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]  # fmt: skip
ALICE_DOCROOT = "/home/alice/sites/www"
#: How long a job planted by an escape attempt gets to run (cron runs each minute).
ESCAPE_WAIT = 70.0

#: Holes found by this suite that the formula does not close yet: their
#: attacks are strict xfails (they breach) and the summary counts them.
KNOWN_HOLES: dict[str, str] = {}

#: The Matomo instance (carol-stats' site) and webarch's root-only files of it.
STATS = "stats.coop.example"
MATOMO_CONFIG = "/home/carol-stats/sites/matomo/config/config.ini.php"
MATOMO_TOKEN = "/var/lib/webarch/matomo/token"
MATOMO_PASSWORD = "/var/lib/webarch/matomo/password"
MATOMO_IDS = "/var/lib/webarch/matomo/ids.json"
MATOMO_DB = "carol_stats_matomo"
#: The page of bob's visit tracked by Matomo: bob's secret in its database,
#: raw visit log and reports.  alice's own visit: what her token may see.
BOB_PAGE = f"https://shop.bob.example/{SECRET}-page"
ALICE_PAGE = "https://www.alice.example/ALICE-OWN-PAGE"
#: A browser's User-Agent for the tracked visits (not a bot's).
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
#: An attack's "path" that is a call of Matomo's API with alice's token (the
#: form follows; @BOB_IDSITE@, @ALICE_IDSITE@, @ALICE_PASSWORD@ filled in).
API = "matomo-api:"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alice's SSH key pair, on this machine."""
    path = tmp_path_factory.mktemp("keys") / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def booted(image: Path, repo: Path) -> Iterator[Host]:
    """The test host, booted (not converged yet), with Matomo's archive if this machine has it."""
    with Host(name="wa-attack", image=image, formula_dir=repo) as host:
        provide_matomo(host)
        yield host


@pytest.fixture(scope="module")
def sink(booted: Host) -> RelaySink:
    """Exim's smarthost: the SMTP sink on the relay next to the host."""
    return relay_sink(booted)


def attack_pillar(key: Path, sink: RelaySink) -> dict:
    """alice (the attacker), bob (careless, with his own envelope sender) and
    carol-stats, whose site is the server's Matomo (when this machine has its archive)."""
    pillar: dict = {
        "webarch": {
            "hostname": HOSTNAME,
            "admin_email": "hostmaster@coop.example",
            "mail": {"smarthost": sink.exim_smarthost},
            "backup": {"enabled": True},
            "accounts": {
                "alice": {
                    "email": "alice@alice.example",
                    "ssh_keys": [key.with_suffix(".pub").read_text().strip()],
                    "databases": {"alice_app": None},
                    "sites": {"www": {"server_name": "www.alice.example"}},
                },
                "bob": {
                    "email": "bob@bob.example",
                    "ssh_password": True,
                    "db_password": True,
                    "mail": {"sender": BOB_SENDER},
                    "databases": {"bob_shop": None, "bob_blog": None, "bob_wiki": None},
                    "sites": {
                        "shop": {"type": "wordpress", "server_name": "shop.bob.example"},
                        # Installed by the formula: their configs hold bob's keys.
                        "blog": {
                            "type": "wordpress",
                            "server_name": BOB_BLOG,
                            "app": {"database": "bob_blog"},
                        },
                        "wiki": {
                            "type": "mediawiki",
                            "server_name": BOB_WIKI,
                            "app": {"database": "bob_wiki"},
                        },
                    },
                },
            },
        }
    }
    if MATOMO_ARCHIVE.is_file():
        pillar["webarch"]["matomo"] = {
            "archive": {"source": MATOMO_ON_HOST, "sha256": MATOMO_SHA256}
        }
        pillar["webarch"]["accounts"]["carol-stats"] = {
            "email": "carol@stats.example",
            "databases": {MATOMO_DB: None},
            "sites": {"matomo": {"type": "matomo", "server_name": STATS}},
        }
    return pillar


PLANT = f"""
set -e
printf '<?php define("DB_PASSWORD", "{SECRET}");' > /home/bob/sites/shop/wp-config.php
chmod 0644 /home/bob/sites/shop/wp-config.php
echo '<?php echo "bob shop";' > /home/bob/sites/shop/index.php
echo '{SECRET}' > /home/bob/private/notes.txt
chmod 0644 /home/bob/private/notes.txt
echo '<?php echo "{SECRET}-RAN";' > /home/bob/private/tool.php
mysql bob_shop -e "CREATE TABLE s (v TEXT); INSERT INTO s VALUES ('{SECRET}')"
mysql alice_app -e "CREATE TABLE mine (v TEXT); INSERT INTO mine VALUES ('alice-row')"
echo '{SECRET}' > /dev/shm/webarch-bob-secret
chown bob /dev/shm/webarch-bob-secret
echo '<?php $m = shmop_open({SHM_KEY}, "c", 0644, 64);' \\
  ' shmop_write($m, "{SECRET}", 0); echo "shm-ok";' > /home/bob/private/shm.php
echo '{ROOT_SECRET}' > /home/alice/root-only.txt
chmod 0600 /home/alice/root-only.txt
chown -R bob /home/bob/sites/shop /home/bob/private
printf 'From root\\nSubject: for bob\\n\\n{SECRET}\\n' > /var/mail/bob
chown bob:mail /var/mail/bob && chmod 0660 /var/mail/bob
printf 'Subject: bob-mail-log\\n\\nhi\\n' | runuser -u bob -- /usr/sbin/sendmail friend@example.net
"""


@pytest.fixture(scope="module")
def target(booted: Host, sink: RelaySink, key: Path) -> Host:
    """alice and bob converged; bob's secrets planted the careless way."""
    host = booted
    assert failed(apply(host, attack_pillar(key, sink))) == {}
    host.run(["sh", "-c", PLANT], check=True)
    # A line in bob's log.
    host.net_run(["curl", "-sk", "--resolve", "shop.bob.example:443:127.0.0.1",
                  f"https://shop.bob.example/index.php?{SECRET}"])  # fmt: skip
    # Shared memory of bob's own: refused (no SysV shared memory on the host,
    # and none in the pools); test_switched_off_sysv_ipc makes it for real.
    out = host.run(["runuser", "-u", "bob", "--", "php", "/home/bob/private/shm.php"])
    assert "No space left on device" in out.stdout + out.stderr, out
    for name, text in (("fcgi.py", FCGI_PY), ("fcgi.php", FCGI_PHP), ("smtp.py", SMTP_PY),
                       ("smtp-tcp.py", SMTP_TCP_PY), ("setuid.sh", SETUID_SH)):  # fmt: skip
        host.write_file(f"/home/alice/private/{name}", real(text, pool_socket(host, "bob")))
    host.run(["chown", "-R", "alice:alice", "/home/alice/private"], check=True)
    # bob's own mail and the notifications are through: his logs, mailbox and markers exist.
    waited = "for i in $(seq 100); do grep -qs '{}' {} && exit 0; sleep 0.2; done; exit 1"
    for needle, path in (("U=bob", "/home/bob/logs/mail.log"), (SECRET, "/var/mail/bob"),
                         ("was sent to", "/home/bob/.notify_passwd")):  # fmt: skip
        host.run(["sh", "-c", waited.format(needle, path)], check=True)
    plant_apps(host)
    if MATOMO_ARCHIVE.is_file():
        plant_matomo(host)
    return host


def plant_apps(host: Host) -> None:
    """The keys of bob's formula-installed WordPress and MediaWiki (read as root)
    into SECRETS: no attack may show them."""
    keys = re.findall(r"define\(\s*'AUTH_KEY',\s*'([^']{32,})'", host.read_file(BOB_WP_CONFIG))
    wiki = re.findall(r'\$wgSecretKey\s*=\s*"([0-9a-f]{32,})"', host.read_file(BOB_LOCAL_SETTINGS))
    assert keys and wiki, "bob's application keys"
    SECRETS.extend([keys[0], wiki[0]])


def curl(name: str) -> list[str]:
    """curl from outside, ``name`` resolved to the host."""
    return ["curl", "-sk", "--max-time", "60", "--resolve", f"{name}:443:127.0.0.1"]


def plant_matomo(host: Host) -> None:
    """Matomo's secrets (read as root) into SECRETS; a visit tracked on bob's
    site (his secret in its URL) and one on alice's; the reports archived."""
    salt = re.search(r'^salt = "([^"]+)"$', host.read_file(MATOMO_CONFIG), re.MULTILINE)
    assert salt and len(salt.group(1)) >= 16, "Matomo's salt"
    secrets = [salt.group(1)] + [host.read_file(p).strip() for p in (MATOMO_TOKEN, MATOMO_PASSWORD)]
    assert all(len(secret) >= 16 for secret in secrets)
    SECRETS.extend(secrets)
    ids = json.loads(host.read_file(MATOMO_IDS))["sites"]
    for site, url in (("bob/shop", BOB_PAGE), ("alice/www", ALICE_PAGE)):
        hit = urllib.parse.urlencode({"idsite": ids[site], "rec": 1, "url": url,
                                      "ua": BROWSER_UA, "send_image": 0})  # fmt: skip
        code = host.net_run([*curl(STATS), "-o", "/dev/null", "-w", "%{http_code}",
                             f"https://{STATS}/matomo.php?{hit}"]).stdout  # fmt: skip
        assert code in ("200", "204"), (site, code)
    # The archive timer's job, now: core:archive as carol-stats in her chroot.
    job = host.run(["systemctl", "start", "webarch-matomo-archive-carol-stats.service"])
    assert job.returncode == 0, job.stderr


class Matomo(NamedTuple):
    """What alice knows of Matomo: the sites' ids, her mailed password and her own token."""

    ids: dict[str, int]
    alice_password: str
    alice_token: str

    def fill(self, form: str) -> str:
        """``form`` with the ids and alice's password filled in."""
        for token, value in (
            ("@BOB_IDSITE@", self.ids["bob/shop"]),
            ("@ALICE_IDSITE@", self.ids["alice/www"]),
            ("@ALICE_PASSWORD@", urllib.parse.quote(self.alice_password)),
        ):
            form = form.replace(token, str(value))
        return form


def api_form(method: str, **params: object) -> str:
    """The form of one Matomo API call (the @...@ placeholders kept)."""
    return urllib.parse.urlencode({"method": method, **params}, safe="@")


def matomo_api(host: Host, token: str, form: str) -> str:
    """One call of Matomo's API over HTTPS from outside, the token in the POST body; the answer."""
    body = f"module=API&format=json&token_auth={token}&{form}"
    out = host.net_run([*curl(STATS), "--data-binary", "@-", f"https://{STATS}/index.php"],
                       input=body)  # fmt: skip
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def matomo(target: Host, sink: RelaySink) -> Matomo | None:
    """alice's Matomo password (from her mail) and her own token, made with it
    (None without Matomo)."""
    if not MATOMO_ARCHIVE.is_file():
        return None
    deadline = time.monotonic() + 60
    while not (mails := [m for m in sink.messages()
                         if "Your new Matomo password" in str(m["message"]["Subject"])
                         and "<alice@alice.example>" in str(m["message"]["To"])]):  # fmt: skip
        assert time.monotonic() < deadline, "no Matomo password mail to alice"
        time.sleep(0.5)
    password = password_in(mails[-1])
    form = api_form("UsersManager.createAppSpecificTokenAuth", userLogin="alice",
                    passwordConfirmation=password, description="attack")  # fmt: skip
    made = json.loads(matomo_api(target, "anonymous", form))
    assert isinstance(made, dict) and "value" in made, made
    ids = json.loads(target.read_file(MATOMO_IDS))["sites"]
    return Matomo(ids, password, str(made["value"]))


@pytest.fixture(scope="module")
def bob_socket(target: Host) -> str:
    """Where bob's pool listens (keyed name; the attacker is assumed to know it)."""
    return pool_socket(target, "bob")


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


def fetch(host: Host, urls: str) -> str:
    """GET each of the space-separated ``urls`` from outside, as written (no
    path normalising), each answer followed by its HTTP status."""
    names = {urllib.parse.urlsplit(url).hostname for url in urls.split()}
    resolve = [arg for name in sorted(names) for arg in ("--resolve", f"{name}:443:127.0.0.1")]
    result = host.net_run(["curl", "-sk", "--max-time", "20", "--path-as-is", *resolve,
                           "-w", " HTTP %{http_code}\n", *urls.split()])  # fmt: skip
    return result.stdout + result.stderr


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


def pages(host: Host, paths: str) -> str:
    """GET each of alice's pages https://www.alice.example/t/PATH (space-separated)
    from outside as a browser would (gzip accepted), each answer decoded (a gzip
    body unpacked, bytes that are no UTF-8 replaced) and followed by its HTTP status."""
    script = (
        'curl -sk --max-time 20 --resolve "$1" -H "Accept-Encoding: gzip"'
        ' -w "%{stderr}%{http_code}" "$2" | base64 -w0'
    )
    answers = []
    for path in paths.split():
        url = f"https://www.alice.example/t/{path}"
        result = host.net_run(["sh", "-c", script, "sh", "www.alice.example:443:127.0.0.1", url])
        body = base64.b64decode(result.stdout)
        while body.startswith(b"\x1f\x8b"):  # gzip (mod_deflate, or twice)
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                break
        answers.append(f"{body.decode(errors='replace')} HTTP {result.stderr}\n")
    return "".join(answers)


def breached(out: str, name: str = "") -> bool:
    """Whether ``out`` holds one of SECRETS, shows root's uid, or what attack
    ``name`` must not get (NEEDLES); a web answer also alice's PHP source."""
    needles = (*SECRETS, "uid=0(", *NEEDLES.get(name, ()))
    if name in WEB_ATTACKS:
        needles += (SOURCE_MARK,)
    return any(needle in out for needle in needles)


# --------------------------------------------------------------------------- attacks

SHELL_ATTACKS: dict[str, str] = {
    "direct path to bob's config": "cat /home/bob/sites/shop/wp-config.php",
    "bob's formula-installed app configs": f"cat {BOB_WP_CONFIG} {BOB_LOCAL_SETTINGS}",
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
        f"php -r 'var_dump(stream_socket_client(\"unix://{SOCKET_TOKEN}\"));' ; ls -la /run/php"
    ),
    "raw FastCGI to bob's pool from the shell (python3)": (
        # bob's socket, then every socket the kernel lists (worst case: all of them).
        "python3 ~/private/fcgi.py @BOB_SOCKET@"
        " $(awk 'NR > 1 && $8 ~ /^\\// {print $8}' /proc/self/net/unix | sort -u)"
    ),
    "raw FastCGI to bob's pool from the shell (php-cli)": "php ~/private/fcgi.php @BOB_SOCKET@",
    "su to bob": "su bob -c 'cat /home/bob/sites/shop/wp-config.php' </dev/null",
    "setuid programs of the chroot to root": "sh ~/private/setuid.sh",
    "/tmp shared with bob": "ls -la /tmp /var/tmp /dev/shm; cat /tmp/* 2>&1 | head",
    "/dev/shm shared with bob": "cat /dev/shm/webarch-bob-secret /run/shm/webarch-bob-secret",
    "SysV shared memory from the shell": (
        f'ipcs -m; php -r \'$m = shmop_open({SHM_KEY}, "a", 0, 0);'
        " echo shmop_read($m, 0, shmop_size($m));'"
    ),
    "bob's mailbox": "cat /var/mail/bob /var/spool/mail/bob /var/mail/* 2>&1",
    "Matomo's config.ini.php from the shell": (
        f"cat {MATOMO_CONFIG}; find / -xdev -name config.ini.php -exec cat {{}} + 2>&1"
    ),
    "webarch's Matomo token and password from the shell": (
        f"cat {MATOMO_TOKEN} {MATOMO_PASSWORD} 2>&1; ls -la /var/lib/webarch 2>&1"
    ),
    "MariaDB as carol-stats (Matomo's database)": (
        f"mysql -u carol-stats {MATOMO_DB} -e 'SELECT name FROM matomo_log_action'"
    ),
}

#: What the output of an attack that runs a tool must show: the tool did run
#: (a blocked attack then proves something).
RAN: dict[str, str] = {
    "raw FastCGI to bob's pool from the shell (python3)": "/run/mysqld/mysqld.sock",
    "raw FastCGI to bob's pool from the shell (php-cli)": "/run/php/webarch-",
    "setuid programs of the chroot to root": "/usr/bin/su ",
    "PHP raw FastCGI to bob's pool": "/run/php/webarch-",
    "MariaDB as carol-stats (Matomo's database)": "Access denied for user 'carol-stats'",
    "Matomo's config.ini.php over HTTPS": " HTTP 403",
    "PHP as carol-stats in Matomo's database (mysqli)": "Access denied for user 'carol-stats'",
    "PHP as carol-stats in Matomo's database (PDO)": "Access denied for user 'carol-stats'",
    "PHP as root in Matomo's database": "Access denied for user 'root'",
    "PHP to MariaDB over TCP": "443-open",
    "Matomo API: bob's visits (VisitsSummary.get)": '"result":"error"',
    "Matomo API: bob's last visits (Live.getLastVisitsDetails)": '"result":"error"',
    "Matomo API: bob's last visits listed with alice's site": '"result":"error"',
    "Matomo API: last visits of all sites (idSite=all)": "ALICE-OWN-PAGE",
    "Matomo API: bob's page URLs report (Actions.getPageUrls)": '"result":"error"',
    "Matomo API: bulk request for bob's last visits": '"result":"error"',
    "Matomo API: bob's site in alice's site list": "www.alice.example",
    "Matomo API: alice gives herself view access to bob's site": '"result":"error"',
    **attacks_htaccess.RAN,
}

#: What else the output of an attack must not show (beyond SECRETS): the
#: attack got what only bob, carol-stats or root may have.
NEEDLES: dict[str, tuple[str, ...]] = {
    "PHP to MariaDB over TCP": ("3306-open",),
    "Matomo API: bob's visits (VisitsSummary.get)": ("nb_visits",),
    "Matomo API: bob's site in alice's site list": ("bob.example",),
    "Matomo API: alice gives herself view access to bob's site": ('"success"',),
    **attacks_htaccess.NEEDLES,
}

#: PHP that connects to MariaDB and prints the rows of ``query``, or why it was refused.
DB_PHP = "try {{ {connect} echo 'rows: ';" \
    " foreach ($db->query('{query}') as $row) echo current($row), ' ';" \
    " }} catch (Throwable $e) {{ echo 'refused: ', $e->getMessage(); }}"  # fmt: skip
MATOMO_ROWS = "SELECT name FROM matomo_log_action"

WRITE_ATTACKS: dict[str, tuple[str, str]] = {
    # name: (command, path on the host that must not appear)
    "write the chroot's /etc": ("echo pwned > /etc/pwned", "/chroots/alice/etc/pwned"),
    "write /usr": ("echo pwned > /usr/bin/pwned", "/usr/bin/pwned"),
    "write bob's site": ("echo pwned > /home/bob/sites/shop/pwned", "/home/bob/sites/shop/pwned"),
    "write her own home's top": ("echo pwned > /home/alice/pwned", "/home/alice/pwned"),
}

#: The [P] attack, also run by the switched-off-defence test.
PROXY_TO_BOB = "RewriteRule [P] to bob's private script"

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
    "PHP raw FastCGI to bob's pool": ({"a.php": FCGI_PHP}, "a.php"),
    "PHP reads /dev/shm": (
        php("echo file_get_contents('/dev/shm/webarch-bob-secret');"), "a.php"),
    "SysV shared memory from PHP": (
        php(f"$m = shmop_open({SHM_KEY}, 'a', 0, 0); echo shmop_read($m, 0, shmop_size($m));"),
        "a.php"),
    "symlink in the docroot served by Apache": ({}, "link.txt"),
    "symlink with Options +FollowSymLinks": (
        {".htaccess": "Options +FollowSymLinks\n"}, "link.txt"),
    "SetHandler to bob's pool": (
        {".htaccess": 'SetHandler "proxy:unix:@BOB_SOCKET@|fcgi://bob"\n',
         "a.php": "<?php echo 1;"}, "a.php"),
    "RewriteRule [H=] to bob's pool": (
        {".htaccess": "RewriteEngine on\nRewriteRule ^a\\.php$ - "
         "[H=proxy:unix:@BOB_SOCKET@|fcgi://bob]\n",
         "a.php": "<?php echo 1;"}, "a.php"),
    PROXY_TO_BOB: (
        {".htaccess": "RewriteEngine on\nRewriteRule ^a\\.php$ "
         '"unix:@BOB_SOCKET@|fcgi://bob/home/bob/private/tool.php" [P]\n',
         "a.php": "<?php echo 1;"}, "a.php"),
    "SetEnv PHP_VALUE auto_prepend_file": (
        {".htaccess": 'SetEnv PHP_VALUE "auto_prepend_file=/home/bob/private/tool.php"\n',
         "a.php": "<?php echo 1;"}, "a.php"),
    "[E=PHP_ADMIN_VALUE] with [H=] to bob": (
        {".htaccess": "RewriteEngine on\nRewriteRule ^a\\.php$ - "
         "[H=proxy:unix:@BOB_SOCKET@|fcgi://bob,"
         "E=PHP_ADMIN_VALUE:auto_prepend_file=/home/bob/sites/shop/wp-config.php]\n",
         "a.php": "<?php echo 1;"}, "a.php"),
    # bob's formula-installed applications: their configs hold his keys.
    "PHP reads bob's wp-config.php and LocalSettings.php": (
        php(f"echo file_get_contents('{BOB_WP_CONFIG}'), file_get_contents('{BOB_LOCAL_SETTINGS}');"
            " foreach (glob('/home/*/sites/*/{wp-config,LocalSettings}.php', GLOB_BRACE) as $f)"
            " echo file_get_contents($f);"), "a.php"),
    "bob's wp-config.php and LocalSettings.php over HTTPS": ({}, " ".join(
        [f"https://{BOB_BLOG}/{path}" for path in ("wp-config.php", "wp-config.php.bak",
                                                   "wp-config.php~", "WP-CONFIG.PHP")]
        + [f"https://{BOB_WIKI}/{path}" for path in ("LocalSettings.php", "mw-config/",
                                                     "wiki/LocalSettings.php")])),
    # The server's Matomo (carol-stats' site), with alice's PHP and over HTTPS.
    "PHP reads Matomo's config.ini.php": (
        php(f"echo file_get_contents('{MATOMO_CONFIG}');"
            " foreach (glob('/home/*/sites/*/config/*') as $f) echo file_get_contents($f);"),
        "a.php"),
    "PHP reads webarch's Matomo token and password": (
        php(f"echo file_get_contents('{MATOMO_TOKEN}'), file_get_contents('{MATOMO_PASSWORD}');"),
        "a.php"),
    "Matomo's config.ini.php over HTTPS": ({}, " ".join(
        f"https://{STATS}/{path}" for path in (
            "config/config.ini.php", "/config/config.ini.php", "config//config.ini.php",
            "CONFIG/config.ini.php", "js/../config/config.ini.php", "config/config.ini.php/",
            "config/config.ini.php%00.js", "config/config.ini.php?module=API"))),
    "PHP as carol-stats in Matomo's database (mysqli)": (
        php(DB_PHP.format(connect=f"$db = new mysqli('localhost', 'carol-stats', null,"
                                  f" '{MATOMO_DB}');", query=MATOMO_ROWS)), "a.php"),
    "PHP as carol-stats in Matomo's database (PDO)": (
        php(DB_PHP.format(connect="$db = new PDO('mysql:unix_socket=/run/mysqld/mysqld.sock;"
                                  f"dbname={MATOMO_DB}', 'carol-stats', '');",
                          query=MATOMO_ROWS)), "a.php"),
    "PHP as root in Matomo's database": (
        php(DB_PHP.format(connect=f"$db = new mysqli('localhost', 'root', null, '{MATOMO_DB}');",
                          query=MATOMO_ROWS)), "a.php"),
    "PHP to MariaDB over TCP": (
        # The same tool reaches Apache's 443 (the control), then MariaDB's 3306.
        php("foreach (['127.0.0.1', '[::1]'] as $a) foreach ([443, 3306] as $p)"
            " { $s = fsockopen($a, $p, $no, $err, 5); echo $s ? \"$p-open \" : \"$p: $err \"; }"
            + DB_PHP.format(connect="$db = new mysqli('127.0.0.1', 'carol-stats', '',"
                                    f" '{MATOMO_DB}', 3306);", query=MATOMO_ROWS)), "a.php"),
    # bob's statistics through Matomo's API, with alice's own token.
    "Matomo API: bob's visits (VisitsSummary.get)": (
        {}, API + api_form("VisitsSummary.get", idSite="@BOB_IDSITE@", period="day",
                           date="today")),
    "Matomo API: bob's last visits (Live.getLastVisitsDetails)": (
        {}, API + api_form("Live.getLastVisitsDetails", idSite="@BOB_IDSITE@", period="day",
                           date="today")),
    "Matomo API: bob's last visits listed with alice's site": (
        {}, API + api_form("Live.getLastVisitsDetails", idSite="@ALICE_IDSITE@,@BOB_IDSITE@",
                           period="day", date="today")),
    "Matomo API: last visits of all sites (idSite=all)": (
        {}, API + api_form("Live.getLastVisitsDetails", idSite="all", period="day",
                           date="today")),
    "Matomo API: bob's page URLs report (Actions.getPageUrls)": (
        {}, API + api_form("Actions.getPageUrls", idSite="@BOB_IDSITE@", period="day",
                           date="today", flat=1)),
    "Matomo API: bulk request for bob's last visits": (
        {}, API + api_form("API.getBulkRequest", **{"urls[0]": api_form(
            "Live.getLastVisitsDetails", idSite="@BOB_IDSITE@", period="day", date="today")})),
    "Matomo API: bob's site in alice's site list": (
        {}, API + api_form("SitesManager.getSitesWithAtLeastViewAccess")),
    "Matomo API: alice gives herself view access to bob's site": (
        {}, API + api_form("UsersManager.setUserAccess", userLogin="alice", access="view",
                           idSites="@BOB_IDSITE@", passwordConfirmation="@ALICE_PASSWORD@")),
    # What .htaccess and .user.ini files may now hold (attacks_htaccess.py).
    **attacks_htaccess.ATTACKS,
}  # fmt: skip

#: The attacks and leak checks that need the Matomo instance (skipped without its archive).
MATOMO_ONLY = {name for name in (*SHELL_ATTACKS, *WEB_ATTACKS) if "Matomo" in name} | {
    "the Matomo instance's files",
    "other accounts' Matomo websites in ~/.matomo_sites",
}


class MailAttack(NamedTuple):
    """Mail sent by alice with bob's envelope sender, through one channel."""

    #: "shell": an SSH command; "web": a PHP file requested over HTTPS.
    channel: str
    #: The command or PHP text; ``{subject}`` is replaced by the attack's subject.
    text: str
    #: Whether the channel delivers at all (then alice's message must arrive).
    delivers: bool = True


#: The raw SMTP attack, also run by the switched-off-defence test.
RAW_SMTP = "raw SMTP over the gate socket, MAIL FROM bob"

MAIL_ATTACKS: dict[str, MailAttack] = {
    "sendmail -f bob's address": MailAttack(
        "shell",
        "printf 'To: friend@example.net\\nSubject: {subject}\\n\\nhi\\n'"
        f" | /usr/sbin/sendmail -t -f {BOB_SENDER} -F Bob",
    ),
    "msmtp --from bob's address": MailAttack(
        "shell",
        f"printf 'Subject: {{subject}}\\n\\nhi\\n' | msmtp --from={BOB_SENDER} friend@example.net",
    ),
    "msmtp without its configuration, --from bob's address": MailAttack(
        "shell",
        "printf 'Subject: {subject}\\n\\nhi\\n' | msmtp -C /dev/null --host=localhost"
        f" --socket=/run/webarch-mail/submit.sock --from={BOB_SENDER} friend@example.net",
    ),
    RAW_SMTP: MailAttack("shell", f"python3 ~/private/smtp.py send {BOB_SENDER} {{subject}}"),
    "PHP mail() with -f bob's address": MailAttack(
        "web",
        "<?php echo mail('friend@example.net', '{subject}', 'hi',"
        f" 'From: {BOB_SENDER}', '-f {BOB_SENDER}') ? 'sent' : 'failed';",
    ),
    "SMTP to the host's own ports 25/465/587": MailAttack(
        "shell", f"python3 ~/private/smtp-tcp.py {BOB_SENDER} {{subject}}", delivers=False
    ),
}


class EscapeAttack(NamedTuple):
    """A job planted from the chroot that would run outside it, writing a file."""

    #: The shell command (its job writes /tmp/webarch-escaped-TAG when it runs).
    command: str
    tag: str


ESCAPE_ATTACKS: dict[str, EscapeAttack] = {
    "crontab - from the shell": EscapeAttack(
        "printf '* * * * * id > /tmp/webarch-escaped-crontab\\n' | crontab - ; crontab -l",
        "crontab",
    ),
    "write into /var/spool/cron": EscapeAttack(
        "mkdir -p /var/spool/cron/crontabs;"
        " printf '* * * * * id > /tmp/webarch-escaped-spool\\n' > /var/spool/cron/crontabs/alice",
        "spool",
    ),
    "~/.forward pipe run by Exim": EscapeAttack(
        "printf '|/bin/sh -c \"id > /tmp/webarch-escaped-forward\"\\n' > ~/.forward;"
        f" printf 'Subject: fwd\\n\\nhi\\n' | /usr/sbin/sendmail alice@{HOSTNAME}",
        "forward",
    ),
    "systemd-run --user timer": EscapeAttack(
        "systemd-run --user --on-active=2 sh -c 'id > /tmp/webarch-escaped-systemd'", "systemd"
    ),
}


class Leak(NamedTuple):
    """A shell command whose output must not contain any of ``needles``."""

    command: str
    needles: tuple[str, ...] = ("bob", "carol-stats")
    #: If set, the output (stripped) must be exactly this.
    exact: str | None = None
    #: Shown by the output when the command did run (a control).
    ran: str = ""


LEAK_CHECKS: dict[str, Leak] = {
    "other accounts in /etc/passwd": Leak("cat /etc/passwd /etc/group"),
    "other accounts in /home": Leak("ls -a /home"),
    "other accounts' processes": Leak("ps -eo user,args"),
    "other accounts' sockets in /proc/self/net/unix": Leak("cat /proc/self/net/unix"),
    "bob's password markers": Leak(
        "cat /home/bob/.notify_passwd /home/bob/.notify_mariadb 2>/dev/null",
        ("bob", "was sent to"),
    ),
    "bob's mail log": Leak(
        "cat /home/bob/logs/mail.log /var/log/exim4/mainlog 2>/dev/null", ("bob", "U=", "<=")
    ),
    "the mail accounts and senders": Leak(
        "cat /etc/webarch/mail-accounts /etc/email-addresses 2>/dev/null", ("bob", "/home/")
    ),
    "/run/webarch-mail holds only the socket": Leak("ls -A /run/webarch-mail", (), "submit.sock"),
    "the notification ledger and spool": Leak(
        "ls -laR /var/lib/webarch 2>/dev/null; cat /var/lib/webarch/notify/*.json 2>/dev/null",
        ("bob", "ledger", "spool", "notify"),
    ),
    "VRFY/EXPN of bob over the mail gate": Leak(
        "python3 ~/private/smtp.py probe", ran="252 Administrative prohibition"
    ),
    "the Matomo instance's files": Leak(
        "ls -la /home/carol-stats /home/carol-stats/sites/matomo/config /var/lib/webarch/matomo"
        " 2>&1",
        ("total", "config.ini.php", "ids.json", "token", "password"),
        ran="No such file or directory",
    ),
    "other accounts' Matomo websites in ~/.matomo_sites": Leak(
        "cat ~/.matomo_sites", ran="https://www.alice.example"
    ),
}


#: The nightly snapshots (issue 17): the store, and where alice sees her days.
STORE = "/var/lib/webarch-backups"
SNAP = "~/backups/files/@DAY@"
#: Planted by alice (over SSH) before the night: symlinks and a hard link to
#: bob's files and out of her chroot, a hard-link bomb (one 8 MiB file, 500
#: links), and ~/private/restored (where the admin's restore goes) made a
#: symlink into bob's site.
BACKUP_PLANT = (
    "cd ~/private && ln -s /home/bob/private/notes.txt bob-notes && ln -s /home/bob bob-home"
    " && ln -s / root-link && { ln /home/bob/private/notes.txt bob-hard 2>/dev/null; true; }"
    " && head -c 8M /dev/urandom > bomb && mkdir bombs"
    " && for i in $(seq 500); do ln bomb bombs/$i; done"
    " && rm -rf restored && ln -s /home/bob/sites/shop restored && ls bombs | wc -l"
)
#: Planted by root: what a home brought over from elsewhere may hold (alice
#: cannot make them): a setuid-root program and device nodes she may open.
BACKUP_ROOT_PLANT = (
    "cd /home/alice/private && cp /usr/bin/id rootid && chmod 4755 rootid"
    " && mknod -m 666 mem c 1 1 && mknod -m 666 null c 1 3 && chown alice: mem null"
)
#: A root-side check: bob's secret anywhere in alice's part of the store.
STORE_GREP = f"grep -rl {SECRET} {STORE}/alice && echo FOUND-IN-ALICES-STORE; echo grep-ran"


class BackupAttack(NamedTuple):
    """alice's SSH command against her snapshots of the night (@DAY@), and a
    root-side check on the host; their output must show all of ``ran`` and none of
    SECRETS or ``needles``."""

    command: str
    host: str
    ran: tuple[str, ...]
    needles: tuple[str, ...] = ()


BACKUP_ATTACKS: dict[str, BackupAttack] = {
    "her symlinks to bob's files in her snapshots": BackupAttack(
        f"readlink {SNAP}/private/bob-notes; cat {SNAP}/private/bob-notes;"
        f" ls -laR {SNAP}/private/bob-home/ 2>&1",
        STORE_GREP,
        ("/home/bob/private/notes.txt",),
        ("FOUND-IN-ALICES-STORE",),
    ),
    "her hard links to bob's files in her snapshots": BackupAttack(
        f"cat {SNAP}/private/bob-hard 2>&1; ls -la {SNAP}/private/",
        STORE_GREP,
        ("grep-ran",),
        ("FOUND-IN-ALICES-STORE",),
    ),
    "a hard-link bomb in her snapshots": BackupAttack(
        f"ls {SNAP}/private/bombs | wc -l",
        f"du -sk {STORE}/alice/days/@DAY@/private"
        ' | awk \'{print ($1 > 16384) ? "MULTIPLIED" : "stored-once"}\'',
        ("stored-once",),
        ("MULTIPLIED",),
    ),
    "a setuid-root program in her snapshots": BackupAttack(
        f"ls -ln {SNAP}/private/rootid; {SNAP}/private/rootid;"
        f" cp {SNAP}/private/rootid ~/private/id2 && ~/private/id2",
        f"ls -ln {STORE}/alice/days/@DAY@/private/rootid",
        ("uid=",),
        (" 0 0 ",),
    ),
    "device files in her snapshots": BackupAttack(
        f"ls -l {SNAP}/private/mem {SNAP}/private/null 2>&1; head -c 64 {SNAP}/private/mem | od -c",
        f"ls -l {STORE}/alice/days/@DAY@/private/mem {STORE}/alice/days/@DAY@/private/null 2>&1",
        ("No such file or directory",),
        ("crw",),
    ),
    "out of the chroot through her snapshot path": BackupAttack(
        f"ls -a ~/backups/files/.. {SNAP}/.. {SNAP}/private/root-link{STORE} 2>&1;"
        f" cat ~/backups/files/../../../../../..{STORE}/bob/days/*/private/notes.txt"
        f" {SNAP}/private/root-link{STORE}/bob/days/*/private/notes.txt 2>&1",
        f"grep -q {SECRET} {STORE}/bob/days/@DAY@/private/notes.txt && echo bobs-day-holds-it",
        ("mariadb", "bobs-day-holds-it"),
        (".partial-", ".owners"),
    ),
    "the admin's restore through her symlink": BackupAttack(
        "ls -la ~/private/restored 2>&1",
        f"{SALT_CALL} --local webarch_backup.restore alice sites/www @DAY@ 2>&1;"
        " ls -d /home/bob/sites/shop/@DAY@* && echo WRITTEN-INTO-BOBS-SITE",
        ("failed as alice",),
        ("WRITTEN-INTO-BOBS-SITE",),
    ),
}


def _record(name: str, breach: bool, leak: bool = False) -> None:
    RESULTS[name] = ("leak" if leak else "breach") if breach else "blocked"


def _skipped() -> set[str]:
    """The attacks and leak checks this run skips (the Matomo ones without its archive)."""
    return set() if MATOMO_ARCHIVE.is_file() else MATOMO_ONLY


def _params(names: list[str]) -> list[Any]:
    """``names`` as parameters, the known holes marked as strict xfails (the
    Matomo attacks skipped without Matomo's archive)."""
    params = []
    for name in names:
        marks = []
        if name in KNOWN_HOLES:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_HOLES[name]))
        if name in _skipped():
            marks.append(pytest.mark.skip(reason=f"no Matomo release archive ({MATOMO_ARCHIVE})"))
        params.append(pytest.param(name, marks=marks))
    return params


def web_attack(host: Host, name: str, bob_socket: str, matomo: Matomo | None = None) -> str:
    """Upload the files of WEB_ATTACKS[name] and make the request; the answer."""
    files, path = WEB_ATTACKS[name]
    upload(host, {file: real(text, bob_socket) for file, text in files.items()})
    if path == "link.txt":  # alice's symlink to bob's file, requested over HTTPS
        link = f"cd {ALICE_DOCROOT}/t && ln -s /home/bob/sites/shop/wp-config.php link.txt"
        host.run(["sh", "-c", link + " && chown -h alice link.txt"], check=True)
    if path.startswith(API):
        assert matomo is not None
        return matomo_api(host, matomo.alice_token, matomo.fill(path.removeprefix(API)))
    if path.startswith(PAGES):
        return pages(host, path.removeprefix(PAGES))
    if path.startswith("https://"):
        return fetch(host, path)
    return get(host, path)


def mail_attack(host: Host, key: Path, sink: RelaySink, name: str) -> tuple[str, list[dict]]:
    """Send MAIL_ATTACKS[name]; its output and the messages that reached the relay."""
    attack = MAIL_ATTACKS[name]
    subject = f"attack-{time.monotonic_ns()}"
    text = attack.text.replace("{subject}", subject)
    if attack.channel == "web":
        out = _web(host, {"a.php": text}, "a.php")
    else:
        out = shell(host, key, text)
    deadline = time.monotonic() + (30 if attack.delivers else 5)
    while True:
        found = [m for m in sink.messages() if str(m["message"]["Subject"]) == subject]
        if found or time.monotonic() > deadline:
            return out, found
        time.sleep(0.3)


def escaped(host: Host, attack: EscapeAttack) -> list[str]:
    """What the escape attempt left outside the chroot: crontabs, written files."""
    paths = ["/var/spool/cron/crontabs/alice", "/var/spool/cron/alice"]
    paths += [f"{d}/webarch-escaped-{attack.tag}" for d in ("/tmp", "/var/tmp", "/dev/shm")]
    return [path for path in paths if host.exists(path)]


# --------------------------------------------------------------------------- controls


def test_controls_alice_own_things_work(target, key, sink):
    assert shell(target, key, "cat /etc/hostname >/dev/null && echo shell-ok").strip() == "shell-ok"
    assert "alice-row" in shell(target, key, "mysql alice_app -e 'SELECT v FROM mine'")
    out = _web(target, php("echo 'php-ok ', posix_getpwuid(posix_geteuid())['name'];"), "a.php")
    assert out.strip() == "php-ok alice"
    assert SECRET in target.read_file("/home/bob/sites/shop/wp-config.php"), "secret planted"
    assert ROOT_SECRET in target.read_file("/home/alice/root-only.txt")


def test_controls_the_attack_tools_work_outside_the_chroot(target, bob_socket):
    """Run as root on the host, the FastCGI clients do get bob's script to run."""
    for command in (["python3", "/home/alice/private/fcgi.py", bob_socket],
                    ["php", "/home/alice/private/fcgi.php", bob_socket]):  # fmt: skip
        out = target.run(command).stdout
        assert f"{SECRET}-RAN" in out, out


def test_controls_matomo_answers_and_holds_the_secrets(target, key, matomo):
    """The secrets are where the attacks look: the superuser's token gets bob's
    visit from the API, carol-stats gets it from the database; alice's own
    token gets her own visit; her PHP reaches her own database (mysqli, PDO)."""
    if matomo is None:
        pytest.skip(f"no Matomo release archive ({MATOMO_ARCHIVE})")
    superuser = target.read_file(MATOMO_TOKEN).strip()
    day = {"period": "day", "date": "today"}
    bob, alice = matomo.ids["bob/shop"], matomo.ids["alice/www"]
    for form in (api_form("Live.getLastVisitsDetails", idSite=bob, **day),
                 api_form("Actions.getPageUrls", idSite=bob, flat=1, **day),
                 api_form("API.getBulkRequest", **{"urls[0]": api_form(
                     "Live.getLastVisitsDetails", idSite=bob, **day)})):  # fmt: skip
        assert SECRET in matomo_api(target, superuser, form), form
    summary = json.loads(matomo_api(target, superuser, api_form("VisitsSummary.get", idSite=bob,
                                                                **day)))  # fmt: skip
    assert int(summary["nb_visits"]) >= 1, summary
    sites = matomo_api(target, superuser, api_form("SitesManager.getSitesWithAtLeastViewAccess"))
    assert "shop.bob.example" in sites and "www.alice.example" in sites
    own = matomo_api(target, matomo.alice_token,
                     api_form("Live.getLastVisitsDetails", idSite=alice, **day))  # fmt: skip
    assert "ALICE-OWN-PAGE" in own and SECRET not in own, own[-2000:]
    rows = target.run(["runuser", "-u", "carol-stats", "--", "mysql", MATOMO_DB, "-e", MATOMO_ROWS])
    assert SECRET in rows.stdout, rows
    login = fetch(target, f"https://{STATS}/index.php?module=Login")
    assert "login_form_password" in login and login.endswith(" HTTP 200\n"), login[-2000:]
    query = "SELECT v FROM mine"
    for connect in ("$db = new mysqli('localhost', 'alice', null, 'alice_app');",
                    "$db = new PDO('mysql:unix_socket=/run/mysqld/mysqld.sock;dbname=alice_app',"
                    " 'alice', '');"):  # fmt: skip
        out = _web(target, php(DB_PHP.format(connect=connect, query=query)), "a.php")
        assert out == "rows: alice-row ", out


@pytest.fixture(scope="module")
def escapes(target: Host, key: Path) -> float:
    """Make every escape attempt at once; the time they were made (one shared wait)."""
    for attack in ESCAPE_ATTACKS.values():
        shell(target, key, attack.command)
    return time.monotonic()


def test_escape_attempts_are_made(escapes):
    """Early in the run, so that the wait for cron overlaps the other attacks."""
    assert escapes <= time.monotonic()


# --------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("name", _params(sorted(SHELL_ATTACKS)))
def test_shell_attack(target, key, bob_socket, name):
    out = shell(target, key, real(SHELL_ATTACKS[name], bob_socket))
    _record(name, breached(out, name))
    assert not breached(out, name), out[-2000:]
    assert RAN.get(name, "") in out, out[-2000:]


@pytest.mark.parametrize("name", sorted(WRITE_ATTACKS))
def test_write_attack(target, key, name):
    command, path = WRITE_ATTACKS[name]
    shell(target, key, command)
    written = target.exists(path)
    _record(name, written)
    assert not written


@pytest.mark.parametrize("name", _params(sorted(WEB_ATTACKS)))
def test_web_attack(target, bob_socket, matomo, name):
    out = web_attack(target, name, bob_socket, matomo)
    _record(name, breached(out, name))
    assert not breached(out, name), out[-2000:]
    assert RAN.get(name, "") in out, out[-2000:]


@pytest.mark.parametrize("name", _params(sorted(MAIL_ATTACKS)))
def test_mail_attack(target, key, sink, name):
    out, found = mail_attack(target, key, sink, name)
    as_bob = [m for m in found if m["mail_from"] == BOB_SENDER]
    _record(name, bool(as_bob))
    assert not as_bob, out[-2000:]
    if MAIL_ATTACKS[name].delivers:  # the channel works: alice's own sender, not bob's
        assert [m["mail_from"] for m in found] == [ALICE_SENDER], out[-2000:]
    else:
        assert found == [], out[-2000:]


@pytest.mark.parametrize("name", _params(sorted(LEAK_CHECKS)))
def test_information_leak(target, key, name):
    check = LEAK_CHECKS[name]
    out = shell(target, key, check.command)
    leaked = any(needle in out for needle in check.needles)
    if check.exact is not None:
        leaked = leaked or out.strip() != check.exact
    _record(name, leaked, leak=True)
    assert not leaked, out[-2000:]
    assert check.ran in out, out[-2000:]


@pytest.mark.parametrize("name", sorted(ESCAPE_ATTACKS))
def test_escape_attack(target, escapes, name):
    time.sleep(max(0.0, escapes + ESCAPE_WAIT - time.monotonic()))
    found = escaped(target, ESCAPE_ATTACKS[name])
    _record(name, bool(found))
    assert not found


@pytest.fixture(scope="module")
def night(target: Host, key: Path) -> str:
    """alice's and root's plants, then a night of snapshots (every account); its date.
    Root's file of the suite in alice's home (root-only.txt, which she cannot
    read) is moved out for the night: a night fails on a file the account cannot
    read (test_backup.py)."""
    assert shell(target, key, BACKUP_PLANT).strip() == "500"
    target.run(["sh", "-ec", BACKUP_ROOT_PLANT], check=True)
    aside = ["mv", "/home/alice/root-only.txt", "/root/root-only.txt"]
    target.run(aside, check=True)
    try:
        run = target.run(["/usr/local/sbin/webarch-backup"])
    finally:
        target.run(["mv", aside[2], aside[1]], check=True)
        target.run(["rm", "-f", "/home/alice/private/rootid", "/home/alice/private/mem",
                    "/home/alice/private/null"], check=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return target.run(["date", "+%F"], check=True).stdout.strip()


@pytest.mark.parametrize("name", sorted(BACKUP_ATTACKS))
def test_backup_attack(target, key, night, name):
    attack = BACKUP_ATTACKS[name]
    out = shell(target, key, attack.command.replace("@DAY@", night))
    out += target.run(["sh", "-c", attack.host.replace("@DAY@", night)]).stdout
    bad = breached(out) or any(needle in out for needle in attack.needles)
    _record(name, bad)
    assert not bad, out[-2000:]
    assert all(ran in out for ran in attack.ran), out[-2000:]


# --------------------------------------------------------------------------- defences off


def converge_again(host: Host) -> None:
    """Restore the formula's configuration (the pillar is still on the host)."""
    assert failed(host.salt_call(["state.apply", "webarch"])) == {}


def test_switched_off_script_filename_guard(target, bob_socket):
    """Without the SCRIPT_FILENAME guard of alice's vhost, [P] runs bob's script."""
    conf = "/etc/apache2/sites-available/webarch-alice.conf"
    assert not breached(web_attack(target, PROXY_TO_BOB, bob_socket))
    try:
        target.run(["sed", "-i", "/ProxyFCGISetEnvIf .*webarch-refused/d", conf], check=True)
        assert "webarch-refused" not in target.read_file(conf)
        target.run(["apachectl", "graceful"], check=True)
        time.sleep(1)
        out = web_attack(target, PROXY_TO_BOB, bob_socket)
        assert breached(out), f"the detector must see the breach: {out[-2000:]}"
    finally:
        converge_again(target)
    assert "webarch-refused" in target.read_file(conf)
    assert not breached(web_attack(target, PROXY_TO_BOB, bob_socket))


def test_switched_off_forced_sender(target, key, sink):
    """Without MAIN_FORCE_SENDER, alice's raw SMTP session leaves as bob."""
    macros = "/etc/exim4/exim4.conf.localmacros"

    def senders() -> list[str]:
        return [m["mail_from"] for m in mail_attack(target, key, sink, RAW_SMTP)[1]]

    assert senders() == [ALICE_SENDER]
    try:
        target.run(["sed", "-i", "/MAIN_FORCE_SENDER/d", macros], check=True)
        target.run(["update-exim4.conf"], check=True)
        assert senders() == [BOB_SENDER], "the detector must see the breach"
    finally:
        converge_again(target)
    assert "MAIN_FORCE_SENDER = yes" in target.read_file(macros)
    assert senders() == [ALICE_SENDER]


def test_switched_off_sysv_ipc(target, key):
    """With SysV shared memory allowed again, alice's shell reads bob's 0644 segment."""
    attack = SHELL_ATTACKS["SysV shared memory from the shell"]
    assert not breached(shell(target, key, attack))
    try:
        target.run(["sysctl", "-q", "-w", "kernel.shmall=18446744073692774399"], check=True)
        out = target.run(["runuser", "-u", "bob", "--", "php", "/home/bob/private/shm.php"])
        assert out.stdout == "shm-ok", out
        assert breached(shell(target, key, attack)), "the detector must see the breach"
    finally:
        target.run(["ipcrm", "-M", str(SHM_KEY)])
        converge_again(target)
    assert target.run(["sysctl", "-n", "kernel.shmall"]).stdout.strip() == "0"
    out = target.run(["runuser", "-u", "bob", "--", "php", "/home/bob/private/shm.php"])
    assert out.stdout != "shm-ok"
    assert not breached(shell(target, key, attack))


# --------------------------------------------------------------------------- figures


def test_summary(target, request):
    """Runs last: the figures of the whole suite."""
    attacks = {k: v for k, v in RESULTS.items() if k not in LEAK_CHECKS}
    blocked = sum(v == "blocked" for v in attacks.values())
    breaches = sorted(k for k, v in attacks.items() if v == "breach")
    leaks = sum(v == "leak" for v in RESULTS.values())
    line = f"attacks={len(attacks)} blocked={blocked} breaches={len(breaches)} leaks={leaks}"
    if breaches:
        line += f" (breached: {'; '.join(breaches)})"
    request.config.webarch_attack_summary = line  # printed by conftest at the end
    groups = (SHELL_ATTACKS, WRITE_ATTACKS, WEB_ATTACKS, MAIL_ATTACKS, ESCAPE_ATTACKS,
              BACKUP_ATTACKS)  # fmt: skip
    skipped = _skipped()
    expected = sum(map(len, groups)) - len(skipped - set(LEAK_CHECKS))
    if len(attacks) != expected or len(RESULTS) - len(attacks) != len(set(LEAK_CHECKS) - skipped):
        pytest.skip(f"partial run: {line}")
    assert set(breaches) <= set(KNOWN_HOLES) and leaks == 0, line
