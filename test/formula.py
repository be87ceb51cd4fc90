"""Load the formula's Salt modules as plain Python modules, for unit tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load(relpath: str) -> ModuleType:
    """Import ``relpath`` (e.g. ``_modules/webarch.py``) once, without Salt's loader."""
    name = "formula_" + relpath.removesuffix(".py").replace("/", "_").lstrip("_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relpath)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
