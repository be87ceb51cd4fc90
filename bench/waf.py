"""The cost of a site's web application firewall (issue 21): WordPress's front page, on and off.

On one test host, one account with two WordPress sites that the formula installs
(Debian's WordPress, each its own database): ``plain`` with ``waf: off`` and
``guard`` with ``waf: on`` (ModSecurity with the OWASP CRS at paranoia level 1,
the module loaded for the server, its engine On only in guard's vhost).  Both are
the same install in the same pool; only the firewall differs.  Before measuring,
both front pages answer 200 with WordPress's "Hello world!" post, and a classic
SQL injection is refused (403) by guard and answered (200) by plain: the firewall
measured is the one that blocks.

wrk (2 threads, 16 kept-alive connections over HTTPS, the site's name as SNI and
Host) loads each front page in turn, the order rotated per round after a warm-up.
Prints a ``waf`` figure per run, then the medians and their ratio::

    waf_ratio page=wordpress off_rps=... on_rps=... on_over_off=...

Nothing is asserted on the figures (a shared 2-core machine): they are for the
README.  Run from the repository as root::

    .venv/bin/python bench/waf.py --formula .          # the working tree
    .venv/bin/python bench/waf.py --quick --release trixie
"""

from __future__ import annotations

import statistics
import sys

from common import (
    apply_webarch,
    base_arguments,
    bench_account,
    bench_host,
    figure,
    formula_snapshot,
    progress,
    ratio,
    sh,
    wrk_figures,
)
from testhost import Host, ensure_image

ACCOUNT = "user001"
#: The two sites: name -> the site's waf.
SITES = {"plain": "off", "guard": "on"}
CONNECTIONS = 16
ATTACK = "/?id=1%27%20OR%20%271%27%3D%271%27%20UNION%20SELECT%20password%20FROM%20users"


def server_name(site: str) -> str:
    return f"{site}.{ACCOUNT}.example"


def bench_pillar() -> dict:
    """One account, two WordPress sites of the formula's install, one with the firewall on."""
    account = bench_account(ACCOUNT, sites=0, databases=len(SITES))
    account["email"] = f"{ACCOUNT}@example.org"
    account["sites"] = {
        site: {
            "type": "wordpress",
            "server_name": server_name(site),
            "waf": waf,
            "app": {"database": f"{ACCOUNT}_db{index}", "title": f"Bench {site}"},
        }
        for index, (site, waf) in enumerate(SITES.items())
    }
    return {
        "webarch": {"notify": {"from": "hostmaster@example.org"}, "accounts": {ACCOUNT: account}}
    }


def wrk(host: Host, url: str, seconds: int) -> dict[str, float]:
    """One wrk run (2 threads, CONNECTIONS kept-alive connections): requests/s, latency."""
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", url]
    out = host.run(cmd, timeout=seconds + 60, check=True).stdout
    return wrk_figures(out)


def status(host: Host, url: str) -> tuple[str, str]:
    body, _, code = host.run(["curl", "-sk", "-w", "\n%{http_code}", url]).stdout.rpartition("\n")
    return code, body


def check_sites(host: Host) -> None:
    """Both front pages are WordPress's; only guard refuses an SQL injection."""
    for site, waf in SITES.items():
        code, body = status(host, f"https://{server_name(site)}/")
        if code != "200" or "Hello world!" not in body:
            raise RuntimeError(f"{site}: HTTP {code}\n{body[-2000:]}")
        code, _ = status(host, f"https://{server_name(site)}{ATTACK}")
        if code != ("403" if waf == "on" else "200"):
            raise RuntimeError(f"{site} (waf {waf}): an SQL injection got HTTP {code}")
        progress(f"{site} (waf {waf}): front page 200, SQL injection {code}")


def main() -> int:
    parser = base_arguments(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    rounds, seconds = (2, 4) if args.quick else (5, 10)
    formula = formula_snapshot(args.formula)
    image = ensure_image(args.release, formula)
    results: dict[str, list[float]] = {site: [] for site in SITES}
    with bench_host("wb-waf", image=image, release=args.release, formula=formula,
                    keep=args.keep) as host:  # fmt: skip
        names = " ".join(server_name(site) for site in SITES)
        sh(host, f"echo '127.0.0.1 {names}' >> /etc/hosts")
        host.set_pillar(bench_pillar())
        progress("converging the formula (two WordPress installs, one with the firewall on)")
        run = apply_webarch(host)
        progress(f"converged in {run.seconds:.0f}s")
        check_sites(host)
        order = list(SITES)
        for site in order:  # warm-up: opcache, pool, Apache's children
            wrk(host, f"https://{server_name(site)}/", 3)
        for round_ in range(rounds):
            shift = round_ % len(order)
            for site in order[shift:] + order[:shift]:
                got = wrk(host, f"https://{server_name(site)}/", seconds)
                results[site].append(got["rps"])
                figure("waf", page="wordpress", site=site, waf=SITES[site], round=round_ + 1,
                       rps=round(got["rps"], 1), latency_ms=round(got["latency_ms"], 2),
                       non_2xx=int(got["non_2xx"]))  # fmt: skip
        audit = sh(host, "wc -c < /var/log/apache2/modsec_audit.log || true").strip()
        progress(f"audit log after the runs: {audit or 0} bytes (only the checks' injection)")
    off = statistics.median(results["plain"])
    on = statistics.median(results["guard"])
    figure("waf_ratio", page="wordpress", connections=CONNECTIONS, off_rps=round(off, 1),
           on_rps=round(on, 1), on_over_off=round(ratio(on, off), 3))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
