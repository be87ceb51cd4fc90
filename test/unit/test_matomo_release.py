"""Unit tests of Matomo's release handling (_modules/webarch_matomo_release.py):
which old release trees an upgrade leaves beside the site and which a prune
removes (the pure choice, then real directories and a real archive swapped in).

The account's commands (``setpriv`` to the instance's account) run as the test's
own user; Salt's loader is pytest-salt-factories' LoaderModuleMock.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import formula
import pytest

NAME = "matomo"


def stale(entries: list[str], keep: int = 1) -> list[str]:
    return formula.load("_modules/webarch_matomo_release.py")._stale(entries, NAME, keep)


# --------------------------------------------------------------------------
# The pure choice
# --------------------------------------------------------------------------


def test_one_previous_release_is_kept_the_older_go_oldest_first():
    entries = [
        ".matomo-5.0.3-20250301120000",
        ".matomo-5.0.1-20240101000000",
        ".matomo-5.0.2-20250101090000",
    ]
    assert stale(entries) == [".matomo-5.0.1-20240101000000", ".matomo-5.0.2-20250101090000"]


def test_newest_is_by_time_not_by_name_or_version():
    # A release rolled back by hand and upgraded again: its time makes it newest.
    entries = [".matomo-5.1.0-20250101000000", ".matomo-5.0.9-20250601000000"]
    assert stale(entries) == [".matomo-5.1.0-20250101000000"]


def test_a_lone_previous_release_stays():
    assert stale([".matomo-5.0.2-20250101090000"]) == []
    assert stale([]) == []


def test_keep_zero_is_every_tree_what_an_upgrade_with_a_swap_predicts():
    entries = [".matomo-5.0.2-20250101090000", ".matomo-5.0.1-20240101000000"]
    assert stale(entries, keep=0) == [
        ".matomo-5.0.1-20240101000000",
        ".matomo-5.0.2-20250101090000",
    ]
    assert stale(entries, keep=-1) == stale(entries, keep=0)
    assert stale(entries, keep=5) == []


@pytest.mark.parametrize(
    "entry",
    [
        "matomo",  # the site itself
        ".matomo-new",  # a swap that did not happen (unpacked again by the next one)
        ".matomo-notes",  # the account's own
        ".matomo-5.0.2",  # no time
        ".matomo-5.0.2-2025010109",  # not a whole time
        ".matomo-5.0.2-20250101090000.tar.gz",
        ".matomo-old-5.0.2-20240101000000",  # another directory's (matomo-old)
        ".wiki-5.0.2-20240101000000",  # another site's
        "matomo-5.0.2-20240101000000",  # not hidden: not an upgrade's
    ],
)
def test_only_an_upgrades_names_are_ever_chosen(entry):
    assert stale([entry, ".matomo-5.0.3-20250101090000"], keep=0) == [
        ".matomo-5.0.3-20250101090000"
    ]


def test_release_candidates_and_an_unknown_old_version_count():
    entries = [".matomo-5.1.0-rc1-20250101000000", ".matomo--20240101000000"]
    assert stale(entries, keep=0) == [".matomo--20240101000000", ".matomo-5.1.0-rc1-20250101000000"]


def test_another_site_name_is_escaped():
    mod = formula.load("_modules/webarch_matomo_release.py")
    entries = [".stats.x-5.0.2-20240101000000", ".statsax-5.0.2-20240101000000"]
    assert mod._stale(entries, "stats.x", 0) == [".stats.x-5.0.2-20240101000000"]


# --------------------------------------------------------------------------
# Real directories: an upgrade's swap, then its prune
# --------------------------------------------------------------------------


def release(path: Path, version: str) -> str:
    """A release archive with Matomo's layout (matomo/...), as ``version``."""
    files = {
        "matomo/console": "#!/usr/bin/env php\n",
        "matomo/core/Version.php": f"<?php\nclass Version {{ const VERSION = '{version}'; }}\n",
        "matomo/config/global.ini.php": "; defaults\n",
        "matomo/plugins/CoreHome/plugin.json": "{}\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


class Instance:
    """The module loaded over a site in ``tmp_path``, the account's commands run as us."""

    def __init__(self, module: Any, tmp_path: Path) -> None:
        self.mod = module
        self.sites = tmp_path / "home" / "carol-stats" / "sites"
        self.docroot = self.sites / NAME
        self.local = {
            "account": "carol-stats",
            "docroot": str(self.docroot),
            "config": str(self.docroot / "config" / "config.ini.php"),
            "fpm_unit": "webarch-php@carol-stats.service",
        }
        self.console: list[tuple[str, ...]] = []
        self.reloaded: list[list[str]] = []
        self.tmp = tmp_path

    def config(self) -> dict:
        return {"matomo": {"local": self.local}}

    def retcode(self, argv: list[str], python_shell: bool = True) -> int:
        assert python_shell is False
        self.reloaded.append(argv)
        return 0

    def status(self) -> dict:
        text = (self.docroot / "core" / "Version.php").read_text()
        return {"version": self.mod.VERSION_RE.search(text).group(1)}

    def archive(self, version: str) -> tuple[str, str]:
        path = release(self.tmp / f"matomo-{version}.tar.gz", version)
        return path, hashlib.sha256(Path(path).read_bytes()).hexdigest()

    def trees(self) -> list[str]:
        return sorted(p.name for p in self.sites.iterdir() if p.name != NAME)


@pytest.fixture
def instance(tmp_path, monkeypatch) -> Iterator[Instance]:
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_modules/webarch_matomo_release.py")
    fixture = Instance(module, tmp_path)
    monkeypatch.setattr(module.paths, "MATOMO_RELEASE_PATH", str(tmp_path / "state/release.json"))

    def as_account(local: dict, argv: list[str], stdin: Any = None) -> None:
        proc = subprocess.run(argv, stdin=stdin, capture_output=True, check=False)
        if proc.returncode != 0:
            raise module.CommandExecutionError(f"{' '.join(argv[:2])}: {proc.stderr.decode()}")

    monkeypatch.setattr(module, "_as_account", as_account)
    times = iter(["20250101090000", "20250301120000", "20250601000000"])
    monkeypatch.setattr(module, "time", SimpleNamespace(strftime=lambda _: next(times)))
    functions = {
        "webarch.config": fixture.config,
        "webarch_matomo_setup.status": fixture.status,
        "webarch_matomo_setup.console": lambda *args: fixture.console.append(args),
        "cmd.retcode": fixture.retcode,
    }
    with LoaderModuleMock({module: {"__salt__": functions, "__context__": {}}}):
        # The installed instance: 5.0.2 with its config, and an older tree kept by
        # an upgrade before this one; beside them, the account's own hidden files.
        module._extract(
            fixture.local, release(tmp_path / "first.tar.gz", "5.0.2"), str(fixture.docroot)
        )
        (fixture.docroot / "config" / "config.ini.php").write_text('[General]\nsalt = "s"\n')
        (fixture.sites / ".matomo-5.0.1-20240101000000" / "tmp").mkdir(parents=True)
        (fixture.sites / ".matomo-notes").mkdir()
        (fixture.sites / ".matomo-5.0.0-20230101000000").write_text("a file, not a tree\n")
        (fixture.sites / ".matomo-4.0.0-20220101000000").symlink_to(tmp_path)
        module._record("0" * 64, "5.0.2")
        yield fixture


def test_an_upgrade_keeps_the_previous_release_only(instance):
    mod, sites = instance.mod, instance.sites
    older = f"{sites}/.matomo-5.0.1-20240101000000"
    # What the state predicts before (test=True): with a swap, every tree there goes.
    assert mod.old_releases() == []
    assert mod.old_releases(swap=True) == [older]
    archive, sha = instance.archive("5.0.3")
    got = mod.upgrade(archive, sha)
    assert got["upgraded"] is True and got["removed"] == [older]
    assert f"the old files are in {sites}/.matomo-5.0.2-20250101090000" in got["comment"]
    assert instance.trees() == [
        ".matomo-4.0.0-20220101000000",  # a symlink: never followed, never removed
        ".matomo-5.0.0-20230101000000",  # a file: not a release tree
        ".matomo-5.0.2-20250101090000",  # the previous release, for a rollback
        ".matomo-notes",
    ]
    assert instance.status()["version"] == "5.0.3"
    assert (sites / ".matomo-5.0.2-20250101090000/config/config.ini.php").is_file()
    assert (instance.docroot / "config/config.ini.php").read_text() == '[General]\nsalt = "s"\n'
    assert instance.console == [("core:update", "--yes")]
    assert instance.reloaded == [
        ["systemctl", "try-reload-or-restart", "webarch-php@carol-stats.service"]
    ]
    assert mod.old_releases() == []

    # The next upgrade keeps 5.0.3's files and removes 5.0.2's.
    archive, sha = instance.archive("5.0.4")
    assert mod.old_releases(swap=True) == [f"{sites}/.matomo-5.0.2-20250101090000"]
    got = mod.upgrade(archive, sha)
    assert got["removed"] == [f"{sites}/.matomo-5.0.2-20250101090000"]
    assert ".matomo-5.0.3-20250301120000" in instance.trees()
    assert ".matomo-5.0.2-20250101090000" not in instance.trees()
    record = json.loads(Path(mod.paths.MATOMO_RELEASE_PATH).read_text())
    assert record == {"sha256": sha, "version": "5.0.4", "updated": True}


def test_prune_converges_on_the_newest_tree(instance):
    mod, sites = instance.mod, instance.sites
    (sites / ".matomo-5.0.1-20240601000000").mkdir()
    assert mod.old_releases() == [f"{sites}/.matomo-5.0.1-20240101000000"]
    assert mod.prune()["removed"] == [f"{sites}/.matomo-5.0.1-20240101000000"]
    assert mod.prune() == {"removed": [], "comment": ""}
    assert ".matomo-5.0.1-20240601000000" in instance.trees()


def test_a_tree_that_cannot_be_removed_says_which_after_the_upgrade(instance, monkeypatch):
    mod = instance.mod
    archive, sha = instance.archive("5.0.3")
    swapped = mod._as_account

    def refuse_rm(local: dict, argv: list[str], stdin: Any = None) -> None:
        if argv[0] == "rm":
            raise mod.CommandExecutionError("rm -rf as carol-stats: Permission denied")
        swapped(local, argv, stdin)

    monkeypatch.setattr(mod, "_as_account", refuse_rm)
    with pytest.raises(mod.CommandExecutionError) as error:
        mod.upgrade(archive, sha)
    message = str(error.value)
    assert message.startswith("Matomo 5.0.2 -> 5.0.3; the old files are in ")
    assert ".matomo-5.0.1-20240101000000 was not removed: rm -rf as carol-stats" in message
    # The upgrade itself is done and recorded: the next run only prunes.
    assert instance.status()["version"] == "5.0.3"
    assert mod.due(archive, sha) == ""


def test_a_release_not_fetched_yet_is_an_upgrade_to_an_unknown_version(instance):
    # test=True before the run that fetches the new archive: no traceback, a prediction.
    mod = instance.mod
    missing = str(instance.tmp / "releases" / "matomo-0123456789abcdef.tar.gz")
    sha = "0123456789abcdef" + "0" * 48
    assert mod.due(missing, sha) == "the release 0123456789abcdef (not fetched yet)"
    with pytest.raises(mod.CommandExecutionError, match="No such file or directory: not unpacked"):
        mod.upgrade(missing, sha)
    broken = instance.tmp / "broken.tar.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(mod.CommandExecutionError, match="not a readable release archive"):
        mod.due(str(broken), hashlib.sha256(b"not gzip").hexdigest())
