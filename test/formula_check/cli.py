"""
``make check``: the account model's stored rendering, then the whole formula
rendered and compiled for each Debian release and variant, its requisites,
its file sources and templates, its state functions.  Prints what it checked
and how long it took; exits 1 listing every problem (file, state ID, what).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from formula_check import model, requisites, runtime
from formula_check.problems import Findings, Problem
from formula_check.render import Rendering, Session, Variant, variants

REPO = Path(__file__).resolve().parents[2]
#: Salt's own messages for what the requisite check reports better (all, with the state ID).
SALT_REQUISITE_ERRORS = ("Referenced state does not exist", "Cannot extend ID")
SLS_IN_MESSAGE = re.compile(r"SLS['\"]?[\s:\[]+['\"]?(?:\w+:)?([\w.-]+)")


@dataclass
class Summary:
    """What one rendering held, for the report."""

    states: int = 0
    chunks: int = 0
    #: None: not checked (an SLS failed to render, so states are missing).
    requisites: int | None = 0
    files: int = 0
    templates: int = 0
    unusable: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def line(self) -> str:
        checked = "NOT CHECKED" if self.requisites is None else self.requisites
        return (
            f"{self.states} states, {self.chunks} chunks, requisites {checked},"
            f" {self.files} file sources ({self.templates} templates) rendered"
        )


def salt_errors(errors: list[str], locate: Callable[[str], str]) -> list[Problem]:
    """Salt's error messages, each at the SLS file it names."""
    problems = []
    for error in errors:
        match = SLS_IN_MESSAGE.search(error)
        where = locate(match.group(1)) if match else "(salt)"
        problems.append(Problem(where, "", runtime.shorten(error)))
    return problems


def requisite_problems(
    rendering: Rendering, locate: Callable[[str], str]
) -> tuple[int | None, list[Problem]]:
    """The requisite check, and Salt's own compile errors (None: not checked)."""
    if rendering.render_errors:  # partial data: its requisites would mislead
        return None, []
    count, found = requisites.check(
        rendering.declared, rendering.compiled, rendering.rendered_sls, locate
    )
    errors = rendering.compile_errors
    if found:  # Salt's messages say the same, for the first requisite of a state only
        errors = [e for e in errors if not e.startswith(SALT_REQUISITE_ERRORS)]
    return count, found + salt_errors(errors, locate)


def check_rendering(
    session: Session, release: int, pillar: dict, variant: Variant, reasons: dict[str, str | None]
) -> Summary:
    """Render one release and variant and check everything in it."""
    locate = session.locate
    summary = Summary()
    with session.highstate(release, model.RELEASES[release], pillar, variant) as highstate:
        rendering = session.render(highstate, variant.label)
        summary.states = sum(1 for key in rendering.declared if not key.startswith("__"))
        summary.chunks = len(rendering.chunks)
        summary.problems = salt_errors(rendering.render_errors, locate)
        summary.requisites, found = requisite_problems(rendering, locate)
        summary.problems += found
        summary.files, found = runtime.check_files(highstate.state, rendering.chunks, locate)
        summary.templates = sum(1 for c in rendering.chunks if c.get("template"))
        summary.problems += found
        summary.unusable, found = runtime.check_functions(
            highstate.state.states, rendering.chunks, locate, reasons
        )
        summary.problems += found
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="formula_check", description=__doc__)
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the formula's root (default: this checkout)"
    )
    parser.add_argument(
        "--update", action="store_true", help="rewrite test/data/model/*.json from the model"
    )
    parser.add_argument(
        "--release",
        type=int,
        action="append",
        choices=sorted(model.RELEASES),
        help="only this Debian release (repeatable; default: all)",
    )
    return parser.parse_args(argv)


def check_models(
    root: Path, pillar: dict, releases: list[int], update: bool, findings: Findings
) -> None:
    """The stored model of each release (test/data/model/CODENAME.json)."""
    for release in releases:
        status, found = model.check_model(root, pillar, release, update)
        findings.add(found)
        path = model.MODEL_DIR / f"{model.RELEASES[release]}.json"
        print(f"  model  Debian {release}: {path} {status}")


def check_renderings(
    session: Session, pillar: dict, releases: list[int], findings: Findings
) -> None:
    """The whole formula for each release and variant."""
    reasons: dict[str, str | None] = {}
    unusable: set[str] = set()
    for release in releases:
        for variant in variants(pillar):
            label = f"Debian {release} {variant.label}"
            started = time.monotonic()
            try:
                summary = check_rendering(session, release, pillar, variant, reasons)
            except Exception as exc:  # Salt could not even start: a module does not load
                summary = Summary(problems=[Problem("(salt)", "", f"{type(exc).__name__}: {exc}")])
            findings.add(summary.problems, label)
            unusable |= summary.unusable
            took = time.monotonic() - started
            print(f"  render {label}: {summary.line()} [{took:.1f} s]")
    missing = sum(1 for reason in reasons.values() if reason) - len(unusable)
    print(f"  state functions: {len(reasons)} used, {missing} missing", end="")
    print(f"; {len(unusable)} not loadable here: {', '.join(sorted(unusable)) or '-'}")


def run(root: Path, releases: list[int], update: bool, work: Path) -> Findings:
    """Everything, printing a line per step; returns what it found."""
    findings = Findings()
    with Session(root, work) as session:
        print(f"formula check of {root} (Salt {session.salt_version}, in-process)")
        pillar = session.pillar()
        if pillar.get("_errors"):
            findings.add(salt_errors([str(e) for e in pillar["_errors"]], session.locate))
            return findings
        check_models(root, pillar, releases, update, findings)
        check_renderings(session, pillar, releases, findings)
    return findings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    releases = args.release or sorted(model.RELEASES)
    with tempfile.TemporaryDirectory(prefix="webarch-check-") as work:
        findings = run(args.root.resolve(), releases, args.update, Path(work))
    took = time.monotonic() - started
    for line in findings.lines():
        print(line)
    if findings:
        print(f"formula check: {len(findings)} problem(s) [{took:.1f} s]")
        return 1
    print(f"formula check: ok [{took:.1f} s]")
    return 0
