"""Unit tests of webarch_mount's fast path (against this machine's real /proc mount)."""

from __future__ import annotations

from pathlib import Path

import formula
import pytest


@pytest.fixture
def state():
    # Salt's dunders as pytest-salt-factories' loader mock gives them (imported
    # here: Salt's import hook must not see pytest's collection).
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_mount.py")
    with LoaderModuleMock({module: {"__context__": {}, "__opts__": {"test": False}}}):
        yield module


def proc_flags() -> list[str]:
    """The flags of this machine's /proc that the fast path compares (or rw)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/proc":
            wanted = [f for f in fields[5].split(",") if f in ("nosuid", "nodev", "noexec")]
            return wanted or ["rw"]
    pytest.skip("no /proc mount")


def test_fast_path_needs_the_mount_its_flags_and_its_exact_fstab_line(state, tmp_path):
    flags = proc_flags()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# comment\nproc /proc proc {','.join(flags)} 0 0\n")
    assert state.is_right("/proc", "proc", "proc", flags, str(fstab))
    state.__context__.clear()
    assert not state.is_right("/proc", "proc", "proc", ["ro"], str(fstab))
    assert not state.is_right("/no/such/mount", "proc", "proc", flags, str(fstab))
    fstab.write_text("")
    state.__context__.clear()
    assert not state.is_right("/proc", "proc", "proc", flags, str(fstab))


def test_anything_else_goes_to_salts_mount_mounted(state, tmp_path):
    calls = []
    state.__states__ = {"mount.mounted": lambda **kw: calls.append(kw) or {"result": True}}
    state.__context__["webarch_mount.active"] = {"/x": ("ext4", {"rw"})}  # something else
    ret = state.mounted("/x", "/y", "none", ["bind"], config=str(tmp_path / "fstab"))
    assert ret == {"result": True}
    assert calls[0]["name"] == "/x" and calls[0]["opts"] == ["bind"]
    assert "webarch_mount.active" not in state.__context__  # dropped: it may change


class FakeMount:
    """cmd.run_all standing in for mount(8): records the commands, answers ``retcode``."""

    def __init__(self, retcode: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.retcode = retcode

    def __call__(self, cmd: list[str], python_shell: bool = False) -> dict:
        assert python_shell is False
        self.calls.append(cmd)
        return {"retcode": self.retcode, "stdout": "", "stderr": "mount: boom"}


def test_a_first_mount_is_made_without_salts_mount_cache(state, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("proc /proc proc defaults 0 0")  # no newline at the end
    fake = FakeMount()
    state.__salt__ = {"cmd.run_all": fake}
    state.__states__ = {}  # mount.mounted must not be called
    opts = ["bind", "ro", "nosuid", "nodev", "slave"]
    ret = state.mounted("/chroots/a/usr", "/usr", "none", opts, config=str(fstab))
    assert ret["result"] is True and ret["changes"] == {"mount": True, "persist": "new"}
    assert fake.calls == [["mount", "-o", "bind,ro,nosuid,nodev,slave", "/usr", "/chroots/a/usr"]]
    assert fstab.read_text().splitlines() == [
        "proc /proc proc defaults 0 0",
        "/usr\t\t/chroots/a/usr\tnone\tbind,ro,nosuid,nodev,slave\t0 0",
    ]
    # The same run (and the next) sees it as done.
    again = state.mounted("/chroots/a/usr", "/usr", "none", opts, config=str(fstab))
    assert again["result"] is True and again["changes"] == {}
    assert len(fake.calls) == 1
    ret = state.mounted("/chroots/a/proc", "proc", "proc", ["hidepid=invisible"], config=str(fstab))
    assert fake.calls[1] == [
        "mount",
        "-o",
        "hidepid=invisible",
        "-t",
        "proc",
        "proc",
        "/chroots/a/proc",
    ]


def test_a_first_mount_in_test_mode_changes_nothing(state, tmp_path):
    fstab = tmp_path / "fstab"
    fake = FakeMount()
    state.__salt__ = {"cmd.run_all": fake}
    state.__opts__ = {"test": True}
    ret = state.mounted("/chroots/a/home", "/home/a", "none", ["bind"], config=str(fstab))
    assert ret["result"] is None and ret["changes"] == {"mount": True, "persist": "new"}
    assert fake.calls == [] and not fstab.exists()


def test_a_failed_first_mount_fails_and_writes_no_fstab_line(state, tmp_path):
    fstab = tmp_path / "fstab"
    state.__salt__ = {"cmd.run_all": FakeMount(retcode=32)}
    ret = state.mounted("/chroots/a/home", "/home/a", "none", ["bind"], config=str(fstab))
    assert ret["result"] is False and "mount: boom" in ret["comment"]
    assert not fstab.exists()


def test_a_mount_with_an_fstab_line_but_not_mounted_goes_to_salt(state, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("/home/a /chroots/a/home none bind 0 0\n")
    calls = []
    state.__salt__ = {"cmd.run_all": FakeMount()}
    state.__states__ = {"mount.mounted": lambda **kw: calls.append(kw) or {"result": True}}
    state.mounted("/chroots/a/home", "/home/a", "none", ["bind"], config=str(fstab))
    assert [c["name"] for c in calls] == ["/chroots/a/home"]


def test_a_shared_slave_mount_is_made_a_slave(state, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("/usr /chroots/a/usr none bind,ro,slave 0 0\n")
    state.__context__["webarch_mount.active"] = {"/chroots/a/usr": ("ext4", {"ro", "shared:7"})}
    fake = FakeMount()
    state.__salt__ = {"cmd.run_all": fake}
    ret = state.mounted(
        "/chroots/a/usr", "/usr", "none", ["bind", "ro", "slave"], config=str(fstab)
    )
    assert ret["result"] is True and ret["changes"] == {"propagation": "shared -> slave"}
    assert fake.calls == [["mount", "--make-slave", "/chroots/a/usr"]]
