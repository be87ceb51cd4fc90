"""Shared pieces of the benchmarks: test hosts, bench pillars, timed Salt runs, output.

Every benchmark boots its own test host (name prefixed ``wb-``) on the cached test
image (or on the derived bench image of ``bench/benchimage.py``), converges the formula on
it with real ``salt-call state.apply webarch`` runs and prints one line per figure::

    converge accounts=50 first_s=71.2 ...

then ``ratio ...`` lines (measured in the same run, on the same host: the result;
absolute seconds are only for the note, these machines are noisy) and one
``target ... PASS|MISS`` line per target of issue 8.  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from base64 import b64encode
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))

from testhost import Host, config  # noqa: E402
from testhost.image import image_key, image_packages, requirements_text  # noqa: E402

#: Where salt-call lives in the test image.
SALT_CALL = "/opt/salt/bin/salt-call"

_STARTED = time.monotonic()

#: Bench-only tools (py-spy), installed with pip into a venv beside the bench images.
TOOLS_VENV = Path(os.environ.get("WEBARCH_TEST_CACHE", "/var/cache/webarch-test")) / "bench/tools"

#: Where formula snapshots and profiles are written on this machine.
RESULTS_DIR = Path(os.environ.get("WEBARCH_BENCH_RESULTS", "/var/tmp/webarch-bench"))

#: Bench account names inside state ids.
ACCOUNT_RE = re.compile(r"user[0-9]{3}")


# --------------------------------------------------------------------------- output


def progress(message: str) -> None:
    """Print a progress message to stderr, with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def _format_value(value: object) -> str:
    """Format one figure: floats with 3 significant decimals, the rest as is."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def figure(kind: str, **values: object) -> str:
    """Print (stdout, flushed) and return one figure line: ``KIND key=value ...``."""
    line = " ".join([kind, *(f"{k}={_format_value(v)}" for k, v in values.items())])
    print(line, flush=True)
    return line


def target(name: str, ok: bool, detail: str) -> bool:
    """Print a ``target NAME PASS|MISS detail`` line; return ``ok``."""
    print(f"target {name} {'PASS' if ok else 'MISS'} {detail}", flush=True)
    return ok


def ratio(a: float, b: float) -> float:
    """``a / b``, or ``nan`` when ``b`` is zero."""
    return a / b if b else float("nan")


def base_arguments(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run with fewer accounts/sites"
    )
    parser.add_argument("--release", default="bookworm", help="Debian release of the test host")
    parser.add_argument("--keep", action="store_true", help="leave the test host running")
    parser.add_argument(
        "--formula",
        type=Path,
        default=None,
        help="formula directory bound into the host (default: a snapshot of git HEAD)",
    )
    return parser


def formula_snapshot(formula: Path | None = None, rev: str = "HEAD") -> Path:
    """The formula to benchmark: ``formula`` if given, else an export of ``rev``.

    The working tree may hold someone's half-done edits: by default the benchmarks run
    the committed formula, exported once per commit to RESULTS_DIR/formula-SHA.
    """
    if formula is not None:
        return formula.resolve()
    git = ["git", "-C", str(REPO)]
    sha = subprocess.run([*git, "rev-parse", rev], capture_output=True, text=True, check=True)
    commit = sha.stdout.strip()
    target_dir = RESULTS_DIR / f"formula-{commit[:12]}"
    if not (target_dir / "webarch").is_dir():
        tmp = target_dir.with_name(target_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        wanted = ["webarch", "_modules", "_states", "_utils", "pillar.example"]
        # (_utils, the account model, since issue 14: older commits lack it.)
        paths = [
            p
            for p in wanted
            if subprocess.run([*git, "cat-file", "-e", f"{commit}:{p}"], check=False).returncode
            == 0
        ]
        archive = subprocess.run(
            [*git, "archive", "--format=tar", commit, *paths], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        tmp.rename(target_dir)
    progress(f"formula: {target_dir} (git {rev} = {commit[:12]})")
    return target_dir


# --------------------------------------------------------------------------- hosts


@contextlib.contextmanager
def bench_host(
    name: str,
    image: Path | None = None,
    release: str = "bookworm",
    formula: Path | None = None,
    keep: bool = False,
) -> Iterator[Host]:
    """Boot a fresh test host ``name`` (``wb-`` prefix) on ``image``; stop it afterwards.

    ``image`` defaults to the cached test image of ``release``; ``formula`` is the formula
    directory bound into the host (default: a snapshot of git HEAD, see formula_snapshot;
    another directory measures a proposed change).  ``keep`` (or the
    environment variable WEBARCH_BENCH_KEEP=1) leaves the host running.
    """
    if not name.startswith("wb-"):
        raise ValueError(f"bench hosts are named wb-...: {name!r}")
    formula_dir = formula_snapshot(formula)
    rootfs = image or cached_image(release)
    host = Host(name=name, image=rootfs, formula_dir=formula_dir)
    if host.is_running():
        host.stop()
    progress(f"booting {name} on {rootfs}")
    host.start()
    try:
        yield host
    finally:
        if keep or os.environ.get("WEBARCH_BENCH_KEEP") == "1":
            progress(f"{name} left running (WEBARCH_BENCH_KEEP=1)")
        else:
            progress(f"stopping {name}")
            host.stop()


def sh(host: Host, script: str, timeout: float = 600.0) -> str:
    """Run a shell script in the host; return its stdout, raise on failure."""
    proc = host.run(["sh", "-c", script], timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"failed ({proc.returncode}): {script}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def cached_image(release: str = "bookworm") -> Path:
    """The cached test image of ``release`` for the committed formula; never builds one.

    Other hosts run on overlays of the cached images, and a build removes the images
    no running host uses: a benchmark must not start one.  When the formula's package
    list changed since the image was built, ``make image`` builds the new one first.
    """
    packages = image_packages(release, formula_snapshot(None))
    key = image_key(release, packages, requirements_text())
    rootfs = config.cache_dir() / "images" / f"{release}-{key}" / "rootfs"
    if not rootfs.is_dir():
        hint = f"build it first (make image RELEASE={release})"
        raise RuntimeError(f"no cached test image {rootfs.parent.name}: {hint}")
    return rootfs


# --------------------------------------------------------------------------- pillars


def wrk_figures(out: str) -> dict[str, float]:
    """What a wrk run printed: requests/s, mean latency (ms), non-2xx answers, socket errors."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": float(rps.group(1)),
        "latency_ms": float(latency.group(1)) * scale[latency.group(2)] if latency else 0.0,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(n) for n in errors.groups())) if errors else 0.0,
    }


