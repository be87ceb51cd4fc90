"""Helpers for end-to-end tests: reading salt-call state results."""

from __future__ import annotations

from testhost import Host


def state_results(ret: dict) -> dict:
    """The per-state results of a salt-call --out=json state run.

    Fails the test with the render errors when the run did not compile.
    """
    local = ret["local"]
    assert isinstance(local, dict), "state run did not compile:\n" + "\n".join(local)
    return local


def failed(ret: dict) -> dict:
    """The states of a run whose result is not True, with their comments."""
    return {k: v["comment"] for k, v in state_results(ret).items() if v["result"] is not True}


def changed(ret: dict) -> dict:
    """The states of a run that reported changes."""
    return {k: v["changes"] for k, v in state_results(ret).items() if v["changes"]}


def apply(host: Host, pillar: dict, *args: str) -> dict:
    """Install ``pillar`` on the host and run ``state.apply webarch``."""
    host.set_pillar(pillar)
    return host.salt_call(["state.apply", "webarch", *args])
