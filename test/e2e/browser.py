"""A real headless browser for end-to-end tests: what a visitor sees over HTTPS.

Debian's Chromium and chromedriver (packages chromium, chromium-driver; never
downloaded) driven by selenium, in the test host's network namespace
(``Host.net_run``): every site name resolves to the host's loopback, where its
Apache answers.  The steps are data (see e2e/browser_driver.py)::

    result = run_browser(host, [
        {"get": "https://www.alice.example/login.php"},
        {"screenshot": "login"},
        {"fill": "#user", "value": "alice"},
        {"fill": "#password", "value": password},   # passed on stdin only
        {"submit": "#login"},
        {"wait_for": "#dashboard", "contains": "Welcome", "timeout": 20},
        {"text": "#dashboard", "name": "greeting"},
        {"screenshot": "dashboard"},
    ], "web-login")
    assert result.texts["greeting"] == "Welcome, alice"

Screenshots and the run's record (browser.json, fill values masked) are kept in
test/artifacts/<run name>/ (or $WEBARCH_TEST_ARTIFACTS/<run name>/), readable
by everyone.  A failing step raises BrowserError telling the step, the page's
URL and title, and keeps ``step<N>-<action>-failed.png``.  Without Chromium,
chromedriver or selenium the test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2e.browser_driver import CHROMEDRIVER, CHROMIUM, check_steps
from testhost import Host

DRIVER = Path(__file__).resolve().with_name("browser_driver.py")
REPO = Path(__file__).resolve().parents[2]
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


class BrowserError(AssertionError):
    """A browser step failed, or the browser did not run."""


@dataclass
class BrowserResult:
    """What the browser saw.

    steps: one record per step: index, step (fill values masked), seconds,
        url and title after it, plus text/name (text) or screenshot (screenshot).
    startup_seconds: starting chromedriver and Chromium; seconds: the driver's
        whole run (start, steps, quit); wall_seconds: run_browser() as a whole.
    """

    artifacts: Path
    steps: list[dict[str, Any]]
    browser: str
    startup_seconds: float
    seconds: float
    wall_seconds: float
    texts: dict[str, str] = field(default_factory=dict)
    screenshots: dict[str, Path] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        """The page's URL after each step."""
        return [record["url"] for record in self.steps]

    @property
    def titles(self) -> list[str]:
        """The page's title after each step."""
        return [record["title"] for record in self.steps]

    @property
    def url(self) -> str:
        """The URL at the end."""
        return self.urls[-1]

    @property
    def title(self) -> str:
        """The title at the end."""
        return self.titles[-1]


def artifacts_root() -> Path:
    """Where runs keep their screenshots: $WEBARCH_TEST_ARTIFACTS or test/artifacts."""
    return Path(os.environ.get("WEBARCH_TEST_ARTIFACTS") or REPO / "test" / "artifacts")


def require_browser() -> None:
    """Skip the test when the headless browser is not installed."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"no headless browser: {path} missing (`make prereqs` installs {package})")
    if importlib.util.find_spec("selenium") is None:
        pytest.skip(f"no headless browser: selenium missing in {sys.executable} (`make venv`)")


def _publish(path: Path) -> None:
    """Make ``path`` (and what is in it) readable by everyone: the tests run as root."""
    path.chmod(0o755)
    for entry in path.iterdir():
        entry.chmod(0o755 if entry.is_dir() else 0o644)


def _fresh_dir(run_name: str) -> Path:
    """The run's artifacts dir, emptied of an earlier run's files."""
    if not RUN_NAME.fullmatch(run_name):
        raise ValueError(f"run name {run_name!r}: letters, digits, '.', '_', '-'")
    root = artifacts_root()
    if not root.exists():
        root.mkdir(parents=True)
        root.chmod(0o755)
    out = root / run_name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    out.chmod(0o755)
    return out


def _failure_message(run_name: str, failure: Mapping[str, Any]) -> str:
    """A failed step as a test failure shows it."""
    lines = [
        f"browser run {run_name}: step {failure['index']} {json.dumps(failure['step'])} failed:",
        f"  {failure['error']}",
        f"  at {failure.get('url') or '?'} (title {failure.get('title', '')!r})",
    ]
    if "screenshot" in failure:
        lines.append(f"  screenshot: {failure['screenshot']}")
    else:
        lines.append(f"  no screenshot: {failure.get('screenshot_error', '?')}")
    return "\n".join(lines)


def run_browser(
    host: Host,
    steps: Sequence[Mapping[str, Any]],
    run_name: str,
    timeout: float = 120.0,
) -> BrowserResult:
    """Do ``steps`` in a fresh headless Chromium on ``host``'s network; return what it saw.

    run_name names the artifacts dir (test/artifacts/<run_name>/, emptied first).
    timeout bounds the whole run, browser start included.  Raises BrowserError
    when a step fails or the browser does not run; skips the test when the
    browser is not installed; ValueError for malformed steps.
    """
    require_browser()
    steps = [dict(step) for step in steps]
    problems = check_steps(steps)
    if problems:
        raise ValueError("bad browser steps: " + "; ".join(problems))
    out = _fresh_dir(run_name)
    began = time.monotonic()
    # The steps (maybe a password) go on stdin: never on a command line or in a file.
    proc = host.net_run(
        [sys.executable, "-I", str(DRIVER), str(out), str(timeout)],
        input=json.dumps(steps),
        timeout=timeout + 60,
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        _publish(out)
        raise BrowserError(
            f"browser run {run_name}: no result (exit {proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout[-2000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
        ) from None
    (out / "browser.json").write_text(json.dumps(result, indent=2) + "\n")
    _publish(out)
    if result.get("failure"):
        raise BrowserError(_failure_message(run_name, result["failure"]))
    if not result.get("ok"):
        raise BrowserError(
            f"browser run {run_name}: {result.get('error', 'failed')}\n"
            f"--- stderr ---\n{proc.stderr[-3000:]}"
        )
    records = result["steps"]
    return BrowserResult(
        artifacts=out,
        steps=records,
        browser=result.get("browser", ""),
        startup_seconds=result["startup_seconds"],
        seconds=result["seconds"],
        wall_seconds=round(time.monotonic() - began, 3),
        texts={r["name"]: r["text"] for r in records if "text" in r},
        screenshots={
            r["step"]["screenshot"]: Path(r["screenshot"]) for r in records if "screenshot" in r
        },
    )
