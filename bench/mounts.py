"""What the chroots' mounts cost systemd, by number of accounts (issue 20's big host).

Each account's chroot is 7 mounts today (``/usr`` read-only and a slave, the
home, ``~/tmp`` as ``/tmp``, MariaDB's socket directory, the mail gate, the
``sendmail`` file bind, a ``/proc`` with ``hidepid``), all in the host's mount
namespace, the one PID 1 watches.  This benchmark makes exactly those mounts for
250, 500 and 1,000 accounts (no Salt, no formula: the mounts alone) on a plain
test host and times what systemd then does with them:

* ``add_s``: making one step's mounts (``mount`` calls), and ``pid1_cpu_s``, the
  CPU PID 1 spent meanwhile (it re-reads the whole mount table on each change);
* ``plain_s``: ``systemd-run --wait true``, a unit with no mount namespace;
* ``privtmp_s``: the same with ``PrivateTmp=yes`` (systemd copies every mount of
  the host into the unit's namespace);
* ``strict_s``: ``ProtectSystem=strict`` with ``ReadWritePaths=`` (systemd
  re-reads the mount table for each mount it makes read-only: systemd issue
  42375; Debian's logind, hostnamed, networkd... are such units);
* ``logind_s``: ``systemctl restart systemd-logind`` (SSH logins wait for it);
* ``reload_s``: ``systemctl daemon-reload``.

Then the same on a fresh host with the mounts made in a mount namespace of their
own (``--mode ns``: pinned at ``/run/webarch-bench/chroots.mnt``, its chroot base
private, as the proposed fix would do): PID 1 sees none of them.  The ratios
compare 1,000 with 250 accounts (4x the accounts) in each mode.  Run::

    PYTHONPATH=test .venv/bin/python bench/mounts.py [--quick] [--mode host|ns|both]
"""

from __future__ import annotations

import json

from common import (
    Host,
    base_arguments,
    bench_host,
    figure,
    progress,
    ratio,
    target,
)

FULL_COUNTS = (250, 500, 1000)
QUICK_COUNTS = (50, 200)
PROBES = ("add_s", "pid1_cpu_s", "plain_s", "privtmp_s", "strict_s", "logind_s", "reload_s")

#: Run in the host with python3: make the mounts of accounts FIRST..LAST, then probe.
IN_HOST = r"""
import json, os, subprocess, sys, time
first, last, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
NS = "/run/webarch-bench/chroots.mnt"
TICK = os.sysconf("SC_CLK_TCK")

def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

def pid1_cpu():
    fields = open("/proc/1/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK

def timed(*cmd):
    started = time.monotonic()
    run(*cmd)
    return time.monotonic() - started

def setup_ns():
    if os.path.exists(NS):
        return
    os.makedirs("/run/webarch-bench", exist_ok=True)
    run("mount", "--bind", "/run/webarch-bench", "/run/webarch-bench")
    run("mount", "--make-private", "/run/webarch-bench")
    open(NS, "w").close()
    os.makedirs("/chroots", exist_ok=True)
    # This machine's kernel (6.18) refuses the bind of a new namespace's file
    # now and then (EINVAL, about half the tries): a new namespace each try.
    for _ in range(20):
        pin = ["unshare", "--mount=" + NS, "--propagation", "unchanged", "true"]
        if subprocess.run(pin, stderr=subprocess.DEVNULL).returncode == 0:
            break
    else:
        run(*pin)
    ns("mount", "--bind", "/chroots", "/chroots")
    ns("mount", "--make-private", "/chroots")

def ns(*cmd):
    run("nsenter", "--mount=" + NS, "--", *cmd)

def script(index):
    user = "u%04d" % index
    root, home = "/chroots/" + user, "/home/" + user
    dirs = [home + "/tmp", "/run/mysqld", "/run/webarch-mail"]
    dirs += [root + p for p in ("/usr", home, "/tmp", "/run/mysqld", "/run/webarch-mail", "/proc")]
    lines = ["mkdir -p " + " ".join(dirs)]
    lines += ["ln -sfn usr/%s %s/%s" % (d, root, d) for d in ("bin", "lib", "lib64")]
    lines += [
        "mount --bind -o ro,nosuid,nodev /usr %s/usr" % root,
        "mount --make-slave %s/usr" % root,
        "mount --bind -o nosuid,nodev %s %s%s" % (home, root, home),
        "mount --bind -o nosuid,nodev %s/tmp %s/tmp" % (home, root),
        "mount --bind -o ro,nosuid,nodev,noexec /run/mysqld %s/run/mysqld" % root,
        "mount --bind -o ro,nosuid,nodev,noexec /run/webarch-mail %s/run/webarch-mail" % root,
        "mount --bind -o ro,nosuid,nodev /usr/bin/true %s/usr/sbin/exim4" % root,
        "mount -t proc -o nosuid,nodev,noexec,hidepid=invisible proc %s/proc" % root,
    ]
    return "\n".join(lines) + "\n"

subprocess.run(["systemctl", "is-system-running", "--wait"], stdout=subprocess.DEVNULL)
if mode == "ns":
    setup_ns()
cpu, started = pid1_cpu(), time.monotonic()
text = "set -e\n" + "".join(script(i) for i in range(first, last + 1))
if mode == "ns":
    subprocess.run(["nsenter", "--mount=" + NS, "--", "sh"], input=text, text=True, check=True)
else:
    subprocess.run(["sh"], input=text, text=True, check=True)
add = time.monotonic() - started
time.sleep(2)  # let PID 1 catch up with the mount table before measuring it
figures = {"add_s": add, "pid1_cpu_s": pid1_cpu() - cpu}
figures["plain_s"] = timed("systemd-run", "--wait", "-q", "true")
figures["privtmp_s"] = timed("systemd-run", "--wait", "-q", "-p", "PrivateTmp=yes", "true")
figures["strict_s"] = timed(
    "systemd-run", "--wait", "-q", "-p", "ProtectSystem=strict", "-p",
    "ReadWritePaths=/var/tmp", "true",
)
figures["logind_s"] = timed("systemctl", "restart", "systemd-logind")
figures["reload_s"] = timed("systemctl", "daemon-reload")
host_mounts = sum(1 for _ in open("/proc/1/mountinfo"))
figures["pid1_mounts"] = host_mounts
if mode == "ns":
    out = subprocess.run(
        ["nsenter", "--mount=" + NS, "--", "sh", "-c", "wc -l < /proc/self/mountinfo"],
        capture_output=True, text=True, check=True,
    )
    figures["ns_mounts"] = int(out.stdout)
    # The chroots work from the namespace: the last account's /usr and /proc.
    user = "u%04d" % last
    ns("chroot", "/chroots/" + user, "/usr/bin/test", "-x", "/usr/bin/sh")
    ns("chroot", "/chroots/" + user, "/usr/bin/test", "-e", "/proc/self/status")
print(json.dumps(figures))
"""


