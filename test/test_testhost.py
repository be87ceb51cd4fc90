"""End-to-end tests of the test host machinery itself (test/testhost), on the real image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testhost import Host, system

pytestmark = pytest.mark.e2e

INIT_SLS = """\
/etc/webarch-scratch:
  file.managed:
    - contents: {{ salt['pillar.get']('webarch:greeting', 'none') }}
    - mode: '0640'
"""

FAIL_SLS = """\
always-fails:
  cmd.run:
    - name: 'false'
"""


@pytest.fixture(scope="module")
def scratch_formula(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal formula checkout: webarch/init.sls and webarch/fail.sls."""
    root = tmp_path_factory.mktemp("formula")
    (root / "webarch").mkdir()
    (root / "webarch" / "init.sls").write_text(INIT_SLS)
    (root / "webarch" / "fail.sls").write_text(FAIL_SLS)
    return root


@pytest.fixture(scope="module")
def host(image: Path, scratch_formula: Path) -> Iterator[Host]:
    """A running host with the scratch formula, stopped and removed afterwards."""
    test_host = Host(name="wa-testhost", image=image, formula_dir=scratch_formula)
    with test_host:
        yield test_host
    test_host.destroy()


def test_boot_and_run(host):
    assert host.run(["id", "-u"], check=True).stdout.strip() == "0"
    assert host.run(["hostname"], check=True).stdout.strip() == host.name
    state = host.run(["systemctl", "is-system-running"]).stdout.strip()
    assert state in ("running", "degraded")
    env = host.run(["sh", "-c", "echo $LANG $HOME"], check=True).stdout.split()
    assert env == ["C.UTF-8", "/root"]
    assert host.run(["cat"], input="piped", check=True).stdout == "piped"


def test_formula_is_bound_read_only(host, scratch_formula):
    assert host.read_file("/srv/formula/webarch/init.sls") == INIT_SLS
    assert host.run(["touch", "/srv/formula/webarch/new"]).returncode != 0
    assert not host.exists("/srv/formula/_modules")  # absent in the scratch checkout


def test_salt_version(host):
    assert host.salt_call(["test.version"])["local"] == "3008.4"


def test_state_apply_with_pillar(host):
    host.set_pillar({"webarch": {"greeting": "hello"}})
    ret = host.salt_call(["state.apply", "webarch"])
    results = ret["local"]
    assert all(state["result"] is True for state in results.values()), results
    assert host.read_file("/etc/webarch-scratch") == "hello\n"
    assert host.run(["stat", "-c", "%a", "/etc/webarch-scratch"]).stdout.strip() == "640"
    assert host.last is not None and host.last.returncode == 0


def test_failing_state_returns_json(host):
    ret = host.salt_call(["state.apply", "webarch.fail"])
    assert [s["result"] for s in ret["local"].values()] == [False]
    assert host.last is not None and host.last.returncode != 0


def test_reboot_keeps_and_reset_discards_changes(host):
    host.write_file("/root/marker", "kept\n", mode=0o600)
    host.reboot()
    assert host.read_file("/root/marker") == "kept\n"
    assert host.run(["stat", "-c", "%a", "/root/marker"]).stdout.strip() == "600"
    host.reset()
    assert not host.exists("/root/marker")
    assert not host.exists("/etc/webarch-scratch")


def test_two_hosts_at_once(host, image, scratch_formula):
    with Host(name="wa-testhost2", image=image, formula_dir=scratch_formula) as second:
        assert second.run(["hostname"], check=True).stdout.strip() == "wa-testhost2"
        assert host.run(["hostname"], check=True).stdout.strip() == host.name
        second.write_file("/root/only-here", "x")
        assert not host.exists("/root/only-here")
    assert not second.is_running()
    assert system.mounts_under(second.run_dir) == []
    second.destroy()
    # Own cgroups per host: stopping one must not stop (or wait for) the other's services.
    services = host.run(["systemctl", "is-active", "apache2", "mariadb", "ssh"], check=True)
    assert services.stdout.split() == ["active"] * 3


def test_stop_leaves_no_mounts_and_is_idempotent(image, scratch_formula):
    other = Host(name="wa-testhost3", image=image, formula_dir=scratch_formula)
    other.start()
    pid = other.nspawn_pid()
    assert pid is not None
    other.stop()
    other.stop()
    assert not system.pid_alive(pid)
    assert system.mounts_under(other.run_dir) == []
    assert not any(cgroup.exists() for cgroup in other.cgroups())
    other.destroy()
    assert not other.run_dir.exists()
