"""A fleet: one Salt master driving three hosting servers over a private network.

The master is pytest-salt-factories' master daemon on this machine (test/fleet.py),
listening on a bridge that only the three test hosts share with it: wa-fleet-1 and
wa-fleet-2 run Debian 12, wa-fleet-3 Debian 13, each with a salt-minion started with
the master's address and the formula's loader settings only (the SLS files and the
custom modules come from the master).  The pillar top file gives each minion its own
accounts.  Everything is checked from outside: HTTPS to each minion's address on the
LAN, SSH logins with the passwords the reactor had each minion mail to its relay.

One fleet for the whole module: the tests build on each other, in order.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.helpers import SSH_OPTS, RelaySink, password_in, relay_sink
from fleet import (
    FleetMaster,
    FleetMinion,
    Lan,
    Prober,
    changed_states,
    failed_states,
    ids_of,
)
from testhost import Host, ensure_image

pytestmark = pytest.mark.e2e

if os.environ.get("WEBARCH_TEST_RELEASE", "bookworm") != "bookworm":
    # Not silently: the module boots its Debian 13 minion itself, in the Debian 12 run.
    pytest.skip("the fleet has its Debian 13 minion in the Debian 12 run", allow_module_level=True)

#: minion id -> (Debian release, address number on the LAN, its accounts' sites).
MEMBERS = {
    "wa-fleet-1": ("bookworm", 11, {"alice": "www.alice.example", "dave": "www.dave.example"}),
    "wa-fleet-2": ("bookworm", 12, {"bob": "www.bob.example"}),
    "wa-fleet-3": ("trixie", 13, {"carol": "www.carol.example"}),
}
#: The accounts that get an SSH password (mailed through the reactor).
WITH_PASSWORD = {"alice", "bob", "carol"}
ACCOUNTS = {account for _release, _n, sites in MEMBERS.values() for account in sites}
STARTED = time.monotonic()


@dataclass
class Member:
    """One hosting server of the fleet."""

    host: Host
    minion: FleetMinion
    sink: RelaySink
    address: str
    release: str

    @property
    def id(self) -> str:
        return self.host.name


def base_pillars(fleet: dict[str, Member]) -> dict[str, dict]:
    """Each minion's pillar: its own accounts, its own relay (the reactor's mail)."""
    pillars = {}
    for number, (minion, (_release, _n, sites)) in enumerate(MEMBERS.items(), 1):
        accounts = {}
        for name, site in sites.items():
            account: dict = {"sites": {"www": {"server_name": site}}}
            if name == "dave":
                account["sites"]["www"]["type"] = "static"
            if name in WITH_PASSWORD:
                account |= {"email": f"{name}@{name}.example", "ssh_password": True}
            accounts[name] = account
        pillars[minion] = {
            "webarch": {
                "hostname": f"web{number}.coop.example",
                "admin_email": "hostmaster@coop.example",
                "mail": {"smarthost": fleet[minion].sink.exim_smarthost},
                "accounts": accounts,
            }
        }
    return pillars


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    net = Lan()
    net.up()
    yield net
    net.down()


@pytest.fixture(scope="module")
def master(lan: Lan, repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetMaster]:
    running = FleetMaster(tmp_path_factory.mktemp("fleet-master"), repo, lan.address)
    running.start()
    print(f"\nsalt-master (salt-factories) up in {running.start_seconds:.1f}s")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fleet(lan: Lan, master: FleetMaster, request: pytest.FixtureRequest) -> Iterator[dict]:
    if not Path("/usr/bin/ssh").exists():
        pytest.skip("no ssh client on this machine")
    members: dict[str, Member] = {}
    images = {release: ensure_image(release=release) for release, _n, _s in MEMBERS.values()}
    try:
        for minion, (release, number, _sites) in MEMBERS.items():
            host = Host(minion, images[release], formula_dir=None)
            host.start()
            members[minion] = Member(
                host, FleetMinion(host, master, lan.address), relay_sink(host),
                lan.attach(host, number), release,
            )  # fmt: skip
        for member in members.values():
            member.minion.start()
        yield members
    finally:
        for member in members.values():
            member.host.stop()
        seconds = time.monotonic() - STARTED
        request.config.webarch_summaries.append(f"test_fleet: module {seconds:.0f}s")


@pytest.fixture(scope="module")
def pillars(fleet: dict[str, Member]) -> dict[str, dict]:
    """The fleet's pillars as the tests left them (tests change and put them back)."""
    return base_pillars(fleet)