def step(host: Host, first: int, last: int, mode: str) -> dict[str, float]:
    """Make the mounts of accounts ``first``..``last`` in ``mode``; the probes' figures."""
    proc = host.run(["python3", "-c", IN_HOST, str(first), str(last), mode], timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"step {first}-{last} ({mode}) failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sweep(host: Host, counts: tuple[int, ...], mode: str) -> dict[int, dict[str, float]]:
    """Add accounts' mounts up to each count in turn; figures per count."""
    results: dict[int, dict[str, float]] = {}
    done = 0
    for count in counts:
        progress(f"{mode}: mounts of accounts {done + 1}..{count}")
        figures = step(host, done + 1, count, mode)
        figures["add_s_per_account"] = figures["add_s"] / (count - done)
        figure("mounts", mode=mode, accounts=count, **figures)
        results[count] = figures
        done = count
    return results


def report(mode: str, results: dict[int, dict[str, float]]) -> bool:
    """Ratios from the smallest to the largest count; the target of linear growth."""
    counts = sorted(results)
    low, high = counts[0], counts[-1]
    scale = high / low
    growth = {
        probe: ratio(results[high][probe], results[low][probe])
        for probe in ("plain_s", "privtmp_s", "strict_s", "logind_s", "reload_s")
    }
    figure("ratio", mode=mode, accounts=f"{low}->{high}", **growth)
    worst = max(growth, key=lambda probe: growth[probe])
    return target(
        f"mounts_growth_{mode}",
        growth[worst] <= scale * 1.1,
        f"worst {worst} x{growth[worst]:.1f} for x{scale:.0f} accounts"
        f" (at most x{scale * 1.1:.1f})",
    )


def main() -> int:
    """Sweep the host mode, the namespace mode or both, each on a fresh host."""
    parser = base_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("host", "ns", "both"), default="both")
    parser.add_argument("--name", default="wb-mounts")
    args = parser.parse_args()
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    modes = ("host", "ns") if args.mode == "both" else (args.mode,)
    verdicts = []
    for mode in modes:
        name = f"{args.name}-{mode}"
        with bench_host(name, release=args.release, formula=args.formula) as host:
            verdicts.append(report(mode, sweep(host, counts, mode)))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
