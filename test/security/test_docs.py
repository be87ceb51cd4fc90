"""docs/security.rst lists every attack and leak check of the attack suite."""

from __future__ import annotations

from pathlib import Path

from security import test_attacks

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.rst"


def test_every_attack_and_leak_check_is_documented() -> None:
    text = DOC.read_text().replace("\\*", "*")
    groups = (
        test_attacks.SHELL_ATTACKS,
        test_attacks.WRITE_ATTACKS,
        test_attacks.WEB_ATTACKS,
        test_attacks.MAIL_ATTACKS,
        test_attacks.ESCAPE_ATTACKS,
        test_attacks.BACKUP_ATTACKS,
        test_attacks.LEAK_CHECKS,
    )
    missing = [name for group in groups for name in group if f"* - {name}\n" not in text]
    assert missing == []
