"""Benchmark 5 of issue 8: the memory an idle account costs, and an active one.

On one test host: the formula converged with one account, then with 1 + N accounts
(each a PHP and a static site, a database, an ondemand pool), everything left idle
for longer than the pools' ``process_idle_timeout``.  Memory is the PSS of every
process on the host (shared pages count once), so the idle cost of an account is
(total with 1 + N - total with 1) / N: Apache's configuration, the account's
PHP-FPM master (one per account since issue 18; before, a pool in one shared
master), MariaDB's user; no resident PHP worker (ondemand), which is checked.
The PHP-FPM masters are counted: since issue 18 an idle account's master is
stopped (webarch-php-idle; its socket, held by systemd, starts it again).

Then each of the N accounts' PHP sites gets one request: each pool starts a worker,
which stays until ``process_idle_timeout``.  The active cost per account is
(total now - total idle) / N (Apache's children warming up count in it); the
workers' own PSS, USS (private: what a worker's exit gives back) and RSS are reported
too.  Finally the workers must be gone again after the timeout.

Run::

    PYTHONPATH=test .venv/bin/python bench/memory.py            # N = 40
    PYTHONPATH=test .venv/bin/python bench/memory.py --quick    # N = 10
"""

from __future__ import annotations

import json
import sys
import time

from common import (
    Host,
    account_name,
    apply_webarch,
    base_arguments,
    bench_host,
    bench_pillar,
    figure,
    progress,
    ratio,
    sh,
    target,
)

#: The pools' default process_idle_timeout (seconds) plus a margin.
IDLE_WAIT = 14

#: PSS (KiB) per program name over all processes, and the PHP-FPM workers per pool.
PSS_SCRIPT = r"""
import json, os
pss, workers, masters = {}, {}, 0
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        cmdline = open(f'/proc/{pid}/cmdline').read().replace('\0', ' ').strip()
        comm = open(f'/proc/{pid}/comm').read().strip()
        mem = {}
        for line in open(f'/proc/{pid}/smaps_rollup'):
            key, _, rest = line.partition(':')
            if key in ('Pss', 'Rss', 'Private_Clean', 'Private_Dirty'):
                mem[key] = int(rest.split()[0])
        value = mem.get('Pss', 0)
    except (OSError, ValueError):
        continue
    if cmdline.startswith('php-fpm: pool '):
        pool = cmdline.split()[2]
        uss = mem.get('Private_Clean', 0) + mem.get('Private_Dirty', 0)
        workers.setdefault(pool, []).append([value, uss, mem.get('Rss', 0)])
        comm = 'php-fpm-worker' if pool != 'webarch-idle' else comm
    elif comm.startswith('php-fpm'):
        comm = 'php-fpm-master'
        masters += 1
    pss[comm] = pss.get(comm, 0) + value
print(json.dumps({'pss': pss, 'workers': workers, 'masters': masters}))
"""


def snapshot(host: Host) -> dict:
    """PSS per program (KiB) and the PHP-FPM workers per pool, now."""
    return json.loads(host.run(["python3", "-c", PSS_SCRIPT], check=True).stdout)


def total_mib(snap: dict) -> float:
    """All processes' PSS in MiB."""
    return sum(snap["pss"].values()) / 1024


def part_mib(snap: dict, *names: str) -> float:
    """PSS of the named programs in MiB."""
    return sum(v for k, v in snap["pss"].items() if k in names) / 1024


def settled(host: Host) -> dict:
    """Wait past the pools' idle timeout, stop the idle masters, and take a snapshot.

    webarch-php-idle (issue 18; its timer runs it every 5 minutes) stops a master
    found idle on two runs in a row: run twice here, as its timer would.
    """
    time.sleep(IDLE_WAIT)
    sh(
        host,
        "if command -v webarch-php-idle >/dev/null; then webarch-php-idle; webarch-php-idle; fi",
    )
    sh(host, "sync")
    return snapshot(host)


def restart(host: Host) -> None:
    """Restart Apache and every PHP-FPM master that runs (one, or one per account)."""
    sh(
        host,
        "systemctl restart apache2; systemctl list-units --type=service --state=running"
        " --plain --no-legend 'php*-fpm.service' 'webarch-php@*.service'"
        " | awk '{print $1}' | xargs -r systemctl restart",
    )


def main() -> int:
    """Measure idle and active account memory; print figures, ratios and targets."""
    parser = base_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, help="N, the accounts added (default 40)")
    args = parser.parse_args()
    extra = args.accounts or (10 if args.quick else 40)
    with bench_host("wb-memory", release=args.release, formula=args.formula, keep=args.keep) as h:
        h.set_pillar(bench_pillar(1))
        apply_webarch(h)
        restart(h)
        base = settled(h)
        progress(f"1 account: {total_mib(base):.1f} MiB PSS; adding {extra}")
        h.set_pillar(bench_pillar(1 + extra))
        apply_webarch(h)
        restart(h)
        idle = settled(h)
        idle_workers = sum(len(w) for p, w in idle["workers"].items() if p != "webarch-idle")
        names = [account_name(i) for i in range(2, extra + 2)]
        for name in names:
            h.write_file(f"/home/{name}/sites/www/hello.php", '<?php echo "hello\\n";', 0o644)
        script = " ".join(
            f"-o /dev/null --resolve www.{n}.example:443:127.0.0.1 https://www.{n}.example/hello.php"
            for n in names
        )
        sh(h, f"curl -sk --parallel --parallel-max 4 {script}")
        active = snapshot(h)
        active_workers = {p: w for p, w in active["workers"].items() if p in names}
        progress(f"{len(active_workers)} pools with a worker; waiting for the idle timeout")
        after = settled(h)
        after_workers = sum(len(w) for p, w in after["workers"].items() if p != "webarch-idle")
    idle_cost = (total_mib(idle) - total_mib(base)) / extra * 1024
    active_cost = (total_mib(active) - total_mib(idle)) / extra * 1024
    worker_mem = [v for w in active_workers.values() for v in w]

    def mean(index: int) -> int:
        return round(sum(m[index] for m in worker_mem) / len(worker_mem)) if worker_mem else 0

    for label, snap in (("1_account", base), ("idle", idle), ("active", active), ("after", after)):
        figure(
            "memory",
            state=label,
            accounts=1 if label == "1_account" else 1 + extra,
            total_pss_mib=round(total_mib(snap), 1),
            apache_mib=round(part_mib(snap, "apache2"), 1),
            phpfpm_master_mib=round(part_mib(snap, "php-fpm-master"), 1),
            phpfpm_workers_mib=round(part_mib(snap, "php-fpm-worker"), 1),
            mariadb_mib=round(part_mib(snap, "mariadbd"), 1),
        )
    figure(
        "account_memory",
        idle_kib_per_account=round(idle_cost),
        idle_resident_workers=idle_workers,
        phpfpm_masters_idle=idle["masters"],
        phpfpm_masters_one_account=base["masters"],
        active_kib_per_account=round(active_cost),
        active_pools_with_worker=len(active_workers),
        worker_pss_kib_mean=mean(0),
        worker_uss_kib_mean=mean(1),
        worker_rss_kib_mean=mean(2),
        workers_after_idle_timeout=after_workers,
    )
    figure("ratio", name="active_vs_idle_account", value=round(ratio(active_cost, idle_cost), 1))
    target(
        "idle_account_no_worker",
        idle_workers == 0 and after_workers == 0,
        f"{idle_workers} workers while idle, {after_workers} after the idle timeout",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
