"""Matomo's release archive for test hosts (never in the repository).

The archive is looked for at $WEBARCH_MATOMO_ARCHIVE, else in the shared folder
next to this checkout, else in this workplace's shared folder
(see ../shared/vendor/matomo/README.md).  pillar.example expects it on the
minion at MATOMO_ON_HOST: :func:`provide_matomo` copies it there, and
:func:`example_pillar` is pillar.example as a test host can converge it
(without its ``matomo`` block when this machine has no archive).
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

from .host import Host

MATOMO_NAME = "matomo-5.0.2-standalone.tar.gz"
MATOMO_SHA256 = "e1d6a869d3cfb1102caddfe4ac2d8fbbb24539ba89df6fc9c10be0ad1924b50f"
MATOMO_ON_HOST = f"/srv/matomo/{MATOMO_NAME}"
MATOMO_ARCHIVE = next(
    (
        path
        for path in (
            Path(os.environ.get("WEBARCH_MATOMO_ARCHIVE", "/nonexistent")),
            Path(__file__).resolve().parents[3] / "shared/vendor/matomo" / MATOMO_NAME,
            Path("/work/shared/vendor/matomo") / MATOMO_NAME,
        )
        if path.is_file()
    ),
    Path("/nonexistent") / MATOMO_NAME,
)


def provide_matomo(host: Host) -> bool:
    """Copy Matomo's release archive into the host (at MATOMO_ON_HOST) if this machine has it."""
    if not MATOMO_ARCHIVE.is_file():
        return False
    host.run(["mkdir", "-p", str(Path(MATOMO_ON_HOST).parent)], check=True)
    with MATOMO_ARCHIVE.open("rb") as archive:
        subprocess.run(
            host.nsenter_command(["sh", "-c", f"cat > {MATOMO_ON_HOST}"]), stdin=archive, check=True
        )
    return True


def example_pillar(example: dict[str, Any]) -> dict[str, Any]:
    """pillar.example (parsed) as a test host converges it: Matomo's archive from the
    host's copy, or no Matomo block without an archive on this machine."""
    pillar = copy.deepcopy(example)
    if MATOMO_ARCHIVE.is_file():
        pillar["webarch"]["matomo"]["archive"] = {"source": MATOMO_ON_HOST, "sha256": MATOMO_SHA256}
    else:
        del pillar["webarch"]["matomo"]
    return pillar
