"""Unit tests of archiving a home before removal (webarch_archive modules).

They work on real temporary trees, run GNU tar and, being run as root, change
owners and bind-mount directories.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import formula
import pytest

REPO = Path(__file__).resolve().parent.parent.parent

OTHER_UID = 1234

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mount)")


@pytest.fixture
def mod() -> ModuleType:
    """The execution module."""
    return formula.load("_modules/webarch_archive.py")


@pytest.fixture
def state(mod: ModuleType) -> Iterator[ModuleType]:
    """The state module, wired to the execution module, not in test mode."""
    # Salt's import hook must not see pytest's collection: imported here.
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_archive.py")
    functions = {
        f"webarch_archive.{fn}": getattr(mod, fn)
        for fn in (
            "archive_dir_tree",
            "archive_path",
            "latest_archive",
            "mounts_below",
            "remove_tree",
        )
    }
    with LoaderModuleMock({module: {"__salt__": functions, "__opts__": {"test": False}}}):
        yield module


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def write(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Create a file with ``data`` and ``mode`` (and its parent directories)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def make_tree(base: Path) -> Path:
    """Build a home with every kind of entry an archive must keep; return it."""
    home = base / "alice"
    home.mkdir()
    home.chmod(0o750)
    write(home / ".profile", "# hidden\n", 0o600)
    write(home / ".config" / "app" / "settings.ini", "[x]\ny = 1\n", 0o640)
    write(home / "public_html" / "index.html", "<h1>alice</h1>\n")
    write(home / "public_html" / "cgi" / "run.sh", "#!/bin/sh\necho hi\n", 0o755)
    write(home / "public_html" / "a" / "b" / "c" / "deep.txt", "deep\n", 0o444)
    write(home / "file with spaces é ü 日本.txt", "unicode\n")
    write(home / "ünïcödé dir" / "tab\tand\nnewline", "odd name\n")
    write(home / "big.bin", os.urandom(300_000), 0o600)
    write(home / "empty-file", b"")
    (home / "empty").mkdir(mode=0o700)
    (home / "sticky").mkdir()
    (home / "sticky").chmod(0o1777)
    os.symlink("public_html/index.html", home / "link")
    os.symlink("does/not/exist", home / "dangling")
    os.symlink("public_html", home / "dirlink")
    os.symlink("/etc", home / "absolute-link")
    os.link(home / "public_html" / "index.html", home / "hard.html")
    os.mkfifo(home / "fifo", 0o620)
    other = write(home / "theirs" / "data.txt", "owned by someone else\n", 0o640)
    os.chown(other.parent, OTHER_UID, OTHER_UID)
    os.chown(other, OTHER_UID, OTHER_UID)
    (other.parent).chmod(0o2775)
    setuid = write(home / "theirs" / "tool", "#!/bin/sh\n", 0o755)
    os.chown(setuid, OTHER_UID, 0)
    setuid.chmod(0o4755)
    os.lchown(home / "dangling", OTHER_UID, OTHER_UID)
    return home


def describe(path: Path) -> tuple:
    """What must survive a round trip of one entry."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        content: object = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        content = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        content = None
    size = info.st_size if stat.S_ISREG(info.st_mode) else 0
    mode = None if stat.S_ISLNK(info.st_mode) else info.st_mode
    return (stat.S_IFMT(info.st_mode), mode, info.st_uid, info.st_gid, size, content)


def tree_state(home: Path) -> tuple[dict[str, tuple], set[frozenset[str]]]:
    """Every entry below ``home`` (relative name -> description), and hard-link groups."""
    entries = {".": describe(home)}
    inodes: dict[tuple[int, int], set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for child in dirnames + filenames:
            path = Path(dirpath) / child
            rel = str(path.relative_to(home))
            entries[rel] = describe(path)
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                inodes.setdefault((info.st_dev, info.st_ino), set()).add(rel)
    links = {frozenset(names) for names in inodes.values() if len(names) > 1}
    return entries, links


def extract(archive: str, dest: Path) -> None:
    """Extract ``archive`` with GNU tar, keeping permissions and owners."""
    dest.mkdir()
    subprocess.run(["tar", "-xpf", archive, "-C", str(dest)], check=True)


def files_in(directory: Path) -> list[str]:
    """The names in ``directory``, sorted."""
    return sorted(os.listdir(directory))


@pytest.fixture
def bind_mount(tmp_path: Path):
    """Bind-mount a directory somewhere; yields a function ``mount(source, target)``."""
    mounted: list[Path] = []

    def mount(source: Path, target: Path) -> None:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        mounted.append(target)

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=True)


