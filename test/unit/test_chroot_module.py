"""The chroot skeleton builder (_modules/webarch_chroot.py) on real directories.

Runs as root on this machine: it makes device nodes and bind mounts in tmp_path.
The account is ``nobody``, which every Debian system has.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from types import ModuleType

import formula
import pytest

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "nobody"
HOME = "/nonexistent"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes device nodes: needs root")


@pytest.fixture(scope="module")
def chroot() -> ModuleType:
    """The webarch_chroot execution module, loaded without Salt's loader."""
    return formula.load("_modules/webarch_chroot.py")


@pytest.fixture
def root(chroot: ModuleType, tmp_path: Path) -> Path:
    """A freshly built chroot of ``nobody``."""
    path = tmp_path / "chroots" / ACCOUNT
    chroot.apply(ACCOUNT, str(path), HOME)
    return path


def test_plan_of_nothing_creates_everything(chroot, tmp_path):
    plan = chroot.plan(ACCOUNT, str(tmp_path / "new"), HOME)
    assert set(plan) == {"create"}
    assert {"/", "/etc/passwd", "/dev/null", "/usr", "/proc", "/var/tmp"} <= set(plan["create"])


def test_built_chroot_is_exact_and_stable(chroot, root):
    assert chroot.plan(ACCOUNT, str(root), HOME) == {}
    assert chroot.apply(ACCOUNT, str(root), HOME) == {}
    names = [line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()]
    assert names == ["root", "www-data", ACCOUNT]
    assert (root / "etc/nsswitch.conf").read_text().count("files") >= 3
    for dev, (major, minor) in chroot.DEVICES.items():
        info = (root / "dev" / dev).lstat()
        assert stat.S_ISCHR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666
        assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (major, minor)
    assert sorted(p.name for p in (root / "dev").iterdir()) == sorted(
        [*chroot.DEVICES, *chroot.DEV_LINKS]
    )
    assert os.readlink(root / "var/tmp") == "/tmp"
    assert os.readlink(root / "bin") == os.readlink("/bin")
    for path in [root, root / "etc", root / "etc/passwd", root / "dev"]:
        info = path.lstat()
        assert (info.st_uid, info.st_gid) == (0, 0)
        assert not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_bytes() == Path(
        "/etc/ssl/certs/ca-certificates.crt"
    ).read_bytes()


def test_drift_is_found_and_repaired(chroot, root):
    (root / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\nintruder:x:0:0::/:/bin/sh\n")
    (root / "etc/evil.conf").write_text("planted\n")
    (root / "dev/null").chmod(0o600)
    (root / "dev/sda").touch()
    (root / "var/tmp").unlink()
    (root / "var/tmp").mkdir()
    plan = chroot.plan(ACCOUNT, str(root), HOME)
    assert plan == {
        "update": ["/dev/null", "/etc/passwd", "/var/tmp"],
        "remove": ["/dev/sda", "/etc/evil.conf"],
    }
    assert chroot.apply(ACCOUNT, str(root), HOME) == plan
    assert chroot.plan(ACCOUNT, str(root), HOME) == {}
    assert "intruder" not in (root / "etc/passwd").read_text()


def test_mounted_mount_points_are_never_touched(chroot, root, tmp_path):
    tmp = tmp_path / "account-tmp"
    tmp.mkdir(mode=0o700)
    os.chown(tmp, 65534, 65534)
    subprocess.run(["mount", "--bind", str(tmp), str(root / "tmp")], check=True)
    try:
        assert chroot.plan(ACCOUNT, str(root), HOME) == {}
        chroot.apply(ACCOUNT, str(root), HOME)
        info = tmp.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 65534)
        assert chroot.mounts(str(root)) == [str(root / "tmp")]
        with pytest.raises(Exception, match="still mounted"):
            chroot.remove(str(root))
        assert root.is_dir()
    finally:
        subprocess.run(["umount", str(root / "tmp")], check=True)
    assert chroot.remove(str(root)) is True
    assert not root.exists() and tmp.is_dir()
    assert chroot.remove(str(root)) is False
