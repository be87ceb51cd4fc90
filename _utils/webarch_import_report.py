"""
Import: the report of a conversion and its run (shared by the importers).

:py:class:`Run` collects the report (an :py:class:`Entry` per input path:
mapped, not mapped, needing a decision, or a validation problem) and the
errors of one conversion, and strips what cannot be read (Jinja expressions,
``!vault`` values) from the input before anything is mapped.  Used by
:py:mod:`webarch_import_ansible` and :py:mod:`webarch_import_ansible_sites`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import webarch_check as check
import webarch_layout as layout
import webarch_model as model

MAPPED = "mapped"
NOT_MAPPED = "not mapped"
DECISION = "needs a decision"
VALIDATION = "validation"


class ConversionError(ValueError):
    """The host_vars cannot be converted; ``problems`` lists each ``path: message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        super().__init__(f"{source} cannot be converted ({count}):\n{lines}")


class Entry(NamedTuple):
    """One line of the report: an input path, what became of it, and to where or why."""

    path: str
    kind: str
    text: str

    def line(self) -> str:
        if self.kind == VALIDATION:
            return self.text
        joiner = " to " if self.kind == MAPPED else ": "
        return f"{self.path}: {self.kind}{joiner}{self.text}"


class Report:
    """What became of every field of the input."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def lines(self) -> list[str]:
        return [entry.line() for entry in self.entries]

    def counts(self) -> dict[str, int]:
        """How many fields were mapped, not mapped, need a decision; validation problems."""
        kinds = (MAPPED, NOT_MAPPED, DECISION, VALIDATION)
        return {kind: sum(e.kind == kind for e in self.entries) for kind in kinds}

    def decisions(self) -> list[Entry]:
        return [e for e in self.entries if e.kind in (DECISION, VALIDATION)]


class _Vault:
    """A ``!vault`` value: encrypted, never read (nothing of it is kept)."""

    def __repr__(self) -> str:
        return "<vault>"


#: The marker every ``!vault`` value is loaded as.
VAULT = _Vault()

#: A list item that could not be read (Jinja or vault): reported, then skipped.
UNREAD = type("Unread", (), {"__repr__": lambda self: "<unread>"})()


class Run:
    """One conversion: its report and its errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.report = Report()
        self.problems: list[str] = []
        #: The paths of the values left out as unreadable (Jinja, vault).
        self.unread: set[str] = set()

    @staticmethod
    def dotted(path: list[str]) -> str:
        return ".".join(path) or "(top level)"

    def mapped(self, path: list[str], target: str) -> None:
        self.report.add(Entry(self.dotted(path), MAPPED, target))

    def skip(self, path: list[str], reason: str) -> None:
        self.report.add(Entry(self.dotted(path), NOT_MAPPED, reason))

    def decide(self, path: list[str], reason: str) -> None:
        self.report.add(Entry(self.dotted(path), DECISION, reason))

    def error(self, path: list[str], message: str) -> None:
        self.problems.append(f"{self.dotted(path)}: {message}")

    def readable(self, value: Any, path: list[str]) -> Any:
        """``value`` without its Jinja expressions and vault values (each a decision).

        A mapping loses the key, a list keeps :py:data:`UNREAD` in the item's place
        (so that the other items keep their index); ``!unsafe`` text is plain text.
        """
        why = _unreadable(value)
        if why:
            self.decide(path, why)
            self.unread.add(self.dotted(path))
            return UNREAD
        if isinstance(value, dict):
            found = {}
            for key, item in value.items():
                kpath = [*path, str(key)]
                if isinstance(key, str) and _unreadable(key):
                    self.decide(kpath, "a Jinja expression as a key: write the name it gives")
                    continue
                item = self.readable(item, kpath)
                if item is not UNREAD:
                    found[key] = item
            return found
        if isinstance(value, list):
            return [self.readable(item, [*path, str(i)]) for i, item in enumerate(value)]
        return str(value) if isinstance(value, str) else value


def _unreadable(value: Any) -> str | None:
    """Why ``value`` cannot be read as it stands, or ``None``."""
    if value is VAULT:
        return "vault-encrypted, not decrypted: decide its value by hand (no secret is read)"
    if type(value) is str and ("{{" in value or "{%" in value):
        return "a Jinja expression, not evaluated: write the value it gives"
    return None


def dict_items(
    value: Any, path: list[str], run: Run, keys: tuple[str, ...], required: tuple[str, ...] = ()
) -> list[tuple[str, dict]]:
    """The readable mapping items of a list, with their index.

    Unknown keys and missing ``required`` ones are errors; an item whose
    required key was unreadable (Jinja, vault) is left out as a decision.
    """
    if not isinstance(value, list):
        run.error(path, f"must be a list, not {type(value).__name__}")
        return []
    found = []
    for index, item in enumerate(value):
        ipath = [*path, str(index)]
        if item is UNREAD:
            continue
        if not isinstance(item, dict):
            run.error(ipath, f"must be a mapping, not {type(item).__name__}")
            continue
        unknown = sorted(str(k) for k in item if k not in keys)
        missing = [k for k in required if k not in item]
        if unknown:
            run.error(ipath, f"unknown keys {', '.join(unknown)} (known: {', '.join(keys)})")
        elif any(run.dotted([*ipath, k]) in run.unread for k in missing):
            run.decide(ipath, "left out: a value it needs is not readable (see above)")
        elif missing:
            run.error(ipath, f"{' and '.join(missing)} must be given")
        else:
            found.append((str(index), item))
    return found


def validate(pillar: dict, run: Run, release: int, prefix: str) -> None:
    """webarch's own validation of ``pillar``: each problem a decision for its
    account (reported at ``PREFIX.ACCOUNT``, the account's path in the input)."""
    host = layout.HostUsers(users={"root": 0, "www-data": 33}, groups={"root": 0})
    try:
        model.build_model(pillar["webarch"], host, release)
    except check.ModelError as exc:
        for problem in exc.problems:
            parts = problem.split(":")
            account = parts[2] if parts[:2] == ["webarch", "accounts"] and len(parts) > 3 else ""
            who, where = (
                (f"account {account}", f"{prefix}.{account}") if account else ("the server", "")
            )
            run.report.add(Entry(where, VALIDATION, f"{who} needs a decision: {problem}"))
