"""The formula's own lint rules (run by ``make lint``).

* Every public function of an execution module is a Salt function a sysadmin
  can call: each has a ``CLI Example`` in its docstring (as the
  salt-extensions check theirs).  Helpers that are not for the command line
  are private (a leading underscore), so Salt's loader does not offer them.
* No Python file of the formula (modules, states, utils, programs) is over
  600 lines.
* The shared paths and the username pattern are spelled out once, in
  ``_utils/webarch_paths.py``; every other file takes them from there (the
  SLS files and templates from the model's ``paths``).

Usage: ``python test/lint_formula.py [REPO]``; prints each problem, exits 1
if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINES = 600
#: Where the formula's Python lives.
PYTHON_DIRS = ("_modules", "_states", "_utils", "webarch/files/programs")
#: Literals only webarch_paths.py may hold (the rest of the formula imports them).
SHARED_LITERALS = (
    "/run/mysqld",
    "/run/webarch-mail",
    "/var/lib/webarch/",
    "/etc/webarch/",
    "/etc/ssh/authorized_keys",
    "[a-z][a-z0-9-]{1,30}",
)
PATHS_MODULE = "_utils/webarch_paths.py"
#: Files the literals are searched in (besides the Python above): what the formula ships.
TEXT_GLOBS = ("webarch/**/*.sls", "webarch/**/*.jinja", "webarch/files/**/*")


def public_functions_without_cli_example(path: Path) -> Iterator[str]:
    """Public functions of an execution module whose docstring lacks a CLI example."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        if "CLI Example" not in (ast.get_docstring(node) or ""):
            yield f"{path}:{node.lineno}: public function {node.name}() has no CLI Example"


def python_files(repo: Path) -> list[Path]:
    """The formula's Python files."""
    return sorted(p for d in PYTHON_DIRS for p in (repo / d).rglob("*.py"))


def too_long(path: Path) -> Iterator[str]:
    """A file over MAX_LINES lines."""
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines > MAX_LINES:
        yield f"{path}: {lines} lines (at most {MAX_LINES}: split it by concern)"


#: Static units and shell scripts cannot import webarch_paths and are installed
#: byte for byte: test/unit/test_program_contract.py checks that the paths they
#: spell out are webarch_paths' own.
STATIC_GLOBS = ("webarch/files/systemd/*", "webarch/files/programs/*.sh")


def shipped_files(repo: Path) -> list[Path]:
    """Every file the formula ships, Python and text, but webarch_paths.py itself."""
    found = set(python_files(repo))
    for pattern in TEXT_GLOBS:
        found.update(p for p in repo.glob(pattern) if p.is_file())
    static = {p for pattern in STATIC_GLOBS for p in repo.glob(pattern)}
    return sorted(p for p in found - static if p != repo / PATHS_MODULE)


def code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The lines of ``path`` that are code: no comments, no Python docstrings."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    skip: set[int] = set()
    if path.suffix == ".py" or text.startswith("#!/usr/bin/env python"):
        for node in ast.walk(ast.parse(text)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                value = body[0].value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    skip.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if number in skip or stripped.startswith(("#", "{#", ";")):
            continue
        yield number, line.split(" # ", 1)[0]


def repeated_literals(path: Path) -> Iterator[str]:
    """A shared path or pattern written out in ``path``."""
    for number, line in code_lines(path):
        for literal in SHARED_LITERALS:
            if literal in line:
                yield f"{path}:{number}: {literal!r} is defined in {PATHS_MODULE}: use it"


def problems(repo: Path) -> list[str]:
    """Every problem found in the checkout at ``repo``."""
    found: list[str] = []
    for module in sorted((repo / "_modules").glob("*.py")):
        found += public_functions_without_cli_example(module)
    for path in python_files(repo):
        found += too_long(path)
    for path in shipped_files(repo):
        found += repeated_literals(path)
    return found


def main(argv: list[str]) -> int:
    repo = Path(argv[1] if len(argv) > 1 else ".").resolve()
    found = problems(repo)
    for problem in found:
        print(problem)
    print(f"lint_formula: {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
