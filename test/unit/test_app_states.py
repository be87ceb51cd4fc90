"""webarch_app.installed (_states/webarch_app.py) over a fake execution module.

Salt's loader is pytest-salt-factories' LoaderModuleMock, imported inside the
fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import formula
import pytest

DOCROOT = "/home/alice/sites/www/public"


class FakeApp:
    """``webarch_app.status``/``install`` of one site, recording the installs."""

    def __init__(self, error: type[Exception]) -> None:
        self.error = error
        self.state = "empty"
        self.installs = 0
        self.fail = ""

    def status(self, account: str, site: str) -> dict:
        assert (account, site) == ("alice", "www")
        if self.fail == "status":
            raise self.error("cannot read the site")
        return {"state": self.state, "version": "6.1.9" if self.state == "installed" else None,
                "detail": "index.html and 3 more"}  # fmt: skip

    def install(self, account: str, site: str) -> dict:
        if self.fail == "install":
            raise self.error("wp_install: Error establishing a database connection")
        self.installs += 1
        steps = {"empty": ["copy", "configure", "install"], "configured": ["install"]}
        done = steps[self.state]
        self.state = "installed"
        return {"steps": done, "version": "6.1.9"}


@pytest.fixture
def states() -> Iterator[tuple[Any, FakeApp, dict]]:
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_states/webarch_app.py")
    fake = FakeApp(module.CommandExecutionError)
    opts = {"test": False}
    functions = {"webarch_app.status": fake.status, "webarch_app.install": fake.install}
    with LoaderModuleMock({module: {"__salt__": functions, "__opts__": opts}}):
        yield module, fake, opts


def installed(module: Any) -> dict:
    return module.installed(DOCROOT, account="alice", site="www", kind="wordpress")


def test_an_empty_docroot_gets_the_app_and_the_next_run_changes_nothing(states):
    module, fake, _ = states
    ret = installed(module)
    assert ret["result"] is True
    assert ret["changes"] == {"installed": "WordPress", "version": "6.1.9",
                              "steps": ["copy", "configure", "install"]}  # fmt: skip
    again = installed(module)
    assert again["result"] is True and again["changes"] == {}
    assert "left as it is" in again["comment"]
    assert fake.installs == 1


def test_test_mode_predicts_the_steps_and_installs_nothing(states):
    module, fake, opts = states
    opts["test"] = True
    fake.state = "configured"
    ret = installed(module)
    assert ret["result"] is None
    assert ret["changes"] == {"install": ["install"]}
    assert fake.installs == 0


def test_an_installed_app_is_left_alone_even_in_test_mode(states):
    module, fake, opts = states
    fake.state = "installed"
    for test in (False, True):
        opts["test"] = test
        ret = installed(module)
        assert (ret["result"], ret["changes"]) == (True, {})
        assert "WordPress 6.1.9 is installed" in ret["comment"]
    assert fake.installs == 0


def test_a_docroot_holding_something_else_fails_and_is_not_touched(states):
    module, fake, _ = states
    fake.state = "foreign"
    ret = installed(module)
    assert ret["result"] is False and ret["changes"] == {}
    assert "holds other files (index.html and 3 more)" in ret["comment"]
    assert fake.installs == 0


@pytest.mark.parametrize("where", ["status", "install"])
def test_errors_fail_the_state_with_their_message(states, where):
    module, fake, _ = states
    fake.fail = where
    ret = installed(module)
    assert ret["result"] is False and ret["changes"] == {}
    assert ("cannot read the site" if where == "status" else "database connection") in ret[
        "comment"
    ]


def test_an_install_removes_the_password_marker_so_a_new_password_is_mailed(states, tmp_path):
    module, fake, _ = states
    marker = tmp_path / ".notify_app-www"
    marker.write_text("Your WordPress admin password was sent ...\n")
    fake.state = "configured"
    ret = module.installed(DOCROOT, account="alice", site="www", kind="wordpress",
                           marker=str(marker))  # fmt: skip
    assert ret["result"] is True and ret["changes"]["steps"] == ["install"]
    assert not marker.exists()


def test_tables_kept_from_before_keep_the_password(states, tmp_path):
    module, fake, _ = states
    marker = tmp_path / ".notify_app-www"
    marker.write_text("sent\n")
    fake.install = lambda *_: {"steps": ["copy", "configure", "install: kept"], "version": "6.1"}
    module.__salt__["webarch_app.install"] = fake.install
    ret = module.installed(DOCROOT, account="alice", site="www", kind="wordpress",
                           marker=str(marker))  # fmt: skip
    assert ret["result"] is True and marker.exists()


def test_a_suspended_accounts_docroot_waits_empty(states):
    module, fake, opts = states
    for test in (True, False):
        opts["test"] = test
        ret = module.installed(DOCROOT, account="alice", site="www", kind="wordpress", held=True)
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert "suspended" in ret["comment"]
    assert fake.installs == 0
