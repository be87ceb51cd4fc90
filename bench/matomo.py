"""Issue 15: the Matomo part of a run, its install, and its API calls per no-change run.

For 10 and 100 accounts (``--quick``: 10), each with an email address (so a Matomo
user) and two sites (so two Matomo websites), plus carol-stats, whose ``matomo`` site
holds the server's instance: on a fresh test host each, with Matomo's release archive
copied in (``e2e.conftest.provide_matomo``),

1. the first ``state.apply webarch``: seconds, the install state's seconds
   (``webarch-matomo-installed``), the seconds and number of all Matomo states
   (``webarch_matomo`` states and the Matomo password mails, ``-notify-matomo``);
2. a no-change re-run: seconds, the Matomo part's seconds and share of the run, per
   account, and how many Matomo states changed (the goal: none);
3. a second no-change re-run, counted: salt-call with a debug log file (the API
   client logs ``Matomo ENDPOINT METHOD`` for every POST) under ``strace`` (on this
   machine, around ``nsenter``: ``connect()`` to the instance's PHP-FPM socket, the
   FastCGI requests, one per connection; ``execve()`` of PHP, console runs).  The
   goal: one API round trip per no-change run whatever the number of accounts.

Without Matomo's release archive on this machine (see test/e2e/conftest.py) it prints
a ``skip`` line and exits 0.

Run::

    PYTHONPATH=test .venv/bin/python bench/matomo.py            # 10, 100 accounts
    PYTHONPATH=test .venv/bin/python bench/matomo.py --quick    # 10
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    RESULTS_DIR,
    SALT_CALL,
    Host,
    SaltRun,
    account_name,
    apply_webarch,
    base_arguments,
    bench_account,
    bench_host,
    figure,
    progress,
    ratio,
    target,
    timed_salt,
)
from e2e.conftest import MATOMO_ARCHIVE, MATOMO_ON_HOST, MATOMO_SHA256, provide_matomo
from testhost import config, system
from testhost.host import _parse_json_output
from testhost.image import image_key, image_packages, requirements_text

FULL_COUNTS = (10, 100)
QUICK_COUNTS = (10,)

#: Target of issue 15: API round trips of a no-change run (one bulk read).
API_CALLS_MAX = 1

STATS_ACCOUNT = "carol-stats"
INSTALLED_ID = "webarch-matomo-installed"
INSTANCE_FILE = "/var/lib/webarch/matomo/instance.json"
DEBUG_LOG = "/root/bench-matomo-debug.log"

#: The API client's line for each POST (``_modules/webarch_matomo.py``, ``_post``), as
#: Salt's log file writes it: ``... [salt.loaded.ext.module.webarch_matomo:165 ][DEBUG
#: ][PID] Matomo https://HOST/index.php API.getBulkRequest``.
API_LINE_RE = re.compile(r"webarch_matomo\s*:\s*\d+\s*\]\[DEBUG\s*\]\[\d+\] Matomo (\S+) (\S+)\s*$")


def is_matomo(key: str) -> bool:
    """Whether a state key is one of the Matomo part's (as test_matomo.py counts them)."""
    return key.startswith("webarch_matomo_") or "-notify-matomo_" in key


def matomo_pillar(count: int) -> dict[str, Any]:
    """The ``webarch`` pillar: Matomo in carol-stats' site, ``count`` bench accounts with emails."""
    accounts: dict[str, Any] = {
        STATS_ACCOUNT: {
            "email": "carol@stats.example",
            "databases": {"carol_stats_matomo": None},
            "sites": {"matomo": {"type": "matomo", "server_name": "stats.coop.example"}},
        }
    }
    for index in range(1, count + 1):
        name = account_name(index)
        account = bench_account(name, sites=2, databases=0)
        account["email"] = f"{name}@example.org"
        account["sites"]["www"]["aliases"] = [f"{name}.example"]
        accounts[name] = account
    return {
        "webarch": {
            "hostname": "web1.coop.example",
            "admin_email": "hostmaster@coop.example",
            "matomo": {"archive": {"source": MATOMO_ON_HOST, "sha256": MATOMO_SHA256}},
            "accounts": accounts,
        }
    }


@dataclass
class MatomoPart:
    """The Matomo states of one run."""

    states: int
    seconds: float
    changed: list[str]
    install_seconds: float

    @classmethod
    def of(cls, run: SaltRun) -> MatomoPart:
        """The Matomo part of ``run``."""
        part = {k: v for k, v in run.raw.items() if is_matomo(k)}
        install = [v for k, v in part.items() if f"_|-{INSTALLED_ID}_|-" in k]
        return cls(
            states=len(part),
            seconds=sum(float(v.get("duration", 0.0)) for v in part.values()) / 1000,
            changed=[k.split("_|-")[1] for k, v in part.items() if v.get("changes")],
            install_seconds=float(install[0].get("duration", 0.0)) / 1000 if install else 0.0,
        )


