"""Unit tests of webarch_mount's fast path (against this machine's real /proc mount)."""

from __future__ import annotations

from pathlib import Path

import formula
import pytest


@pytest.fixture
def state():
    module = formula.load("_states/webarch_mount.py")
    module.__context__ = {}
    module.__opts__ = {"test": False}
    return module


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
    state.__context__["webarch_mount.active"] = {}
    ret = state.mounted("/x", "/y", "none", ["bind"], config=str(tmp_path / "fstab"))
    assert ret == {"result": True}
    assert calls[0]["name"] == "/x" and calls[0]["opts"] == ["bind"]
    assert "webarch_mount.active" not in state.__context__  # dropped: it may change
