"""Drive a headless Chromium through a list of steps; the other half of e2e/browser.py.

Usage: ``python -I browser_driver.py ARTIFACTS_DIR SECONDS`` run through
``Host.net_run``, i.e. in a test host's network namespace: every host name
resolves to 127.0.0.1, the host's loopback, where its Apache answers (SNI).
The steps come as JSON on stdin (a password to fill may be in them: it is never
on a command line nor in a file); the result goes to stdout as one JSON
document.  After SECONDS the run stops as a failed step.  Screenshots are
written to ARTIFACTS_DIR.  Stdlib and selenium only (selenium is imported by
main(), so browser.py imports the step checks below without it).

Step format (a list of dicts, each with exactly one action key; see browser.py)::

    {"get": URL}                         load a page (waits for its load event; fails on
                                         Chromium's error page: refused, TLS error...)
    {"fill": CSS, "value": TEXT}         type TEXT into the (cleared) field
    {"fill": CSS, "template": TEXT}      the same with TEXT's {NAME}s replaced by texts kept
                                         by earlier "text" steps ({{ and }}: literal braces)
    {"upload": CSS, "file": PATH}        choose the file PATH (absolute, on this machine) in
                                         the file input CSS (which may be hidden)
    {"select": CSS, "option": TEXT}      choose the option shown as TEXT in the <select> CSS
    {"click": CSS}                       click the element once clickable
    {"submit": CSS or None}              submit the form of CSS (None: of the last filled field)
    {"wait_for": CSS, "contains": TEXT}  wait until CSS is visible (and its text contains TEXT)
    {"text": CSS, "name": NAME}          the visible text of CSS, kept under NAME (default CSS)
    {"text": CSS, "attribute": ATTR, "name": NAME}
                                         instead the attribute (or property) ATTR of CSS,
                                         e.g. a link's href or a field's value; CSS need
                                         not be visible
    {"screenshot": NAME}                 save ARTIFACTS_DIR/NAME.png

Every step but screenshot takes "timeout" (seconds, default 10) for its element
to appear (for "get": for the page to load, default 30).  A "fill" value (maybe
a password) is masked in the run's record; a "template" is shown as it is: never
put a secret in one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import string
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds a step waits for its element (a "get": for the page load).
DEFAULT_TIMEOUT = 10.0
GET_TIMEOUT = 30.0
#: action -> the other keys its step may have ("timeout" aside).
ACTIONS: dict[str, frozenset[str]] = {
    "get": frozenset(),
    "fill": frozenset({"value", "template"}),
    "upload": frozenset({"file"}),
    "select": frozenset({"option"}),
    "click": frozenset(),
    "submit": frozenset(),
    "wait_for": frozenset({"contains"}),
    "text": frozenset({"name", "attribute"}),
    "screenshot": frozenset(),
}
#: The document's URL, and the error code Chromium's own error page shows.
ERROR_PAGE_SCRIPT = (
    "var code = document.querySelector('.error-code');"
    " return [document.URL, code ? code.textContent.trim() : ''];"
)
#: Shown instead of the value of a "fill" step (it may be a password).
MASK = "***"
SCREENSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}")


class StepError(Exception):
    """A step did not do what it says (the message tells what was missing)."""


def action_of(step: Mapping[str, Any]) -> str:
    """The action key of a step."""
    return next(key for key in step if key in ACTIONS)


def template_names(template: str) -> list[str]:
    """The {NAME}s of a "fill" template; ValueError unless each is a plain identifier."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{{{name}}}: a name of letters, digits and '_' (no ! or :)")
        names.append(name)
    return names


