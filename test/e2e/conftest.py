"""Fixtures for end-to-end tests: a real Debian test host running the formula."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from testhost import Host
from testhost.matomo import (
    MATOMO_ARCHIVE,
    MATOMO_ON_HOST,
    MATOMO_SHA256,
    provide_matomo,
)
from testhost.matomo import example_pillar as example_for_hosts

#: Matomo's release archive (see testhost.matomo), re-exported for the tests.
__all__ = ["MATOMO_ARCHIVE", "MATOMO_ON_HOST", "MATOMO_SHA256", "provide_matomo"]


@pytest.fixture(scope="module")
def host(image: Path, repo: Path, request: pytest.FixtureRequest) -> Iterator[Host]:
    """One clean test host per test module (with Matomo's archive), stopped afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = "wa-" + module.replace("_", "-")[:12]
    with Host(name=name, image=image, formula_dir=repo) as running:
        provide_matomo(running)
        yield running


@pytest.fixture(scope="session")
def example_pillar(repo: Path) -> dict:
    """pillar.example as the test hosts converge it (see testhost.matomo.example_pillar)."""
    return example_for_hosts(yaml.safe_load((repo / "pillar.example").read_text()))


def pytest_configure(config: pytest.Config) -> None:
    config.webarch_summaries = []  # figures a test wants in the run's output (also in CI)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    for text in getattr(config, "webarch_summaries", []):
        terminalreporter.write_sep("-", "webarch figures")
        for line in text.splitlines():
            terminalreporter.write_line(line)
