"""Running webarch's programs (webarch/files/programs) from the checkout in tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
PROGRAMS = REPO / "webarch" / "files" / "programs"
UTILS = REPO / "_utils"


def program(module: str) -> Path:
    """The file of program ``module`` (e.g. ``webarch_log_split``)."""
    return PROGRAMS / f"{module}.py"


def program_env(**extra: str) -> dict[str, str]:
    """The environment of a program run as a subprocess from the checkout.

    On a host the helper modules are in /usr/local/lib/webarch; here
    webarch_progs is next to the program (its directory is first on sys.path)
    and webarch_paths comes from _utils.
    """
    return {**os.environ, "PYTHONPATH": str(UTILS), **extra}
