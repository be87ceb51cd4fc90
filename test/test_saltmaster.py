"""End-to-end: a real salt-master and salt-minion on one test host (testhost.saltmaster).

Covers what formula tests rely on: ``salt <id> ...`` through the master, the reactor
reacting to an event a minion sends, the event recorder, the job cache, the logs, and
that stop() leaves the masterless ``salt-call --local`` working.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testhost import Host
from testhost.saltmaster import MINION_MASTER_CONF, SaltMaster, SaltMasterError

pytestmark = pytest.mark.e2e

SNIPPET = "/srv/reactor-test/webarch-test-reactor.conf"
SNIPPET_TEXT = """\
reactor:
  - 'webarch-test/ping':
    - /srv/reactor-test/ping.sls
"""
PING_SLS = """\
touch_marker:
  local.cmd.run:
    - tgt: {{ data['id'] }}
    - args:
      - cmd: touch /tmp/reactor-{{ data['data']['x'] }}
"""


@pytest.fixture(scope="module")
def host(image: Path, repo: Path) -> Iterator[Host]:
    """A test host with the formula mounted (the master serves /srv/formula)."""
    with Host("wa-saltmaster", image, formula_dir=repo) as running:
        yield running


@pytest.fixture(scope="module")
def master(host: Host) -> Iterator[SaltMaster]:
    """Master + minion + event recorder with the test reactor snippet."""
    host.write_file(SNIPPET, SNIPPET_TEXT)
    host.write_file("/srv/reactor-test/ping.sls", PING_SLS)
    salt_master = SaltMaster(host)
    salt_master.start([SNIPPET])
    print(f"\nsalt-master + salt-minion + event recorder up in {salt_master.start_seconds:.1f}s")
    yield salt_master
    salt_master.stop()


def wait_for_path(host: Host, path: str, timeout: float = 30.0) -> float:
    """Wait until ``path`` exists in the host; return the seconds it took."""
    started = time.monotonic()
    while not host.exists(path):
        assert time.monotonic() - started < timeout, f"{path} did not appear in {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_minion_answers_through_the_master(master, host):
    assert master.is_running()
    assert master.salt(host.name, "test.ping") == {host.name: True}
    assert master.call("test.ping") is True
    assert master.call("config.get", "file_client") == "remote"
    assert master.call("config.get", "master") == "127.0.0.1"
    assert master.call("config.get", "id") == host.name
    assert "/srv/formula" in master.call("config.get", "module_dirs")
    keys = master.run_salt_run("manage.up")
    assert keys == [host.name]


def test_waits_for_jobs_longer_than_the_cli_timeout(master, host):
    """With --static, Salt 3008 gives up after -t + gather_job_timeout (10 s): {}."""
    started = time.monotonic()
    ret = master.salt("-t", "1", host.name, "cmd.run", "sleep 12; echo done")
    assert ret == {host.name: "done"}
    assert time.monotonic() - started >= 12


def test_master_serves_the_formula_and_the_snippet(master, host):
    files = master.call("cp.list_master")
    assert "webarch/init.sls" in files
    assert host.read_file("/etc/salt/master.d/webarch-test-reactor.conf") == SNIPPET_TEXT
    reactors = master.run_salt_run("config.get", "reactor")
    assert reactors == [{"webarch-test/ping": ["/srv/reactor-test/ping.sls"]}]


def test_state_single_and_job_cache(master, host):
    ret = master.salt(
        host.name, "state.single", "file.managed", "name=/tmp/x", "contents=y", timeout=120
    )
    (state,) = ret[host.name].values()
    assert state["result"] is True, state
    assert state["changes"] == {"diff": "New file"}
    assert host.read_file("/tmp/x").strip() == "y"
    cache = master.job_cache_text()
    assert '"fun": "state.single"' in cache
    assert "file_|-/tmp/x_|-/tmp/x_|-managed" in cache
    assert '"comment": "File /tmp/x updated"' in cache


def test_reactor_runs_on_the_originating_minion(master, host):
    mark = len(master.events())
    sent = time.monotonic()
    proc = host.run(
        ["/opt/salt/bin/salt-call", "--out=json", "event.send", "webarch-test/ping", '{"x": 1}'],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    _, data = master.wait_for_event("webarch-test/ping", start_at=mark)
    assert data["id"] == host.name
    assert data["data"]["x"] == 1
    wait_for_path(host, "/tmp/reactor-1")
    print(f"\nreactor touched its file {time.monotonic() - sent:.2f}s after salt-call started")
    _, data = master.wait_for_event(
        f"salt/job/*/ret/{host.name}", start_at=mark, where=lambda d: d["fun"] == "cmd.run"
    )
    assert data["fun_args"][0]["cmd"] == "touch /tmp/reactor-1"
    assert data["retcode"] == 0
    assert "webarch-test/ping\t{" in master.events_text()
    assert "touch /tmp/reactor-1" in master.job_cache_text()


def test_wait_for_event_times_out_with_logs(master):
    started = time.monotonic()
    with pytest.raises(SaltMasterError, match=r"(?s)no event 'no/such/\*'.*/var/log/salt/master"):
        master.wait_for_event("no/such/*", timeout=0.5)
    assert time.monotonic() - started < 15


def test_logs_text(master, host):
    logs = master.logs_text()
    assert f"Authentication accepted from {host.name}" in logs
    assert "Starting up the Salt Minion" in logs
    assert "--- journal of webarch-test-salt-master ---" in logs


def test_stop_restores_masterless_and_start_again(master, host):
    """Keep this test last in the module: it stops and restarts the master."""
    started = time.monotonic()
    master.stop()
    stopped = time.monotonic() - started
    print(f"\nstop took {stopped:.1f}s")
    assert not master.is_running()
    assert not host.exists(MINION_MASTER_CONF)
    assert host.salt_call(["test.ping"]) == {"local": True}
    assert host.salt_call(["config.get", "file_client"]) == {"local": "local"}
    assert not [u for u in host.failed_units() if u.startswith("webarch-test-")]

    host.write_file("/srv/reactor-test/broken.conf", "reactor: [\n")
    with pytest.raises(SaltMasterError, match=r"bad master config snippet: .*broken\.conf"):
        master.start([SNIPPET, "/srv/reactor-test/broken.conf"])
    assert not host.exists(MINION_MASTER_CONF)
    assert not master.is_running()

    master.start([SNIPPET])
    print(f"second start: up in {master.start_seconds:.1f}s")
    assert master.call("test.ping") is True
    assert "webarch-test/recorder-ready" in master.events_text()