def check_steps(steps: Any) -> list[str]:
    """The problems of a step list (empty if it is fine)."""
    if not isinstance(steps, list) or not steps:
        return ["steps: a non-empty list of dicts"]
    problems = []
    kept: set[str] = set()  # names of the texts kept so far, for "fill" templates
    for index, step in enumerate(steps):
        where = f"step {index}"
        if not isinstance(step, dict):
            problems.append(f"{where}: not a dict")
            continue
        actions = [key for key in step if key in ACTIONS]
        if len(actions) != 1:
            problems.append(f"{where}: exactly one of {sorted(ACTIONS)} (has {actions})")
            continue
        action = actions[0]
        where = f"step {index} ({action})"
        extra = set(step) - {action, "timeout"} - ACTIONS[action]
        if extra:
            problems.append(f"{where}: unknown keys {sorted(extra)}")
        arg = step[action]
        if action == "get" and not (isinstance(arg, str) and re.match(r"https?://", arg)):
            problems.append(f"{where}: an http(s) URL")
        elif action == "screenshot" and not (
            isinstance(arg, str) and SCREENSHOT_NAME.fullmatch(arg)
        ):
            problems.append(f"{where}: a file name of letters, digits, '.', '_', '-'")
        elif action == "submit" and not (arg is None or isinstance(arg, str)):
            problems.append(f"{where}: a CSS selector or None")
        elif action in ("fill", "upload", "select", "click", "wait_for", "text") and not (
            isinstance(arg, str) and arg
        ):
            problems.append(f"{where}: a CSS selector")
        for key in ("value", "template", "contains", "name", "attribute", "file", "option"):
            if key in step and not isinstance(step[key], str):
                problems.append(f"{where}: {key!r} is a string")
        if action == "fill" and ("value" in step) == ("template" in step):
            problems.append(f"{where}: either 'value' (a string) to type or a 'template'")
        if isinstance(step.get("template"), str):
            try:
                unknown = sorted(set(template_names(step["template"])) - kept)
            except ValueError as exc:
                problems.append(f"{where}: template {exc}")
            else:
                if unknown:
                    problems.append(f"{where}: template names {unknown}: kept by no earlier text")
        path = step.get("file")
        if action == "upload" and not (isinstance(path, str) and os.path.isabs(path)):
            problems.append(f"{where}: 'file', the absolute path of the file to choose")
        if action == "select" and not (isinstance(step.get("option"), str) and step["option"]):
            problems.append(f"{where}: 'option', the text of the option to choose")
        if "attribute" in step and not (isinstance(step["attribute"], str) and step["attribute"]):
            problems.append(f"{where}: 'attribute' names an attribute")
        if action == "text":
            kept.add(step["name"] if isinstance(step.get("name"), str) else str(arg))
        if "timeout" in step and not (
            isinstance(step["timeout"], int | float) and step["timeout"] > 0
        ):
            problems.append(f"{where}: 'timeout' in seconds > 0")
    return problems


def masked(step: Mapping[str, Any]) -> dict[str, Any]:
    """The step as it may be shown: the value of a "fill" replaced by MASK."""
    return {key: MASK if key == "value" else value for key, value in step.items()}


