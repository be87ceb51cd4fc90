"""The nightly snapshots' cost (issue 17): first night, following nights, memory, I/O, sites.

One test host (``wb-backup``) converges 100 bench accounts (``--quick``: 10; each a
PHP and a static site, a database) with ``webarch:backup`` on.  Each account then
gets, as its own files, a WordPress-like tree in ``~/sites/www/app``: SMALL_FILES
files of 1-16 KiB (log-uniform sizes, SMALL_PER_DIR per directory) and a few large
ones (LARGE_MIB, in ``wp-content/uploads``), made inside the host by one Python
script.  Three nights follow, each that night's MariaDB dumps
(``webarch-db-dump.service``) and then ``webarch-backup --date DAY`` in a transient
unit with the service's ``Nice=10`` and ``IOSchedulingClass=idle``, under a small
wrapper that samples the job's processes (rsync included) and reads its I/O:

* night 1: the first copy of every home;
* between nights, in every account, 1 % of the files change (half of them
  rewritten with new content, half added);
* night 2 runs while wrk loads some accounts' PHP sites, night 3 on a quiet host.

Before each night the homes' file data is written out and dropped from the page
cache (``posix_fadvise`` on these files only; their metadata stays cached): a
night reads the homes from disk, as at 4 am.

Per night (``backup_night``): the job's wall seconds (``seconds``), the accounts'
own seconds, the bytes rsync copied and the store's use (``store_bytes``), both
from ``salt-call webarch_backup.status``; the bytes the night added to the store
(``store_added``); ``changed_since``, the bytes of the homes' files modified since
the last night began (the bench's changes, the night's dumps, the sites' logs:
what rsync has to copy); the job's peak memory (PSS and RSS of all its processes
summed, sampled every SAMPLE_S seconds, ``pss_unreadable`` the processes whose
PSS could not be read, and the largest process's peak RSS from ``getrusage``)
and its I/O (``/proc/PID/io`` of the wrapper, which counts every reaped descendant:
``read_bytes``/``write_bytes`` to and from storage,
``rchar``/``wchar`` through system calls); ``flush_s``, a ``sync`` of the store
right after (writeback left by the job); ``store_walk_s``, the job's own walk of
the store for its disk use (``tree_bytes``: every day of every account, each
inode once), timed apart: a part of every night that grows with the days kept.
``backup_change`` says what the bench changed (files, bytes, their share of the
homes).  Sites (``backup_sites``): wrk (1 thread, WRK_CONNECTIONS connections,
HTTPS, a PHP page that reads ten files of its tree) rotating over LOADED accounts'
sites, 5 s a run (``--quick``: 3 s), before the nights and during night 2: p50 and
p99 latency (medians over the runs) and their ratios.

Ratios: following night / first night for seconds and for bytes added to the
store; bytes copied / ``changed_since``; store added / the bench's change.
Targets (night 3, the quiet one, against night 1): a following night takes under
half the first one's seconds; its store growth is under 5 % of the first night's
(1 % of the files change, about 0.6 % of the bytes; each night also makes a new
directory tree); rsync copies what changed and nothing else (0.9-1.1 x
``changed_since``); the sites' p99 during night 2 stays under twice the one
before.  Nothing is asserted (a shared 2-core machine).  Run from the repository
as root::

    PYTHONPATH=test .venv/bin/python bench/backup.py [--quick] [--keep] [--formula DIR]
        [--method btrfs]

``--method btrfs`` (host ``wb-backup-btrfs``): /home is a btrfs of its own
(testhost.homefs, BTRFS_MIB on a loop device) with quotas on, so each home is
a subvolume, and the store is a subvolume of it mounted at STORE; a night is a
read-only snapshot of each home.  There ``bytes_copied`` is none (nothing is
copied), ``store_bytes`` the qgroups' exclusive bytes of the days, and the
store walk is not made (the job makes none); the copied-vs-changed target
does not apply; wrk runs last 1 s (before the nights as during night 2), to
fall within a night of a few seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (
    Host,
    account_name,
    apply_webarch,
    base_arguments,
    bench_host,
    bench_pillar,
    cached_image,
    figure,
    formula_snapshot,
    progress,
    ratio,
    sh,
    target,
)
from testhost import config
from testhost.homefs import HomeFs

#: The tree of every account: small files (1 to SMALL_KIB KiB), their directories, large files.
SMALL_FILES = 1500
SMALL_KIB = 16
SMALL_PER_DIR = 25
LARGE_MIB = (2, 1, 1)
#: The share of an account's files that change between two nights.
CHANGE_SHARE = 0.01
#: The accounts whose PHP site wrk loads, and how.
LOADED = 4
WRK_CONNECTIONS = 4
#: Memory samples of the job's processes (seconds).
SAMPLE_S = 0.25
#: Free disk this machine must have before the run (bytes; the run itself takes about 3 GB).
NEEDED_FREE = 6 * 1024**3
APP = "sites/www/app"
STORE = "/var/lib/webarch-backups"
PAGE = "bench.php"
#: --method btrfs: the size of the hosts's /home (homes, their snapshots, the dumps).
BTRFS_MIB = 6144
#: --method btrfs: the store's subvolume on the btrfs of the homes (mounted at STORE).
BTRFS_STORE = "/home/.webarch-backups"

#: Makes every account's tree (as the account's files); prints the totals as JSON.
TREE_SCRIPT = r"""
import json, math, os, random, sys
args = json.loads(sys.argv[1])
total = files = dirs = 0
for name in args["accounts"]:
    rng = random.Random(name)
    info = __import__("pwd").getpwnam(name)
    base = f"/home/{name}/{args['app']}"
    def mkdir(path):
        global dirs
        os.makedirs(path, 0o755, exist_ok=True)
        # every level below the home is the account's
        part = path
        while part != f"/home/{name}/sites/www":
            os.chown(part, info.pw_uid, info.pw_gid)
            part = os.path.dirname(part)
        dirs += 1
    def write(path, size):
        global total, files
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.fchown(fd, info.pw_uid, info.pw_gid)
            os.write(fd, os.urandom(size))
        finally:
            os.close(fd)
        total += size
        files += 1
    tops = ["wp-admin", "wp-includes", "wp-content/plugins", "wp-content/themes"]
    for i in range(args["small"]):
        d = i // args["per_dir"]
        folder = f"{base}/{tops[d % len(tops)]}/d{d:03d}"
        if i % args["per_dir"] == 0:
            mkdir(folder)
        write(f"{folder}/f{i:05d}.php", int(1024 * args["small_kib"] ** rng.random()))
    uploads = f"{base}/wp-content/uploads/2026/01"
    mkdir(uploads)
    for j, mib in enumerate(args["large"]):
        write(f"{uploads}/media-{j}.bin", mib * 1024 * 1024)
