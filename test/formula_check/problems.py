"""What the check reports: a problem at a file (and a state), in some renderings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Problem:
    """One mistake: the file it is in, the state ID (or ''), what is wrong."""

    where: str
    state: str
    message: str

    def __str__(self) -> str:
        state = f" [{self.state}]" if self.state else ""
        return f"{self.where}{state}: {self.message}"


class Findings:
    """Problems, each with the renderings it was found in (reported once)."""

    def __init__(self) -> None:
        self.seen: dict[Problem, list[str]] = {}

    def add(self, problems: Iterable[Problem], rendering: str = "") -> None:
        for problem in problems:
            found_in = self.seen.setdefault(problem, [])
            if rendering and rendering not in found_in:
                found_in.append(rendering)

    def __len__(self) -> int:
        return len(self.seen)

    def lines(self) -> list[str]:
        """Every problem, sorted by file and state, with where it showed."""
        out = []
        for problem in sorted(self.seen):
            found_in = self.seen[problem]
            suffix = f"  (in: {', '.join(found_in)})" if found_in else ""
            first, *rest = str(problem).splitlines() or [""]
            out.append(f"FAIL {first}{suffix}")
            out.extend(f"     {line}" for line in rest)
        return out


def sls_file(root: Path, sls: str) -> str:
    """The file (relative to ``root``) an SLS name comes from."""
    rel = sls.replace(".", "/")
    if (root / f"{rel}.sls").is_file() or not (root / rel / "init.sls").is_file():
        return f"{rel}.sls"
    return f"{rel}/init.sls"
