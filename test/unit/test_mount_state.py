"""Unit tests of webarch_mount (mounts in the chroots' namespace) and webarch_mountns."""

from __future__ import annotations

import formula
import pytest

BASE = "/chroots"
NSENTER = ["/usr/bin/nsenter", "--mount=/run/webarch/ns/chroots", "--"]


@pytest.fixture
def mountns():
    return formula.load("_utils/webarch_mountns.py")


@pytest.fixture
def state(mountns):
    # Salt's dunders as pytest-salt-factories' loader mock gives them (imported
    # here: Salt's import hook must not see pytest's collection).
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_mount.py")
    context = {
        "webarch_mount.pinned": True,
        f"webarch_mount.ns:{BASE}": {},
        f"webarch_mount.host:{BASE}": {},
        "webarch_mount.fstab:/etc/fstab": [],
    }
    with LoaderModuleMock({module: {"__context__": context, "__opts__": {"test": False}}}):
        yield module


def mount(mountns, target: str, fstype: str = "ext4", *options: str):
    return mountns.Mount(1, 0, target, fstype, frozenset(options))


class FakeRun:
    """cmd.run_all standing in for mount(8): records the commands, answers ``retcode``."""

    def __init__(self, retcode: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.retcode = retcode

    def __call__(self, cmd: list[str], python_shell: bool = False) -> dict:
        assert python_shell is False
        self.calls.append(cmd)
        return {"retcode": self.retcode, "stdout": "", "stderr": "mount: boom"}


MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:21 /chroots /chroots rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:21 /chroots /chroots rw,relatime - ext4 /dev/sda1 rw
41 40 0:21 /usr /chroots/a/usr ro,nosuid,nodev,relatime master:1 - ext4 /dev/sda1 rw
42 41 0:21 /usr/bin/msmtp /chroots/a/usr/sbin/exim4 ro,relatime master:1 - ext4 /dev/sda1 rw
43 40 0:5 / /chroots/a/proc rw,nosuid,nodev,noexec - proc proc rw,hidepid=invisible
31 30 0:21 /x /chroots/a/hidden rw shared:1 - ext4 /dev/sda1 rw
44 40 0:21 /home/a /chroots/a/home/a rw shared:1 - ext4 /dev/sda1 rw
45 44 0:21 /home/a /chroots/a/home/a ro - ext4 /dev/sda1 rw
"""


def test_only_the_mounts_on_the_top_base_bind_count(mountns):
    mounts = mountns.parse_mountinfo(MOUNTINFO)
    assert mountns.top_at(mounts, BASE).mount_id == 40
    found = mountns.under_base(mounts, BASE)
    # 31 hangs under the hidden lower /chroots (a host mount propagated in).
    assert sorted(found) == [
        "/chroots/a/home/a", "/chroots/a/proc", "/chroots/a/usr", "/chroots/a/usr/sbin/exim4"
    ]  # fmt: skip
    assert found["/chroots/a/home/a"].mount_id == 45  # the mount stacked on top
    assert "hidepid=invisible" in found["/chroots/a/proc"].options
    assert not found["/chroots/a/usr"].shared and found["/chroots/a/home/a"].options == {
        "ro", "rw"
    }  # fmt: skip
    assert mountns.under_base(mounts, "/elsewhere") == {}


def test_fstab_entries_are_read_in_order_and_unescaped(mountns, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("# c\n/a\\040b /chroots/x none bind 0 0\n\nproc /chroots/p proc rw 0 0\n")
    assert mountns.read_fstab(str(fstab)) == [
        ("/a b", "/chroots/x", "none", "bind", "0", "0"),
        ("proc", "/chroots/p", "proc", "rw", "0", "0"),
    ]
    assert mountns.read_fstab(str(tmp_path / "none")) == []


def test_right_mount_and_line_change_nothing(state, mountns, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("proc\t\t/chroots/a/proc\tproc\tnosuid,hidepid=invisible\t0 0\n")
    state.__context__[f"webarch_mount.ns:{BASE}"] = {
        "/chroots/a/proc": mount(mountns, "/chroots/a/proc", "proc", "nosuid", "hidepid=invisible")
    }
    fake = FakeRun()
    state.__salt__ = {"cmd.run_all": fake}
    opts = ["nosuid", "hidepid=invisible"]
    ret = state.mounted("/chroots/a/proc", "proc", "proc", opts, config=str(fstab))
    assert ret["result"] is True and ret["changes"] == {} and fake.calls == []
    # Other flags: mounted again.
    ret = state.mounted("/chroots/a/proc", "proc", "proc", ["noexec"], config=str(fstab))
    assert ret["changes"]["mount"] == "mounted again with the wanted options"
    assert fake.calls[0] == [*NSENTER, "umount", "-R", "/chroots/a/proc"]


def test_a_first_mount_is_made_in_the_namespace_and_appended(state, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("proc /proc proc defaults 0 0")  # no newline at the end
    fake = FakeRun()
    state.__salt__ = {"cmd.run_all": fake}
    opts = ["bind", "ro", "nosuid", "nodev", "slave"]
    ret = state.mounted("/chroots/a/usr", "/usr", "none", opts, config=str(fstab))
    assert ret["result"] is True and ret["changes"] == {"mount": True, "persist": "new"}
    assert fake.calls == [
        [*NSENTER, "mount", "-n", "-o", "bind,ro,nosuid,nodev,slave", "/usr", "/chroots/a/usr"]
    ]
    assert fstab.read_text().splitlines() == [
        "proc /proc proc defaults 0 0",
        "/usr\t\t/chroots/a/usr\tnone\tbind,ro,nosuid,nodev,slave\t0 0",
    ]


def test_a_first_mount_in_test_mode_changes_nothing(state, tmp_path):
    fstab = tmp_path / "fstab"
    fake = FakeRun()
    state.__salt__ = {"cmd.run_all": fake}
    state.__opts__ = {"test": True}
    ret = state.mounted("/chroots/a/home", "/home/a", "none", ["bind"], config=str(fstab))
    assert ret["result"] is None and ret["changes"] == {"mount": True, "persist": "new"}
    assert fake.calls == [] and not fstab.exists()


def test_a_failed_first_mount_fails_and_writes_no_fstab_line(state, tmp_path):
    fstab = tmp_path / "fstab"
    state.__salt__ = {"cmd.run_all": FakeRun(retcode=32)}
    ret = state.mounted("/chroots/a/home", "/home/a", "none", ["bind"], config=str(fstab))
    assert ret["result"] is False and "mount: boom" in ret["comment"]
    assert not fstab.exists()


def test_no_namespace_fails_clearly(state, tmp_path):
    state.__context__["webarch_mount.pinned"] = False
    state.__salt__ = {"cmd.run_all": FakeRun()}
    ret = state.mounted("/chroots/a/home", "/home/a", "none", ["bind"], config=str(tmp_path / "f"))
    assert ret["result"] is False and "webarch-chroots.service" in ret["comment"]


def test_a_shared_slave_mount_is_made_a_slave(state, mountns, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("/usr\t\t/chroots/a/usr\tnone\tbind,ro,slave\t0 0\n")
    state.__context__[f"webarch_mount.ns:{BASE}"] = {
        "/chroots/a/usr": mount(mountns, "/chroots/a/usr", "ext4", "ro", "shared:7")
    }
    fake = FakeRun()
    state.__salt__ = {"cmd.run_all": fake}
    ret = state.mounted(
        "/chroots/a/usr", "/usr", "none", ["bind", "ro", "slave"], config=str(fstab)
    )
    assert ret["result"] is True and ret["changes"] == {"propagation": "shared -> slave"}
    assert fake.calls == [[*NSENTER, "mount", "--make-slave", "/chroots/a/usr"]]


def test_the_old_layout_is_moved_out_of_the_host(state, mountns, tmp_path):
    """A host of the old layout: the mount on the host and in /etc/fstab."""
    fstab, host_fstab = tmp_path / "chroots.fstab", tmp_path / "fstab"
    host_fstab.write_text("/dev/sda1 / ext4 rw 0 1\n/home/a /chroots/a/home/a none bind 0 0\n")
    state.__context__["webarch_mount.fstab:/etc/fstab"] = mountns.read_fstab(str(host_fstab))
    state.__context__[f"webarch_mount.host:{BASE}"] = {
        "/chroots/a/home/a": mount(mountns, "/chroots/a/home/a")
    }
    fake = FakeRun()
    state.__salt__ = {"cmd.run_all": fake}
    mountns_module = state.mountns
    old = mountns_module.HOST_FSTAB
    mountns_module.HOST_FSTAB = str(host_fstab)
    state.__context__[f"webarch_mount.fstab:{host_fstab}"] = mountns.read_fstab(str(host_fstab))
    try:
        ret = state.mounted("/chroots/a/home/a", "/home/a", "none", ["bind"], config=str(fstab))
    finally:
        mountns_module.HOST_FSTAB = old
    assert ret["result"] is True, ret
    assert ret["changes"] == {
        "mount": True, "persist": "new", "host_fstab": "removed", "host_mount": "unmounted"
    }  # fmt: skip
    assert fake.calls[-1] == ["umount", "-l", "/chroots/a/home/a"]
    assert host_fstab.read_text() == "/dev/sda1 / ext4 rw 0 1\n"
    assert "/chroots/a/home/a" in fstab.read_text()


def test_unmounted_drops_the_mount_and_its_line(state, mountns, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text("/home/a\t\t/chroots/a/home/a\tnone\tbind\t0 0\nproc /x proc rw 0 0\n")
    state.__context__[f"webarch_mount.ns:{BASE}"] = {
        "/chroots/a/home/a": mount(mountns, "/chroots/a/home/a")
    }
    fake = FakeRun()
    state.__salt__ = {"cmd.run_all": fake}
    ret = state.unmounted("/chroots/a/home/a", config=str(fstab))
    assert ret["result"] is True and ret["changes"] == {"umount": True, "persist": "removed"}
    assert fake.calls == [[*NSENTER, "umount", "/chroots/a/home/a"]]
    assert fstab.read_text() == "proc /x proc rw 0 0\n"
    again = state.unmounted("/chroots/a/home/a", config=str(fstab))
    assert again["changes"] == {} and again["result"] is True


def test_unit_binds_are_the_chroots_mounts():
    layout = formula.load("_utils/webarch_layout.py")
    spec = layout.chroot_spec("a", "/chroots", "/srv/backups/a/days")
    assert spec["unit_binds"] == {
        "ro": [
            "/usr:/chroots/a/usr",
            "-/run/mysqld:/chroots/a/run/mysqld",
            "-/run/webarch-mail:/chroots/a/run/webarch-mail",
            "/usr/bin/msmtp:/chroots/a/usr/sbin/exim4",
            "/proc:/chroots/a/proc",
            "/srv/backups/a/days:/chroots/a/home/a/backups/files",
        ],
        "rw": ["/home/a:/chroots/a/home/a", "/home/a/tmp:/chroots/a/tmp"],
    }
