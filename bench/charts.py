"""PNG charts of the benchmarks' results, from their saved output.

Reads the figure lines (``KIND key=value ...``, see bench/common.py) of the
output files given (the stdout of bench/converge.py and bench/serving.py,
saved), and writes into bench/charts/ (``--out``):

* ``converge.png``: the first run (package installs excluded) and the
  no-change run against accounts, seconds and seconds per account;
* ``targeted.png``: one account changed (``webarch_only``) and the full run
  with the same change, against accounts, with issue 20's limit (1 s or 5 %
  of the full run, whichever is larger);
* ``apache.png``: Apache's configuration check and graceful reload (seconds)
  and Apache's memory (PSS) against accounts;
* ``mounts.png``: what systemd takes to start a unit with a mount namespace,
  to restart logind and to reload, against accounts, with the chroots' mounts
  in PID 1's namespace and in one of their own (bench/mounts.py's ``mounts``
  lines);
* ``serving.png``: requests per second of the new stack over the legacy ones
  (mpm-itk + mod_php, prefork + mod_php), per page and scenario, from
  ``serving_median`` lines; with none in the files given, the ratios of
  bench/README.rst's last full run (SERVING_README).

It also prints, for each figure measured at two counts or more (when the
counts come from separate runs, as ``--accounts 200`` and ``--accounts 1000``
on two hosts), its growth from the smallest count to the largest as ``ratio``
lines, against issue 20's limit (1.1 times the growth of the accounts).  When
several files give a figure for the same number of accounts, the last one read
counts.  Needs matplotlib (``pip install .[bench]``; ``make charts``).

Run::

    .venv/bin/python bench/charts.py /var/tmp/webarch-bench/converge-*.out [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parent / "charts"

#: new / legacy requests per second, bench/README.rst "Last full run" (formula
#: 49648f5, 2026-11-28): (label, new / itk, new / prefork).
SERVING_README = [
    ("static, kept alive, 16", 1.56, 0.83),
    ("static, kept alive, 256", 1.49, 0.87),
    ("static, new connection", 10.7, 0.82),
    ("PHP hello, kept alive, 16", 0.73, 0.30),
    ("PHP hello, kept alive, 256", 0.55, 0.31),
    ("PHP hello, new connection", 9.2, 0.70),
    ("WordPress, kept alive, 16", 1.16, 1.16),
]

Figures = dict[str, list[dict[str, str]]]


def read_figures(paths: list[Path]) -> Figures:
    """Every figure line of ``paths``, by kind (``converge``, ``targeted``...), in order."""
    kinds: Figures = {}
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            kind, _, rest = line.partition(" ")
            pairs = [p.partition("=") for p in rest.split(" ")]
            if not kind.isidentifier() or not pairs or not all(eq for _, eq, _ in pairs):
                continue
            kinds.setdefault(kind, []).append({k: v for k, _, v in pairs})
    return kinds


def by_accounts(rows: list[dict[str, str]], *keys: str) -> dict[int, dict[str, float]]:
    """``keys`` of each row, keyed by its ``accounts`` (the last row of a count wins)."""
    found: dict[int, dict[str, float]] = {}
    for row in rows:
        if "accounts" in row and all(k in row for k in keys):
            found[int(row["accounts"])] = {k: float(row[k]) for k in keys}
    return dict(sorted(found.items()))


def series(data: dict[int, dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    """Accounts and the values of ``key``."""
    return list(data), [v[key] for v in data.values()]


def style(ax: plt.Axes, title: str, ylabel: str) -> None:
    """Titles, grid and a legend for one panel against accounts."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("accounts (2 sites each)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)


def linear_from(xs: list[int], ys: list[float]) -> list[float]:
    """The line through the origin and the smallest count's point: linear growth."""
    return [ys[0] * x / xs[0] for x in xs]