def first_line(exc: BaseException) -> str:
    """Exception type and the first line of its message (selenium adds stack traces)."""
    text = getattr(exc, "msg", None) or str(exc)
    line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def browser_options(profile: Path) -> Any:
    """Chromium's options: headless, every name on the loopback, test certificates accepted."""
    from selenium.webdriver import ChromeOptions

    options = ChromeOptions()
    options.binary_location = CHROMIUM
    # The test sites serve a fallback self-signed certificate or one of the test
    # ACME CA (pebble), which no browser trusts.  Accepting them is fine here:
    # the traffic never leaves the test host's loopback, and the certificates
    # themselves are checked by the certificate tests (openssl against pebble's
    # roots); the browser is there for what a visitor sees of the pages.
    options.accept_insecure_certs = True
    for arg in (
        "--headless=new",
        "--no-sandbox",  # runs as root; the sandbox needs user namespaces it may not get
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",
        "--host-resolver-rules=MAP * 127.0.0.1",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    return options


class Run:
    """One browser session: the steps in order, then the result document."""

    def __init__(self, artifacts: Path, private: Path) -> None:
        """Start chromedriver and Chromium (profile and logs in the private dir ``private``)."""
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.artifacts = artifacts
        self.last_filled: str | None = None
        self.texts: dict[str, str] = {}  # what "text" steps kept, for "fill" templates
        # chromedriver's output, without --log-path: that log would hold every
        # command, the typed password too.  Its own session, so that Chromium and
        # all its helpers can be ended with it (stop()).
        self.log = (private / "chromedriver.log").open("w")
        service = Service(CHROMEDRIVER, log_output=self.log, popen_kw={"start_new_session": True})
        self.service = service
        try:
            self.driver = webdriver.Chrome(service=service, options=browser_options(private))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Quit the browser, then end what is left of chromedriver's session."""
        driver = getattr(self, "driver", None)
        if driver is not None:
            with contextlib.suppress(Exception), deadline(20, "quitting the browser"):
                driver.quit()  # what is left of it is killed below
        process = getattr(self.service, "process", None)
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: pgid == pid
            process.wait()
        self.log.close()

    def where(self) -> tuple[str, str]:
        """The current URL and title ('' when the browser cannot tell)."""
        try:
            with deadline(10, "asking the browser where it is"):
                return self.driver.current_url, self.driver.title
        except Exception:
            return "", ""

    def screenshot(self, name: str) -> str:
        """Save ARTIFACTS/NAME.png; return its path."""
        path = self.artifacts / f"{name}.png"
        if not self.driver.save_screenshot(str(path)):
            raise StepError(f"could not save {path}")
        return str(path)

    def step(self, step: Mapping[str, Any]) -> dict[str, Any]:
        """Do one step; return what it saw (extra keys of the step's record)."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        action = action_of(step)
        arg = step[action]
        timeout = float(step.get("timeout", GET_TIMEOUT if action == "get" else DEFAULT_TIMEOUT))
        wait = WebDriverWait(self.driver, timeout)

        def element(condition: Any, what: str) -> Any:
            try:
                return wait.until(condition)
            except TimeoutException:
                raise StepError(f"{what} within {timeout:g}s") from None

        if action == "get":
            self.driver.set_page_load_timeout(timeout)
            self.driver.get(arg)
            # A network error (refused, TLS, DNS...) is no exception: Chromium
            # shows its error page, whose document is not the URL asked for.
            shown, code = self.driver.execute_script(ERROR_PAGE_SCRIPT)
            if shown.startswith("chrome-error:"):
                raise StepError(f"the browser shows an error page: {code or 'no error code'}")
        elif action == "fill":
            field = element(
                ec.visibility_of_element_located((By.CSS_SELECTOR, arg)),
                f"no visible field {arg!r}",
            )
            text = step["value"] if "value" in step else step["template"].format_map(self.texts)
            field.clear()
            field.send_keys(text)
            self.last_filled = arg
        elif action == "upload":
            path = step["file"]
            if not os.path.isfile(path):
                raise StepError(f"no file {path} to upload")
            field = element(
                ec.presence_of_element_located((By.CSS_SELECTOR, arg)), f"no file input {arg!r}"
            )
            if field.tag_name.lower() != "input" or (field.get_attribute("type") or "") != "file":
                raise StepError(f"{arg!r} is no <input type=file>")
            # A file input takes the path as its keys (hidden or not: W3C's
            # strictFileInteractability is off by default).
            field.send_keys(path)
        elif action == "select":
            from selenium.common.exceptions import NoSuchElementException
            from selenium.webdriver.support.ui import Select

            found = element(
                ec.visibility_of_element_located((By.CSS_SELECTOR, arg)), f"no visible {arg!r}"
            )
            if found.tag_name.lower() != "select":
                raise StepError(f"{arg!r} is no <select>")
            menu = Select(found)
            try:
                menu.select_by_visible_text(step["option"])
            except NoSuchElementException:
                shown = [option.text for option in menu.options]
                raise StepError(
                    f"no option {step['option']!r} in {arg!r}; it has {shown}"
                ) from None
        elif action == "click":
            element(
                ec.element_to_be_clickable((By.CSS_SELECTOR, arg)), f"nothing clickable at {arg!r}"
            ).click()
        elif action == "submit":
            selector = arg or self.last_filled
            if not selector:
                raise StepError("submit: no selector and no field filled before")
            element(
                ec.presence_of_element_located((By.CSS_SELECTOR, selector)),
                f"no form element {selector!r}",
            ).submit()
        elif action == "wait_for":
            located = (By.CSS_SELECTOR, arg)
            element(ec.visibility_of_element_located(located), f"no visible {arg!r}")
            if "contains" in step:
                text = step["contains"]
                seen = ec.text_to_be_present_in_element(located, text)
                try:
                    wait.until(seen)
                except TimeoutException:
                    now = self.driver.find_element(*located).text[:300]
                    raise StepError(
                        f"{text!r} not in {arg!r} within {timeout:g}s; it shows {now!r}"
                    ) from None
        elif action == "text":
            name = step.get("name", arg)
            if "attribute" in step:
                attribute = step["attribute"]
                found = element(
                    ec.presence_of_element_located((By.CSS_SELECTOR, arg)), f"no {arg!r}"
                )
                text = found.get_attribute(attribute)
                if text is None:
                    raise StepError(f"{arg!r} has no attribute {attribute!r}")
            else:
                found = element(
                    ec.visibility_of_element_located((By.CSS_SELECTOR, arg)), f"no visible {arg!r}"
                )
                text = found.text
            self.texts[name] = text
            return {"text": text, "name": name}
        elif action == "screenshot":
            return {"screenshot": self.screenshot(arg)}
        return {}

    def run(self, steps: Sequence[Mapping[str, Any]]) -> tuple[list[dict], dict | None]:
        """Do ``steps`` in order; return their records and the failure (None if all passed)."""
        records: list[dict] = []
        for index, step in enumerate(steps):
            record: dict[str, Any] = {"index": index, "step": masked(step)}
            began = time.monotonic()
            try:
                record.update(self.step(step))
            except Exception as exc:
                url, title = self.where()
                failure = {**record, "error": first_line(exc), "url": url, "title": title}
                name = f"step{index}-{action_of(step)}-failed"
                try:
                    with deadline(20, "saving the failure screenshot"):
                        failure["screenshot"] = self.screenshot(name)
                except Exception as shot:
                    failure["screenshot_error"] = first_line(shot)
                return records, failure
            record["seconds"] = round(time.monotonic() - began, 3)
            record["url"], record["title"] = self.where()
            records.append(record)
        return records, None


class Deadline(Exception):
    """The time allowed for something ran out (raised by SIGALRM)."""


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise Deadline in the block after ``seconds``; the enclosing deadline is restored."""

    def expired(signum: int, frame: Any) -> None:
        raise Deadline(f"{what}: over {seconds:g}s")

    outer_left, _ = signal.setitimer(signal.ITIMER_REAL, 0)
    outer_handler = signal.signal(signal.SIGALRM, expired)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left:
            left = outer_left - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(0.001, left))