class _Traced:
    """A host whose ``salt_call`` runs under this machine's strace (connect, execve)."""

    def __init__(self, host: Host, trace: str) -> None:
        self.host = host
        self.trace = trace

    def salt_call(self, args: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
        strace = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,execve"]
        strace += ["-e", "signal=none", "-s", "200", "-o", self.trace]
        cmd = self.host.nsenter_command([SALT_CALL, "--local", "--out=json", *args])
        proc = subprocess.run(
            [*strace, *cmd],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=system.sane_env(),
        )
        try:
            return _parse_json_output(proc.stdout)
        except ValueError:
            raise RuntimeError(
                f"traced salt-call returned no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}"
            ) from None


@dataclass
class Counted:
    """What the counted no-change run did: API calls (log), FastCGI connections, PHP runs."""

    run: SaltRun
    api_calls: Counter[str]
    endpoints: set[str]
    fcgi_connects: int
    php_execs: int


def counted_rerun(host: Host, count: int) -> Counted:
    """A no-change run with a debug log file, under strace; count its round trips."""
    socket = _instance_socket(host)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    trace = RESULTS_DIR / f"matomo-strace-{count}.txt"
    host.run(["rm", "-f", DEBUG_LOG], check=True)
    args = [f"--log-file={DEBUG_LOG}", "--log-file-level=debug", "state.apply", "webarch"]
    run = timed_salt(_Traced(host, str(trace)), args, allow_failures=True)
    calls: Counter[str] = Counter()
    endpoints: set[str] = set()
    for line in host.read_file(DEBUG_LOG).splitlines():
        match = API_LINE_RE.search(line)
        if match:
            endpoints.add(match.group(1))
            calls[match.group(2)] += 1
    connects = php = 0
    for line in trace.read_text().splitlines():
        if " connect(" in line and f'sun_path="{socket}"' in line:
            connects += 1
        elif " execve(" in line and re.search(r'execve\("[^"]*/php[0-9.]*"', line):
            php += 1
    return Counted(run, calls, endpoints, connects, php)


def _instance_socket(host: Host) -> str:
    """The instance's PHP-FPM socket, as the formula wrote it for the API client."""
    found = re.search(r'"socket":\s*"([^"]+)"', host.read_file(INSTANCE_FILE))
    if not found:
        raise RuntimeError(f"no socket in {INSTANCE_FILE}")
    return found.group(1)


def log_failed(run: SaltRun, label: str, count: int = 5) -> None:
    """Progress lines: the first failed states of ``run`` (the benchmark goes on)."""
    if run.failed:
        progress(f"  WARNING: {len(run.failed)} states failed in the {label} run:")
    order = sorted(run.failed, key=lambda k: run.raw[k].get("__run_num__", 0))
    for key in order[:count]:
        last = (run.failed[key].strip().splitlines() or [""])[-1]
        progress(f"    {key.split('_|-')[1]}: {last[:300]}")


def log_matomo_slowest(run: SaltRun, label: str, count: int = 5) -> None:
    """Progress lines: the slowest Matomo states of ``run``."""
    part = [(k, float(v.get("duration", 0.0)) / 1000) for k, v in run.raw.items() if is_matomo(k)]
    for key, seconds in sorted(part, key=lambda kv: -kv[1])[:count]:
        progress(f"  {label}: {seconds:7.3f}s {key.split('_|-')[1]}")


def measure(host: Host, count: int) -> dict[str, float]:
    """First run, a timed no-change run and a counted one with ``count`` accounts."""
    if not provide_matomo(host):
        raise RuntimeError(f"cannot copy {MATOMO_ARCHIVE} into {host.name}")
    host.set_pillar(matomo_pillar(count))
    progress(f"{count} accounts: first run")
    first = apply_webarch(host, allow_failures=True)
    first_part = MatomoPart.of(first)
    log_failed(first, "first")
    log_matomo_slowest(first, "first")
    progress(f"{count} accounts: no-change run ({first.seconds:.1f}s first)")
    rerun = apply_webarch(host, allow_failures=True)
    part = MatomoPart.of(rerun)
    log_failed(rerun, "no-change")
    log_matomo_slowest(rerun, "no-change")
    progress(f"{count} accounts: counted no-change run (debug log, strace)")
    counted = counted_rerun(host, count)
    counted_part = MatomoPart.of(counted.run)
    log_failed(counted.run, "counted")
    for label, matomo in (("no-change", part), ("counted", counted_part)):
        if matomo.changed:
            progress(f"  WARNING: the {label} run changed Matomo states: {matomo.changed[:5]}")
    figure(
        "matomo_first",
        accounts=count,
        states=first.states,
        first_s=first.seconds,
        install_s=first_part.install_seconds,
        matomo_states=first_part.states,
        matomo_s=first_part.seconds,
        matomo_changed=len(first_part.changed),
        failed=len(first.failed),
    )
    api_calls = sum(counted.api_calls.values())
    figure(
        "matomo_no_change",
        accounts=count,
        states=rerun.states,
        rerun_s=rerun.seconds,
        matomo_states=part.states,
        matomo_s=part.seconds,
        matomo_share=ratio(part.seconds, rerun.seconds),
        matomo_ms_per_account=1000 * part.seconds / count,
        rerun_changed=rerun.changed,
        matomo_changed=len(part.changed),
        failed=len(rerun.failed),
    )
    figure(
        "matomo_api",
        accounts=count,
        counted_s=counted.run.seconds,
        counted_matomo_s=counted_part.seconds,
        counted_matomo_changed=len(counted_part.changed),
        counted_failed=len(counted.run.failed),
        api_calls=api_calls,
        methods=",".join(f"{m}:{n}" for m, n in sorted(counted.api_calls.items())) or "-",
        endpoints=",".join(sorted(counted.endpoints)) or "-",
        fcgi_connects=counted.fcgi_connects,
        php_cli_runs=counted.php_execs,
    )
    return {
        "matomo_s": part.seconds,
        "api_calls": api_calls,
        "fcgi_connects": counted.fcgi_connects,
        "changed": len(part.changed) + len(counted_part.changed),
        "failed": len(first.failed) + len(rerun.failed) + len(counted.run.failed),
    }


def formula_image(release: str, formula: Path | None) -> Path | None:
    """The cached test image of ``formula``'s package list (None: common's, git HEAD's).

    Matomo is not committed yet: the working tree's package list may differ from
    HEAD's, and ``--formula DIR`` must boot on DIR's image (never built here).
    """
    if formula is None:
        return None
    key = image_key(release, image_packages(release, formula.resolve()), requirements_text())
    rootfs = config.cache_dir() / "images" / f"{release}-{key}" / "rootfs"
    if not rootfs.is_dir():
        hint = f"build it first (make image RELEASE={release}, from {formula})"
        raise RuntimeError(f"no cached test image {rootfs.parent.name}: {hint}")
    return rootfs


def main() -> int:
    """Measure each account count on a fresh host; print figures, ratios and targets."""
    parser = base_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", help="comma-separated account counts (overrides --quick)")
    args = parser.parse_args()
    if not MATOMO_ARCHIVE.is_file():
        progress(f"no Matomo release archive ({MATOMO_ARCHIVE}): see test/e2e/conftest.py")
        figure("skip", bench="matomo", reason="no-matomo-archive", archive=MATOMO_ARCHIVE)
        return 0
    counts = (
        tuple(int(c) for c in args.accounts.split(","))
        if args.accounts
        else (QUICK_COUNTS if args.quick else FULL_COUNTS)
    )
    results: dict[int, dict[str, float]] = {}
    image = formula_image(args.release, args.formula)
    with bench_host(
        "wb-matomo", image, release=args.release, formula=args.formula, keep=args.keep
    ) as h:
        for index, count in enumerate(counts):
            if index:
                progress(f"fresh host for {count} accounts")
                h.reset()
            results[count] = measure(h, count)
    return report(results)


def report(results: dict[int, dict[str, float]]) -> int:
    """Print the ratios and the PASS/MISS lines; exit status 0 (figures are not tests)."""
    counts = sorted(results)
    low, top = counts[0], counts[-1]
    if top != low:
        figure(
            "ratio",
            name=f"matomo_no_change_growth_{top}_vs_{low}",
            value=round(ratio(results[top]["matomo_s"], results[low]["matomo_s"]), 2),
            accounts_ratio=round(top / low, 2),
        )
    for count in counts:
        figure(
            "ratio",
            name=f"matomo_api_calls_no_change_{count}",
            value=int(results[count]["api_calls"]),
            fcgi_connects=int(results[count]["fcgi_connects"]),
        )
    calls = {c: int(results[c]["api_calls"]) for c in counts}
    target(
        "matomo_api_calls_no_change",
        all(0 < n <= API_CALLS_MAX for n in calls.values()),
        ", ".join(f"{n} at {c} accounts" for c, n in calls.items()) + f" (<= {API_CALLS_MAX} each)",
    )
    failed = {c: int(results[c]["failed"]) for c in counts}
    if any(failed.values()):
        figure("failed_states", **{f"accounts_{c}": n for c, n in failed.items()})
    changed = {c: int(results[c]["changed"]) for c in counts}
    target(
        "matomo_no_change_changed",
        not any(changed.values()) and not any(failed.values()),
        ", ".join(f"{n} at {c} accounts" for c, n in changed.items())
        + " Matomo states changed (0), failed states: "
        + ", ".join(f"{n} at {c} accounts" for c, n in failed.items()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
