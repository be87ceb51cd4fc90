"""Password notifications through a real Salt master's reactor.

A salt-master and a salt-minion run on the Debian test host (testhost.saltmaster),
the master with the reactor snippet the formula ships.  ``salt <id> state.apply
webarch`` issues the passwords on the minion, which fires
``webarch/notify/ACCOUNT/KIND``; the reactor has the minion mail them.  The
relay is an SMTP sink next to the host.  Finally every record Salt keeps (the
event bus, the job cache, master and minion logs, the state output) is
searched for the generated passwords.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from e2e.conftest import MATOMO_ARCHIVE, MATOMO_ON_HOST, MATOMO_SHA256
from e2e.helpers import (
    RelaySink,
    changed,
    failed,
    files_containing,
    mariadb_login,
    password_in,
    password_login,
    relay_sink,
)
from testhost import Host
from testhost.saltmaster import SaltMaster

pytestmark = pytest.mark.e2e

REACTOR_SNIPPET = "/srv/formula/webarch/files/salt-master/webarch-reactor.conf"
OUTPUTS: list[str] = []


def pillar(sink: RelaySink, **resets: str) -> dict:
    return {
        "webarch": {
            "hostname": "web1.coop.example",
            "admin_email": "hostmaster@coop.example",
            "mail": {"smarthost": sink.exim_smarthost},
            "accounts": {
                "alice": {
                    "email": "alice@alice.example",
                    "ssh_password": True,
                    "db_password": True,
                    "databases": {"alice_app": None},
                    "resets": dict(resets),
                },
                "bob": {"sites": {"www": {"server_name": "www.bob.example"}}},
            },
        }
    }


@pytest.fixture(scope="module")
def sink(host: Host) -> RelaySink:
    return relay_sink(host)


@pytest.fixture(scope="module")
def master(host: Host, sink: RelaySink) -> Iterator[SaltMaster]:
    running = SaltMaster(host)
    running.start([REACTOR_SNIPPET])
    yield running
    running.stop()


def apply(master: SaltMaster, sink: RelaySink, **resets: str) -> dict:
    """``salt <minion> state.apply webarch`` from the master; the output is kept."""
    master.host.set_pillar(pillar(sink, **resets))
    ret = master.call("state.apply", "webarch")
    OUTPUTS.append(json.dumps(ret))
    return {"local": ret}


def mails_to_alice(sink: RelaySink, word: str) -> list[dict]:
    return [
        m
        for m in sink.messages()
        if m["rcpt_tos"] == ["alice@alice.example"] and word in str(m["message"]["Subject"])
    ]


def test_a_new_account_gets_its_passwords_through_the_reactor(master, sink, tmp_path):
    ret = apply(master, sink)
    assert failed(ret) == {}
    events = {
        state["changes"].get("event")
        for state in ret["local"].values()
        if state["__id__"].startswith("webarch-alice-notify-")
    }
    assert events == {"webarch/notify/alice/ssh", "webarch/notify/alice/mariadb"}
    for kind in ("ssh", "mariadb"):
        _tag, data = master.wait_for_event(f"webarch/notify/alice/{kind}", timeout=30)
        assert data["data"]["account"] == "alice" and data["data"]["kind"] == kind
    sink.wait_for(2, timeout=60)
    ssh_mails, db_mails = mails_to_alice(sink, "SSH"), mails_to_alice(sink, "MariaDB")
    assert len(ssh_mails) == 1 and len(db_mails) == 1
    assert password_login(master.host, "alice", password_in(ssh_mails[0]), tmp_path) == 0
    assert mariadb_login(master.host, "alice", password_in(db_mails[0])).returncode == 0
    # The reactor ran webarch_notify.send on this minion, and it returned no secret.
    assert "webarch_notify.send" in master.job_cache_text()


def test_a_second_run_sends_nothing(master, sink):
    before = len(sink.messages())
    ret = apply(master, sink)
    assert failed(ret) == {} and changed(ret) == {}
    master.host.run(["sleep", "5"])
    assert len(sink.messages()) == before


def test_a_reset_mails_exactly_one_new_password(master, sink, tmp_path):
    old = password_in(mails_to_alice(sink, "SSH")[-1])
    before = len(sink.messages())
    ret = apply(master, sink, ssh="2026-11-28")
    assert failed(ret) == {}
    sink.wait_for(before + 1, timeout=60)
    master.host.run(["sleep", "3"])
    assert len(sink.messages()) == before + 1
    new = password_in(mails_to_alice(sink, "SSH")[-1])
    assert password_login(master.host, "alice", new, tmp_path) == 0
    assert password_login(master.host, "alice", old, tmp_path) != 0


def test_relay_down_then_up_delivers_exactly_one(master, sink):
    before = len(sink.messages())
    sink.stop()
    try:
        ret = apply(master, sink, ssh="relay-down")
        assert failed(ret) == {}
        master.wait_for_event("webarch/notify/alice/ssh", timeout=30)
        # The reaction handed the mail to Exim, which keeps it queued.
        for _ in range(100):
            queue = master.host.run(["exim4", "-bpc"], check=True).stdout.strip()
            if queue == "1":
                break
            master.host.run(["sleep", "0.2"])
        assert queue == "1"
    finally:
        sink.start()
    assert len(sink.messages()) == before
    ret = apply(master, sink, ssh="relay-down")
    assert failed(ret) == {}
    sink.wait_for(before + 1, timeout=60)
    ret = apply(master, sink, ssh="relay-down")
    assert changed(ret) == {}
    master.host.run(["sleep", "3"])
    assert len(sink.messages()) == before + 1


def salt_records(master: SaltMaster) -> dict[str, str]:
    """Every record Salt keeps, by where: the bus, the job cache, logs, output, journal."""
    return {
        "event bus": master.events_text(),
        "job cache": master.job_cache_text(),
        "master and minion logs": master.logs_text(),
        "state output": "\n".join(OUTPUTS),
        "journal": master.host.run(["journalctl", "--no-pager", "-o", "cat"]).stdout,
    }


def test_no_password_on_the_bus_in_the_job_cache_logs_or_output(master, sink):
    passwords = {
        password_in(m) for m in sink.messages() if "Your new" in str(m["message"]["Subject"])
    }
    assert len(passwords) == 4
    records = salt_records(master)
    # The searches do see the notifications' traces.
    assert "webarch/notify/alice/ssh" in records["event bus"]
    assert "webarch_notify.send" in records["job cache"]
    for where, text in records.items():
        for password in passwords:
            assert password not in text, f"a generated password is in the {where}"
    # Every file Salt, Exim and webarch keep on the host.
    assert files_containing(master.host, {"webarch/notify/alice"}, "/var/log", "/var/cache/salt")
    paths = ("/var/log", "/var/cache/salt", "/var/lib/webarch", "/etc", "/home")
    assert files_containing(master.host, passwords, *paths) == []


def test_matomo_passwords_through_the_reactor_leave_no_trace(master, sink):
    """Matomo on (the archive copied into the host): alice's Matomo password goes
    through the reactor, the superuser's is mailed by the run; neither, nor the
    API token, is on the bus, in the job cache, the logs or the output."""
    if not MATOMO_ARCHIVE.is_file():
        pytest.skip(f"no Matomo release archive ({MATOMO_ARCHIVE})")
    data = pillar(sink, ssh="relay-down")
    data["webarch"]["admin_email"] = "hostmaster@coop.example"
    data["webarch"]["matomo"] = {"archive": {"source": MATOMO_ON_HOST, "sha256": MATOMO_SHA256}}
    data["webarch"]["accounts"]["carol-stats"] = {
        "email": "carol@stats.example",
        "databases": {"carol_stats_matomo": None},
        "sites": {"matomo": {"type": "matomo", "server_name": "stats.coop.example"}},
    }
    master.host.set_pillar(data)
    ret = master.call("state.apply", "webarch")
    OUTPUTS.append(json.dumps(ret))
    assert failed({"local": ret}) == {}
    _tag, event = master.wait_for_event("webarch/notify/alice/matomo", timeout=60)
    assert (event["data"]["account"], event["data"]["kind"]) == ("alice", "matomo")
    for _ in range(150):
        mails = [m for m in sink.messages() if "Your new Matomo" in str(m["message"]["Subject"])]
        if len(mails) >= 3:  # alice, carol-stats (reactor), the superuser (the run)
            break
        master.host.run(["sleep", "0.2"])
    assert {m["rcpt_tos"][0] for m in mails} == {
        "alice@alice.example", "carol@stats.example", "hostmaster@coop.example"}  # fmt: skip
    secrets = {password_in(m) for m in mails}
    secrets |= {master.host.read_file(f"/var/lib/webarch/matomo/{f}").strip()
                for f in ("token", "password")}  # fmt: skip
    assert len(secrets) == 5
    records = salt_records(master)
    assert "webarch/notify/alice/matomo" in records["event bus"]
    for where, text in records.items():
        for secret in secrets:
            assert secret not in text, f"a Matomo secret is in the {where}"
    paths = ("/var/log", "/var/cache/salt", "/var/lib/webarch", "/etc", "/home")
    found = files_containing(master.host, secrets, *paths)
    assert sorted(found) == ["/var/lib/webarch/matomo/password", "/var/lib/webarch/matomo/token"]
