"""Fixtures for end-to-end tests: a real Debian test host running the formula."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from testhost import Host, ensure_image

RELEASE = os.environ.get("WEBARCH_TEST_RELEASE", "bookworm")


@pytest.fixture(scope="session")
def image() -> Path:
    """The cached, ready Debian rootfs (built on first use)."""
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests boot systemd-nspawn test hosts: run as root")
    return ensure_image(release=RELEASE)


@pytest.fixture(scope="module")
def host(image: Path, repo: Path, request: pytest.FixtureRequest) -> Iterator[Host]:
    """One clean test host per test module, stopped afterwards."""
    name = "wa-" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")[:8]
    with Host(name=name, image=image, formula_dir=repo) as running:
        yield running