def account_name(index: int) -> str:
    """The name of bench account ``index`` (``user001`` ...)."""
    return f"user{index:03d}"


def ssh_key(name: str) -> str:
    """A well-formed, per-account ed25519 public key line (deterministic, no private half)."""
    kind = b"ssh-ed25519"
    point = hashlib.sha256(name.encode()).digest()
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", len(point)) + point
    return f"ssh-ed25519 {b64encode(blob).decode()} {name}-bench"


def site_name(index: int) -> str:
    """The name of an account's site ``index``: ``www``, ``static``, then ``s2``, ``s3``..."""
    return ("www", "static")[index] if index < 2 else f"s{index}"


def bench_account(name: str, sites: int = 2, databases: int = 1) -> dict[str, Any]:
    """One account as issue 8 wants it: two sites (PHP and static), a database, a key.

    Sites alternate between ``php`` and ``static``; every account gets its PHP-FPM pool
    (ondemand, the default).
    """
    account: dict[str, Any] = {
        "ssh_keys": [ssh_key(name)],
        "sites": {
            site_name(i): {
                "type": ("php", "static")[i % 2],
                "server_name": f"{site_name(i)}.{name}.example",
            }
            for i in range(sites)
        },
    }
    if databases:
        account["databases"] = {f"{name}_db{i}": {} for i in range(databases)}
    return account


def bench_pillar(accounts: int, sites: int = 2, databases: int = 1) -> dict[str, Any]:
    """The ``webarch`` pillar of ``accounts`` bench accounts (``user001`` ...)."""
    return {
        "webarch": {
            "accounts": {
                account_name(i): bench_account(account_name(i), sites, databases)
                for i in range(1, accounts + 1)
            }
        }
    }


# --------------------------------------------------------------------------- salt runs


@dataclass
class SaltRun:
    """One timed ``salt-call state.*`` run and what it did."""

    seconds: float
    states: int
    changed: int
    failed: dict[str, str]
    state_seconds: float
    by_state: dict[str, float] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def overhead_seconds(self) -> float:
        """Wall time not spent inside states: salt-call start, pillar, rendering, compiling."""
        return max(0.0, self.seconds - self.state_seconds)

    def slowest(self, count: int = 8) -> list[tuple[str, float]]:
        """The ``count`` state kinds (``module.function``) with the most seconds in this run."""
        return sorted(self.by_state.items(), key=lambda kv: -kv[1])[:count]


