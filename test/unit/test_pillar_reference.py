"""The README's pillar reference: generated from the key tables, and current."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import ModuleType

import pillar_reference as ref
import pytest
import webarch_check as check
import webarch_layout
import webarch_paths

CONCERNS = (ref.model, ref.db, ref.mail, ref.php, ref.web, webarch_layout)

#: What stands for the upper-case parts of a block's path in a test pillar.
NAMES = {"USERNAME": "alice", "SITE": "www", "NAME": "alice_db", "N": 0}


def tables(module: ModuleType) -> dict[str, check.KeyTable]:
    """The key tables a module defines."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, dict)
        and value
        and all(isinstance(key, check.Key) for key in value.values())
    }


def test_the_readme_is_current() -> None:
    assert ref.main(["--check"]) == 0


def test_check_fails_on_a_stale_copy_and_write_mends_it(tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.rst"
    shutil.copy(ref.README, readme)
    current = readme.read_text()
    readme.write_text(current.replace("The server's fully qualified name.", "Stale."))
    assert ref.main(["--check", "--readme", str(readme)]) == 1
    out = capsys.readouterr().out
    assert "-   Stale." in out
    assert "+   The server's fully qualified name." in out
    assert "stale" in out.splitlines()[-1]
    assert ref.main(["--write", "--readme", str(readme)]) == 0
    assert readme.read_text() == current
    assert ref.main(["--check", "--readme", str(readme)]) == 0


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.rst"
    readme.write_text(ref.README.read_text().replace(ref.END, ""))
    with pytest.raises(SystemExit, match="pillar-reference-end"):
        ref.main(["--check", "--readme", str(readme)])


def test_every_key_table_is_in_the_reference() -> None:
    listed = {id(block.table) for block in ref.BLOCKS}
    for module in CONCERNS:
        for name, table in tables(module).items():
            assert id(table) in listed, f"{module.__name__}.{name} is not in BLOCKS"


def test_every_key_has_its_name_a_kind_and_a_doc() -> None:
    for block in ref.BLOCKS:
        for name, key in block.table.items():
            assert key.name == name
            assert key.kind and key.doc.endswith("."), (block.title, name)
            assert f"``{name}`` (" in ref.generate()


def test_the_reset_keys_are_the_notification_kinds() -> None:
    assert list(ref.mail.RESET_KEYS) == list(webarch_paths.NOTIFY_MARKERS)


def test_the_constant_defaults_are_what_the_validators_see() -> None:
    assert check.defaults(ref.php.PHP_KEYS) == ref.php.PHP_DEFAULTS
    first = check.defaults(ref.php.PHP_KEYS)
    first["disable_functions"].append("mail")
    assert "mail" not in check.defaults(ref.php.PHP_KEYS)["disable_functions"]
    assert "docroot" not in check.defaults(ref.web.SITE_KEYS)


def pillar_with(path: tuple[str, ...], key: str, value: object) -> tuple[dict, str]:
    """A valid pillar but for ``key`` of the block at ``path``; the key's pillar path."""
    redirect = {"from": "/a", "to": "/b"}
    site = {"server_name": "www.alice.example", "redirects": [redirect]}
    pillar: dict = {"accounts": {"alice": {"sites": {"www": site}, "databases": {"alice_db": {}}}}}
    here: object = pillar
    parts = [NAMES.get(part, part) for part in path]
    for part in parts:
        here = here[part] if isinstance(here, list) else here.setdefault(part, {})
    here[key] = value
    return pillar, ":".join(["webarch", *map(str, parts), key])


def ranged_keys() -> list[tuple[tuple[str, ...], check.Key, str, str]]:
    """Every key whose kind gives a range: integers and php.ini sizes."""
    found = []
    for block in ref.BLOCKS:
        for key in block.table.values():
            match = re.search(r"(?:integer|seconds|size) ([0-9]+[KMG]?)-([0-9]+[KMG]?)$", key.kind)
            if match:
                found.append((block.path, key, match[1], match[2]))
    return found


def outside(low: str, high: str) -> list[object]:
    """A value just below and one just above a range."""
    if low.isdigit():
        return [int(low) - 1, int(high) + 1]
    return [f"{check.size_bytes(low) // 1024 - 1}K", f"{int(high[:-1]) + 1}{high[-1]}"]


@pytest.mark.parametrize(
    ("path", "key", "low", "high"),
    ranged_keys(),
    ids=lambda v: v.name if isinstance(v, check.Key) else None,
)
def test_the_ranges_in_the_reference_are_the_validators(model, path, key, low, high) -> None:
    host = model.HostUsers(users={}, groups={})
    for value in outside(low, high):
        pillar, where = pillar_with(path, key.name, value)
        with pytest.raises(model.ModelError) as caught:
            model.build_model(pillar, host)
        assert f"{where}: must be between {low} and {high}, not {value}" in caught.value.problems
