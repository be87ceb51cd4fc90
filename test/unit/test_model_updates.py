"""Automatic security updates (_utils/webarch_updates.py), the reboot mail program
(webarch/files/updates/webarch-reboot-mail) and the host hardening texts
(_utils/webarch_hardening.py)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from unit.model_helpers import host, problems

ORIGIN = "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"
PROGRAM = Path(__file__).parents[2] / "webarch/files/updates/webarch-reboot-mail"


def build(model, data: dict) -> dict:
    return model.build_model(data, host(model), 12)


def test_defaults_take_the_security_suite_and_mail_the_admin(model):
    updates = build(model, {"admin_email": "admin@coop.example"})["updates"]
    assert (updates["enabled"], updates["restart_services"], updates["reboot_mail"]) == (
        True,
        True,
        True,
    )
    assert updates["mail_to"] == "admin@coop.example"
    text = updates["apt_text"]
    # Debian's own list (point releases too) is cleared first: the security suite only.
    assert text.index("#clear Unattended-Upgrade::Origins-Pattern;") < text.index(ORIGIN)
    assert text.count("origin=") == 1
    assert 'APT::Periodic::Unattended-Upgrade "1";' in text
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in text
    assert 'Unattended-Upgrade::Mail "admin@coop.example";' in text
    assert "$nrconf{restart} = 'a';" in updates["needrestart_text"]
    assert updates["reboot"]["sender"] == "admin@coop.example"
    assert updates["apt_conf"] == "/etc/apt/apt.conf.d/52webarch-updates"


def test_mail_to_and_the_notify_sender(model):
    data = {
        "admin_email": "admin@coop.example",
        "notify": {"from": "noreply@coop.example"},
        "updates": {"mail_to": "ops@coop.example", "restart_services": False},
    }
    updates = build(model, data)["updates"]
    assert updates["mail_to"] == "ops@coop.example"
    assert updates["reboot"]["sender"] == "noreply@coop.example"
    assert updates["restart_services"] is False


def test_off_turns_the_periodic_run_off(model):
    updates = build(model, {"updates": {"enabled": False}})["updates"]
    assert updates["apt_text"].endswith('APT::Periodic::Unattended-Upgrade "0";\n')
    assert "Origins-Pattern" not in updates["apt_text"]
    assert (updates["restart_services"], updates["reboot_mail"]) == (False, False)


def test_problems_name_their_pillar_path(model):
    found = problems(
        model,
        {"updates": {"enabled": "yes", "mail_to": "not an address", "reboot": True}},
    )
    assert "webarch:updates:enabled: must be true or false, not 'yes'" in found
    assert any(p.startswith("webarch:updates:mail_to: ") for p in found)
    assert any(p.startswith("webarch:updates:reboot: unknown key") for p in found)
    # The reboot mail needs somewhere to go: asked for, a problem; by default, off.
    assert problems(model, {"updates": {"reboot_mail": True}}) == [
        "webarch:updates:reboot_mail: needs an address: set webarch:admin_email or "
        "webarch:updates:mail_to (or reboot_mail: false)"
    ]
    assert problems(model, {}) == []
    assert build(model, {})["updates"]["reboot_mail"] is False


def load_program() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("webarch_reboot_mail", str(PROGRAM))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_program()
    sent = tmp_path / "sent"
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f'#!/bin/sh\necho "$@" >> {sent}\ncat >> {sent}\n')
    sendmail.chmod(0o755)
    monkeypatch.setattr(module, "FLAG", str(tmp_path / "reboot-required"))
    monkeypatch.setattr(module, "PKGS", str(tmp_path / "reboot-required.pkgs"))
    monkeypatch.setattr(module, "MEMO", str(tmp_path / "mailed"))
    monkeypatch.setattr(module, "SENDMAIL", str(sendmail))
    return module


def mails(program: ModuleType) -> int:
    sent = Path(program.MEMO).with_name("sent")
    return sent.read_text().count("Subject: ") if sent.exists() else 0


def test_reboot_mail_once_per_new_flag(program):
    argv = ["webarch-reboot-mail", "admin@coop.example", "admin@coop.example", "web1"]
    assert program.main(argv) == 0 and mails(program) == 0
    Path(program.PKGS).write_text("linux-image-amd64\nlibc6\n")
    Path(program.FLAG).write_text("*** System restart required ***\n")
    assert program.main(argv) == 0 and mails(program) == 1
    assert program.main(argv) == 0 and mails(program) == 1
    text = Path(program.MEMO).with_name("sent").read_text()
    assert "-odq -f admin@coop.example -- admin@coop.example" in text
    assert "Subject: web1: reboot required after security updates" in text
    assert "  libc6\n  linux-image-amd64\n" in text
    # Another update asks again: a new mail.
    Path(program.PKGS).write_text("linux-image-amd64\nlibc6\nsystemd\n")
    assert program.main(argv) == 0 and mails(program) == 2
    # Rebooted: the memo goes, the next flag is mailed.
    Path(program.FLAG).unlink()
    assert program.main(argv) == 0 and not Path(program.MEMO).exists()
    Path(program.FLAG).write_text("*** System restart required ***\n")
    assert program.main(argv) == 0 and mails(program) == 3


def test_reboot_mail_refused_is_tried_again(program, monkeypatch):
    monkeypatch.setattr(program, "SENDMAIL", "/bin/false")
    Path(program.FLAG).write_text("x\n")
    argv = ["webarch-reboot-mail", "a@b.example", "a@b.example", "web1"]
    assert program.main(argv) == 1
    assert not Path(program.MEMO).exists()
    assert program.main(["webarch-reboot-mail"]) == 2


def test_hardening_texts():
    sys.path.insert(0, str(Path(__file__).parents[2] / "_utils"))
    import webarch_hardening as hardening

    host_text = hardening.sysctl_text(False)
    container_text = hardening.sysctl_text(True)
    assert "\nkernel.kptr_restrict = 2\n" in host_text
    # In a container the kernel-wide settings are the machine's that runs it.
    assert "\n# kernel.kptr_restrict = 2\n" in container_text
    assert "\nnet.ipv4.conf.all.rp_filter = 1\n" in container_text
    assert "kernel.kptr_restrict" not in hardening.applied_sysctls(True)
    data = hardening.hardening(True)
    assert "TMOUT=900\nreadonly TMOUT\n" in data["profile_text"]
    assert "install usb-storage /bin/true" in data["modprobe_text"]
    assert "PASS_MAX_DAYS" not in data["login_defs_values"]
