"""Noisy-neighbour suite: alice takes what she can, bob's site keeps answering.

While alice runs, one at a time, a CPU burn on every core, a memory hog past her
``process_memory``, a fork bomb, a disk fill and a flood of her own PHP requests
(programs in security/noisy.py, each bounded in count and time), bob's PHP page
is requested over HTTPS from outside: its p50 and p99 latency against a quiet
baseline are printed as ratios (the summary line), and bob must get no error,
must log in by SSH and write a file during and after each attack, and the
host's services (apache2, mariadb, sshd, bob's PHP-FPM) must stay up with no
out-of-memory kill outside alice's processes.

alice's limits are the ones this machine can enforce (its test hosts see cgroup
v1 controllers read-only, so slices cannot): her fork bomb stops at her
``tasks_max`` (RLIMIT_NPROC), her hog is refused at her ``process_memory``
(RLIMIT_DATA), her burners run at her ``nice``; ``systemctl show`` must report
the rest (her slice's and PHP unit's properties) as a cgroup v2 server applies
them.  The test host's whole container is capped from this machine (memory,
tasks and CPU: testhost.host.Limits) so that an attack that gets through can
never take the machine.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.helpers import apply, failed
from security import noisy
from security.noisy import Latency
from testhost import Host
from testhost.host import CGROUP_PARENT, Limits

pytestmark = pytest.mark.e2e

NAME = "wa-noisy"
ALICE_SITE = "www.alice.example"
BOB_SITE = "www.bob.example"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]  # fmt: skip
#: alice's limits (bob keeps the server's defaults).
ALICE_LIMITS = {
    "cpu_quota": 50,
    "cpu_weight": 50,
    "memory_high": "384M",
    "memory_max": "512M",
    "tasks_max": 64,
    "io_weight": 50,
    "process_memory": "512M",
    "nice": 10,
}
MIB = 1 << 20
#: The services that must stay up (bob's PHP-FPM unit is found on the host).
SERVICES = ("apache2.service", "mariadb.service", "ssh.service")
#: The figures of each attack: name -> (bob's latency, what the attack printed).
RESULTS: dict[str, tuple[Latency, str]] = {}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SSH key pairs of alice and bob, on this machine."""
    found = {}
    for user in ("alice", "bob"):
        path = tmp_path_factory.mktemp("keys") / user
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        found[user] = path
    return found


def noisy_pillar(keys: dict[str, Path]) -> dict:
    """alice (with her limits) and bob (server defaults), a PHP site each."""
    accounts = {
        user: {
            "email": f"{user}@{user}.example",
            "ssh_keys": [keys[user].with_suffix(".pub").read_text().strip()],
            "sites": {"www": {"server_name": f"www.{user}.example"}},
        }
        for user in ("alice", "bob")
    }
    accounts["alice"]["limits"] = ALICE_LIMITS
    return {"webarch": {"hostname": "web1.coop.example", "accounts": accounts}}


@dataclass
class Target:
    """The converged host and what the tests compare with."""

    host: Host
    keys: dict[str, Path]
    alice_uid: int
    bob_uid: int
    #: Each service that must stay up -> its main pid after the converge.
    pids: dict[str, str]
    #: This machine's uptime at the start (dmesg's clock).
    since: float
    baseline: Latency


def services(host: Host) -> list[str]:
    """SERVICES and bob's PHP-FPM unit (his own, or the shared one)."""
    own = host.run(["systemctl", "show", "-P", "LoadState", "webarch-php@bob.service"])
    if own.stdout.strip() == "loaded":
        return [*SERVICES, "webarch-php@bob.service"]
    shared = host.run(["sh", "-c", "cd /lib/systemd/system && ls php*-fpm.service"])
    return [*SERVICES, *shared.stdout.split()]


def main_pids(host: Host) -> dict[str, str]:
    """The main pid of each service (0 when it is not running)."""
    return {
        unit: host.run(["systemctl", "show", "-P", "MainPID", unit]).stdout.strip()
        for unit in services(host)
    }


