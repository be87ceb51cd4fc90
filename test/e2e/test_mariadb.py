"""MariaDB per account, seen from outside: PHP over HTTPS and mysql over SSH.

Alice's PHP (Apache -> her PHP-FPM pool in her chroot) and her SSH shell (in
the same chroot) reach MariaDB through the bind-mounted socket and log in by
their Unix user (unix_socket): no password anywhere.  The clients (curl, ssh)
are this machine's, run in the test host's network namespace only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import apply, changed, failed, state_results
from testhost import Host

pytestmark = pytest.mark.e2e

SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
    "-o", "BatchMode=yes",
]  # fmt: skip
ARCHIVE = "/var/backups/webarch/databases"

DB_PHP = """<?php
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
try {
    $db = new mysqli('localhost', $_GET['user'] ?? 'alice', null, $_GET['db'] ?? 'alice_wp');
    $db->query('CREATE TABLE IF NOT EXISTS visits'
        . ' (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64))');
    $note = $_GET['note'] ?? 'web';
    $stmt = $db->prepare('INSERT INTO visits (note) VALUES (?)');
    $stmt->bind_param('s', $note);
    $stmt->execute();
    $row = $db->query("SELECT CURRENT_USER(), COUNT(*) FROM visits WHERE note = 'web'")
        ->fetch_row();
    echo "ok {$row[0]} {$row[1]}\\n";
} catch (mysqli_sql_exception $e) {
    echo 'error ', $e->getMessage(), "\\n";
}
"""


def pillar_for(keys: dict[str, Path], alice_dbs: dict, **server: object) -> dict:
    """Alice and bob, each with a key, a PHP site and databases."""
    return {
        "webarch": {
            **server,
            "accounts": {
                "alice": {
                    "ssh_keys": [keys["alice"].with_suffix(".pub").read_text().strip()],
                    "sites": {"www": {"server_name": "www.alice.example", "docroot": "public"}},
                    "databases": alice_dbs,
                },
                "bob": {
                    "ssh_keys": [keys["bob"].with_suffix(".pub").read_text().strip()],
                    "sites": {"shop": {"server_name": "shop.bob.example"}},
                    "databases": {"bob_shop": None},
                },
            },
        }
    }


ALICE_DBS = {"alice_wp": None, "alice_old": {"state": "present"}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh ed25519 key pair per account, on this machine."""
    folder = tmp_path_factory.mktemp("keys")
    found = {}
    for user in ("alice", "bob"):
        key = folder / user
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
        )
        found[user] = key
    return found


@pytest.fixture(scope="module")
def db(host: Host, keys: dict[str, Path]) -> Iterator[Host]:
    """The host converged with both accounts and their databases; alice's db.php."""
    host.keys = keys
    host.db_pillar = pillar_for(keys, ALICE_DBS)
    ret = apply(host, host.db_pillar)
    assert failed(ret) == {}
    path = "/home/alice/sites/www/public/db.php"
    host.write_file(path, DB_PHP, mode=0o640)
    host.run(["chown", "alice:www-data", path], check=True)
    yield host