def main(argv: Sequence[str]) -> int:
    """Run the steps of stdin; print the result; 0 = all steps passed, 1 = one failed, 2 = other."""
    # stdout is the result's alone: whatever else writes to it goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result: dict[str, Any] = {"ok": False, "steps": [], "failure": None}
    try:
        artifacts, seconds = Path(argv[1]), float(argv[2])
        steps = json.load(sys.stdin)
        problems = check_steps(steps)
        if problems:
            raise ValueError("; ".join(problems))
    except (IndexError, ValueError) as exc:
        result["error"] = f"bad input: {exc}"
        json.dump(result, out)
        return 2
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    private = Path(tempfile.mkdtemp(prefix="webarch-browser-"))  # mode 0700
    began = time.monotonic()
    run = None
    try:
        with deadline(seconds, f"the browser run (all {len(steps)} steps)"):
            try:
                run = Run(artifacts, private)
            except Exception as exc:
                log = (private / "chromedriver.log").read_text(errors="replace")[-3000:]
                result["error"] = f"cannot start the browser: {first_line(exc)}\n{log}"
                return 2
            result["browser"] = run.driver.capabilities.get("browserVersion", "")
            result["startup_seconds"] = round(time.monotonic() - began, 3)
            result["steps"], result["failure"] = run.run(steps)
            result["ok"] = result["failure"] is None
    except Deadline as exc:  # out of time between steps or while starting
        result["error"] = str(exc)
    finally:
        if run is not None:
            run.stop()
        shutil.rmtree(private, ignore_errors=True)
        result["seconds"] = round(time.monotonic() - began, 3)
        json.dump(result, out)
        out.close()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
