"""
The stored rendering of the account model for ``pillar.example``.

One JSON file per Debian release under ``test/data/model/`` (sorted keys,
indent 1), built by the pure ``webarch_model.build_model`` against an empty
host: the same on every machine.  The check fails with a diff when the model's
output changed and the stored file was not updated (``make check-update``).
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from formula_check.problems import Problem

#: Debian releases the formula supports: major version -> codename.
RELEASES = {12: "bookworm", 13: "trixie"}
MODEL_DIR = Path("test/data/model")
#: Stands in for /etc/machine-id, which keys the pool socket names.
SOCKET_KEY = "webarch-check"
#: What build_model raises for a pillar it refuses (webarch_check).
REFUSALS = ("ModelError", "UnsupportedRelease")
#: Lines of a diff shown before it is cut.
DIFF_LINES = 80


def render_model(root: Path, pillar: dict, osmajorrelease: int) -> str:
    """The model of ``pillar`` on an empty host, as the stored JSON text."""
    utils = str(root / "_utils")
    if utils not in sys.path:
        sys.path.insert(0, utils)
    model: Any = importlib.import_module("webarch_model")
    host = model.HostUsers(users={}, groups={}, managed=frozenset(), socket_key=SOCKET_KEY)
    built = model.build_model(pillar.get("webarch"), host, osmajorrelease)
    return json.dumps(built, sort_keys=True, indent=1) + "\n"


def _failure(exc: Exception, osmajorrelease: int) -> Problem:
    """The model refused pillar.example (every problem, with its path), or broke."""
    if type(exc).__name__ in REFUSALS:
        return Problem(
            "pillar.example", "", f"the model refuses it (Debian {osmajorrelease}): {exc}"
        )
    where = traceback.extract_tb(exc.__traceback__)[-1]
    path = Path(where.filename)
    return Problem(
        str(path.relative_to(path.parents[1])) if len(path.parents) > 1 else str(path),
        "",
        f"building the model failed (Debian {osmajorrelease}), line {where.lineno}:"
        f" {type(exc).__name__}: {exc}",
    )


def _diff(stored: str, rendered: str, name: str) -> list[str]:
    lines = list(
        difflib.unified_diff(
            stored.splitlines(),
            rendered.splitlines(),
            f"{name} (stored)",
            f"{name} (model now)",
            lineterm="",
        )
    )
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... ({len(lines) - DIFF_LINES} more diff lines)"]
    return lines


def check_model(
    root: Path, pillar: dict, osmajorrelease: int, update: bool
) -> tuple[str, list[Problem]]:
    """Compare (or with ``update``, rewrite) the stored model of one release.

    Returns what happened (unchanged, updated, changed, missing, failed) and the problems.
    """
    rel = MODEL_DIR / f"{RELEASES[osmajorrelease]}.json"
    path = root / rel
    try:
        rendered = render_model(root, pillar, osmajorrelease)
    except Exception as exc:
        return "failed", [_failure(exc, osmajorrelease)]
    stored = path.read_text(encoding="utf-8") if path.is_file() else None
    if stored == rendered:
        return "unchanged", []
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
        return "updated", []
    if stored is None:
        return "missing", [Problem(str(rel), "", "missing: run `make check-update`, commit it")]
    message = "\n".join(
        [
            "the model's output for pillar.example changed; if that is intended,",
            "run `make check-update` and commit the file:",
            *_diff(stored, rendered, str(rel)),
        ]
    )
    return "changed", [Problem(str(rel), "", message)]