def ssh(host: Host, user: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` in ``user``'s chroot over SSH, logged in with the user's key."""
    args = ["ssh", "-i", str(host.keys[user]), *SSH_OPTS, f"{user}@127.0.0.1", command]
    return host.net_run(args)


def ssh_ok(host: Host, user: str, command: str) -> str:
    result = ssh(host, user, command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def php(host: Host, query: str = "") -> str:
    """What alice's db.php answers over HTTPS."""
    url = f"https://www.alice.example/db.php{query}"
    resolve = ["--resolve", "www.alice.example:443:127.0.0.1"]
    return host.net_run(["curl", "-sS", "-k", "--max-time", "20", *resolve, url]).stdout


def sql(host: Host, query: str, database: str = "") -> str:
    """Run ``query`` as MariaDB's root on the host; return the tab-separated rows."""
    cmd = ["mariadb", "--batch", "--skip-column-names", "-e", query]
    return host.run([*cmd, *([database] if database else [])], check=True).stdout


def test_php_reads_and_writes_without_a_password(db):
    assert php(db) == "ok alice@localhost 1\n"
    assert php(db) == "ok alice@localhost 2\n"


def test_shell_mysql_just_works(db):
    out = ssh_ok(db, "alice", "mysql -N alice_wp -e \"INSERT INTO visits (note) VALUES ('ssh');"
                 " SELECT CURRENT_USER(), COUNT(*) FROM visits\"")  # fmt: skip
    user, count = out.split()
    assert user == "alice@localhost" and int(count) >= 2
    # The web's rows and the shell's are the same database.
    assert sql(db, "SELECT note FROM visits WHERE note = 'ssh'", "alice_wp") == "ssh\n"


def test_my_cnf_and_the_account_user(db):
    assert db.run(["stat", "-c", "%a %U %G", "/home/alice/.my.cnf"]).stdout == "400 alice alice\n"
    text = db.read_file("/home/alice/.my.cnf")
    assert "[client]\nsocket=/run/mysqld/mysqld.sock\nuser=alice\n" in text
    grants = sql(db, "SHOW GRANTS FOR alice@localhost")
    assert "IDENTIFIED VIA unix_socket" in grants
    assert "GRANT OPTION" not in grants and " ON *.* " in grants.splitlines()[0]
    assert grants.splitlines()[0].startswith("GRANT USAGE ON *.*")
    assert "`alice\\\\_wp`.*" in grants


@pytest.mark.parametrize(
    "command",
    [
        "mysql bob_shop -e 'SELECT 1'",
        "mysql -u bob bob_shop -e 'SELECT 1'",
        "mysql -u root -e 'SELECT 1'",
        "mysql -u root mysql -e 'SELECT 1'",
    ],
)
def test_alice_cannot_use_other_accounts_or_root(db, command):
    result = ssh(db, "alice", command)
    assert result.returncode != 0
    assert "Access denied" in result.stderr


def test_alice_php_cannot_log_in_as_bob_or_root(db):
    assert php(db, "?user=bob&db=bob_shop").startswith("error Access denied")
    assert php(db, "?user=root&db=mysql").startswith("error Access denied")
    assert php(db, "?db=bob_shop").startswith("error Access denied")


def test_alice_cannot_read_server_files(db):
    out = ssh_ok(db, "alice", "mysql -N alice_wp -e \"SELECT LOAD_FILE('/etc/passwd') IS NULL\"")
    assert out == "1\n"
    ssh_ok(db, "alice", "mysql alice_wp -e 'CREATE TABLE IF NOT EXISTS loot (t TEXT)'")
    server = ssh(
        db, "alice", "mysql alice_wp -e \"LOAD DATA INFILE '/etc/passwd' INTO TABLE loot\""
    )
    assert server.returncode != 0 and "Access denied" in server.stderr
    ssh_ok(db, "alice", "echo secret > ~/private/x.txt")
    local = ssh(
        db,
        "alice",
        "mysql --local-infile=1 alice_wp -e "
        "\"LOAD DATA LOCAL INFILE '/home/alice/private/x.txt' INTO TABLE loot\"",
    )
    assert local.returncode != 0
    assert "local infile" in local.stderr.lower() or "not allowed" in local.stderr
    assert sql(db, "SELECT COUNT(*) FROM loot", "alice_wp") == "0\n"


def test_server_is_on_its_socket_only(db):
    conf = db.read_file("/etc/mysql/mariadb.conf.d/90-webarch.cnf")
    assert "\nskip-networking\n" in conf and "local-infile = 0" in conf
    assert sql(db, "SELECT @@skip_networking, @@local_infile") == "1\t0\n"
    listening = db.run(["ss", "-Hltn"], check=True).stdout
    assert ":3306" not in listening
    # root logs in by the socket only (Debian's default, kept).
    root = sql(db, "SELECT plugin, authentication_string FROM mysql.user WHERE user = 'root'")
    assert root == "mysql_native_password\tinvalid\n"


def test_second_run_changes_nothing(db):
    ret = apply(db, db.db_pillar)
    assert failed(ret) == {}
    assert changed(ret) == {}
    # saltext-mysql's checks were skipped: the run's one snapshot of MariaDB
    # showed every user, database and grant in place.
    mysql = {k: v for k, v in state_results(ret).items() if k.startswith("mysql_")}
    assert len(mysql) >= 3
    for key, result in mysql.items():
        assert "unless condition is true" in result["comment"], (key, result["comment"])


def test_a_grant_revoked_by_hand_comes_back(db):
    original = sql(db, "SHOW GRANTS FOR alice@localhost")
    sql(db, "REVOKE INSERT ON `alice\\_wp`.* FROM alice@localhost")
    assert sql(db, "SHOW GRANTS FOR alice@localhost") != original
    ret = apply(db, db.db_pillar)
    assert failed(ret) == {}
    assert [k for k in changed(ret) if k.startswith("mysql_grants")] != []
    assert sql(db, "SHOW GRANTS FOR alice@localhost") == original


def test_privileges_follow_the_pillar(db):
    original = sql(db, "SHOW GRANTS FOR alice@localhost")
    pillar = copy.deepcopy(db.db_pillar)
    pillar["webarch"]["accounts"]["alice"]["db_privileges"] = ["SELECT"]
    ret = apply(db, pillar)
    assert failed(ret) == {}
    assert "GRANT SELECT ON `alice\\\\_wp`.* TO `alice`@`localhost`" in sql(
        db, "SHOW GRANTS FOR alice@localhost"
    )
    insert = ssh(db, "alice", "mysql alice_wp -e \"INSERT INTO visits (note) VALUES ('ro')\"")
    assert insert.returncode != 0 and "denied" in insert.stderr
    # Granted by hand, beyond the pillar: revoked again, GRANT OPTION included.
    sql(db, "GRANT ALL PRIVILEGES ON `alice\\_wp`.* TO alice@localhost WITH GRANT OPTION")
    ret = apply(db, db.db_pillar)
    assert failed(ret) == {}
    assert sql(db, "SHOW GRANTS FOR alice@localhost") == original
    again = apply(db, db.db_pillar)
    assert failed(again) == {} and changed(again) == {}


def test_nightly_dump_readable_by_its_account_only(db):
    timer = db.run(["systemctl", "is-enabled", "webarch-db-dump.timer"]).stdout
    assert timer == "enabled\n"
    folder = "/home/alice/backups/mariadb"
    # Dumps older than dump_retention_days (7) go once a new dump is made.
    for name, age in (("alice_wp-20000101T000000Z", 8), ("alice_wp-20000102T000000Z", 6)):
        db.run(["touch", "-d", f"{age} days ago", f"{folder}/{name}.sql.gz"], check=True)
    db.run(["systemctl", "start", "webarch-db-dump.service"], check=True)
    assert not db.exists(f"{folder}/alice_wp-20000101T000000Z.sql.gz")
    assert db.exists(f"{folder}/alice_wp-20000102T000000Z.sql.gz")
    db.run(["rm", f"{folder}/alice_wp-20000102T000000Z.sql.gz"], check=True)
    listing = db.run(
        ["stat", "-c", "%a %U %G %n", "/home/alice/backups", "/home/alice/backups/mariadb"],
        check=True,
    ).stdout.splitlines()
    assert [line.split()[:3] for line in listing] == [["750", "root", "alice"]] * 2
    names = ssh_ok(db, "alice", "ls ~/backups/mariadb").split()
    wp = [n for n in names if n.startswith("alice_wp-") and n.endswith(".sql.gz")]
    assert len(wp) == 1, names
    dump = f"/home/alice/backups/mariadb/{wp[0]}"
    assert db.run(["stat", "-c", "%a %U %G", dump]).stdout == "640 root alice\n"
    # Alice reads it in her chroot; she cannot change or delete it.
    text = ssh_ok(db, "alice", f"zcat {dump}")
    assert "INSERT INTO `visits`" in text
    assert text.rstrip().splitlines()[-1].startswith("-- Dump completed")
    assert ssh(db, "alice", f"rm -f {dump}; echo x >> {dump}").returncode != 0
    assert db.exists(dump)
    # Bob sees no such file in his chroot, and cannot read it on the host either.
    assert ssh(db, "bob", f"cat {dump}").returncode != 0
    assert db.run(["runuser", "-u", "bob", "--", "cat", dump]).returncode != 0
    assert ssh_ok(db, "bob", "ls ~/backups/mariadb").split()[0].startswith("bob_shop-")


def test_restart_keeps_the_sockets_in_the_chroots(db):
    db.run(["systemctl", "restart", "mariadb"], check=True)
    assert php(db).startswith("ok alice@localhost ")
    out = ssh_ok(db, "alice", "mysql -N alice_wp -e 'SELECT CURRENT_USER()'")
    assert out == "alice@localhost\n"
    assert ssh_ok(db, "bob", "mysql -N bob_shop -e 'SELECT 1'") == "1\n"


def test_database_left_out_of_the_pillar_is_kept(db):
    sql(db, "CREATE TABLE keep (i INT); INSERT INTO keep VALUES (1), (2)", "alice_old")
    ret = apply(db, pillar_for(db.keys, {"alice_wp": None}))
    assert failed(ret) == {}
    assert not any("alice_old" in key for key in changed(ret))
    assert sql(db, "SELECT COUNT(*) FROM keep", "alice_old") == "2\n"
    assert ssh_ok(db, "alice", "mysql -N alice_old -e 'SELECT COUNT(*) FROM keep'") == "2\n"


def test_absent_database_is_dumped_then_dropped(db):
    rows = sql(db, "SELECT * FROM keep ORDER BY i", "alice_old")
    before = set(db.run(["ls", ARCHIVE], check=True).stdout.split())
    dbs = {"alice_wp": None, "alice_old": {"state": "absent"}}
    ret = apply(db, pillar_for(db.keys, dbs))
    assert failed(ret) == {}
    assert "alice_old" not in sql(db, "SHOW DATABASES").split()
    assert "alice\\\\_old" not in sql(db, "SHOW GRANTS FOR alice@localhost")
    new = sorted(set(db.run(["ls", ARCHIVE], check=True).stdout.split()) - before)
    assert len(new) == 1 and new[0].startswith("alice_old-"), new
    dump = f"{ARCHIVE}/{new[0]}"
    assert db.run(["stat", "-c", "%a %U %G", ARCHIVE, dump]).stdout.split() == [
        "700", "root", "root", "600", "root", "root",
    ]  # fmt: skip
    assert db.run(["sh", "-c", f"zcat {dump} | tail -n 1"]).stdout.startswith("-- Dump completed")
    # The dump restores, into a new database, to the same rows.
    sql(db, "CREATE DATABASE restored")
    db.run(["sh", "-c", f"zcat {dump} | mariadb restored"], check=True)
    assert sql(db, "SELECT * FROM keep ORDER BY i", "restored") == rows == "1\n2\n"
    # Again: nothing left to do.
    again = apply(db, pillar_for(db.keys, dbs))
    assert failed(again) == {} and changed(again) == {}


def snapshot(host: Host) -> str:
    """MariaDB's users, databases and grants, and the formula's files."""
    grants = sql(host, "SELECT User, Host, Db FROM mysql.db ORDER BY 1, 2, 3")
    users = sql(host, "SELECT User, Host, plugin FROM mysql.user ORDER BY 1, 2")
    files = host.run(
        ["sh", "-c", "find /home /etc/webarch /etc/mysql /var/backups -printf '%p %m %u\\n' "
         "| sort"],
        check=True,
    ).stdout  # fmt: skip
    return sql(host, "SHOW DATABASES") + grants + users + files


def test_bad_input_is_reported_with_paths_and_changes_nothing(db):
    before = snapshot(db)
    pillar = pillar_for(db.keys, {
        "alice_wp": None,
        "alice_" + "x" * 60: None,
        "alice_w-p": None,
        "wordpress": None,
    })  # fmt: skip
    accounts = pillar["webarch"]["accounts"]
    accounts["alice"]["db_privileges"] = ["SELECT", "TELEPORT", "FILE"]
    accounts["bob"]["databases"] = {"bob_shop": None, "alice_wp": None}
    ret = apply(db, pillar)
    errors = ret["local"]
    assert isinstance(errors, list), "an invalid pillar must not compile"
    text = errors[0]
    assert "webarch pillar is invalid (6 problems); nothing was changed" in text
    for path in (
        f"webarch:accounts:alice:databases:alice_{'x' * 60}: database name must be 1-64",
        "webarch:accounts:alice:databases:alice_w-p: database name must be 1-64",
        "webarch:accounts:alice:databases:wordpress: database name must start with 'alice_'",
        "webarch:accounts:alice:db_privileges:1: 'TELEPORT' is not a database privilege",
        "webarch:accounts:alice:db_privileges:2: FILE is never granted",
        "webarch:accounts:bob:databases:alice_wp: database name must start with 'bob_'",
    ):
        assert f"\n  - {path}" in text, text
    duplicate = pillar_for(db.keys, {"alice_wp": None}, mariadb={"require_prefix": False})
    duplicate["webarch"]["accounts"]["bob"]["databases"] = {"alice_wp": None}
    errors = apply(db, duplicate)["local"]
    assert isinstance(errors, list)
    assert (
        "\n  - webarch:accounts:bob:databases:alice_wp: is also a database of account 'alice'"
        in errors[0]
    )
    assert snapshot(db) == before


def test_removed_account_is_dumped_before_its_user_goes(db):
    sql(db, "CREATE TABLE orders (id INT); INSERT INTO orders VALUES (42)", "bob_shop")
    before = set(db.run(["ls", ARCHIVE], check=True).stdout.split())
    pillar = pillar_for(db.keys, {"alice_wp": None})
    pillar["webarch"]["accounts"]["bob"]["state"] = "absent"
    ret = apply(db, pillar)
    assert failed(ret) == {}
    assert sql(db, "SELECT COUNT(*) FROM mysql.user WHERE User = 'bob'") == "0\n"
    new = sorted(set(db.run(["ls", ARCHIVE], check=True).stdout.split()) - before)
    assert len(new) == 1 and new[0].startswith("bob_shop-"), new
    dump = db.run(["sh", "-c", f"zcat {ARCHIVE}/{new[0]}"], check=True).stdout
    assert "INSERT INTO `orders` VALUES" in dump and "(42)" in dump
    assert dump.rstrip().splitlines()[-1].startswith("-- Dump completed")
    # The database itself was not dropped: it was never marked absent.
    assert sql(db, "SELECT id FROM orders", "bob_shop") == "42\n"
    # Alice is untouched.
    assert php(db).startswith("ok alice@localhost ")
    again = apply(db, pillar)
    assert failed(again) == {} and changed(again) == {}


def test_listen_localhost_switch(db):
    pillar = pillar_for(db.keys, {"alice_wp": None}, mariadb={"listen_localhost": True})
    pillar["webarch"]["accounts"]["bob"]["state"] = "absent"
    ret = apply(db, pillar)
    assert failed(ret) == {}
    assert "webarch-mariadb-service" in str(changed(ret))
    assert "127.0.0.1:3306" in db.run(["ss", "-Hltn"], check=True).stdout
    assert php(db).startswith("ok alice@localhost ")


def test_an_existing_password_is_kept_by_its_hash(db):
    """Issue 19: an account moved from another server keeps its MariaDB password
    (applications with it in their config go on working): unix_socket OR that
    password, set from its hash, nothing mailed, the hash in no state output."""
    password = "legacy-Pass-2019"
    digest = "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()
    pillar = pillar_for(db.keys, {"alice_wp": None}, mariadb={"listen_localhost": True})
    pillar["webarch"]["accounts"]["bob"]["state"] = "absent"
    pillar["webarch"]["accounts"]["alice"]["db_password_hash"] = digest
    ret = apply(db, pillar)
    assert failed(ret) == {}
    assert [k for k in changed(ret) if "password-hash" in k], changed(ret)
    # root's shell, not alice's Unix user: only her old password logs in as her.
    login = ["mariadb", "-u", "alice", "--batch", "--skip-column-names", "-e",
             "SELECT CURRENT_USER()"]  # fmt: skip
    assert db.run([*login, f"-p{password}"], check=True).stdout.strip() == "alice@localhost"
    assert db.run([*login, "-pnot-hers"]).returncode != 0
    # Her own Unix user (her shell, her PHP) still needs none.
    assert ssh_ok(db, "alice", "mysql -N -e 'SELECT CURRENT_USER()'").strip() == "alice@localhost"
    assert php(db).startswith("ok alice@localhost ")
    again = apply(db, pillar)
    assert failed(again) == {} and changed(again) == {}
    assert digest not in json.dumps(ret) + json.dumps(again)