@pytest.fixture(scope="module")
def target(image: Path, repo: Path, keys: dict[str, Path]) -> Iterator[Target]:
    """wa-noisy converged, capped from this machine; the pages and programs uploaded;
    bob's quiet baseline measured."""
    with Host(name=NAME, image=image, formula_dir=repo, limits=Limits()) as host:
        problems = failed(apply(host, noisy_pillar(keys)))
        assert {k: v for k, v in problems.items() if "requisite failed" not in v} == {}
        assert problems == {}
        host.write_file("/home/bob/sites/www/lat.php", noisy.BOB_PHP)
        host.write_file("/home/alice/sites/www/slow.php", noisy.ALICE_SLOW_PHP)
        for name, text in (("burn.py", noisy.BURN_PY), ("hog.py", noisy.HOG_PY),
                           ("fork.py", noisy.FORK_PY), ("fill.py", noisy.FILL_PY)):  # fmt: skip
            host.write_file(f"/home/alice/private/{name}", text)
        for user in ("alice", "bob"):
            host.run(["chown", "-R", f"{user}:www-data", f"/home/{user}/sites/www"], check=True)
        host.run(["chown", "-R", "alice:alice", "/home/alice/private"], check=True)
        uids = {u: int(host.run(["id", "-u", u], check=True).stdout) for u in ("alice", "bob")}
        noisy.probe(host, BOB_SITE)  # warm-up: workers started, opcache filled
        time.sleep(3)
        baseline = noisy.probe(host, BOB_SITE)
        yield Target(host, keys, uids["alice"], uids["bob"], main_pids(host), noisy.uptime(),
                     baseline)  # fmt: skip


