"""The formula's own lint rules (test/lint_formula.py) pass on the tree and catch breaks."""

from __future__ import annotations

import shutil
from pathlib import Path

import lint_formula

REPO = Path(__file__).resolve().parents[2]


def copy_formula(tmp_path: Path) -> Path:
    """The parts of the checkout the rules read."""
    for part in ("_modules", "_states", "_utils", "webarch"):
        shutil.copytree(REPO / part, tmp_path / part)
    return tmp_path


def test_the_tree_is_clean():
    assert lint_formula.problems(REPO) == []


def test_a_public_function_without_cli_example_is_reported(tmp_path):
    repo = copy_formula(tmp_path)
    module = repo / "_modules" / "webarch_mariadb.py"
    module.write_text(module.read_text() + '\n\ndef wipe(name: str) -> None:\n    """Wipe."""\n')
    assert lint_formula.problems(repo) == [
        f"{module}:{len(module.read_text().splitlines()) - 1}: "
        "public function wipe() has no CLI Example"
    ]


def test_a_long_module_is_reported(tmp_path):
    repo = copy_formula(tmp_path)
    module = repo / "_utils" / "webarch_db.py"
    module.write_text(module.read_text() + "# padding\n" * 600)
    [problem] = lint_formula.problems(repo)
    assert problem.startswith(f"{module}: ") and "at most 600" in problem


def test_a_shared_path_written_out_is_reported(tmp_path):
    repo = copy_formula(tmp_path)
    sls = repo / "webarch" / "ssh.sls"
    sls.write_text(
        sls.read_text() + "\nx:\n  file.absent:\n    - name: /etc/ssh/authorized_keys/x\n"
    )
    [problem] = lint_formula.problems(repo)
    assert problem.startswith(f"{sls}:") and "'/etc/ssh/authorized_keys'" in problem


def test_comments_and_docstrings_may_name_them(tmp_path):
    repo = copy_formula(tmp_path)
    module = repo / "_states" / "webarch_chroot.py"
    extra = '\n# Binds /run/mysqld.\ndef _f() -> None:\n    """Reads /run/mysqld."""\n'
    module.write_text(module.read_text() + extra)
    assert lint_formula.problems(repo) == []
