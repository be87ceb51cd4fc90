"""Print the figures of the attack and noisy-neighbour suites at the end of the run (also in CI)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    line = getattr(config, "webarch_attack_summary", None)
    if line:
        terminalreporter.write_sep("-", "webarch attack suite")
        terminalreporter.write_line(line)
    noisy = getattr(config, "webarch_noisy_summary", None)
    if noisy:
        terminalreporter.write_sep("-", "webarch noisy-neighbour suite")
        terminalreporter.write_line(noisy)
