"""Unit tests of webarch-apache-sites: staged site files checked at once, then put live.

The real program runs as a subprocess on a temporary /etc/apache2 and staging
directory, with a stand-in for apache2 that checks like it: it reads every
file of sites-enabled in the copy it is given and fails, naming the file as
Apache does, on a line ``NoSuchDirective``; on ``NeedsMissingKey`` it fails
without naming a file (as Apache does for a vhost whose certificate is
missing); a ``Broken`` line in apache2.conf fails the whole configuration.
It logs every check it makes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import webarch_apache_sites
import webarch_paths as paths
from unit.program_helpers import program, program_env

SCRIPT = program("webarch_apache_sites")

FAKE_APACHE = r"""#!/bin/sh
# apache2 -d DIR -f DIR/apache2.conf -t
dir=$2
echo check >> "$CHECK_LOG"
if grep -q Broken "$dir/apache2.conf"; then
  echo "AH00526: Syntax error on line 1 of $dir/apache2.conf:" >&2; exit 1
fi
for f in "$dir"/sites-enabled/*.conf; do
  [ -e "$f" ] || continue
  if grep -q NoSuchDirective "$f"; then
    echo "AH00526: Syntax error on line 1 of $f:" >&2
    echo "Invalid command 'NoSuchDirective'" >&2; exit 1
  fi
  if grep -q NeedsMissingKey "$f"; then
    echo "AH02572: Failed to configure at least one certificate and key" >&2; exit 1
  fi
done
echo "Syntax OK" >&2
"""

GOOD = "<VirtualHost *:443>\n  ServerName {name}.example\n</VirtualHost>\n"


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """An /etc/apache2 with one live account, a staging directory, the fake apache2."""
    apache = tmp_path / "apache2"
    for sub in ("sites-available", "sites-enabled", "conf-enabled"):
        (apache / sub).mkdir(parents=True)
    (apache / "apache2.conf").write_text("IncludeOptional sites-enabled/*.conf\n")
    (apache / "envvars").write_text("export APACHE_RUN_USER=www-data\n")
    (apache / "md").mkdir()
    (apache / "md" / "key.pem").write_text("secret")
    (apache / "sites-available" / "webarch-alice.conf").write_text(GOOD.format(name="alice"))
    (apache / "sites-enabled" / "webarch-alice.conf").symlink_to(
        "../sites-available/webarch-alice.conf"
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    fake = tmp_path / "apache2-bin"
    fake.write_text(FAKE_APACHE)
    fake.chmod(0o755)
    return {
        "apache": apache,
        "staging": staging,
        "bin": fake,
        "log": tmp_path / "checks.log",
        "verdicts": tmp_path / "run" / "verdicts.json",
        "tmp": tmp_path / "scratch",
    }


def run(tree: dict[str, Path], command: str) -> subprocess.CompletedProcess:
    """Run ``webarch-apache-sites COMMAND`` on ``tree``."""
    tree["tmp"].mkdir(exist_ok=True)
    env = program_env(
        WEBARCH_APACHE_DIR=str(tree["apache"]),
        WEBARCH_APACHE_STAGING=str(tree["staging"]),
        WEBARCH_APACHE_BIN=str(tree["bin"]),
        WEBARCH_APACHE_VERDICTS=str(tree["verdicts"]),
        CHECK_LOG=str(tree["log"]),
        TMPDIR=str(tree["tmp"]),
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stage(tree: dict[str, Path], name: str, content: str) -> None:
    """Stage account ``name``'s file."""
    (tree["staging"] / f"webarch-{name}.conf").write_text(content)


def live(tree: dict[str, Path], name: str) -> str | None:
    """Account ``name``'s live file, or None."""
    path = tree["apache"] / "sites-available" / f"webarch-{name}.conf"
    return path.read_text() if path.exists() else None


def checks(tree: dict[str, Path]) -> int:
    """How many times apache2 -t ran."""
    return len(tree["log"].read_text().split()) if tree["log"].exists() else 0


def test_the_default_paths_are_the_formulas() -> None:
    assert webarch_apache_sites.LIB_DIR == paths.PROGRAM_LIB_DIR
    assert str(webarch_apache_sites.STAGING) == paths.APACHE_STAGING_DIR


def test_nothing_staged_differs_nothing_checked(tree) -> None:
    stage(tree, "alice", GOOD.format(name="alice"))
    assert run(tree, "current").returncode == 0
    done = run(tree, "install")
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1].startswith("changed=no ")
    assert checks(tree) == 0


def test_many_files_one_check(tree) -> None:
    for name in ("alice", "bob", "carol", "dave"):
        stage(tree, name, GOOD.format(name=name) + "# new\n")
    assert run(tree, "current").returncode == 1
    done = run(tree, "install")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        'changed=yes comment="4 site files put in place after one check, 0 refused"'
    )
    assert checks(tree) == 1
    assert live(tree, "dave") == GOOD.format(name="dave") + "# new\n"
    assert run(tree, "current").returncode == 0
    assert run(tree, "refused").returncode == 0
    # The scratch copy is gone, and the store of keys was never copied.
    assert list(tree["tmp"].iterdir()) == []


def test_a_named_bad_file_is_refused_the_others_go_live(tree) -> None:
    stage(tree, "alice", GOOD.format(name="alice") + "NoSuchDirective on\n")
    stage(tree, "bob", GOOD.format(name="bob"))
    done = run(tree, "install")
    assert done.returncode == 0
    assert "changed=yes" in done.stdout.splitlines()[-1]
    assert checks(tree) == 2
    assert live(tree, "alice") == GOOD.format(name="alice"), "the old file stays live"
    assert live(tree, "bob") == GOOD.format(name="bob")
    told = run(tree, "refused")
    assert told.returncode == 1
    assert "webarch-alice.conf (account alice) kept as it was" in told.stderr
    assert "NoSuchDirective" in told.stderr
    assert "bob" not in told.stderr
    # The scratch path is not in the message: the live one is.
    assert str(tree["apache"] / "sites-enabled" / "webarch-alice.conf") in told.stderr


def test_an_unnamed_failure_is_found_by_checking_each_alone(tree) -> None:
    stage(tree, "alice", GOOD.format(name="alice") + "NeedsMissingKey\n")
    stage(tree, "bob", GOOD.format(name="bob"))
    assert run(tree, "install").returncode == 0
    assert live(tree, "bob") == GOOD.format(name="bob")
    assert "NeedsMissingKey" not in live(tree, "alice")
    told = run(tree, "refused")
    assert "account alice" in told.stderr and "AH02572" in told.stderr
    assert "account bob" not in told.stderr


def test_a_broken_live_configuration_refuses_all(tree) -> None:
    (tree["apache"] / "apache2.conf").write_text("Broken\n")
    stage(tree, "bob", GOOD.format(name="bob"))
    done = run(tree, "install")
    assert done.returncode == 0
    assert done.stdout.splitlines()[-1].startswith("changed=no ")
    assert live(tree, "bob") is None
    told = run(tree, "refused")
    assert told.returncode == 1
    assert "without any new site file" in told.stderr
    # Fixed: the next install puts it in place.
    (tree["apache"] / "apache2.conf").write_text("IncludeOptional sites-enabled/*.conf\n")
    assert "changed=yes" in run(tree, "install").stdout
    assert run(tree, "refused").returncode == 0


def test_a_reason_is_only_told_for_the_content_it_was_about(tree) -> None:
    stage(tree, "alice", GOOD.format(name="alice") + "NoSuchDirective on\n")
    run(tree, "install")
    assert json.loads(tree["verdicts"].read_text())["webarch-alice.conf"]["reason"]
    stage(tree, "alice", GOOD.format(name="alice") + "# other\n")
    told = run(tree, "refused")
    assert "not checked yet" in told.stderr


def test_usage() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "nonsense"],
        env=program_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Usage" in proc.stderr
