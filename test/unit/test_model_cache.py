"""webarch.config() builds the model once per run for the same pillar and host.

Every SLS file imports map.jinja, which calls webarch.config(): without the
cache a run validated the whole pillar a dozen times (0.2 s at 200 accounts).
"""

from __future__ import annotations

import formula
import pytest
from unit.model_helpers import EMPTY_HOST, host


class Run:
    """What one Salt run shows the module: pillar, webarch_only and host users."""

    def __init__(self) -> None:
        self.pillar: dict = {"accounts": {"alice": {}, "bob": {}}}
        self.only: list[str] | None = None
        self.users = dict(EMPTY_HOST["users"])
        self.builds = 0


@pytest.fixture
def run(monkeypatch):
    # pytest-salt-factories' loader mock gives the module the dunders Salt's
    # loader would (imported here: Salt's import hook must not see collection).
    from saltfactories.utils.loader import LoaderModuleMock

    module = formula.load("_modules/webarch.py")
    state = Run()

    def pillar_get(key, default=None, unmask=False):
        return {"webarch": state.pillar, "webarch_only": state.only}.get(key, default)

    real_build = module.webarch_model.build_model

    def counting_build(*args):
        state.builds += 1
        return real_build(*args)

    monkeypatch.setattr(
        module,
        "_host_users",
        lambda: host(module.webarch_model, users=state.users, managed=["alice"]),
    )
    monkeypatch.setattr(module.webarch_model, "build_model", counting_build)
    dunders = {
        "__context__": {},
        "__grains__": {"osmajorrelease": 12},
        "__salt__": {"pillar.get": pillar_get},
    }
    with LoaderModuleMock({module: dunders}):
        state.config = module.config
        state.error = module.CommandExecutionError
        state.context = module.__context__
        yield state


def test_one_build_for_the_same_pillar_and_host(run):
    first = run.config()
    assert run.config() is first
    assert run.builds == 1
    assert sorted(first["accounts"]) == ["alice", "bob"]


def test_a_changed_pillar_host_or_target_builds_again(run):
    run.config()
    run.pillar = {"accounts": {"alice": {}}}
    assert sorted(run.config()["accounts"]) == ["alice"]
    run.users["alice"] = 1001  # the run created alice's user meanwhile
    run.config()
    run.only = ["alice"]
    assert run.config()["only"] == ["alice"]
    assert run.builds == 4


def test_an_invalid_pillar_is_reported_every_time(run):
    run.pillar = {"accounts": {"Bad Name": {}}}
    for _ in range(2):
        with pytest.raises(run.error, match="Bad Name"):
            run.config()
    assert run.builds == 2


def test_a_pillar_compiled_afresh_by_the_job_wins_over_the_daemons(run):
    """webarch_notify.send (a reactor's job in the minion daemon) leaves the pillar it
    compiled now in __context__: the model of a site added since the daemon's start."""
    assert sorted(run.config()["accounts"]) == ["alice", "bob"]
    run.context["webarch.fresh_pillar"] = {"accounts": {"alice": {}, "bob": {}, "carol": {}}}
    assert sorted(run.config()["accounts"]) == ["alice", "bob", "carol"]
    del run.context["webarch.fresh_pillar"]
    assert sorted(run.config()["accounts"]) == ["alice", "bob"]