def ssh(target: Target, user: str, command: str, timeout: float = 60) -> str:
    """``command`` in ``user``'s SSH session (in the chroot): stdout and stderr."""
    args = ["ssh", "-i", str(target.keys[user]), *SSH_OPTS, f"{user}@127.0.0.1", command]
    try:
        out = target.host.net_run(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"ssh timed out after {timeout:.0f}s"
    return out.stdout + out.stderr


def bob_writes(target: Target, tag: str) -> None:
    """bob logs in by SSH and writes a file in his home."""
    out = ssh(target, "bob", f"echo {tag} > ~/tmp/noisy-{tag} && cat ~/tmp/noisy-{tag}")
    assert out.strip() == tag, f"bob's login and write ({tag}): {out}"


def alice_runs(program: str, *args: object) -> Callable[[Target], str]:
    """The attack: ``program`` (in alice's ~/private) in her SSH session, killed at the latest
    well after its hold."""
    limit = noisy.HOLD + 40
    line = f"timeout -s KILL {limit} python3 ~/private/{program} " + " ".join(map(str, args))
    return lambda target: ssh(target, "alice", line, timeout=limit + 20)


def control_burn(target: Target) -> str:
    """Not an attack: alice's CPU burn at niceness 0, as a service of the host's (the
    comparison that shows her burn at her own niceness yields to bob)."""
    limit = noisy.HOLD + 40
    out = target.host.run(["systemd-run", "--wait", "--pipe", "--quiet", "--collect",
                           "-p", "User=alice", "-p", "Nice=0", "--", "timeout", "-s", "KILL",
                           str(limit), "python3", "/home/alice/private/burn.py",
                           str(noisy.HOLD)], timeout=limit + 20)  # fmt: skip
    return out.stdout + out.stderr


def alice_floods(target: Target) -> str:
    """The attack: many concurrent requests to alice's slow page from outside."""
    got = noisy.flood(target.host, ALICE_SITE, noisy.HOLD)
    return f"flood answered={len(got.latencies)} failed={len(got.errors)}"


#: The control of the CPU burn (not counted as an attack).
CONTROL = "cpu burn at nice 0 (control)"
ATTACKS: dict[str, Callable[[Target], str]] = {
    CONTROL: control_burn,
    "cpu burn": alice_runs("burn.py", noisy.HOLD),
    "memory hog": alice_runs("hog.py", noisy.HOG_CAP_MB, noisy.HOLD),
    "fork bomb": alice_runs("fork.py", noisy.FORK_CAP, noisy.HOLD),
    "disk fill": alice_runs("fill.py", noisy.FILL_CAP_MB, noisy.HOLD),
    "php flood": alice_floods,
}


def under_attack(target: Target, name: str) -> tuple[Latency, str]:
    """Run attack ``name`` in the background; probe bob's page and have him log in and
    write a file while it holds; return bob's latency and the attack's output."""
    output: list[str] = []
    attack = threading.Thread(target=lambda: output.append(ATTACKS[name](target)))
    attack.start()
    try:
        time.sleep(noisy.WARMUP)
        latency = noisy.probe(target.host, BOB_SITE)
        bob_writes(target, "during")
    finally:
        attack.join(timeout=noisy.HOLD + 120)
    assert not attack.is_alive(), f"{name} did not end"
    return latency, output[0] if output else ""


def alice_leftovers(host: Host) -> str:
    """alice's attack processes still running, and her fill file."""
    out = host.run(["sh", "-c", "pgrep -a -u alice -f 'private/|timeout';"
                    " ls -d /home/alice/tmp/noisy-fill 2>/dev/null"])  # fmt: skip
    return out.stdout.strip()


def oom_outside_alice(target: Target) -> list[str]:
    """Out-of-memory kills since the start of anything but alice's processes: this
    machine's kernel log (the host's memory cgroup) and the host's journal."""
    cgroup = f"{CGROUP_PARENT}-{target.host.instance}"
    kernel = [line for line in noisy.oom_kills(target.since, cgroup)
              if f",uid={target.alice_uid}" not in line]  # fmt: skip
    grep = "oom-kill|out of memory|oom killer"
    journal = target.host.run(["journalctl", "-q", "--no-pager", "-g", grep, "-o", "cat"])
    units = [line for line in journal.stdout.splitlines()
             if "alice" not in line and f"user-{target.alice_uid}" not in line]  # fmt: skip
    return kernel + units


def check_host(target: Target) -> None:
    """The host and its services are up, none restarted; no OOM kill outside alice's."""
    assert target.host.is_running()
    assert main_pids(target.host) == target.pids
    assert oom_outside_alice(target) == []


def test_safety_net_caps_the_host(target):
    """The whole host is in this machine's memory, pids and cpu cgroups of its Limits."""
    host = target.host
    cgroups = [Path(line) for line in (host.run_dir / "limits").read_text().split()]
    assert {c.parts[4] for c in cgroups} == {"memory", "pids", "cpu"}, cgroups
    assert {c.name for c in cgroups} == {f"{CGROUP_PARENT}-{host.instance}"}, cgroups
    settings = {k: v for files in Limits().settings().values() for k, v in files.items()}
    for cgroup in cgroups:
        assert str(host.init_pid()) in (cgroup / "cgroup.procs").read_text().split(), cgroup
        for file, value in settings.items():
            if (cgroup / file).exists():
                assert (cgroup / file).read_text().strip() == value, cgroup / file


@pytest.mark.parametrize("name", list(ATTACKS))
def test_bob_keeps_answering(target, name):
    latency, output = under_attack(target, name)
    RESULTS[name] = (latency, output)
    print(f"{name}: {output.strip()} | bob {latency.describe()}"
          f" baseline {target.baseline.describe()}")  # fmt: skip
    assert latency.errors == [], f"bob's errors during the {name}: {latency.errors[:5]}"
    assert len(latency.latencies) >= 20, latency.describe()
    bob_writes(target, "after")
    check_host(target)
    assert alice_leftovers(target.host) == "", f"{name} left something behind"
    check_attack(target, name, output)


def check_attack(target: Target, name: str, output: str) -> None:
    """The attack did run, and what alice's limits enforce here stopped it."""
    limits = ALICE_LIMITS
    if name == CONTROL:
        assert "burned" in output and "nice 0 " in output, output
    elif name == "cpu burn":
        assert "burned" in output, output
        assert f"nice {limits['nice']} " in output, f"alice's burners are not niced: {output}"
        control, burn = (RESULTS[n][0].ratios(target.baseline)[0] for n in (CONTROL, name))
        assert burn < control, f"bob's p50 x{burn:.2f} against x{control:.2f} at nice 0"
    elif name == "memory hog":
        got = re.search(r"hog (\d+) MiB (.*)", output)
        assert got, output
        assert got.group(2) == "refused: MemoryError", f"not refused: {output}"
        assert int(got.group(1)) * MIB <= size(limits["process_memory"]), output
    elif name == "fork bomb":
        got = re.search(r"forked (\d+) refused: (.*)", output)
        assert got, output
        assert got.group(2) == "Resource temporarily unavailable", f"not refused: {output}"
        assert int(got.group(1)) < limits["tasks_max"], output
    elif name == "disk fill":
        got = re.search(r"filled (\d+) MiB refused: (.*)", output)
        assert got, output
        assert got.group(2) in ("none", "Disk quota exceeded"), output
    else:
        got = re.search(r"flood answered=(\d+)", output)
        assert got and int(got.group(1)) > 0, f"alice's flood got no answer: {output}"


def size(text: str) -> int:
    """Bytes of a pillar size (512M, 1G)."""
    return int(text[:-1]) << {"K": 10, "M": 20, "G": 30}[text[-1]]


def test_alice_limits_in_systemctl_show(target):
    host, limits = target.host, ALICE_LIMITS

    def show(unit: str, *props: str) -> dict[str, str]:
        out = host.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)])
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    php = show("webarch-php@alice.service", "LoadState", "ActiveState", "Slice", "MainPID",
               "LimitNPROC", "LimitDATA", "OOMScoreAdjust", "Nice")  # fmt: skip
    slice_ = f"user-{target.alice_uid}.slice"
    assert (php["LoadState"], php["ActiveState"]) == ("loaded", "active"), php
    assert php["Slice"] == slice_, php
    assert php["LimitNPROC"] == str(limits["tasks_max"]), php
    assert php["LimitDATA"] == str(size(limits["process_memory"])), php
    assert int(php["OOMScoreAdjust"]) > 0, php
    assert php["Nice"] == "0", php
    # Her running PHP-FPM has them (its workers inherit them).
    pid = php["MainPID"]
    proc = host.run(["cat", f"/proc/{pid}/limits", f"/proc/{pid}/oom_score_adj"], check=True)
    tasks, data = limits["tasks_max"], size(limits["process_memory"])
    assert re.search(rf"^Max processes +{tasks} +{tasks} ", proc.stdout, re.M), proc.stdout
    assert re.search(rf"^Max data size +{data} +{data} ", proc.stdout, re.M), proc.stdout
    assert proc.stdout.split()[-1] == php["OOMScoreAdjust"], proc.stdout
    got = show(slice_, "TasksMax", "MemoryMax", "MemoryHigh", "CPUQuotaPerSecUSec",
               "CPUWeight", "IOWeight")  # fmt: skip
    assert got == {
        "TasksMax": str(limits["tasks_max"]),
        "MemoryMax": str(size(limits["memory_max"])),
        "MemoryHigh": str(size(limits["memory_high"])),
        "CPUQuotaPerSecUSec": f"{limits['cpu_quota'] * 10}ms",
        "CPUWeight": str(limits["cpu_weight"]),
        "IOWeight": str(limits["io_weight"]),
    }, got
    # bob's PHP is his own unit in his own slice, with the server's defaults.
    bob = show("webarch-php@bob.service", "Slice", "OOMScoreAdjust")
    assert bob["Slice"] == f"user-{target.bob_uid}.slice", bob


def test_summary(target, request):
    """Runs last: bob's p50 and p99 ratios against the baseline, per attack."""
    parts = []
    errors = 0
    for name, (latency, _) in RESULTS.items():
        errors += len(latency.errors)
        if latency.latencies:
            p50, p99 = latency.ratios(target.baseline)
            parts.append(f"{name} p50 x{p50:.2f} p99 x{p99:.2f}")
    line = (f"attacks={len(set(RESULTS) - {CONTROL})} bob_errors={errors}"
            f" baseline {target.baseline.describe()}; " + "; ".join(parts))  # fmt: skip
    request.config.webarch_noisy_summary = line  # printed by conftest at the end
    if len(RESULTS) != len(ATTACKS):
        pytest.skip(f"partial run: {line}")
    assert errors == 0, line
