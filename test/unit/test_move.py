"""Moving an account between servers: the pure parts (``_utils/webarch_move.py``, issue 20)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import webarch_move as move


def pillar(**accounts: dict) -> dict:
    return {"webarch": {"accounts": accounts}}


def www(name: str) -> dict:
    return {"sites": {"www": {"server_name": name}}}


def test_a_request_is_validated_naming_each_pillar_path() -> None:
    assert move.request({"account": "alice", "from": "web1", "to": "web2"}) == {
        "account": "alice", "from": "web1", "to": "web2", "switch_cmd": "",
    }  # fmt: skip
    with pytest.raises(move.MoveError) as bad:
        move.request({"account": "Alice!", "from": "web1", "to": 3, "switch_cmd": ["x"], "x": 1})
    text = str(bad.value)
    for path in ("webarch_move:account", "webarch_move:to", "webarch_move:switch_cmd", "['x']"):
        assert path in text
    assert "webarch_move:from" not in text
    with pytest.raises(move.MoveError, match="webarch_move:to: the same server"):
        move.request({"account": "alice", "from": "web1", "to": "web1"})
    with pytest.raises(move.MoveError, match="a mapping"):
        move.request(None)


def test_the_moving_account_may_be_on_both_servers_but_nothing_else() -> None:
    pillars = {
        "web1": pillar(alice=www("www.alice.example"), dave=www("www.dave.example")),
        "web2": pillar(alice=www("www.alice.example"), bob=www("www.bob.example")),
    }
    assert move.move_clashes(pillars, "alice", "web1", "web2") == []
    pillars["web2"]["webarch"]["accounts"]["bob"] = www("www.dave.example")
    assert move.move_clashes(pillars, "alice", "web1", "web2") == [
        "site name www.dave.example is served by 2 servers: "
        "web1 webarch:accounts:dave:sites:www:server_name; "
        "web2 webarch:accounts:bob:sites:www:server_name"
    ]


def test_the_account_must_be_in_both_pillars() -> None:
    pillars = {"web1": pillar(alice={}), "web2": pillar(alice={"state": "absent"})}
    assert move.move_clashes(pillars, "alice", "web1", "web2") == [
        "account alice is not present in web2's pillar (webarch:accounts:alice)"
    ]
    assert move.move_clashes(pillars, "alice", "web1", "web9") == [
        "webarch_move:to: no minion web9 among ['web1', 'web2']"
    ]


def test_site_names_and_the_switch_environment() -> None:
    data = pillar(alice={"sites": {"www": {"server_name": "www.alice.example",
                                           "aliases": ["Alice.example"]}}})  # fmt: skip
    sites = move.site_names(data, "alice")
    assert sites == ["alice.example", "www.alice.example"]
    req = move.request({"account": "alice", "from": "web1", "to": "web2"})
    assert move.switch_env(req, sites)["WEBARCH_MOVE_SITES"] == "alice.example www.alice.example"


def test_only_sent_ssh_and_application_passwords_move() -> None:
    entries = {
        "ssh": {"state": "sent", "token": ""},
        "app-www": {"state": "sent", "token": "t"},
        "mariadb": {"state": "sent", "token": ""},
        "matomo": {"state": "sent", "token": ""},
        "app-wiki": {"state": "pending", "token": ""},
    }
    assert sorted(move.moved_ledger(entries)) == ["app-www", "ssh"]
    assert move.moved_ledger(None) == {}


def tree(root: Path) -> None:
    (root / "sites" / "sub").mkdir(parents=True)
    (root / "sites" / "index.html").write_text("hello\n")
    (root / "sites" / "sub" / "odd").write_bytes(b"\0\1")
    os.chmod(root / "sites" / "sub" / "odd", 0o604)
    (root / "link").symlink_to("sites/index.html")


def test_equal_trees_have_equal_manifests(tmp_path: Path) -> None:
    tree(tmp_path / "a")
    tree(tmp_path / "b")
    one, two = move.tree_manifest(str(tmp_path / "a")), move.tree_manifest(str(tmp_path / "b"))
    assert set(one["files"]) == {".", "sites", "sites/index.html", "sites/sub", "sites/sub/odd",
                                 "link"}  # fmt: skip
    assert one["files"]["link"][0] == "l" and one["files"]["link"][5] == "sites/index.html"
    assert one["files"]["sites/sub/odd"][3] == "0604"
    assert move.compare(one, two) == []


def test_every_difference_is_named(tmp_path: Path) -> None:
    tree(tmp_path / "a")
    tree(tmp_path / "b")
    os.chmod(tmp_path / "b" / "sites" / "sub" / "odd", 0o600)
    (tmp_path / "b" / "sites" / "index.html").write_text("hullo\n")
    (tmp_path / "b" / "link").unlink()
    (tmp_path / "b" / "extra").write_text("")
    one = {**move.tree_manifest(str(tmp_path / "a")), "tables": {"d.t": "1", "d.u": "2"}}
    two = {**move.tree_manifest(str(tmp_path / "b")), "tables": {"d.t": "9"}}
    lines = move.compare(one, two)
    assert lines[0] == "files: extra is on the new server only"
    assert lines[1] == "files: link is missing on the new server"
    assert lines[2].startswith("files: sites/index.html: sha256/target '")
    assert lines[3] == "files: sites/sub/odd: mode '0604' -> '0600'"
    assert lines[4:] == [
        "tables: d.t: checksum '1' -> '9'",
        "tables: d.u is missing on the new server",
    ]
    assert move.compare(one, two, limit=2)[-1] == "... and 4 more"


def test_old_ids_map_to_this_servers_ids_by_name() -> None:
    local = {"alice": 2005, "www-data": 33, "root": 0}
    ids = {"2001": "alice", "33": "www-data", "0": "root", "4242": "4242"}
    assert move.id_map(ids, local.get) == {2001: 2005}


def test_pack_waits_longer_than_the_log_splitter_takes_to_see_a_home_gone() -> None:
    program = Path(__file__).parents[2] / "webarch/files/programs/webarch_log_split.py"
    (line,) = [x for x in program.read_text().splitlines() if x.startswith("CHECK_INTERVAL =")]
    assert float(line.split("=")[1]) == move.LOG_SPLIT_CHECK_S < move.STAGE_SETTLE_S


def test_a_marker_is_named_after_a_valid_account_only() -> None:
    assert move.checked_name("alice") == "alice"
    for bad in ("../etc", "Alice", "", None, "a/b"):
        with pytest.raises(move.MoveError, match="not a valid account name"):
            move.checked_name(bad)


def test_unpack_makes_the_home_the_copy_and_sets_aside_what_it_held(tmp_path: Path) -> None:
    """The new server's home (its first run's files: a fresh install) becomes the copy,
    the same directory; what it held beside or instead of the copy's is moved aside."""
    import formula

    module = formula.load("_modules/webarch_move.py")
    copy, home, aside = tmp_path / "copy", tmp_path / "home", tmp_path / "aside"
    for path, text in (("sites/www/index.php", "old site"), ("sites/www/wp-config.php", "old"),
                       ("private/notes.txt", "mine"), ("logs/apache.log", "")):  # fmt: skip
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_text(text)
    (copy / "sites/www/uploads").mkdir()
    for path, text in (("sites/www/index.php", "fresh install"), ("sites/www/wp-config.php", "new"),
                       ("sites/www/readme.html", "fresh"), ("logs/apache.log", "")):  # fmt: skip
        (home / path).parent.mkdir(parents=True, exist_ok=True)
        (home / path).write_text(text)
    (home / "sites/www/uploads").write_text("a file where the copy has a directory")
    os.chmod(copy, 0o750)
    inode = home.stat().st_ino
    moved = module._merge(str(copy), str(home), str(aside))
    assert move.tree_manifest(str(home))["files"].keys() >= {
        "sites/www/uploads",
        "private/notes.txt",
    }
    assert (home / "sites/www/index.php").read_text() == "old site"
    assert not (home / "sites/www/readme.html").exists() and (home / "sites/www/uploads").is_dir()
    assert home.stat().st_ino == inode and oct(home.stat().st_mode & 0o7777) == "0o750"
    assert not copy.exists()
    kept = sorted(str(p.relative_to(aside)) for p in aside.rglob("*") if p.is_file())
    assert kept == ["logs/apache.log", "sites/www/index.php", "sites/www/readme.html",
                    "sites/www/uploads", "sites/www/wp-config.php"]  # fmt: skip
    assert (aside / "sites/www/index.php").read_text() == "fresh install"
    assert moved == len(kept)
