"""Small builders for unit tests of the account model (_utils/webarch_model.py)."""

from __future__ import annotations

from types import ModuleType

#: What every Debian host has.
EMPTY_HOST = {"users": {"root": 0, "www-data": 33}, "groups": {"root": 0}}


def host(model: ModuleType, **kw: object) -> object:
    """A HostUsers snapshot with Debian's basics plus ``kw``."""
    data = {**EMPTY_HOST, **kw}
    return model.HostUsers(
        users=dict(data["users"]),
        groups=dict(data["groups"]),
        managed=frozenset(data.get("managed", ())),
        moved=tuple(data.get("moved", ())),
    )


def problems(model: ModuleType, pillar: object, release: int = 12, **kw: object) -> list[str]:
    """The problems the model reports for ``pillar`` (empty when valid)."""
    try:
        model.build_model(pillar, host(model, **kw), release)
    except model.ModelError as exc:
        return exc.problems
    return []


def one_account(**account: object) -> dict:
    """A pillar with one account ``alice`` holding ``account``."""
    return {"accounts": {"alice": account}}


def site(**data: object) -> dict:
    """A pillar with account alice and one site ``www`` holding ``data``."""
    return one_account(sites={"www": {"server_name": "www.alice.example", **data}})
