"""Print the attack suite's figures at the end of the run (also in CI output)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    line = getattr(config, "webarch_attack_summary", None)
    if line:
        terminalreporter.write_sep("-", "webarch attack suite")
        terminalreporter.write_line(line)
