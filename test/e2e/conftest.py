"""Fixtures for end-to-end tests: a real Debian test host running the formula."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from testhost import Host

#: Matomo's release archive for the tests (never in the repository: see
#: ../shared/vendor/matomo/README.md), and where the test hosts get it.
#: $WEBARCH_MATOMO_ARCHIVE, else the shared folder next to this checkout, else
#: this workplace's shared folder.
MATOMO_NAME = "matomo-5.0.2-standalone.tar.gz"
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
MATOMO_SHA256 = "e1d6a869d3cfb1102caddfe4ac2d8fbbb24539ba89df6fc9c10be0ad1924b50f"
MATOMO_ON_HOST = f"/srv/matomo/{MATOMO_NAME}"


def provide_matomo(host: Host) -> bool:
    """Copy Matomo's release archive into the host (at MATOMO_ON_HOST) if this checkout has it."""
    if not MATOMO_ARCHIVE.is_file():
        return False
    host.run(["mkdir", "-p", str(Path(MATOMO_ON_HOST).parent)], check=True)
    with MATOMO_ARCHIVE.open("rb") as archive:
        subprocess.run(
            host.nsenter_command(["sh", "-c", f"cat > {MATOMO_ON_HOST}"]), stdin=archive, check=True
        )
    return True


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
    """pillar.example as the test hosts converge it: Matomo's archive from the host's copy
    (without the archive, no Matomo block: the hosts run without Matomo)."""
    pillar = copy.deepcopy(yaml.safe_load((repo / "pillar.example").read_text()))
    if MATOMO_ARCHIVE.is_file():
        pillar["webarch"]["matomo"]["archive"] = {"source": MATOMO_ON_HOST, "sha256": MATOMO_SHA256}
    else:
        del pillar["webarch"]["matomo"]
    return pillar
