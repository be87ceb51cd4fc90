"""Shared fixtures: the repository root, the account model, example pillars."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from testhost import ensure_image

REPO = Path(__file__).resolve().parent.parent

#: The Debian release of the test hosts (bookworm = 12, trixie = 13).
RELEASE = os.environ.get("WEBARCH_TEST_RELEASE", "bookworm")


def load_model() -> ModuleType:
    """The account model (_utils/webarch_model.py, on the path as Salt's loader puts it)."""
    import webarch_model

    return webarch_model


@pytest.fixture(scope="session")
def repo() -> Path:
    """The checkout under test."""
    return REPO


@pytest.fixture(scope="session")
def model() -> ModuleType:
    """The account model module."""
    return load_model()


@pytest.fixture(scope="session")
def example_pillar() -> dict:
    """pillar.example, parsed."""
    return yaml.safe_load((REPO / "pillar.example").read_text())


@pytest.fixture(scope="session")
def twenty_mistakes() -> dict:
    """A pillar with twenty distinct mistakes."""
    return yaml.safe_load((REPO / "test" / "data" / "pillar-20-mistakes.yaml").read_text())


@pytest.fixture(scope="session")
def image() -> Path:
    """The cached, ready Debian rootfs of test hosts (built on first use)."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root: debootstrap, mounts and systemd-nspawn")
    return ensure_image(release=RELEASE)