print(json.dumps({"bytes": total, "files": files, "dirs": dirs}))
"""

#: One night's changes in every account: rewrites and additions; prints what changed.
CHANGE_SCRIPT = r"""
import json, os, random, sys
args = json.loads(sys.argv[1])
changed = count = total = total_files = 0
for name in args["accounts"]:
    rng = random.Random(f"{name}-{args['night']}")
    info = __import__("pwd").getpwnam(name)
    home = f"/home/{name}"
    small = []
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in (f"{home}/backups/files",
                                                                    f"{home}/tmp")]
        for f in files:
            st = os.lstat(os.path.join(root, f))
            total += st.st_size
            total_files += 1
            if root.startswith(f"{home}/{args['app']}/wp-") and "uploads" not in root:
                small.append(os.path.join(root, f))
    small.sort()
    want = max(2, round(args["share"] * len(small)))
    rewrite = want // 2
    for path in rng.sample(small, rewrite):
        size = os.lstat(path).st_size
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
        try:
            os.write(fd, os.urandom(size))
        finally:
            os.close(fd)
        changed += size
        count += 1
    folder = f"{home}/{args['app']}/wp-content/uploads/night-{args['night']}"
    os.mkdir(folder, 0o755)
    os.chown(folder, info.pw_uid, info.pw_gid)
    for i in range(want - rewrite):
        size = int(1024 * args["small_kib"] ** rng.random())
        fd = os.open(f"{folder}/n{i:03d}.php", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchown(fd, info.pw_uid, info.pw_gid)
            os.write(fd, os.urandom(size))
        finally:
            os.close(fd)
        changed += size
        count += 1
print(json.dumps({"changed_bytes": changed, "changed_files": count,
                  "total_bytes": total, "total_files": total_files}))
"""

#: Before a night: what changed in the homes since the last night began (mtime: what
#: rsync must copy); the homes' file data written to disk and dropped from the page
#: cache (posix_fadvise, these files only): the night reads it from disk, as at 4 am.
SINCE_SCRIPT = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
total = files = 0
os.sync()
for name in args["accounts"]:
    home = f"/home/{name}"
    for root, dirs, names in os.walk(home):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in (f"{home}/backups/files",
                                                                    f"{home}/tmp")]
        for f in names:
            st = os.lstat(os.path.join(root, f))
            if not os.path.isfile(os.path.join(root, f)) or os.path.islink(os.path.join(root, f)):
                continue
            if st.st_mtime >= args["since"]:
                total += st.st_size
                files += 1
            fd = os.open(os.path.join(root, f), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
print(json.dumps({"bytes": total, "files": files, "now": time.time()}))
"""

#: The job's own walk of each account's store (its disk use, every day, each inode
#: once: the program's tree_bytes), timed apart: a part of every account's night.
WALK_SCRIPT = r"""
import importlib.machinery, importlib.util, json, os, sys, time
args = json.loads(sys.argv[1])
loader = importlib.machinery.SourceFileLoader("job", "/usr/local/sbin/webarch-backup")
job = importlib.util.module_from_spec(importlib.util.spec_from_loader("job", loader))
loader.exec_module(job)
started = time.monotonic()
total = 0
for name in args["accounts"]:
    fd = job.open_dir(f"{args['store']}/{name}")
    try:
        total += job.tree_bytes(fd)
    finally:
        os.close(fd)
print(json.dumps({"seconds": time.monotonic() - started, "bytes": total}))
"""

#: Runs a command (the night) and measures it: wall time, peak memory of its
#: processes (sampled), rusage and I/O of all its reaped descendants.  JSON to argv[1].
MEASURE_SCRIPT = r"""
import json, os, resource, subprocess, sys, threading, time

def io():
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = int(value)
    return out

def tree(root):
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen

def memory(pids):
    rss = pss = unread = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            unread += 1
    return rss, pss, unread

before = io()
started = time.monotonic()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
peak = {"rss": 0, "pss": 0, "procs": 0, "samples": 0, "unread": 0}
done = threading.Event()
def sample():
    while not done.is_set():
        pids = tree(proc.pid)
        rss, pss, unread = memory(pids)
        peak["rss"] = max(peak["rss"], rss)
        peak["pss"] = max(peak["pss"], pss)
        peak["unread"] = max(peak["unread"], unread)
        peak["procs"] = max(peak["procs"], len(pids))
        peak["samples"] += 1
        done.wait(float(os.environ.get("SAMPLE_S", "0.25")))
    with open("/proc/thread-self/io") as f:  # the sampler's own reads of /proc: not the job's
        for line in f:
            key, _, value = line.partition(":")
            own[key] = int(value)
own = {}
thread = threading.Thread(target=sample)
thread.start()
output = proc.stdout.read()
code = proc.wait()
seconds = time.monotonic() - started
done.set()
thread.join()
after = io()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
result = {
    "returncode": code, "seconds": seconds, "output": output.decode(errors="replace")[-4000:],
    "peak_rss_kib": peak["rss"], "peak_pss_kib": peak["pss"], "peak_processes": peak["procs"],
    "pss_unreadable": peak["unread"],
    "samples": peak["samples"], "max_process_rss_kib": usage.ru_maxrss,
    "cpu_s": usage.ru_utime + usage.ru_stime,
    "inblock": usage.ru_inblock, "oublock": usage.ru_oublock,
    **{k: after[k] - before[k] - own.get(k, 0) for k in after},
}
with open(sys.argv[1], "w") as f:
    json.dump(result, f)
"""

PHP_PAGE = """<?php
// bench/backup.py: reads ten files of the account's tree, as an application would.
$h = '';
foreach (array_slice(glob(__DIR__ . '/app/wp-includes/d001/*'), 0, 10) as $f) {
    $h = md5($h . file_get_contents($f));
}
echo 'bench ', $h, "\\n";
"""

MiB = 1024 * 1024


def loaded_accounts(count: int) -> list[str]:
    """The LOADED accounts (evenly spread) whose PHP sites wrk loads."""
    step = max(1, count // LOADED)
    return [account_name(1 + i * step) for i in range(min(LOADED, count))]


def site(name: str) -> str:
    return f"www.{name}.example"


def pillar(count: int, method: str) -> dict[str, Any]:
    """The bench accounts with the snapshots on (default store, 30 days); btrfs:
    quotas on (no limits), so that each home is a subvolume."""
    data = bench_pillar(count)
    data["webarch"]["backup"] = {"enabled": True, "method": method}
    if method == "btrfs":
        data["webarch"]["quota"] = {"enabled": True}
    return data


@contextlib.contextmanager
def btrfs_host(release: str, formula: Path | None, keep: bool) -> Iterator[Host]:
    """``wb-backup-btrfs``: /home a btrfs, the store a subvolume of it at STORE."""
    host = Host(name="wb-backup-btrfs", image=cached_image(release),
                formula_dir=formula_snapshot(formula),
                home_fs=HomeFs(size_mb=BTRFS_MIB, fstype="btrfs"))  # fmt: skip
    if host.is_running():
        host.stop()
    host.start()
    try:
        sh(host, f"btrfs -q subvolume create {BTRFS_STORE} && mkdir -p {STORE}"
                 f" && mount --bind {BTRFS_STORE} {STORE}")  # fmt: skip
        yield host
    finally:
        if not keep:
            host.stop()


def py(host: Host, script: str, args: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run a Python script in the host with JSON arguments; its JSON output."""
    out = host.run(["python3", "-c", script, json.dumps(args)], timeout=timeout, check=True)
    return json.loads(out.stdout)


def make_trees(host: Host, accounts: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    args = {
        "accounts": accounts,
        "app": APP,
        "small": SMALL_FILES,
        "small_kib": SMALL_KIB,
        "per_dir": SMALL_PER_DIR,
        "large": list(LARGE_MIB),
    }
    made = py(host, TREE_SCRIPT, args)
    made["seconds"] = round(time.monotonic() - started, 1)
    return made


def put_pages(host: Host, names: list[str]) -> None:
    """The PHP page of the loaded accounts (the account's file), answering 200."""
    for name in names:
        path = f"/home/{name}/sites/www/{PAGE}"
        host.write_file(path, PHP_PAGE, mode=0o644)
        sh(host, f"chown {name}:{name} {path}")
        out = host.run(["curl", "-sk", "-w", "\n%{http_code}", f"https://{site(name)}/{PAGE}"])
        body, _, code = out.stdout.rpartition("\n")
        if code != "200" or not re.fullmatch(r"bench [0-9a-f]{32}\n?", body):
            raise RuntimeError(f"{site(name)}/{PAGE}: HTTP {code}\n{body[-2000:]}")


def wrk(host: Host, name: str, seconds: int) -> dict[str, float]:
    """One wrk run on an account's PHP page: requests/s, p50 and p99 latency (ms)."""
    cmd = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency"]
    out = host.run([*cmd, f"https://{site(name)}/{PAGE}"], timeout=seconds + 60, check=True).stdout
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    pct = {
        int(p): float(v) * scale[u]
        for p, v, u in re.findall(r"^\s+(50|99)(?:\.\d+)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if not rps or 50 not in pct or 99 not in pct:
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50": pct[50],
        "p99": pct[99],
        "non_2xx": float(bad.group(1)) if bad else 0.0,
    }


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {
        "runs": len(runs),
        "rps": statistics.median(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50"] for r in runs),
        "p99_ms": statistics.median(r["p99"] for r in runs),
        "p99_max_ms": max(r["p99"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
    }


def status(host: Host, date: str, accounts: list[str]) -> dict[str, float]:
    """The night's figures from ``salt-call webarch_backup.status``, summed over the accounts."""
    ret = host.salt_call(["webarch_backup.status"])["local"]
    got = ret["accounts"]
    bad = [n for n in accounts if not got.get(n, {}).get("last_ok") or got[n]["last_date"] != date]
    if bad:
        raise RuntimeError(f"night {date} not ok for {bad[:5]}: {[got.get(n) for n in bad[:2]]}")
    return {
        "accounts_s": sum(got[n]["duration"] for n in accounts),
        "bytes_copied": sum(got[n]["bytes_copied"] or 0 for n in accounts),
        "store_bytes": sum(got[n]["store_bytes"] for n in accounts),
        "days": min(len(got[n]["days"]) for n in accounts),
    }


def night_command(number: int, date: str) -> list[str]:
    """The night in a transient unit with the service's priorities, under the wrapper."""
    return [
        "systemd-run",
        "--wait",
        "--quiet",
        "--collect",
        f"--unit=wb-backup-night-{number}",
        "-p",
        "Nice=10",
        "-p",
        "IOSchedulingClass=idle",
        f"--setenv=SAMPLE_S={SAMPLE_S}",
        "--",
        "/usr/bin/python3",
        "/root/bench-measure.py",
        f"/root/bench-night-{number}.json",
        "/usr/local/sbin/webarch-backup",
        "--date",
        date,
    ]


def night(
    host: Host,
    number: int,
    date: str,
    accounts: list[str],
    since: float,
    load: list[str] | None,
    wrk_s: int,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """That night's dumps, then the snapshots (wrk on ``load``'s sites meanwhile).

    ``since``: when the last night began (the host's clock): the bytes of the files
    changed since then (``changed_since``) are what rsync has to copy.
    """
    started = time.monotonic()
    sh(host, "systemctl start webarch-db-dump.service", timeout=1800)
    dump_s = time.monotonic() - started
    changed = py(host, SINCE_SCRIPT, {"accounts": accounts, "since": since})
    runs: list[dict[str, float]] = []
    job = subprocess.Popen(
        host.nsenter_command(night_command(number, date)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    turn = 0
    while load and job.poll() is None:
        result = wrk(host, load[turn % len(load)], wrk_s)
        if job.poll() is None:  # only runs that ended while the night went on
            runs.append(result)
        turn += 1
    output = job.communicate(timeout=7200)[0].decode(errors="replace")
    if job.returncode != 0:
        raise RuntimeError(
            f"night {number} ({date}): systemd-run exited {job.returncode}\n{output}"
        )
    started = time.monotonic()
    sh(host, f"sync -f {STORE}/")
    flush_s = time.monotonic() - started
    btrfs = measured_method(host) == "btrfs"
    walk = (
        {"seconds": 0.0} if btrfs else py(host, WALK_SCRIPT, {"accounts": accounts, "store": STORE})
    )
    measured = json.loads(host.read_file(f"/root/bench-night-{number}.json"))
    if measured["returncode"] != 0:
        raise RuntimeError(
            f"night {number}: webarch-backup exited {measured['returncode']}\n{measured['output']}"
        )
    figures = {
        "dump_s": dump_s,
        "flush_s": flush_s,
        "walk_s": walk["seconds"],
        **measured,
        **status(host, date, accounts),
        "changed_since": changed["bytes"],
        "changed_since_files": changed["files"],
        "began": changed["now"],
    }
    return figures, runs


def measured_method(host: Host) -> str:
    """The method of the host's nights (backup.json, from the Salt run)."""
    return json.loads(host.read_file("/etc/webarch/backup.json"))["method"]


def main() -> int:
    parser = base_arguments(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nights",
        type=int,
        default=3,
        help="nights to make (at least 3; those after the third are quiet like it: how a"
        " night's cost grows with the days kept)",
    )
    parser.add_argument(
        "--method",
        choices=("rsync", "btrfs"),
        default="rsync",
        help="rsync (any file system) or btrfs (homes and store on one btrfs)",
    )
    args = parser.parse_args()
    if args.nights < 3:
        parser.error("--nights: at least 3")
    count = 10 if args.quick else 100
    wrk_s, before_rounds = (3, 1) if args.quick else (5, 2)
    if args.method == "btrfs":  # a night of a few seconds: shorter runs, before as during
        wrk_s, before_rounds = 1, 4
    where = config.run_root()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < NEEDED_FREE:
        raise SystemExit(f"only {free / 1024**3:.1f} GiB free: the run needs about 3 GiB + margin")
    accounts = [account_name(i) for i in range(1, count + 1)]
    load = loaded_accounts(count)
    if args.method == "btrfs":
        booted = btrfs_host(args.release, args.formula, args.keep)
    else:
        booted = bench_host("wb-backup", release=args.release, formula=args.formula,
                            keep=args.keep)  # fmt: skip
    with booted as host:
        sh(host, f"echo '127.0.0.1 {' '.join(site(n) for n in load)}' >> /etc/hosts")
        host.set_pillar(pillar(count, args.method))
        progress(f"converging {count} accounts with the snapshots on")
        run = apply_webarch(host)
        progress(f"converged in {run.seconds:.0f}s ({run.states} states)")
        made = make_trees(host, accounts)
        figure(
            "backup_tree",
            accounts=count,
            files_per_account=made["files"] // count,
            dirs_per_account=made["dirs"] // count,
            mib=round(made["bytes"] / MiB, 1),
            make_s=made["seconds"],
        )
        put_pages(host, load)
        host.write_file("/root/bench-measure.py", MEASURE_SCRIPT, mode=0o700)
        for name in load:  # warm-up: opcache, the pools, Apache's children
            wrk(host, name, 1)
        before = [wrk(host, name, wrk_s) for _ in range(before_rounds) for name in load]
        today = datetime.date.fromisoformat(sh(host, "date +%F").strip())
        dates = [
            (today - datetime.timedelta(days=n)).isoformat() for n in range(args.nights, 0, -1)
        ]
        nights: list[dict[str, Any]] = []
        during: list[dict[str, float]] = []
        store = 0
        since = 0.0
        change: dict[str, Any] = {}
        for number, date in enumerate(dates, 1):
            if number > 1:
                change = py(
                    host,
                    CHANGE_SCRIPT,
                    {
                        "accounts": accounts,
                        "app": APP,
                        "night": number,
                        "share": CHANGE_SHARE,
                        "small_kib": SMALL_KIB,
                    },
                )
                figure(
                    "backup_change",
                    night=number,
                    files=change["changed_files"],
                    bytes=change["changed_bytes"],
                    total_files=change["total_files"],
                    total_mib=round(change["total_bytes"] / MiB, 1),
                    files_share=ratio(change["changed_files"], change["total_files"]),
                    bytes_share=ratio(change["changed_bytes"], change["total_bytes"]),
                )
            progress(f"night {number} ({date})" + (" under wrk" if number == 2 else ""))
            figures, runs = night(
                host, number, date, accounts, since, load if number == 2 else None, wrk_s
            )
            since = figures["began"]
            during += runs
            figures["store_added"] = figures["store_bytes"] - store
            figures["changed_bytes"] = change.get("changed_bytes", 0)
            store = figures["store_bytes"]
            nights.append(figures)
            figure(
                "backup_night",
                night=number,
                date=date,
                accounts=count,
                load="wrk" if number == 2 else "none",
                seconds=round(figures["seconds"], 2),
                accounts_s=round(figures["accounts_s"], 2),
                dump_s=round(figures["dump_s"], 2),
                flush_s=round(figures["flush_s"], 2),
                store_walk_s=round(figures["walk_s"], 2),
                bytes_copied=figures["bytes_copied"],
                changed_since=figures["changed_since"],
                changed_since_files=figures["changed_since_files"],
                store_bytes=figures["store_bytes"],
                store_added=figures["store_added"],
                cpu_s=round(figures["cpu_s"], 2),
                peak_pss_mib=round(figures["peak_pss_kib"] / 1024, 1),
                peak_rss_mib=round(figures["peak_rss_kib"] / 1024, 1),
                max_process_rss_mib=round(figures["max_process_rss_kib"] / 1024, 1),
                peak_processes=figures["peak_processes"],
                pss_unreadable=figures["pss_unreadable"],
                samples=figures["samples"],
                read_bytes=figures["read_bytes"],
                write_bytes=figures["write_bytes"],
                rchar=figures["rchar"],
                wchar=figures["wchar"],
            )
        method = measured_method(host)
        if method == "btrfs":
            progress(sh(host, f"btrfs filesystem df {STORE}; btrfs qgroup show --raw {STORE}"
                              " | tail -n 3"))  # fmt: skip
        else:
            du = sh(host, f"du -sb --apparent-size {STORE}; du -sB1 {STORE}")
            progress(f"store (apparent, disk): {' '.join(du.split()[::2])}")
    return report(nights, summary(before), summary(during) if during else None, method)


def report(
    nights: list[dict[str, Any]],
    before: dict[str, float],
    during: dict[str, float] | None,
    method: str = "rsync",
) -> int:
    """Ratios and targets: following nights against the first, sites before and during."""
    first = nights[0]
    for number, later in enumerate(nights[1:], 2):
        if number not in (2, 3, len(nights)):
            continue
        time_ratio = ratio(later["seconds"], first["seconds"])
        bytes_ratio = ratio(later["store_added"], first["store_added"])
        copied_ratio = ratio(later["bytes_copied"], later["changed_since"])
        figure("ratio", name=f"backup_night{number}_vs_first_seconds", value=round(time_ratio, 3))
        figure(
            "ratio", name=f"backup_night{number}_vs_first_store_added", value=round(bytes_ratio, 4)
        )
        figure(
            "ratio", name=f"backup_night{number}_copied_vs_changed", value=round(copied_ratio, 2)
        )
        figure(
            "ratio",
            name=f"backup_night{number}_store_added_vs_changed",
            value=round(ratio(later["store_added"], later["changed_bytes"]), 2),
        )
    quiet = nights[2]
    if len(nights) > 3:
        last = nights[-1]
        figure(
            "ratio",
            name=f"backup_night{len(nights)}_vs_night3_seconds",
            value=round(ratio(last["seconds"], quiet["seconds"]), 3),
        )
        figure(
            "ratio",
            name=f"backup_night{len(nights)}_vs_night3_store_walk_s",
            value=round(ratio(last["walk_s"], quiet["walk_s"]), 3),
        )
    time_ratio = ratio(quiet["seconds"], first["seconds"])
    target(
        "backup_following_seconds",
        time_ratio < 0.5,
        f"night 3 / night 1 {time_ratio:.3f} (< 0.5; {quiet['seconds']:.1f} / "
        f"{first['seconds']:.1f} s)",
    )
    bytes_ratio = ratio(quiet["store_added"], first["store_added"])
    target(
        "backup_following_store_added",
        bytes_ratio < 0.05,
        f"night 3 / night 1 {bytes_ratio:.4f} (< 0.05; {quiet['store_added']} / "
        f"{first['store_added']} bytes)",
    )
    figure("backup_method", method=method)
    if method != "btrfs":  # a snapshot copies nothing
        copied = ratio(quiet["bytes_copied"], quiet["changed_since"])
        target(
            "backup_following_copied_vs_changed",
            0.9 <= copied <= 1.1,
            f"{copied:.3f} (0.9-1.1; {quiet['bytes_copied']} copied / {quiet['changed_since']} "
            "bytes of files changed since the last night: the bench's, dumps, logs)",
        )
    figure("backup_sites", phase="before", **{k: round(v, 2) for k, v in before.items()})
    if during is None:
        progress("night 2 ended before a wrk run did: no figure during the night")
        return 0
    figure("backup_sites", phase="night2", **{k: round(v, 2) for k, v in during.items()})
    figure(
        "ratio",
        name="backup_sites_p50_during_vs_before",
        value=round(ratio(during["p50_ms"], before["p50_ms"]), 2),
    )
    p99 = ratio(during["p99_ms"], before["p99_ms"])
    figure("ratio", name="backup_sites_p99_during_vs_before", value=round(p99, 2))
    target(
        "backup_sites_p99",
        p99 < 2.0,
        f"p99 during / before {p99:.2f} (< 2; {during['p99_ms']:.1f} / "
        f"{before['p99_ms']:.1f} ms, {during['runs']} runs during)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
