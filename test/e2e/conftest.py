"""Fixtures for end-to-end tests: a real Debian test host running the formula."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testhost import Host


@pytest.fixture(scope="module")
def host(image: Path, repo: Path, request: pytest.FixtureRequest) -> Iterator[Host]:
    """One clean test host per test module, stopped afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = "wa-" + module.replace("_", "-")[:12]
    with Host(name=name, image=image, formula_dir=repo) as running:
        yield running
