"""Shared fixtures: the repository root, the account model, example pillars."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def load_model() -> ModuleType:
    """Import _modules/webarch.py as a plain module (no Salt loader)."""
    name = "webarch_model"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "_modules" / "webarch.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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