def converge_chart(figures: Figures, out: Path) -> Path | None:
    """First and no-change runs against accounts."""
    data = by_accounts(figures.get("converge", []), "first_ex_pkg_s", "rerun_s")
    if not data:
        return None
    xs, first = series(data, "first_ex_pkg_s")
    _, rerun = series(data, "rerun_s")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, first, "o-", label="first run (packages excluded)")
    left.plot(xs, rerun, "s-", label="no-change run")
    left.plot(xs, linear_from(xs, first), ":", color="grey", label="linear from the first point")
    style(left, "Converge time", "seconds")
    right.plot(xs, [f / x for f, x in zip(first, xs, strict=True)], "o-", label="first run")
    right.plot(xs, [r / x for r, x in zip(rerun, xs, strict=True)], "s-", label="no-change run")
    right.axhline(0.07, color="red", linestyle="--", linewidth=1, label="no-change target 0.07")
    right.set_ylim(bottom=0)
    style(right, "Seconds per account (flat = linear)", "seconds per account")
    return save(fig, out / "converge.png")


def targeted_chart(figures: Figures, out: Path) -> Path | None:
    """One account changed: webarch_only and the full run, against accounts."""
    data = by_accounts(figures.get("targeted", []), "only_s", "full_s")
    if not data:
        return None
    xs, only = series(data, "only_s")
    _, full = series(data, "full_s")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(xs, full, "s-", label="full run with the change")
    ax.plot(xs, only, "o-", label="webarch_only=[the account]")
    limit = [max(1.0, 0.05 * f) for f in full]
    ax.plot(xs, limit, "_--", color="red", markersize=14, label="limit: 1 s or 5 % of the full run")
    ax.set_yscale("log")
    style(ax, "One account changed (medians of 3)", "seconds (log scale)")
    return save(fig, out / "targeted.png")


def apache_chart(figures: Figures, out: Path) -> Path | None:
    """Apache's check and reload seconds and its PSS against accounts."""
    times = by_accounts(figures.get("apache", []), "check_s", "reload_done_s")
    keys = ("apache_pss_mib", "phpfpm_master_pss_mib", "systemd_pss_mib")
    memory = by_accounts(figures.get("idle_memory", []), *keys)
    if not times and not memory:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if times:
        xs, check = series(times, "check_s")
        _, reload_ = series(times, "reload_done_s")
        left.plot(xs, check, "o-", label="apache2ctl -t")
        left.plot(xs, reload_, "s-", label="graceful reload, until all children are new")
        left.set_ylim(bottom=0)
        style(left, "Apache: configuration check and reload", "seconds")
    if memory:
        xs, apache = series(memory, "apache_pss_mib")
        _, masters = series(memory, "phpfpm_master_pss_mib")
        _, systemd = series(memory, "systemd_pss_mib")
        right.plot(xs, apache, "o-", label="Apache (all processes)")
        right.plot(xs, systemd, "^-", label="systemd (holds the pools' sockets)")
        right.plot(xs, masters, "s-", label="PHP-FPM, idle pools (none running)")
        right.set_ylim(bottom=0)
        style(right, "Memory when idle (PSS)", "MiB")
    return save(fig, out / "apache.png")


#: bench/mounts.py's probes: (key, label).
MOUNT_PROBES = [
    ("logind_s", "restart systemd-logind"),
    ("reload_s", "systemctl daemon-reload"),
    ("strict_s", "unit with ProtectSystem=strict"),
    ("privtmp_s", "unit with PrivateTmp=yes"),
    ("plain_s", "unit without a mount namespace"),
]


def mounts_chart(figures: Figures, out: Path) -> Path | None:
    """systemd's costs against accounts, the chroots' mounts in PID 1's namespace or not."""
    rows = figures.get("mounts", [])
    keys = [key for key, _ in MOUNT_PROBES]
    modes = {
        mode: by_accounts([r for r in rows if r.get("mode") == mode], *keys)
        for mode in ("host", "ns")
    }
    if not any(modes.values()):
        return None
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for index, (key, label) in enumerate(MOUNT_PROBES):
        color = f"C{index}"
        for mode, line, where in (
            ("host", "o-", "mounts in PID 1's namespace"),
            ("ns", "s--", "in a namespace of their own"),
        ):
            if modes[mode]:
                xs, ys = series(modes[mode], key)
                ax.plot(xs, ys, line, color=color, label=f"{label}, {where}")
    ax.set_yscale("log")
    ax.set_xlabel("accounts (7 chroot mounts each)")
    ax.set_ylabel("seconds (log scale)")
    ax.set_title("systemd against the chroots' mounts", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, out / "mounts.png")