# --------------------------------------------------------------------------
# Mounts
# --------------------------------------------------------------------------

MOUNTINFO = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
61 22 254:1 /srv/data /home/alice/my\\040files rw,relatime shared:1 - ext4 /dev/vda1 rw
62 22 254:1 /srv/x /home/back\\134slash\\011tab rw,relatime shared:1 - ext4 /dev/vda1 rw
63 22 254:1 /srv/y /home/\\303\\274ber rw,relatime shared:1 - ext4 /dev/vda1 rw
"""


def test_parse_mountinfo_decodes_escapes(mod):
    assert mod._parse_mountinfo(MOUNTINFO) == [
        "/",
        "/proc",
        "/home/alice/my files",
        "/home/back\\slash\ttab",
        "/home/über",
    ]


def test_parse_mountinfo_ignores_blank_lines(mod):
    assert mod._parse_mountinfo("\n") == []


def test_mounts_below_sees_a_real_bind_mount(mod, tmp_path, bind_mount):
    home = make_tree(tmp_path)
    target = home / "public_html" / "a"
    assert mod.mounts_below(str(home)) == []
    bind_mount(tmp_path, target)
    assert mod.mounts_below(str(home)) == [str(target)]
    assert mod.mounts_below(str(target)) == [str(target)]
    assert mod.mounts_below(str(home / "public_html" / "cgi")) == []
    assert mod.mounts_below(str(tmp_path / "alic")) == []


def test_mounts_below_matches_whole_components_only(mod, tmp_path, bind_mount):
    (tmp_path / "alice2").mkdir()
    (tmp_path / "alice").mkdir()
    bind_mount(tmp_path / "alice", tmp_path / "alice2")
    assert mod.mounts_below(str(tmp_path / "alice")) == []


# --------------------------------------------------------------------------
# Archiving
# --------------------------------------------------------------------------


def test_archive_round_trip_keeps_everything(mod, tmp_path):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives" / "webarch"
    before = tree_state(home)

    result = mod.archive_dir_tree("alice", str(home), str(archive_dir))

    archive = result["archive"]
    assert re.fullmatch(rf"{re.escape(str(archive_dir))}/alice-\d{{8}}T\d{{6}}Z\.tar\.gz", archive)
    assert files_in(archive_dir) == [os.path.basename(archive)]
    assert result["bytes"] == os.path.getsize(archive)
    assert result["files"] == len(before[0])
    archive_info = os.stat(archive)
    assert stat.S_IMODE(archive_info.st_mode) == 0o600
    assert (archive_info.st_uid, archive_info.st_gid) == (0, 0)
    dir_info = os.stat(archive_dir)
    assert stat.S_IMODE(dir_info.st_mode) == 0o700
    assert (dir_info.st_uid, dir_info.st_gid) == (0, 0)
    assert tree_state(home) == before

    extract(archive, tmp_path / "restored")
    assert files_in(tmp_path / "restored") == ["alice"]
    assert tree_state(tmp_path / "restored" / "alice") == before


def test_archive_skips_sockets(mod, tmp_path):
    home = tmp_path / "alice"
    write(home / "data", "x")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(home / "app.sock"))
        result = mod.archive_dir_tree("alice", str(home), str(tmp_path / "archives"))
    assert result["files"] == 2


def test_archive_leaves_an_existing_archive_dir_alone(mod, tmp_path):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives"
    archive_dir.mkdir(mode=0o750)
    write(archive_dir / "bob-20240101T000000Z.tar.gz", "old")
    result = mod.archive_dir_tree("alice", str(home), str(archive_dir))
    assert stat.S_IMODE(archive_dir.stat().st_mode) == 0o750
    assert files_in(archive_dir) == sorted(
        ["bob-20240101T000000Z.tar.gz", os.path.basename(result["archive"])]
    )


@pytest.mark.parametrize("kind", ["missing", "file", "symlink", "relative"])
def test_archive_refuses_what_is_not_a_directory(mod, tmp_path, kind):
    target = tmp_path / "alice"
    if kind == "file":
        write(target, "x")
    elif kind == "symlink":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    elif kind == "relative":
        target = Path("alice")
    with pytest.raises(mod.CommandExecutionError):
        mod.archive_dir_tree("alice", str(target), str(tmp_path / "archives"))
    assert not (tmp_path / "archives").exists()


@pytest.mark.parametrize("name", ["", "../alice", "a/b", "-alice", "alice bob"])
def test_archive_refuses_bad_names(mod, tmp_path, name):
    home = make_tree(tmp_path)
    with pytest.raises(mod.CommandExecutionError, match="invalid archive name"):
        mod.archive_dir_tree(name, str(home), str(tmp_path / "archives"))


def test_archive_refuses_an_archive_dir_inside_the_tree(mod, tmp_path):
    home = make_tree(tmp_path)
    with pytest.raises(mod.CommandExecutionError, match="lies inside"):
        mod.archive_dir_tree("alice", str(home), str(home / "archives"))
    assert not (home / "archives").exists()


def test_archive_refuses_a_mount_below(mod, tmp_path, bind_mount):
    home = make_tree(tmp_path)
    outside = tmp_path / "outside"
    write(outside / "precious", "keep me")
    bind_mount(outside, home / "empty")
    with pytest.raises(mod.CommandExecutionError, match="mounted at or below"):
        mod.archive_dir_tree("alice", str(home), str(tmp_path / "archives"))
    assert not (tmp_path / "archives").exists()


def test_failed_verification_leaves_no_archive(mod, tmp_path, monkeypatch):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives"

    def broken(archive: str, snapshot: object) -> int:
        assert archive.endswith(".tar.gz.partial") and os.path.exists(archive)
        raise mod.CommandExecutionError("verification failed: injected")

    monkeypatch.setattr(mod, "_verify", broken)
    with pytest.raises(mod.CommandExecutionError, match="injected"):
        mod.archive_dir_tree("alice", str(home), str(archive_dir))
    assert files_in(archive_dir) == []


def test_failed_tar_leaves_no_archive(mod, tmp_path, monkeypatch):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives"
    monkeypatch.setattr(mod, "TAR_COMMAND", ("tar", "--create", "--no-such-option"))
    with pytest.raises(mod.CommandExecutionError, match="tar of"):
        mod.archive_dir_tree("alice", str(home), str(archive_dir))
    assert files_in(archive_dir) == []


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda home: (home / "public_html" / "index.html").chmod(0o600), "hard.html"),
        (lambda home: os.chown(home / ".profile", OTHER_UID, 0), ".profile"),
        (lambda home: write(home / "big.bin", "shorter", 0o600), "big.bin"),
        (lambda home: (home / "empty-file").unlink(), "in the archive but not in the tree"),
        (lambda home: write(home / "new", ""), "in the tree but not in the archive"),
        (lambda home: os.replace(home / "dangling", home / "link"), "alice/link"),
        (lambda home: (home / "hard.html").unlink() or write(home / "hard.html", ""), "hard"),
    ],
)
def test_verify_detects_differences(mod, tmp_path, change, problem):
    home = make_tree(tmp_path)
    archive = tmp_path / "alice.tar.gz"
    with archive.open("wb") as handle:
        mod._run_tar(str(home), handle.fileno())
    assert mod._verify(str(archive), mod._snapshot(str(home))) == len(tree_state(home)[0])
    change(home)
    with pytest.raises(mod.CommandExecutionError, match=re.escape(problem)):
        mod._verify(str(archive), mod._snapshot(str(home)))


def test_verify_detects_a_truncated_archive(mod, tmp_path):
    home = make_tree(tmp_path)
    archive = tmp_path / "alice.tar.gz"
    with archive.open("wb") as handle:
        mod._run_tar(str(home), handle.fileno())
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(mod.CommandExecutionError, match="cannot read"):
        mod._verify(str(archive), mod._snapshot(str(home)))


def test_latest_archive(mod, tmp_path):
    assert mod.latest_archive("alice", str(tmp_path / "missing")) is None
    for name in (
        "alice-20240101T000000Z.tar.gz",
        "alice-20250301T120000Z.tar.gz",
        "alice-20250301T115959Z.tar.gz",
        "alice-20990101T000000Z.tar.gz.partial",
        "alice-bob-20990101T000000Z.tar.gz",
        "alicex-20990101T000000Z.tar.gz",
    ):
        write(tmp_path / name, "")
    assert mod.latest_archive("alice", str(tmp_path)) == str(
        tmp_path / "alice-20250301T120000Z.tar.gz"
    )
    assert mod.latest_archive("alice-bob", str(tmp_path)) == str(
        tmp_path / "alice-bob-20990101T000000Z.tar.gz"
    )
    assert mod.latest_archive("carol", str(tmp_path)) is None


# --------------------------------------------------------------------------
# Removing
# --------------------------------------------------------------------------


def test_remove_tree_removes_without_following_symlinks(mod, tmp_path):
    home = make_tree(tmp_path)
    outside = write(tmp_path / "outside" / "precious", "keep me")
    os.symlink(outside.parent, home / "to-outside")
    os.symlink(outside, home / "public_html" / "to-precious")
    mod.remove_tree(str(home))
    assert not os.path.lexists(home)
    assert outside.read_text() == "keep me"


def test_remove_tree_of_nothing_is_a_no_op(mod, tmp_path):
    mod.remove_tree(str(tmp_path / "missing"))


def test_remove_tree_refuses_a_symlink(mod, tmp_path):
    real = make_tree(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(mod.CommandExecutionError, match="not a directory"):
        mod.remove_tree(str(link))
    assert link.is_symlink() and (real / ".profile").exists()


def test_remove_tree_refuses_when_something_is_mounted(mod, tmp_path, monkeypatch):
    home = make_tree(tmp_path)
    monkeypatch.setattr(mod, "mounts_below", lambda path: [f"{path}/public_html"])
    with pytest.raises(mod.CommandExecutionError, match="mounted at or below"):
        mod.remove_tree(str(home))
    assert (home / "public_html" / "index.html").exists()


def test_remove_tree_refuses_a_real_bind_mount(mod, tmp_path, bind_mount):
    home = make_tree(tmp_path)
    outside = tmp_path / "outside"
    precious = write(outside / "precious", "keep me")
    bind_mount(outside, home / "empty")
    with pytest.raises(mod.CommandExecutionError, match=re.escape(str(home / "empty"))):
        mod.remove_tree(str(home))
    assert (home / "empty" / "precious").read_text() == "keep me"
    assert (home / "public_html" / "index.html").exists()
    assert precious.read_text() == "keep me"


# --------------------------------------------------------------------------
# The state
# --------------------------------------------------------------------------


def test_state_without_home_changes_nothing(state, tmp_path):
    ret = state.home_archived("alice", str(tmp_path / "alice"), str(tmp_path / "archives"))
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert "nothing to archive" in ret["comment"]
    assert not (tmp_path / "archives").exists()


def test_state_in_test_mode_predicts_and_changes_nothing(state, tmp_path, monkeypatch):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives"
    before = tree_state(home)
    monkeypatch.setitem(state.__opts__, "test", True)

    ret = state.home_archived("alice", str(home), str(archive_dir))

    assert ret["result"] is None
    assert set(ret["changes"]) == {"archived", "removed"}
    assert ret["changes"]["removed"] == str(home)
    pattern = rf"{re.escape(str(home))} -> {re.escape(str(archive_dir))}/alice-\d{{8}}T\d{{6}}Z"
    assert re.fullmatch(pattern + r"\.tar\.gz \(would be\)", ret["changes"]["archived"])
    assert tree_state(home) == before
    assert not archive_dir.exists()


def test_state_in_test_mode_reports_a_mount(state, tmp_path, monkeypatch, bind_mount):
    home = make_tree(tmp_path)
    (tmp_path / "outside").mkdir()
    bind_mount(tmp_path / "outside", home / "empty")
    monkeypatch.setitem(state.__opts__, "test", True)
    ret = state.home_archived("alice", str(home), str(tmp_path / "archives"))
    assert ret["result"] is False
    assert ret["changes"] == {}


def test_state_archives_then_removes(state, mod, tmp_path):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives"
    before = tree_state(home)

    ret = state.home_archived("alice", str(home), str(archive_dir))

    assert ret["result"] is True, ret["comment"]
    assert not os.path.lexists(home)
    archives = files_in(archive_dir)
    assert len(archives) == 1 and not archives[0].endswith(".partial")
    assert ret["changes"] == {
        "archived": str(archive_dir / archives[0]),
        "files": len(before[0]),
        "removed": str(home),
    }
    assert mod.latest_archive("alice", str(archive_dir)) == ret["changes"]["archived"]
    extract(ret["changes"]["archived"], tmp_path / "restored")
    assert tree_state(tmp_path / "restored" / "alice") == before

    again = state.home_archived("alice", str(home), str(archive_dir))
    assert again["result"] is True and again["changes"] == {}


def test_state_keeps_the_home_when_verification_fails(state, mod, tmp_path, monkeypatch):
    home = make_tree(tmp_path)
    archive_dir = tmp_path / "archives"
    before = tree_state(home)

    def broken(archive: str, snapshot: object) -> int:
        raise mod.CommandExecutionError("verification failed: injected")

    monkeypatch.setattr(mod, "_verify", broken)
    ret = state.home_archived("alice", str(home), str(archive_dir))

    assert ret["result"] is False
    assert ret["changes"] == {}
    assert "injected" in ret["comment"] and "left in place" in ret["comment"]
    assert tree_state(home) == before
    assert files_in(archive_dir) == []


def test_state_keeps_the_home_when_something_is_mounted(state, tmp_path, bind_mount):
    home = make_tree(tmp_path)
    (tmp_path / "outside").mkdir()
    bind_mount(tmp_path / "outside", home / "empty")
    ret = state.home_archived("alice", str(home), str(tmp_path / "archives"))
    assert ret["result"] is False
    assert "mounted" in ret["comment"]
    assert (home / "public_html" / "index.html").exists()


def test_state_reports_a_failed_removal_with_the_archive(state, mod, tmp_path, monkeypatch):
    home = make_tree(tmp_path)

    def refuse(path: str) -> None:
        raise mod.CommandExecutionError("cannot remove: injected")

    monkeypatch.setitem(state.__salt__, "webarch_archive.remove_tree", refuse)
    ret = state.home_archived("alice", str(home), str(tmp_path / "archives"))
    assert ret["result"] is False
    assert set(ret["changes"]) == {"archived", "files"}
    assert os.path.exists(ret["changes"]["archived"])
    assert home.exists()


# --------------------------------------------------------------------------
# A removed site: its application's database dumped first
# --------------------------------------------------------------------------


def fake_mariadb(state, monkeypatch, existing: set[str], fail: str = "") -> list[str]:
    """Stand-ins for webarch_mariadb's dump functions; return the dumps made."""
    made: list[str] = []

    def dump(name: str, dump_dir: str) -> str:
        if name == fail:
            raise RuntimeError(f"mariadb-dump {name} failed: injected")
        os.makedirs(dump_dir, exist_ok=True)
        path = os.path.join(dump_dir, f"{name}-X.sql.gz")
        with open(path, "w") as handle:
            handle.write("-- Dump completed\n")
        made.append(path)
        return path

    monkeypatch.setitem(state.__salt__, "webarch_mariadb.dump", dump)
    monkeypatch.setitem(state.__salt__, "webarch_mariadb.database_exists", existing.__contains__)
    return made


