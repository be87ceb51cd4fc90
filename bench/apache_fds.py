"""Benchmark 4 of issue 8: Apache's descriptors per process and its memory against sites.

With 10, 100 and 500 sites (accounts of five sites each, PHP and static alternating)
converged on one test host, Apache is restarted (fresh processes), every site gets a
request over HTTPS (so that lazily opened files are counted), then for the parent and
each child: open descriptors (and of which kind), and the memory of all Apache
processes (PSS, so shared pages count once; RSS summed for the note).  The old
platform opened log files per site in every process and ran out of descriptors: here
the count must stay flat.

Run::

    PYTHONPATH=test .venv/bin/python bench/apache_fds.py            # 10, 100, 500 sites
    PYTHONPATH=test .venv/bin/python bench/apache_fds.py --quick    # 10, 100 sites
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
    bench_account,
    bench_host,
    figure,
    progress,
    ratio,
    sh,
    site_name,
    target,
)

FULL_SITES = (10, 100, 500)
QUICK_SITES = (10, 100)
SITES_PER_ACCOUNT = 5

#: Descriptors and memory of every apache2 process: pid, role, fds by kind, PSS, RSS.
PROC_SCRIPT = r"""
import json, os
parent = int(open('/run/apache2/apache2.pid').read())
out = []
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        comm = open(f'/proc/{pid}/comm').read().strip()
        ppid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])
        if comm != 'apache2' or (int(pid) != parent and ppid != parent):
            continue
        kinds = {}
        for fd in os.listdir(f'/proc/{pid}/fd'):
            try:
                target = os.readlink(f'/proc/{pid}/fd/{fd}')
            except OSError:
                continue
            kind = target.split(':')[0] if ':' in target and not target.startswith('/') else (
                'file' if target.startswith('/') else target)
            kinds[kind] = kinds.get(kind, 0) + 1
        mem = {}
        for line in open(f'/proc/{pid}/smaps_rollup'):
            key, _, value = line.partition(':')
            if key in ('Pss', 'Rss'):
                mem[key] = int(value.split()[0])
    except (OSError, ValueError):
        continue
    out.append({'pid': int(pid), 'parent': int(pid) == parent, 'fds': kinds,
                'pss_kib': mem.get('Pss', 0), 'rss_kib': mem.get('Rss', 0)})
print(json.dumps(out))
"""


def sites_pillar(sites: int) -> dict:
    """``sites`` sites over accounts of SITES_PER_ACCOUNT sites each (no databases)."""
    accounts: dict[str, dict] = {}
    for index in range(sites):
        name = account_name(index // SITES_PER_ACCOUNT + 1)
        if name not in accounts:
            count = min(SITES_PER_ACCOUNT, sites - index)
            accounts[name] = bench_account(name, sites=count, databases=0)
    return {"webarch": {"accounts": accounts}}


def server_names(sites: int) -> list[str]:
    """Every site's server name, in the order of sites_pillar."""
    return [
        f"{site_name(i % SITES_PER_ACCOUNT)}.{account_name(i // SITES_PER_ACCOUNT + 1)}.example"
        for i in range(sites)
    ]


def measure(host: Host, sites: int) -> dict[str, float]:
    """Restart Apache, request every site, and read descriptors and memory."""
    sh(host, "systemctl restart apache2")
    time.sleep(2)
    names = server_names(sites)
    # Every site once (round-robin over Apache's children), then a few more rounds on
    # the first ten, so that each child has served several sites.
    script = " ".join(
        f"-o /dev/null --resolve {name}:443:127.0.0.1 https://{name}/"
        for name in names + names[:10] * 3
    )
    sh(host, f"curl -sk --parallel --parallel-max 8 {script}", timeout=600)
    time.sleep(1)
    procs = json.loads(host.run(["python3", "-c", PROC_SCRIPT], check=True).stdout)
    parent = next(p for p in procs if p["parent"])
    children = [p for p in procs if not p["parent"]]
    child_fds = [sum(c["fds"].values()) for c in children]
    busiest = max(children, key=lambda c: sum(c["fds"].values()))
    # Every PHP-FPM master's (one per account since issue 18).
    fpm = sh(host, "for p in $(pgrep -f 'php-fpm: master'); do ls /proc/$p/fd; done | wc -l")
    fpm = fpm.strip()
    values = {
        "sites": sites,
        "parent_fds": sum(parent["fds"].values()),
        "child_fds_max": max(child_fds),
        "child_fds_min": min(child_fds),
        "children": len(children),
        "apache_pss_mib": sum(p["pss_kib"] for p in procs) / 1024,
        "apache_rss_mib": sum(p["rss_kib"] for p in procs) / 1024,
        "phpfpm_master_fds": int(fpm),
    }
    figure("apache", **{k: round(v, 1) if isinstance(v, float) else v for k, v in values.items()})
    figure(
        "apache_fd_kinds",
        sites=sites,
        parent=",".join(f"{k}:{v}" for k, v in sorted(parent["fds"].items())),
        busiest_child=",".join(f"{k}:{v}" for k, v in sorted(busiest["fds"].items())),
    )
    return values


def main() -> int:
    """Converge growing numbers of sites on one host; print figures, ratios, targets."""
    parser = base_arguments(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    counts = QUICK_SITES if args.quick else FULL_SITES
    results: dict[int, dict[str, float]] = {}
    with bench_host(
        "wb-apache-fds", release=args.release, formula=args.formula, keep=args.keep
    ) as host:
        for sites in counts:
            progress(f"converging {sites} sites")
            host.set_pillar(sites_pillar(sites))
            run = apply_webarch(host)
            progress(f"{sites} sites converged in {run.seconds:.1f}s; measuring")
            results[sites] = measure(host, sites)
    low, top = counts[0], counts[-1]
    for key in ("parent_fds", "child_fds_max", "apache_pss_mib"):
        value = ratio(results[top][key], results[low][key])
        figure("ratio", name=f"{key}_{top}_vs_{low}_sites", value=round(value, 3))
    flat = all(
        results[top][key] - results[low][key] <= 2 for key in ("parent_fds", "child_fds_max")
    )
    target(
        "apache_fds_flat",
        flat,
        f"parent {results[low]['parent_fds']}->{results[top]['parent_fds']},"
        f" child max {results[low]['child_fds_max']}->{results[top]['child_fds_max']}"
        f" from {low} to {top} sites (growth <= 2)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