def serving_ratios(figures: Figures) -> tuple[list[tuple[str, float, float]], str]:
    """(label, new/itk, new/prefork) per page and scenario, and where they come from."""
    ratios = []
    for row in figures.get("serving_median", []):
        try:
            new, itk, prefork = (float(row[k]) for k in ("new_rps", "itk_rps", "prefork_rps"))
        except (KeyError, ValueError):
            continue
        label = f"{row.get('page')}, {row.get('scenario')}, {row.get('connections')}"
        ratios.append((label, new / itk, new / prefork))
    if ratios:
        return ratios, "serving_median lines of the files given"
    return SERVING_README, "bench/README.rst, last full run (formula 49648f5)"


def serving_chart(figures: Figures, out: Path) -> Path:
    """New stack over the legacy stacks, requests per second, horizontal bars."""
    ratios, source = serving_ratios(figures)
    labels = [r[0] for r in ratios]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(ratios) + 1.6))
    ys = range(len(ratios))
    # Bars start at 1 (as fast as the legacy stack): right of it the new stack is faster.
    for offset, index, label in (
        (-0.2, 1, "new / mpm-itk (old platform)"),
        (0.2, 2, "new / prefork"),
    ):
        values = [r[index] for r in ratios]
        bars = ax.barh(
            [y + offset for y in ys], [v - 1 for v in values], left=1, height=0.4, label=label
        )
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(0.2, 30)
    ax.set_yticks(list(ys), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("requests/s of the new stack over the legacy one (log scale; > 1: new faster)")
    ax.set_title(f"Serving: new stack against legacy\n({source})", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    return save(fig, out / "serving.png")


#: (kind, key) of the figures whose growth is printed.
GROWTH_FIGURES = [
    ("converge", "first_ex_pkg_s"),
    ("converge", "rerun_s"),
    ("targeted", "only_s"),
    ("targeted", "full_s"),
    ("apache", "check_s"),
    ("apache", "reload_done_s"),
    ("idle_memory", "apache_pss_mib"),
]


def growth(figures: Figures) -> list[str]:
    """``ratio`` lines: each figure's growth from the smallest count to the largest."""
    lines = []
    for kind, key in GROWTH_FIGURES:
        data = by_accounts(figures.get(kind, []), key)
        if len(data) < 2:
            continue
        low, top = min(data), max(data)
        value = data[top][key] / data[low][key] if data[low][key] else float("nan")
        limit = 1.1 * top / low
        verdict = "within" if value <= limit else "over"
        lines.append(
            f"ratio name={kind}_{key}_growth_{top}_vs_{low} value={value:.2f}"
            f" limit={limit:.2f} {verdict}"
        )
    return lines


#: A line under every chart (``--note``): where and on what the figures were measured.
NOTE: list[str] = []


def save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as a compact PNG (with the note, if any) and close it."""
    margin = 0.0
    if NOTE:
        text = textwrap.fill(NOTE[0], width=int(fig.get_figwidth() * 17))
        fig.text(0.01, 0.005, text, fontsize=7, color="dimgrey", va="bottom")
        margin = 0.035 * (text.count("\n") + 1) * 4 / fig.get_figheight()
    fig.tight_layout(rect=(0, margin, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Read the files, write the charts, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="saved benchmark output")
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    parser.add_argument("--note", help="a line under every chart (host, load, formula)")
    args = parser.parse_args(argv)
    if args.note:
        NOTE[:] = [args.note]
    args.out.mkdir(parents=True, exist_ok=True)
    figures = read_figures(args.files)
    for line in growth(figures):
        print(line)
    for chart in (converge_chart, targeted_chart, apache_chart, mounts_chart, serving_chart):
        path = chart(figures, args.out)
        if path:
            print(f"{path} {path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