def _state_kind(key: str) -> str:
    """``file_|-webarch-user001-dir-home_|-/home/user001_|-directory`` -> kind + id pattern.

    Account names in the state id become ``USER``, so the states of all accounts add up.
    """
    parts = key.split("_|-")
    module, state_id, function = parts[0], parts[1], parts[-1]
    return f"{module}.{function}:{ACCOUNT_RE.sub('USER', state_id)}"


def timed_salt(host: Host, args: Sequence[str], allow_failures: bool = False) -> SaltRun:
    """Run ``salt-call --local --out=json ARGS``; time it and summarise the state results."""
    started = time.monotonic()
    ret = host.salt_call(list(args), timeout=7200)
    seconds = time.monotonic() - started
    local = ret.get("local")
    if not isinstance(local, dict):
        raise RuntimeError(f"salt-call {' '.join(args)} did not run states: {local!r}")
    failed = {k: str(v.get("comment")) for k, v in local.items() if v.get("result") is not True}
    if failed and not allow_failures:
        shown = json.dumps(dict(list(failed.items())[:10]), indent=1)
        raise RuntimeError(f"salt-call {' '.join(args)}: {len(failed)} states failed:\n{shown}")
    by_state: dict[str, float] = {}
    for key, value in local.items():
        kind = _state_kind(key)
        by_state[kind] = by_state.get(kind, 0.0) + float(value.get("duration", 0.0)) / 1000
    return SaltRun(
        seconds=seconds,
        states=len(local),
        changed=sum(1 for v in local.values() if v.get("changes")),
        failed=failed,
        state_seconds=sum(by_state.values()),
        by_state=by_state,
        raw=local,
    )


def apply_webarch(host: Host, *extra: str, allow_failures: bool = False) -> SaltRun:
    """Timed ``state.apply webarch [EXTRA...]``."""
    return timed_salt(host, ["state.apply", "webarch", *extra], allow_failures=allow_failures)


def pillar_arg(data: dict[str, Any]) -> str:
    """A ``pillar=...`` command line argument for salt-call."""
    return "pillar=" + json.dumps(data, separators=(",", ":"))


# --------------------------------------------------------------------------- profiles


def pyspy_binary() -> Path:
    """This machine's py-spy (a static binary from PyPI), installed on first use."""
    binary = TOOLS_VENV / "bin/py-spy"
    if not binary.exists():
        progress(f"installing py-spy into {TOOLS_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        pip = [str(TOOLS_VENV / "bin/pip"), "install", "-q", "py-spy"]
        subprocess.run(pip, check=True)
    return binary


def profiled_salt(host: Host, args: Sequence[str], label: str) -> tuple[float, Path]:
    """Run ``salt-call --local ARGS`` under py-spy in the host; return seconds and the profile.

    The profile (collapsed stacks, 25 samples/s) is copied to RESULTS_DIR/LABEL.txt.
    """
    shutil.copyfile(pyspy_binary(), host.merged / "usr/local/bin/py-spy")
    (host.merged / "usr/local/bin/py-spy").chmod(0o755)
    inside = f"/root/{label}.txt"
    cmd = ["py-spy", "record", "-r", "25", "-s", "-f", "raw", "-o", inside, "--"]
    started = time.monotonic()
    host.run([*cmd, SALT_CALL, "--local", "--out=quiet", *args], timeout=7200, check=True)
    seconds = time.monotonic() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    local = RESULTS_DIR / f"{label}.txt"
    local.write_text(host.read_file(inside))
    return seconds, local


def profile_summary(path: Path, count: int = 12) -> list[tuple[str, float]]:
    """The ``count`` functions with the largest inclusive share of a py-spy raw profile."""
    inclusive: dict[str, int] = {}
    total = 0
    frame_re = re.compile(r"^(.*?) \((?:.*/)?([^/]+?):\d+\)$")
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        seen = set()
        for frame in stack.split(";"):
            match = frame_re.match(frame)
            key = f"{match.group(2)}:{match.group(1)}" if match else frame
            if key not in seen:
                seen.add(key)
                inclusive[key] = inclusive.get(key, 0) + samples
    # Salt's own dispatch frames are on every stack: they say nothing.
    skip = {"salt-call", "scripts.py", "call.py", "caller.py", "lazy.py", "state.py"}
    skip |= {"direct_call.py", "decorators", "__init__.py"}
    ranked = [
        (k, v / total)
        for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])
        if total and not k.startswith("process ") and k.split(":")[0] not in skip
    ]
    return ranked[:count]
