"""
``make check`` catches render mistakes: a copy of the formula, broken on
purpose, fails the check naming the file and the state; the unbroken copy
passes.  Each run is ``python -m formula_check`` on the copy (Salt's loader
in its own process), as any user: no root, no test host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from formula_check import requisites
from formula_check.problems import Problem

REPO = Path(__file__).resolve().parents[2]
#: What the check reads: the formula, its custom modules, the pillar, the stored model.
FORMULA = ["webarch", "_modules", "_states", "_utils", "pillar.example", "test/data/model"]
#: The SLS file the tests break: the smallest one the formula includes.
SLS = "webarch/registry.sls"
STATE_ID = re.compile(r"^([^\s#{%][^:]*):\s*$")


@pytest.fixture
def formula(tmp_path: Path) -> Path:
    """A copy of the formula to break."""
    copy = tmp_path / "formula"
    for rel in FORMULA:
        source, target = REPO / rel, copy / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return copy


def check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the check on ``root`` (Debian 12 only unless told: the tests stay quick)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "test")}
    command = [sys.executable, "-m", "formula_check", "--root", str(root)]
    return subprocess.run(
        [*command, *(args or ("--release", "12"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_unbroken_copy_passes_both_releases(formula: Path) -> None:
    result = check(formula, "--release", "12", "--release", "13")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "formula check: ok" in result.stdout
    for variant in ("full", "only ", " absent"):
        for release in (12, 13):
            assert re.search(rf"render Debian {release} .*{variant}.*requisites \d+", result.stdout)


def test_missing_requisite_named_with_file_and_state(formula: Path) -> None:
    append(
        formula / SLS,
        "\nwebarch-broken-on-purpose:\n  test.nop:\n    - require:\n"
        "      - file: webarch-no-such-state\n      - sls: webarch.no-such-sls\n",
    )
    fails = failures(check(formula))
    assert any(
        f"{SLS} [webarch-broken-on-purpose]: require: file: webarch-no-such-state" in f
        for f in fails
    ), fails
    assert any("sls: webarch.no-such-sls is not an SLS the formula includes" in f for f in fails)
    assert len(fails) == 2, fails


def test_jinja_syntax_error_in_sls_named_with_file(formula: Path) -> None:
    append(formula / SLS, "\n{% if %}\n")
    fails = failures(check(formula))
    assert fails and all(f.startswith(f"FAIL {SLS}: ") for f in fails), fails
    assert "Jinja syntax error" in fails[0]


def _template_state(root: Path, template: str) -> tuple[str, str]:
    """The SLS file and state ID of the file.managed that renders ``template``."""
    for sls in sorted((root / "webarch").glob("*.sls")):
        state_id = ""
        for line in sls.read_text().splitlines():
            if match := STATE_ID.match(line):
                state_id = match.group(1)
            if template in line and "source:" in line:
                return str(sls.relative_to(root)), state_id
    raise AssertionError(f"no state renders {template}")


def test_jinja_error_in_template_named_with_state(formula: Path) -> None:
    """Templates render only when the state runs: the check renders them itself."""
    (template,) = (formula / "webarch" / "files").rglob("sshd_config.jinja")
    append(template, "{{ password_accounts | no_such_filter }}\n")
    sls, state_id = _template_state(formula, "sshd_config.jinja")
    fails = failures(check(formula))
    assert len(fails) == 1, fails
    assert fails[0].startswith(f"FAIL {sls} [{state_id}]: "), fails
    assert "sshd_config.jinja" in fails[0]
    assert "No filter named 'no_such_filter'" in fails[0]


def test_changed_model_fails_with_diff_until_updated(formula: Path) -> None:
    pillar = formula / "pillar.example"
    pillar.write_text(pillar.read_text().replace("retention_days: 14", "retention_days: 15"))
    result = check(formula)
    assert failures(result) == [
        "FAIL test/data/model/bookworm.json: the model's output for pillar.example changed;"
        " if that is intended,"
    ]
    assert '+ "log_retention_days": 15,' in result.stdout
    updated = check(formula, "--release", "12", "--update")
    assert updated.returncode == 0, updated.stdout
    assert '"log_retention_days": 15' in (formula / "test/data/model/bookworm.json").read_text()
    assert check(formula).returncode == 0


def test_direct_requisites_resolve_by_id_name_glob_and_sls() -> None:
    """Without Salt: the resolution rules of the requisite check."""
    compiled = {
        "conf": {"__sls__": "f.a", "file": ["managed", {"name": "/etc/x.conf"}]},
        "svc": {"__sls__": "f.b", "service": ["running", {"names": ["x", {"y": []}]}]},
    }
    high = {
        "user": {
            "__sls__": "f.b",
            "cmd": [
                "run",
                {"name": "true"},
                {
                    "require": [
                        {"file": "conf"},
                        {"file": "/etc/x.conf"},
                        {"file.managed": "conf"},
                        {"file": "/etc/*.conf"},
                        "svc",
                        {"service": "y"},
                        {"sls": "f.a"},
                        {"service": "conf"},
                        {"sls": "f.c"},
                        {"sls": "f.empty"},
                    ]
                },
                {"listen": [{"file": "/etc/*.conf"}]},
            ],
        }
    }
    count, problems = requisites.check(high, compiled, {"f.a", "f.b", "f.empty"}, lambda s: s)
    assert count == 11
    assert [p.message for p in problems] == [
        "require: service: conf: no service state has this ID or name",
        "require: sls: f.c is not an SLS the formula includes",
        "require: sls: SLS f.empty declares no state in this rendering",
        "listen: file: /etc/*.conf: no file state has this ID or name",  # no globs for listen
    ]
    assert {p.where for p in problems} == {"f.b"}
    assert problems[0] == Problem("f.b", "user", problems[0].message)
