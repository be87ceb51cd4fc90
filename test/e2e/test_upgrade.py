"""Upgrade in place: a host converged by the formula of UPGRADE_FROM (the last commit
before the account model moved into ``_utils``) gets no change from the new layout.

One test host, two phases, each from a fresh host converged by the old formula
(pillar.example of that commit):

* masterless: ``salt-call --local`` with the image's ``module_dirs: [/srv/formula]``;
* master/minion: a real salt-master serves /srv/formula to a long-running
  salt-minion that has no ``module_dirs`` of its own (the image's webarch.conf is
  moved aside): it runs only what ``saltutil.sync_all`` brought it.  A job of
  that minion must then import the new ``_utils`` modules, and a changed
  ``_utils`` module after the next sync (no stale ``webarch_*`` module).

The host binds no formula (``formula_dir=None``): the old tree (``git archive``)
and then the new one (this working tree) are written into /srv/formula, each
Python module marked with a last line ``WEBARCH_TEST_TREE = "<label>"`` so a
job can tell which version it imported.  Also under WEBARCH_TEST_RELEASE=trixie.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.helpers import CHROOTS_NS, failed, state_results
from testhost import Host
from testhost.saltmaster import SaltMaster

pytestmark = pytest.mark.e2e

#: The commit before the refactor (issue 14); CI runs in a clone with full history.
UPGRADE_FROM = "6f47d7a"

#: State IDs (``__id__``) the first run of the new layout may change on a host
#: converged by UPGRADE_FROM.  Add an ID only for a deliberate change of what
#: the formula deploys (e.g. a program whose code changed), saying which commit
#: changed it; empty it again when UPGRADE_FROM moves past that commit.
#: Issue 14 refactored the three Python programs into modules sharing
#: /usr/local/lib/webarch: their files change, their lib is new, and the
#: services running them restart.  webarch-db-dump no longer deletes older dumps
#: when a new one could not be put in place (a fix found by the refactor).
#: Issue 15 gave sites of type matomo their own Apache preset (AllowOverride
#: None: Matomo's .htaccess files made every request answer 500): carol-stats'
#: matomo site file changes.
#: Issue 22 (.htaccess policy): every account's Apache file (AllowOverride
#: Nonfatal=All, the /../ guard) and PHP-FPM pool (upload_max_filesize for
#: .user.ini) change, mod_status goes off (Apache restarts), webarch.conf's
#: comment changes, and webarch-htaccess-check with its report units is new.
#: Issue 21 (hardening): webarch.conf (TLS profile) and every account's Apache
#: file (default security headers) change again, and sshd_config (algorithms,
#: login limits) changes, so sshd reloads.
#: Nothing else may change (every unit, template, account and database stays
#: as the old formula left it).
EXPECTED_UPGRADE_CHANGES: frozenset[str] = frozenset(
    {
        "webarch-alice-apache-sites",
        "webarch-bob-apache-sites",
        "webarch-alice-fpm-pool",
        "webarch-bob-fpm-pool",
        "webarch-carol-stats-fpm-pool",
        "webarch-apache-module-off-status",
        "webarch-apache-restart-for-modules",
        "webarch-apache-webarch",
        "webarch-htaccess-check",
        "webarch-htaccess-check-link",
        "webarch-htaccess-report-timer",
        "webarch-htaccess-report-units",
        "webarch-program-lib-dir",
        "webarch-program-lib",
        "webarch-mail-webarch-mail-gate-script",
        "webarch-mail-webarch-mail-log-script",
        "webarch-apache-log-split",
        "webarch-mail-log-service",
        "webarch-apache-service",
        "webarch-db-dump-script",
        "webarch-carol-stats-apache-sites",
        "webarch-sshd-config",
        "webarch-sshd-service",
        # The smarthost's login and TLS (issue 18): Debian's split configuration.
        "webarch-mail-exim-debconf",
        "webarch-mail-exim-main-include",
        "webarch-mail-exim-smarthost-addition",
        "webarch-mail-smarthost-login",
        "webarch-mail-exim-update",
        "webarch-mail-exim-service",
        # The accounts' outbound rules (issue 18): new.
        "webarch-firewall-rules",
        "webarch-firewall-unit",
        "webarch-firewall-service",
        # Cron jobs (issue 18): pillar.example's alice has one.
        "webarch-cron-program",
        "webarch-cron-config",
        "webarch-alice-cron-log",
        "webarch-bob-cron-log",
        "webarch-carol-stats-cron-log",
        "webarch-cron-sync",
        "webarch-cron-units",
        "webarch-cron-timer",
        # Limits (issue 18): each account's PHP-FPM under its own master in its
        # slice (its pool file moves; Debian's shared service stops), limits
        # for its slice, sessions and processes (libpam-systemd, a new package,
        # is in the test image already).
        "webarch-fpm-check-script",
        "webarch-fpm-unit",
        "webarch-fpm-debian-service",
        "webarch-fpm-debian-service-masked",
        "webarch-alice-fpm-old-pool",
        "webarch-bob-fpm-old-pool",
        "webarch-carol-stats-fpm-old-pool",
        "webarch-alice-php-units",
        "webarch-bob-php-units",
        "webarch-carol-stats-php-units",
        "webarch-alice-php-socket",
        "webarch-bob-php-socket",
        "webarch-carol-stats-php-socket",
        "webarch-alice-php-socket-enabled",
        "webarch-bob-php-socket-enabled",
        "webarch-carol-stats-php-socket-enabled",
        "webarch-php-handover",
        "webarch-fpm-unit-restart",
        "webarch-alice-php-reload",
        "webarch-bob-php-reload",
        "webarch-carol-stats-php-reload",
        "webarch-php-idle-program",
        "webarch-php-idle-units",
        "webarch-php-idle-timer",
        "webarch-pam-limits",
        "webarch-alice-limits",
        "webarch-bob-limits",
        "webarch-carol-stats-limits",
        "webarch-units-reload",
        "webarch-matomo-archive-units",
        # The web application firewall (issue 21): no site of pillar.example has
        # one, so the module that the test image's package enabled is unloaded.
        "webarch-apache-waf-module-off",
        # Brute-force bans (issue 21): new.
        "webarch-fail2ban-ban-logs",
        "webarch-fail2ban-filters",
        "webarch-fail2ban-check",
        "webarch-fail2ban-jails",
        "webarch-fail2ban-service",
        # Host hardening and automatic security updates (issue 21): new.
        "webarch-hardening-login-defs-pass-min-days",
        "webarch-hardening-login-defs-sha-crypt-max-rounds",
        "webarch-hardening-login-defs-sha-crypt-min-rounds",
        "webarch-hardening-login-defs-umask",
        "webarch-hardening-files",
        "webarch-hardening-sysctl",
        "webarch-hardening-sysstat",
        "webarch-hardening-debsums",
        "webarch-hardening-debsums-units",
        "webarch-hardening-debsums-timer",
        "webarch-updates-apt-conf",
        "webarch-updates-needrestart-conf",
        "webarch-updates-reboot-program",
        "webarch-updates-reboot-units",
        "webarch-updates-reboot-timer",
        # Sandboxed services (issue 21): the units' new options; Apache restarts
        # and MariaDB gets a drop-in of its own (new), and restarts.
        "webarch-mail-unit-webarch-mail.service",
        "webarch-md-reload-units",
        "webarch-db-dump-units",
        "webarch-apache-unit-options",
        "webarch-mariadb-unit-options",
        "webarch-mariadb-service",
        # Issue 20 (the big host): the accounts' Apache files are rendered into a
        # staging directory (new; the file states keep their IDs) and put in
        # place by webarch-apache-sites (new, beside webarch-apache-check) after
        # one check of them all.
        "webarch-apache-check-script",
        "webarch-apache-staging-dir",
        "webarch-apache-sites-install",
        # Issue 20 (the big host): the chroots' mounts move into a mount
        # namespace of their own (webarch-chroots.service, new): each mount is
        # made there and written to /etc/webarch/chroots.fstab, its /etc/fstab
        # line dropped and its host mount unmounted; sshd restarts in the
        # namespace (its drop-in, new).
        "webarch-chroots-program",
        "webarch-chroots-unit",
        "webarch-chroots-service",
        "webarch-sshd-namespace",
        "webarch-sshd-restart-into-namespace",
        *(
            f"webarch-{account}-mount-{mount}"
            for account in ("alice", "bob", "carol-stats")
            for mount in ("usr", "home", "tmp", "mysqld", "mail", "sendmail", "proc")
        ),
    }
)

#: What the formula is: the parts of the repository a minion needs.
FORMULA_TREES = ("webarch", "_modules", "_states", "_utils", "pillar.example")
FORMULA_ROOT = "/srv/formula"
#: The minion settings the README tells users to install (from the installed tree).
LOADER_CONF = "webarch/files/salt-minion/webarch-loader.conf"
REACTOR_CONF = "webarch/files/salt-master/webarch-reactor.conf"
IMAGE_MINION_CONF = "/etc/salt/minion.d/webarch.conf"
MARKER = "WEBARCH_TEST_TREE"
EXTMODS = "/var/cache/salt/minion/extmods"

#: Run by a job of the minion (slsutil.renderer, py renderer): load the webarch
#: execution module (which imports the _utils modules), then list every webarch
#: module in the job's sys.modules (inherited from the running minion) with its
#: file and marker.
PROBE_PATH = "/root/probe-modules.sls"
PROBE = f"""#!py
import sys


