"""Locations, releases and Debian mirrors (read from the host at run time)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Debian release code name -> grain ``osmajorrelease``.
RELEASES: dict[str, int] = {"bookworm": 12, "trixie": 13}

#: The formula checkout this package lives in (test/testhost/ -> repo root).
DEFAULT_FORMULA_DIR = Path(__file__).resolve().parents[2]

APT_SOURCES_LIST = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


def cache_dir() -> Path:
    """Image cache directory (env WEBARCH_TEST_CACHE)."""
    return Path(os.environ.get("WEBARCH_TEST_CACHE", "/var/cache/webarch-test"))


#: Parent of the per-host work dirs unless WEBARCH_TEST_RUN says otherwise.
DEFAULT_RUN_ROOT = Path("/var/tmp/webarch-test-run")


def run_root() -> Path:
    """Parent of the per-host work dirs (env WEBARCH_TEST_RUN)."""
    return Path(os.environ.get("WEBARCH_TEST_RUN", str(DEFAULT_RUN_ROOT)))


def osmajorrelease(release: str) -> int:
    """Map a Debian code name to its major version number."""
    try:
        return RELEASES[release]
    except KeyError:
        raise ValueError(f"unknown release {release!r}; known: {', '.join(RELEASES)}") from None


@dataclass(frozen=True)
class AptSource:
    """One apt source: its URIs and suites."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]


def _parse_deb822(text: str) -> list[AptSource]:
    """Parse the stanzas of a deb822 ``.sources`` file."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            match = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if match and not line.startswith("#"):
                fields[match.group(1).lower()] = match.group(2)
        enabled = fields.get("enabled", "yes").lower() != "no"
        if enabled and "uris" in fields and "deb" in fields.get("types", "deb").split():
            sources.append(
                AptSource(
                    tuple(fields["uris"].split()),
                    tuple(fields.get("suites", "").split()),
                )
            )
    return sources


def _parse_one_line(text: str) -> list[AptSource]:
    """Parse ``deb URI SUITE COMPONENTS`` lines of a classic sources.list."""
    sources = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            sources.append(AptSource((words[1],), (words[2],)))
    return sources


def host_apt_sources() -> list[AptSource]:
    """All enabled ``deb`` sources configured on the host."""
    sources: list[AptSource] = []
    for path in sorted(APT_SOURCES_DIR.glob("*.sources")):
        sources += _parse_deb822(path.read_text(errors="replace"))
    for path in [APT_SOURCES_LIST, *sorted(APT_SOURCES_DIR.glob("*.list"))]:
        if path.is_file():
            sources += _parse_one_line(path.read_text(errors="replace"))
    return sources


def _is_security(source: AptSource) -> bool:
    """Tell whether a source is a Debian security archive."""
    return any(s.endswith(("-security", "/updates")) for s in source.suites)


def _is_debian_suite(suite: str) -> bool:
    """Tell whether a suite name belongs to Debian (a known code name, maybe with suffix)."""
    return suite.split("-")[0].split("/")[0] in {
        *RELEASES,
        "bullseye",
        "buster",
        "sid",
        "stable",
        "testing",
    }


def debian_mirror() -> str:
    """URI of the main Debian archive (env WEBARCH_DEBIAN_MIRROR overrides host apt sources)."""
    if os.environ.get("WEBARCH_DEBIAN_MIRROR"):
        return os.environ["WEBARCH_DEBIAN_MIRROR"]
    for source in host_apt_sources():
        if not _is_security(source) and any(_is_debian_suite(s) for s in source.suites):
            return source.uris[0]
    raise RuntimeError("no Debian mirror found in host apt sources; set WEBARCH_DEBIAN_MIRROR")


def security_mirror() -> str | None:
    """URI of the Debian security archive or None (env WEBARCH_DEBIAN_SECURITY_MIRROR overrides)."""
    if os.environ.get("WEBARCH_DEBIAN_SECURITY_MIRROR"):
        return os.environ["WEBARCH_DEBIAN_SECURITY_MIRROR"]
    for source in host_apt_sources():
        if _is_security(source) and any(_is_debian_suite(s) for s in source.suites):
            return source.uris[0]
    return None