def test_tree_state_dumps_the_database_then_archives(state, tmp_path, monkeypatch):
    site = make_tree(tmp_path)
    dumps = tmp_path / "archives" / "databases"
    made = fake_mariadb(state, monkeypatch, {"alice_wp"})

    ret = state.tree_archived(
        "alice.www", str(site), str(tmp_path / "archives"), ["alice_wp", "alice_gone"], str(dumps)
    )

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["dumped"] == made == [str(dumps / "alice_wp-X.sql.gz")]
    assert os.path.basename(ret["changes"]["archived"]).startswith("alice.www-")
    assert not os.path.lexists(site)


def test_tree_state_keeps_the_tree_when_the_dump_fails(state, tmp_path, monkeypatch):
    site = make_tree(tmp_path)
    before = tree_state(site)
    fake_mariadb(state, monkeypatch, {"alice_wp"}, fail="alice_wp")

    ret = state.tree_archived(
        "alice.www", str(site), str(tmp_path / "archives"), ["alice_wp"], str(tmp_path / "d")
    )

    assert ret["result"] is False
    assert "injected" in ret["comment"] and "left in place" in ret["comment"]
    assert tree_state(site) == before
    assert not (tmp_path / "archives").exists()


def test_tree_state_in_test_mode_names_the_dumps(state, tmp_path, monkeypatch):
    site = make_tree(tmp_path)
    made = fake_mariadb(state, monkeypatch, {"alice_wp"})
    monkeypatch.setitem(state.__opts__, "test", True)

    ret = state.tree_archived("alice.www", str(site), str(tmp_path / "a"), ["alice_wp"])

    assert ret["result"] is None
    assert ret["changes"]["dumped"] == ["alice_wp (would be)"]
    assert made == [] and site.exists()


