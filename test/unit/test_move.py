"""Moving an account between servers: the pure parts (``_utils/webarch_move.py``, issue 20)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import webarch_move as move
import webarch_move_files as files


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
    moved = files.merge(str(copy), str(home), str(aside))
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


def test_a_second_walk_reads_only_what_changed_and_the_delta_says_what_to_send(
    tmp_path: Path,
) -> None:
    root = tmp_path / "home"
    (root / "sites/www").mkdir(parents=True)
    for name in ("same.txt", "changed.txt", "gone.txt", "becomes-dir"):
        (root / "sites/www" / name).write_text(name)
    first = move.tree_manifest(str(root))
    # Walked long enough after the changes: nothing is racy.
    first["started_ns"] += 10 * move.RACY_NS
    (root / "sites/www/changed.txt").write_text("new content")
    (root / "sites/www/gone.txt").unlink()
    (root / "sites/www/becomes-dir").unlink()
    (root / "sites/www/becomes-dir").mkdir()
    (root / "sites/www/new.txt").write_text("new")
    second = move.tree_manifest(str(root), known=first)
    assert second["files"] == move.tree_manifest(str(root))["files"]  # the same answer
    send, gone = move.delta(first, second)
    assert send == [".", "sites", "sites/www", "sites/www/becomes-dir", "sites/www/changed.txt",
                    "sites/www/new.txt"]  # fmt: skip
    assert gone == ["sites/www/becomes-dir", "sites/www/gone.txt"]


def test_a_file_changed_in_the_walks_own_clock_tick_is_read_again(tmp_path: Path) -> None:
    """Racy: a file whose ctime is not older than the first walk by RACY_NS is not
    trusted even when its stat is the same (a change in the same tick keeps it)."""
    root = tmp_path / "home"
    root.mkdir()
    (root / "f").write_text("x")
    first = move.tree_manifest(str(root))
    assert "f" in move.tree_manifest(str(root), known=first)["read"]
    first["started_ns"] += 10 * move.RACY_NS
    assert "f" not in move.tree_manifest(str(root), known=first)["read"]
    # A trusted entry is taken as it was: a forged one shows it is not read again.
    first["files"]["f"][5] = "forged"
    assert move.tree_manifest(str(root), known=first)["files"]["f"][5] == "forged"


def test_a_partial_merge_brings_changes_in_and_keeps_the_rest(tmp_path: Path) -> None:
    """After a pre-copy, the last copy holds changes only: what it lacks stays."""
    delta, home, aside = tmp_path / "delta", tmp_path / "home", tmp_path / "aside"
    (home / "sites").mkdir(parents=True)
    (home / "sites/kept.txt").write_text("pre-copied")
    (home / "sites/changed.txt").write_text("stale")
    (delta / "sites").mkdir(parents=True)
    (delta / "sites/changed.txt").write_text("fresh")
    assert files.merge(str(delta), str(home), str(aside), prune=False) == 1
    assert (home / "sites/kept.txt").read_text() == "pre-copied"
    assert (home / "sites/changed.txt").read_text() == "fresh"
    assert (aside / "sites/changed.txt").read_text() == "stale"


def test_a_pre_copy_and_the_changes_after_it_make_an_equal_tree(tmp_path: Path) -> None:
    """The move's two copies with real tar: the pre-copy of the whole home, then only
    what changed (sent, gone); the new home equals the old one and the last walk
    reads again only what came in the last copy."""
    old = tmp_path / "old" / "alice"
    (old / "sites/www/sub").mkdir(parents=True)
    (old / "private").mkdir()
    for rel in ("sites/www/index.html", "sites/www/sub/keep.bin", "private/gone.txt",
                "private/turns-dir"):  # fmt: skip
        (old / rel).write_bytes(os.urandom(3000))
    (old / "sites/www/link").symlink_to("index.html")
    os.chmod(old / "sites/www/sub", 0o2750)
    pre = move.tree_manifest(str(old))
    pre["started_ns"] += 10 * move.RACY_NS  # as if walked well after the last change
    archive = tmp_path / "pre.tar.gz"
    subprocess.run([*files.CREATE, f"--file={archive}", f"--directory={old.parent}", "alice"],
                   check=True)  # fmt: skip
    stage, home = tmp_path / "stage", tmp_path / "new" / "alice"
    stage.mkdir()
    (home / "sites/www").mkdir(parents=True)
    (home / "sites/www/readme.html").write_text("a fresh install's")
    files.extract(str(archive), str(stage))
    files.merge(str(stage / "alice"), str(home), str(tmp_path / "aside-1"))
    new_pre = move.tree_manifest(str(home))
    new_pre["started_ns"] += 10 * move.RACY_NS
    # She works on until the suspension.
    (old / "sites/www/index.html").write_text("edited")
    (old / "private/gone.txt").unlink()
    (old / "private/turns-dir").unlink()
    (old / "private/turns-dir").mkdir()
    (old / "private/turns-dir/new.txt").write_text("new")
    now = move.tree_manifest(str(old), known=pre)
    send, gone = move.delta(pre, now)
    assert "sites/www/sub/keep.bin" not in send
    delta = tmp_path / "delta.tar.gz"
    files.tar_entries(str(old.parent), "alice", send, str(delta))
    for rel in gone:
        files.remove(str(home / rel))
    files.extract(str(delta), str(stage))
    files.merge(str(stage / "alice"), str(home), str(tmp_path / "aside-2"), prune=False)
    found = move.tree_manifest(str(home), known=new_pre)
    assert move.compare(now, found) == []
    assert not [r for r in found["read"] if r.endswith("keep.bin")]
    assert (tmp_path / "aside-1/sites/www/readme.html").exists()


def test_a_password_still_pending_is_named_for_the_move_to_wait() -> None:
    entries = {"ssh": {"state": "sent"}, "app-blog": {"state": "pending"},
               "mariadb": {"state": "pending"}, "app-wiki": "junk"}  # fmt: skip
    assert move.pending_moved(entries) == ["app-blog"]  # mariadb is issued again anyway
    assert move.pending_moved(None) == []