def run():
    __salt__["webarch.validate"]()
    found = {{}}
    for name, module in sorted(sys.modules.items()):
        if name.rsplit(".", 1)[-1].startswith("webarch"):
            found[name] = [getattr(module, "__file__", None), getattr(module, "{MARKER}", None)]
    return found
"""

TIMINGS: dict[str, float] = {}


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)


@pytest.fixture(scope="module")
def old_commit(repo: Path) -> str:
    proc = git(repo, "rev-parse", "--verify", "--quiet", f"{UPGRADE_FROM}^{{commit}}")
    if proc.returncode != 0:
        pytest.fail(f"commit {UPGRADE_FROM} is not in {repo} (a shallow clone? fetch its history)")
    return proc.stdout.decode().strip()


@pytest.fixture(scope="module")
def old_tree(repo: Path, old_commit: str) -> bytes:
    """The formula of UPGRADE_FROM as a tar."""
    listed = git(repo, "ls-tree", "--name-only", old_commit).stdout.decode().split()
    names = [name for name in FORMULA_TREES if name in listed]
    proc = git(repo, "archive", "--format=tar", old_commit, *names)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.fixture(scope="module")
def new_tree(repo: Path) -> bytes:
    """The formula of this working tree as a tar."""
    names = [name for name in FORMULA_TREES if (repo / name).exists()]
    cmd = ["tar", "-c", "-C", str(repo), "--owner=0", "--group=0", "--numeric-owner"]
    cmd += ["--exclude=__pycache__", "--exclude=*.pyc", "-f", "-", *names]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def old_pillar(repo: Path, old_commit: str) -> str:
    """pillar.example of UPGRADE_FROM (a user's pillar does not change with the upgrade)."""
    proc = git(repo, "show", f"{old_commit}:pillar.example")
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def host(image: Path) -> Iterator[Host]:
    with Host("wa-upgrade", image, formula_dir=None) as running:
        yield running


def install_formula(host: Host, archive: bytes, label: str) -> None:
    """Replace /srv/formula by ``archive``, mark its modules ``label``, install the loader conf."""
    host.run(["find", FORMULA_ROOT, "-mindepth", "1", "-delete"], check=True)
    host.untar(archive, FORMULA_ROOT)
    mark = 'for f in "$1"/_*/*.py; do printf \'\\n%s = "%s"\\n\' "$2" "$3" >> "$f"; done'
    host.run(["sh", "-ec", mark, "sh", FORMULA_ROOT, MARKER, label], check=True)
    host.run(["cp", f"{FORMULA_ROOT}/{LOADER_CONF}", "/etc/salt/minion.d/"], check=True)


def timed(what: str, func, *args, **kwargs):
    started = time.monotonic()
    try:
        return func(*args, **kwargs)
    finally:
        TIMINGS[what] = round(time.monotonic() - started, 1)
        print(f"\n{what}: {TIMINGS[what]:.1f}s")


def changes_by_id(ret: dict) -> dict[str, list]:
    """``__id__`` -> [(state key, changes)] of the states of a run that changed something."""
    found: dict[str, list] = {}
    for key, state in state_results(ret).items():
        if state["changes"]:
            found.setdefault(state["__id__"], []).append((key, state["changes"]))
    return found


def check_converged(ret: dict, what: str, allowed: frozenset[str] = frozenset()) -> None:
    """No failed state, and no changed state outside ``allowed``; print every change."""
    assert failed(ret) == {}, f"{what}: failed states"
    changes = changes_by_id(ret)
    if changes:
        print(f"\n{what}: changed states:\n" + json.dumps(changes, indent=1, default=str))
    unexpected = sorted(set(changes) - allowed)
    summary = "\n".join(
        f"  {state_id}: {key}: {json.dumps(change, default=str)[:300]}"
        for state_id in unexpected
        for key, change in changes[state_id]
    )
    assert not unexpected, f"{what}: {len(unexpected)} state IDs changed (all printed):\n{summary}"


def apply_masterless(host: Host) -> dict:
    return host.salt_call(["state.apply", "webarch"])


# ---------------------------------------------------------------------- masterless


@pytest.fixture(scope="module")
def masterless_old(host: Host, old_tree: bytes, old_pillar: str) -> Host:
    """A host converged masterless by the old formula (a second run changes nothing)."""
    install_formula(host, old_tree, "old")
    host.write_pillar_text(old_pillar)
    ret = timed("masterless: old formula, first converge", apply_masterless, host)
    assert failed(ret) == {}
    assert "webarch-alice-user" in changes_by_id(ret), "a fresh host"
    assert len(state_results(ret)) > 100
    ret = timed("masterless: old formula, second run", apply_masterless, host)
    check_converged(ret, "old formula, second masterless run")
    return host


def test_masterless_first_run_of_the_new_layout_changes_nothing(masterless_old, new_tree):
    install_formula(masterless_old, new_tree, "new-1")
    ret = timed("masterless: new layout, first run", apply_masterless, masterless_old)
    check_converged(ret, "first masterless run of the new layout", EXPECTED_UPGRADE_CHANGES)
    # The run did use the new layout: the model comes from _utils.
    assert masterless_old.exists(f"{FORMULA_ROOT}/_utils/webarch_model.py")
    validate = masterless_old.salt_call(["webarch.validate"])
    assert validate == {"local": {"valid": True, "problems": []}}


def test_masterless_second_run_of_the_new_layout_changes_nothing(masterless_old):
    ret = timed("masterless: new layout, second run", apply_masterless, masterless_old)
    check_converged(ret, "second masterless run of the new layout")


def chroot_mounts(host: Host, namespace: bool) -> list[str]:
    """The mount points under /chroots/ in the chroots' namespace or in PID 1's
    (every mount of the table, those hidden beneath another too)."""
    cmd = ["findmnt", "-rn", "-o", "TARGET"]
    out = host.run([*CHROOTS_NS, *cmd] if namespace else cmd, check=True).stdout
    return [line for line in out.splitlines() if line.startswith("/chroots/")]


def test_masterless_upgrade_leaves_pid1_without_chroot_mounts_after_a_reboot(masterless_old):
    """The old layout's mounts in PID 1's namespace (beneath the chroot base's bind
    since the upgrade: no path reaches them) are gone after one reboot; the
    namespace has every chroot's and a run changes nothing."""
    hidden = chroot_mounts(masterless_old, namespace=False)
    print(f"\nPID 1's chroot mounts after the upgrade, before a reboot: {len(hidden)}")
    masterless_old.reboot()
    assert chroot_mounts(masterless_old, namespace=False) == []
    inside = chroot_mounts(masterless_old, namespace=True)
    for account in ("alice", "bob", "carol-stats"):
        assert f"/chroots/{account}/usr" in inside and f"/chroots/{account}/proc" in inside
    assert len(inside) == 7 * 3, inside
    ret = timed("masterless: new layout, after a reboot", apply_masterless, masterless_old)
    check_converged(ret, "a masterless run after the reboot")


# ---------------------------------------------------------------------- master/minion


@pytest.fixture(scope="module")
def master(host: Host, old_tree: bytes, old_pillar: str) -> Iterator[SaltMaster]:
    """A fresh host converged by the old formula through a master; the minion keeps running.

    The minion has no module_dirs: it runs what the master synced to it only.
    """
    timed("reset to a fresh host", host.reset)
    host.run(["mv", IMAGE_MINION_CONF, "/root/webarch.conf.aside"], check=True)
    install_formula(host, old_tree, "old")
    host.write_pillar_text(old_pillar)
    running = SaltMaster(host)
    # The passwords of pillar.example go out through the master's reactor (notify: via auto).
    timed("master: start", running.start, [f"{FORMULA_ROOT}/{REACTOR_CONF}"])
    assert running.call("config.get", "module_dirs") == []
    synced = running.call("saltutil.sync_all")
    assert "modules.webarch" in synced["modules"], synced
    mark = len(running.events())
    ret = timed("master: old formula, first converge", apply_master, running)
    assert failed(ret) == {}
    assert "webarch-alice-user" in changes_by_id(ret), "a fresh host"
    assert len(state_results(ret)) > 100
    wait_for_sends(running, ret, mark)
    ret = timed("master: old formula, second run", apply_master, running)
    check_converged(ret, "old formula, second run through the master")
    running.host.write_file(PROBE_PATH, PROBE)
    yield running
    running.stop()


def apply_master(master: SaltMaster) -> dict:
    return {"local": master.call("state.apply", "webarch", timeout=1800)}


def wait_for_sends(master: SaltMaster, ret: dict, start_at: int, timeout: float = 60.0) -> None:
    """Wait until the reactor has had the minion send each password the run announced."""
    fired = [s["changes"]["event"] for s in state_results(ret).values() if "event" in s["changes"]]
    assert fired, "pillar.example has accounts whose passwords are mailed"
    tag = f"salt/job/*/ret/{master.minion_id}"
    deadline = time.monotonic() + timeout
    while True:
        sends = [
            data
            for t, data in master.events()[start_at:]
            if fnmatch.fnmatchcase(t, tag) and data.get("fun") == "webarch_notify.send"
        ]
        if len(sends) >= len(fired):
            assert all(data["retcode"] == 0 for data in sends), sends
            return
        assert time.monotonic() < deadline, f"{len(sends)} of {fired} sent:\n{master.logs_tail()}"
        time.sleep(0.5)


def probe(master: SaltMaster) -> dict[str, list]:
    """webarch modules a new job of the running minion has loaded: name -> [file, marker]."""
    found = master.call("slsutil.renderer", f"path={PROBE_PATH}", "default_renderer=py")
    assert isinstance(found, dict), found
    print("\nwebarch modules of a job:\n" + "\n".join(f"  {n}: {v}" for n, v in found.items()))
    return found


def utils_names(repo: Path) -> set[str]:
    return {path.stem for path in (repo / "_utils").glob("*.py")}


def test_sync_brings_the_new_modules_to_the_running_minion(master, new_tree, repo):
    install_formula(master.host, new_tree, "new-1")
    # The master keeps its list of the files under file_roots for 20 s
    # (fileserver_list_cache_time): a sync right after the upgrade would miss the
    # new _utils directory (seen: "utils": []) and the new webarch module would
    # then fail to import.  An upgrade clears that list first.
    assert master.run_salt_run("fileserver.clear_file_list_cache") == {"roots": ["base"]}
    synced = master.call("saltutil.sync_all")
    utils = utils_names(repo)
    assert utils, "the new layout has _utils modules"
    assert {f"utils.{name}" for name in utils} <= set(synced["utils"]), synced
    assert "modules.webarch" in synced["modules"], synced
    found = probe(master)
    # Every webarch module a job sees is the new one, the _utils ones by plain name
    # from the synced copies: nothing of the old formula is left in the minion.
    assert {name: marker for name, (_, marker) in found.items()} == dict.fromkeys(found, "new-1")
    assert "webarch_model" in found, found
    for name in utils & found.keys():
        assert found[name][0] == f"{EXTMODS}/utils/{name}.py", found
    assert any(file == f"{EXTMODS}/modules/webarch.py" for file, _ in found.values()), found


def test_first_run_of_the_new_layout_through_the_master_changes_nothing(master):
    ret = timed("master: new layout, first run", apply_master, master)
    check_converged(ret, "first run of the new layout through the master", EXPECTED_UPGRADE_CHANGES)


def test_second_run_of_the_new_layout_through_the_master_changes_nothing(master):
    ret = timed("master: new layout, second run", apply_master, master)
    check_converged(ret, "second run of the new layout through the master")


def test_a_changed_utils_module_reaches_the_running_minion(master, repo):
    """The minion has run the new modules; a _utils change arrives with the next sync."""
    before = probe(master)
    assert before["webarch_model"][1] == "new-1"
    relabel = f'sed -i \'s/^{MARKER} = .*/{MARKER} = "new-2"/\' "$1"/_utils/*.py'
    master.host.run(["sh", "-ec", relabel, "sh", FORMULA_ROOT], check=True)
    synced = master.call("saltutil.sync_all")
    assert {f"utils.{name}" for name in utils_names(repo)} == set(synced["utils"]), synced
    after = probe(master)
    # The _utils modules the job imported (the model's; not, say, the Matomo
    # planner, which only webarch_matomo imports) are all the new copies.
    seen = {n: m for n, (_, m) in after.items() if n in utils_names(repo)}
    assert "webarch_model" in seen, after
    assert seen == dict.fromkeys(seen, "new-2"), after
    print(f"\ntimings: {json.dumps(TIMINGS)}")