def test_tree_state_moves_the_tree_out_of_reach_first(state, tmp_path, monkeypatch):
    site = make_tree(tmp_path)
    before = tree_state(site)
    stage = tmp_path / "stage"
    seen: list[str] = []
    archive = state.__salt__["webarch_archive.archive_dir_tree"]

    def spy(name: str, path: str, archive_dir: str) -> dict:
        seen.append(path)
        return archive(name, path, archive_dir)

    monkeypatch.setitem(state.__salt__, "webarch_archive.archive_dir_tree", spy)
    ret = state.tree_archived("alice.www", str(site), str(tmp_path / "a"), stage_dir=str(stage))

    assert ret["result"] is True, ret["comment"]
    assert seen == [str(stage / site.name)]
    assert ret["changes"]["removed"] == str(site)
    assert not stage.exists() and not site.exists()
    extract(ret["changes"]["archived"], tmp_path / "restored")
    assert tree_state(tmp_path / "restored" / site.name) == before


def test_tree_state_refuses_a_symlink_swapped_in(state, tmp_path):
    """The owner swaps the tree for a symlink to someone else's: refused, nothing lost."""
    site = make_tree(tmp_path)
    other = tmp_path / "bob-www"
    write(other / "index.html", "bob's")
    site.rename(tmp_path / "moved")
    site.symlink_to(other)
    stage = tmp_path / "s"
    ret = state.tree_archived("alice.www", str(site), str(tmp_path / "a"), stage_dir=str(stage))
    assert ret["result"] is False and "not a directory" in ret["comment"]
    # Swapped in after that check: moved out of the owner's reach, and refused.
    with pytest.raises(OSError, match="was not a directory"):
        state._stage(str(site), str(stage))
    assert (stage / site.name).is_symlink() and not site.exists()
    assert (other / "index.html").read_text() == "bob's"
    assert not (tmp_path / "a").exists()


def test_tree_state_takes_up_a_tree_left_staged(state, tmp_path):
    site = make_tree(tmp_path)
    stage = tmp_path / "stage"
    stage.mkdir()
    site.rename(stage / site.name)
    ret = state.tree_archived("alice.www", str(site), str(tmp_path / "a"), stage_dir=str(stage))
    assert ret["result"] is True, ret["comment"]
    assert os.path.exists(ret["changes"]["archived"]) and not stage.exists()