def highstate(master: FleetMaster, tgt: str = "*", *args: str, tgt_type: str = "glob") -> dict:
    return master.salt(tgt, "state.highstate", *args, tgt_type=tgt_type)


def curl(member: Member, name: str, *args: str) -> str:
    """``curl https://NAME/`` from this machine to the member's LAN address."""
    cmd = ["curl", "-sS", "-k", "--max-time", "20", "--resolve", f"{name}:443:{member.address}"]
    proc = subprocess.run([*cmd, *args, f"https://{name}/"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def put_page(member: Member, account: str) -> str:
    """An index.html for the account's site www; returns its text."""
    text = f"{account} on {member.id}\n"
    path = f"/home/{account}/sites/www/index.html"
    member.host.write_file(path, text, mode=0o640)
    member.host.run(["chown", f"{account}:www-data", path], check=True)
    return text


def ssh_password_login(member: Member, user: str, password: str, tmp_path: Path) -> int:
    """A password-only SSH login from this machine over the LAN; ssh's exit status."""
    askpass = tmp_path / f"askpass-{user}"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    env = {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    args = ["-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"]
    cmd = ["ssh", *SSH_OPTS, *args, f"{user}@{member.address}", "true"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode


def password_mails(member: Member) -> list[dict]:
    return [m for m in member.sink.messages() if "Your new" in str(m["message"]["Subject"])]


# --------------------------------------------------------------------------- the tests


def test_the_minions_answer_over_the_lan(master, fleet):
    assert master.salt("*", "test.ping") == dict.fromkeys(MEMBERS, True)
    releases = master.salt("*", "grains.get", "osmajorrelease")
    assert releases == {"wa-fleet-1": 12, "wa-fleet-2": 12, "wa-fleet-3": 13}
    assert master.salt("*", "config.get", "master") == dict.fromkeys(MEMBERS, master.interface)
    # The minions have no formula of their own: the master serves it.
    assert not fleet["wa-fleet-1"].host.exists("/srv/formula/webarch")
    assert "webarch/init.sls" in master.salt("wa-fleet-3", "cp.list_master")["wa-fleet-3"]


def test_the_fleet_check_passes_before_the_highstate(master, fleet, pillars):
    master.set_pillars(pillars)
    code, ret, _err = master.run("webarch_fleet.check")
    assert code == 0
    assert ret == {"ok": True, "minions": sorted(MEMBERS), "clashes": [], "retcode": 0}


def test_the_fleet_check_reports_every_clash_with_its_paths(master, fleet, pillars):
    clashing = copy.deepcopy(pillars)
    carol = clashing["wa-fleet-3"]["webarch"]["accounts"]["carol"]
    carol["sites"]["shop"] = {"server_name": "www.bob.example"}
    clashing["wa-fleet-2"]["webarch"]["accounts"]["alice"] = {}
    master.set_pillars(clashing)
    try:
        code, ret, _err = master.run("webarch_fleet.check")
    finally:
        master.set_pillars(pillars)
    assert code == 1
    assert ret["ok"] is False
    assert ret["clashes"] == [
        "account alice is on 2 servers: wa-fleet-1 webarch:accounts:alice; "
        "wa-fleet-2 webarch:accounts:alice",
        "site name www.bob.example is served by 2 servers: "
        "wa-fleet-2 webarch:accounts:bob:sites:www:server_name; "
        "wa-fleet-3 webarch:accounts:carol:sites:shop:server_name",
    ]


def test_a_highstate_from_the_master_converges_the_fleet(master, fleet, tmp_path):
    since = time.time()
    ret = highstate(master)
    assert set(ret) == set(MEMBERS), ret
    for minion in MEMBERS:
        assert failed_states(ret[minion]) == {}, minion
        assert "webarch-packages" in ids_of(list(ret[minion]))
    for minion, (_release, _n, sites) in MEMBERS.items():
        member = fleet[minion]
        for account, name in sites.items():
            page = put_page(member, account)
            assert curl(member, name) == page
        # Each account is on its own server only.
        others = {a for m, (_r, _n, s) in MEMBERS.items() if m != minion for a in s}
        for account in others:
            assert member.host.run(["id", account]).returncode != 0
    # The passwords went through the master's reactor, from every minion.
    for minion, (_release, _n, sites) in MEMBERS.items():
        for account in WITH_PASSWORD & set(sites):
            master.wait_for_event(f"webarch/notify/{account}/ssh", since, timeout=60,
                                  where=lambda d, m=minion: d.get("id") == m)  # fmt: skip
            _tag, job = master.wait_for_event(
                f"salt/job/*/ret/{minion}", since, timeout=60,
                where=lambda d, a=account: d.get("fun") == "webarch_notify.send"
                and a in str(d.get("fun_args")),
            )  # fmt: skip
            assert job["retcode"] == 0, job
            member = fleet[minion]
            member.sink.wait_for(1, timeout=60)
            (mail,) = password_mails(member)
            assert mail["rcpt_tos"] == [f"{account}@{account}.example"]
            assert ssh_password_login(member, account, password_in(mail), tmp_path) == 0
            assert ssh_password_login(member, account, "not-the-password", tmp_path) != 0


def test_a_second_highstate_changes_nothing_and_sends_nothing(master, fleet):
    ret = highstate(master)
    for minion in MEMBERS:
        assert failed_states(ret[minion]) == {}, minion
        assert changed_states(ret[minion]) == {}, minion
    for member in fleet.values():
        assert len(password_mails(member)) == len(WITH_PASSWORD & set(MEMBERS[member.id][2]))


def test_no_password_on_the_masters_bus_job_cache_or_log(master, fleet):
    passwords = {password_in(m) for member in fleet.values() for m in password_mails(member)}
    assert len(passwords) == len(WITH_PASSWORD)
    events = repr(master.events("*"))
    assert "webarch/notify/carol/ssh" in events
    cache = Path(master.daemon.config["cachedir"]) / "jobs"
    texts = {"the master's events": events, "the master's log": master.log_text()}
    for path in cache.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any("webarch_notify.send" in text for text in texts.values())
    for where, text in texts.items():
        for password in passwords:
            assert password not in text, f"a generated password is in {where}"


def only(*names: str) -> str:
    """The salt argument of a run limited to ``names`` (README: webarch_only)."""
    return "pillar=" + json.dumps({"webarch_only": list(names)})


def headers(member: Member, name: str) -> str:
    """The response headers of https://NAME/ from the member, lower case."""
    return curl(member, name, "-D", "-", "-o", "/dev/null").lower()


def account_of(state_id: str) -> str | None:
    """The account a state id belongs to (``webarch-ACCOUNT-...``), None if server-wide."""
    return next((a for a in ACCOUNTS if state_id.startswith(f"webarch-{a}-")), None)


def touched_accounts(ret: dict) -> set[str]:
    """The accounts whose own states changed in a run."""
    return {account_of(i) for i in ids_of(list(changed_states(ret)))} - {None}


def server_wide(ret: dict) -> set[str]:
    """The ids of a run's changed states that belong to no account."""
    return {i for i in ids_of(list(changed_states(ret))) if account_of(i) is None}


def test_a_webarch_only_run_from_the_master_changes_only_that_account(master, fleet, pillars):
    new = copy.deepcopy(pillars)
    for account in ("alice", "dave"):
        site = new["wa-fleet-1"]["webarch"]["accounts"][account]["sites"]["www"]
        site["headers"] = {"X-Fleet": account}
    master.set_pillars(new)
    ret = master.salt("wa-fleet-1", "state.apply", "webarch", only("dave"))["wa-fleet-1"]
    assert failed_states(ret) == {}
    assert touched_accounts(ret) == {"dave"}
    assert "webarch-dave-apache-sites" in ids_of(list(changed_states(ret)))
    assert not [key for key in ret if "-alice-" in key]
    member = fleet["wa-fleet-1"]
    assert "x-fleet: dave" in headers(member, "www.dave.example")
    assert "x-fleet" not in headers(member, "www.alice.example")
    # The full run: alice's change too; the other servers have nothing to do.
    ret = highstate(master)
    assert touched_accounts(ret["wa-fleet-1"]) == {"alice"}
    assert changed_states(ret["wa-fleet-2"]) == changed_states(ret["wa-fleet-3"]) == {}
    assert "x-fleet: alice" in headers(member, "www.alice.example")
    pillars.update(new)


def test_a_minion_down_during_a_highstate(master, fleet, pillars):
    """wa-fleet-2's salt-minion is stopped: the others converge, the return names it;
    back, its run converges; a run of the whole fleet then changes nothing."""
    new = copy.deepcopy(pillars)
    for minion, (_release, _n, sites) in MEMBERS.items():
        for account in sites:
            site = new[minion]["webarch"]["accounts"][account]["sites"]["www"]
            site["headers"] = {"X-Round": "down"}
    master.set_pillars(new)
    pillars.update(new)
    down = fleet["wa-fleet-2"]
    down.minion.stop()
    ret = highstate(master)
    assert master.last_exit != 0
    assert isinstance(ret.get("wa-fleet-2"), str), ret.get("wa-fleet-2")
    assert "Minion did not return" in ret["wa-fleet-2"]
    for minion, (_release, _n, sites) in MEMBERS.items():
        if minion == down.id:
            continue
        assert failed_states(ret[minion]) == {}, minion
        assert touched_accounts(ret[minion]) == set(sites), minion
        for name in sites.values():
            assert "x-round: down" in headers(fleet[minion], name)
    assert "x-round" not in headers(down, "www.bob.example")
    down.minion.start()
    ret = highstate(master, down.id)
    assert failed_states(ret[down.id]) == {}
    assert touched_accounts(ret[down.id]) == {"bob"}
    assert "x-round: down" in headers(down, "www.bob.example")
    ret = highstate(master)
    for minion in MEMBERS:
        assert failed_states(ret[minion]) == {}, minion
        assert changed_states(ret[minion]) == {}, minion


STATIC_BLOCK = "    # A static site runs no PHP: its PHP files are not sent as source either.\n"


def test_a_formula_upgrade_changes_only_the_accounts_it_touches(master, fleet):
    """A new line in the static sites' block of the vhost template, on the master:
    dave's (the only static site) config changes, no other account's, anywhere."""
    template = master.state_tree / "webarch/files/templates/apache-account.conf.jinja"
    text = template.read_text()
    assert STATIC_BLOCK in text
    upgrade = '    Header always set X-Static-Site "yes"\n'
    template.write_text(text.replace(STATIC_BLOCK, upgrade + STATIC_BLOCK))
    ret = highstate(master)
    for minion in MEMBERS:
        assert failed_states(ret[minion]) == {}, minion
    assert touched_accounts(ret["wa-fleet-1"]) == {"dave"}
    assert "webarch-dave-apache-sites" in ids_of(list(changed_states(ret["wa-fleet-1"])))
    assert all(i.startswith("webarch-apache-") for i in server_wide(ret["wa-fleet-1"]))
    assert changed_states(ret["wa-fleet-2"]) == changed_states(ret["wa-fleet-3"]) == {}
    wa1 = fleet["wa-fleet-1"]
    assert "x-static-site: yes" in headers(wa1, "www.dave.example")
    assert "x-static-site" not in headers(wa1, "www.alice.example")


# --------------------------------------------------------------------------- moving an account

#: From Debian 12 to Debian 13 (another PHP, MariaDB and OpenSSH: more to go wrong).
SOURCE, TARGET, SITE = "wa-fleet-1", "wa-fleet-3", "www.alice.example"
#: Her WordPress site: it moves with her (files and tables); the new server, where she
#: is suspended until her copy is in, installs none of its own.
BLOG = "blog.alice.example"
BLOG_NAME = "Alice moved this blog"
WP_CHECKSUM = "CHECKSUM TABLE alice_wp.wp_options, alice_wp.wp_users EXTENDED"
#: Her home as the test sees it (~/logs left out: the servers write there), then the
#: SHA-256 of every file.
TREE = (
    "cd /home/alice && find . -path ./logs -prune -o -printf '%P|%y|%u|%g|%m|%s|%l\\n' | sort"
    " && find . -path ./logs -prune -o -type f -print0 | sort -z | xargs -0 sha256sum"
)
FILL = """set -e
cd /home/alice
mkdir -p sites/www/sub/deeper private/notes
printf 'moved alice\\n' > sites/www/index.html
printf 'deep\\n' > sites/www/sub/deeper/file.txt
printf '#!/bin/sh\\necho hi\\n' > private/notes/run.sh
head -c 400000 /dev/urandom > private/blob.bin
ln -s ../index.html sites/www/sub/link-to-index
chown -R alice:alice private && chown -R alice:www-data sites/www
chmod 0640 sites/www/index.html && chmod 0604 sites/www/sub/deeper/file.txt
chmod 2750 sites/www/sub && chmod 0711 private/notes/run.sh && chmod 0600 private/blob.bin
"""
ROWS = (
    "CREATE TABLE alice_db.t (id INT PRIMARY KEY, v VARCHAR(64), b BLOB);"
    "INSERT INTO alice_db.t VALUES (1, 'one', NULL), (2, 'deux', RANDOM_BYTES(100)),"
    " (3, UUID(), RANDOM_BYTES(1000));"
)
CHECKSUM = "CHECKSUM TABLE alice_db.t EXTENDED"


def sh(member: Member, script: str) -> str:
    proc = member.host.run(["sh", "-c", script])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def found_key(data: object, key: str) -> object:
    """The first value of ``key`` anywhere in a nested return."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            value = found_key(item, key)
            if value is not None:
                return value
    return None


def steps(ret: dict) -> dict[str, float]:
    """The steps an orchestration ran: {id: seconds}, in order."""
    states = next(iter(ret["data"].values()))
    ordered = sorted(states.values(), key=lambda s: s["__run_num__"])
    return {s["__id__"].removeprefix("webarch-move-"): s["duration"] / 1000 for s in ordered}


def test_an_account_moves_to_another_server_with_one_command(master, fleet, pillars, tmp_path):
    """alice (a home with odd modes, a symlink, a database, a WordPress site) moves from
    wa-fleet-1 (Debian 12) to wa-fleet-3 (Debian 13: a server upgraded by moving its
    accounts) with one orchestration while a prober polls her site; the trees and the
    tables are equal on both; then her removal from wa-fleet-1 touches nobody else."""
    source, target = fleet[SOURCE], fleet[TARGET]
    new = copy.deepcopy(pillars)
    alice = new[SOURCE]["webarch"]["accounts"]["alice"]
    alice["databases"] = {"alice_db": {}, "alice_wp": {}}
    alice["sites"]["blog"] = {"type": "wordpress", "server_name": BLOG,
                              "app": {"database": "alice_wp"}}  # fmt: skip
    master.set_pillars(new)
    assert failed_states(master.salt(SOURCE, "state.apply", "webarch", only("alice"))[SOURCE]) == {}
    sh(source, FILL)
    sh(source, f'mariadb -e "{ROWS}"')
    sh(source, "mariadb alice_wp -e \"UPDATE wp_options SET option_value = "
               f"'{BLOG_NAME}' WHERE option_name = 'blogname'\"")  # fmt: skip
    assert curl(source, SITE) == "moved alice\n"
    assert BLOG_NAME in curl(source, BLOG)
    # Her WordPress admin password is mailed (through the reactor) before she moves:
    # a password still pending is refused by the move (the new server would issue one).
    deadline = time.monotonic() + 120
    while not [m for m in password_mails(source) if "WordPress" in str(m["message"]["Subject"])]:
        assert time.monotonic() < deadline, "no WordPress admin password mail from the source"
        time.sleep(1)
    (mail,) = [m for m in password_mails(source) if m["rcpt_tos"] == ["alice@alice.example"]
               and "SSH" in str(m["message"]["Subject"])]  # fmt: skip
    mails_on_target = len(password_mails(target))
    # The admin's pillar of the new server gets her; the old one keeps her for now.
    new[TARGET]["webarch"]["accounts"]["alice"] = copy.deepcopy(alice)
    master.set_pillars(new)
    # A bad request stops at the first step, naming the pillar path; nothing runs.
    bad = {"webarch_move": {"account": "alice", "from": SOURCE, "to": SOURCE}}
    code, ret, _err = master.run(
        "state.orchestrate", "webarch.orch.move", f"pillar={json.dumps(bad)}"
    )
    assert code != 0
    assert "webarch_move:to: the same server" in json.dumps(ret)
    assert len(steps(ret)) == 1
    switched = tmp_path / "switch-target"
    switched.write_text(source.address)
    prober = Prober(SITE, switched)
    prober.start()
    try:
        prober.wait_for(200, source.address)
        request = {"account": "alice", "from": SOURCE, "to": TARGET,
                   "switch_cmd": f"printf %s {target.address} > {switched}"}  # fmt: skip
        started = time.monotonic()
        pillar = "pillar=" + json.dumps({"webarch_move": request})
        code, ret, err = master.run("state.orchestrate", "webarch.orch.move", pillar, timeout=1800)
        total = time.monotonic() - started
        assert code == 0, json.dumps(ret)[-6000:] + err[-2000:]
        prober.wait_for(200, target.address)
    finally:
        prober.stop()
    statuses = {(s, a) for _t, s, a in prober.answers}
    assert (503, source.address) in statuses  # she was suspended there during the copy
    precopy_bytes, copy_bytes = found_key(ret, "precopy_bytes"), found_key(ret, "copy_bytes")
    print(f"\nMOVE downtime_s={prober.longest_gap():.2f} precopy_bytes={precopy_bytes}"
          f" precopy_s={found_key(ret, 'precopy_s')} copy_bytes={copy_bytes}"
          f" copy_s={found_key(ret, 'copy_s')} sent={found_key(ret, 'sent')}"
          f" files={found_key(ret, 'files')} total_s={total:.1f}")  # fmt: skip
    # After the pre-copy, the copy within the downtime sends what changed only.
    assert isinstance(copy_bytes, int) and isinstance(precopy_bytes, int)
    assert copy_bytes < precopy_bytes / 4, (copy_bytes, precopy_bytes)
    print("MOVE steps_s " + " ".join(f"{k}={v:.1f}" for k, v in steps(ret).items()))
    # Nothing of hers is left on the master.
    assert list(master.move_tree.iterdir()) == []
    pushed = Path(master.daemon.config["cachedir"]) / "minions" / SOURCE / "files"
    assert not list(pushed.rglob("*.gz"))
    # Equal, as the test sees them (not only as the move says).
    assert sh(target, TREE) == sh(source, TREE)
    assert "private/blob.bin|f|alice|alice|600|400000|" in sh(target, TREE)
    assert sh(target, f'mariadb -N -e "{CHECKSUM}"') == sh(source, f'mariadb -N -e "{CHECKSUM}"')
    wp_sums = sh(source, f'mariadb -N -e "{WP_CHECKSUM}"')
    assert sh(target, f'mariadb -N -e "{WP_CHECKSUM}"') == wp_sums
    assert curl(target, SITE) == "moved alice\n"
    assert BLOG_NAME in curl(target, BLOG)
    # The new server installed no WordPress of its own (she was suspended there until
    # her copy came in): her database there held nothing to dump before hers came.
    assert "alice_wp-" not in sh(target, "ls /var/backups/webarch/databases/ || true")
    # What her home there held (the placeholders of her password markers) is kept in
    # one archive, out of her home (set aside as the pre-copy came in, and the stale
    # copies of the files that changed since as the last copy came in).
    kept = sh(target, "ls /var/backups/webarch/alice.before-move-*.tar.gz").split()
    assert len(kept) == 1, kept
    assert "/.notify_app-blog" in sh(target, f"tar -tzf {kept[0]}")
    assert "alice" not in sh(target, "ls -A /home/.webarch-move/")
    assert ssh_password_login(target, "alice", password_in(mail), tmp_path) == 0
    assert len(password_mails(target)) == mails_on_target  # nothing issued again
    # The old server keeps the verified archive and the dump.
    assert len(sh(source, "ls /var/backups/webarch/alice-*.tar.gz").split()) == 1
    assert sh(source, "ls /var/backups/webarch/databases/").count("alice_db-") == 1
    # Until the admin says absent there, the old server refuses to serve her copy
    # again (its pillar still has her present and not suspended).
    refused = json.dumps(master.salt(SOURCE, "state.apply", "webarch")[SOURCE])
    moved = "webarch:accounts:alice:state: alice was moved to another server"
    assert f"{moved} (to {TARGET}" in refused
    assert "503" in headers(source, SITE).split("\n")[0]
    # The admin removes her from the old server: only she changes there.
    new[SOURCE]["webarch"]["accounts"]["alice"] = {"state": "absent"}
    master.set_pillars(new)
    assert master.run("webarch_fleet.check")[0] == 0
    ret = highstate(master)
    for minion in MEMBERS:
        assert failed_states(ret[minion]) == {}, minion
    assert touched_accounts(ret[SOURCE]) == {"alice"}
    assert changed_states(ret[TARGET]) == changed_states(ret["wa-fleet-2"]) == {}
    assert source.host.run(["id", "alice"]).returncode != 0
    assert len(sh(source, "ls /var/backups/webarch/alice-*.tar.gz").split()) == 2
    assert curl(target, SITE) == "moved alice\n"
    pillars.update(new)
