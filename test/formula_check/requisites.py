"""
Every requisite names a state that exists, resolved as Salt 3008 resolves it.

* Direct requisites (``require``, ``watch``, ``onchanges``, ``onfail``,
  ``prereq``, their ``_any``/``_all`` forms, ``listen``): ``- MODULE: X``
  matches a state of that module whose ID or name is X (a glob matches as in
  Salt, except for ``listen``), ``- X`` any state with that ID or name,
  ``- sls: X`` the states of an included SLS.
* ``_in`` forms (``require_in`` ... ``listen_in``) and ``use``/``use_in``: the
  target must be found by ID, or (as Salt's ``find_name``) by name, and for
  the forms Salt turns into ``extend`` by exactly one state.

Salt reports the first missing requisite of a state, at compile or run time,
and ignores a few mistakes silently (an ``_in`` naming a missing SLS, ``use``
of a missing state, ``watch_any_in``); this reports all of them at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from formula_check.problems import Problem

DIRECT = frozenset(
    {
        "require",
        "require_any",
        "watch",
        "watch_any",
        "prereq",
        "onfail",
        "onfail_any",
        "onfail_all",
        "onchanges",
        "onchanges_any",
        "listen",
    }
)
#: Forms Salt's requisite_in turns into an ``extend`` of the target state.
EXTENDING = frozenset({"require_in", "watch_in", "onfail_in", "onchanges_in", "prereq_in"})
#: Forms that copy arguments between states (any number of matches is fine).
USING = frozenset({"use", "use_in"})
#: Salt 3008 has no such requisites: they are dropped without a word.
IGNORED = frozenset(
    {"require_any_in", "watch_any_in", "onchanges_any_in", "onfail_any_in", "onfail_all_in"}
)
GLOB_CHARS = ("*", "?", "[", "]")


@dataclass(frozen=True)
class Declared:
    """One argument of a state as its SLS declares it."""

    sls: str
    state_id: str
    key: str
    value: Any


@dataclass
class Index:
    """What requisites can name: states by module and ID or name, SLS files."""

    keys: set[tuple[str, str]]
    sls_with_states: set[str]
    rendered_sls: set[str]

    @classmethod
    def of(cls, high: dict, rendered_sls: set[str]) -> Index:
        """Index the states of ``high`` (compiled, or not: Salt's compile drops all on a cycle)."""
        keys: set[tuple[str, str]] = set()
        sls_with_states: set[str] = set()
        for state_id, body in high.items():
            if state_id.startswith("__") or not isinstance(body, dict):
                continue
            for module in body:
                if module.startswith("__"):
                    continue
                for ident in (state_id, *_names(body[module])):
                    keys.add((module, ident))
                    keys.add(("id", ident))
            sls_with_states.add(body.get("__sls__", ""))
            sls_with_states.update(body.get("__sls_included_from__", []))
        return cls(keys, sls_with_states, rendered_sls)

    def has(self, module: str, target: str, glob: bool = True) -> bool:
        if glob and any(char in target for char in GLOB_CHARS):
            return any(m == module and fnmatch.fnmatch(t, target) for m, t in self.keys)
        return (module, target) in self.keys

    def sls_problem(self, target: str) -> str | None:
        if any(char in target for char in GLOB_CHARS):
            if any(fnmatch.fnmatch(sls, target) for sls in self.sls_with_states):
                return None
            return f"no included SLS with states matches {target} (Salt accepts it silently)"
        if target in self.sls_with_states:
            return None
        if target in self.rendered_sls:
            return f"SLS {target} declares no state in this rendering"
        return f"{target} is not an SLS the formula includes"


def _names(items: Any) -> Iterator[str]:
    """The names a state declares (``name``, or each of ``names``)."""
    for key, value in _args(items, expand_names=False):
        if key == "name" and isinstance(value, str):
            yield value
        elif key == "names" and isinstance(value, list):
            for entry in value:
                yield from (map(str, entry) if isinstance(entry, dict) else [str(entry)])


def _state_ids(high: dict) -> Iterator[tuple[str, dict]]:
    for state_id, body in high.items():
        if not state_id.startswith("__") and isinstance(body, dict):
            yield state_id, body
    for extend in high.get("__extend__", []) or []:
        for state_id, body in extend.items():
            if isinstance(body, dict):
                yield state_id, body


def _args(items: Any, expand_names: bool = True) -> Iterator[tuple[str, Any]]:
    """A state's arguments, with those given per name under ``names`` (expanded)."""
    for arg in items if isinstance(items, list) else []:
        if not isinstance(arg, dict):
            continue
        for key, value in arg.items():
            if key == "names" and isinstance(value, list) and expand_names:
                # - names: [{NAME: [{ARG: VALUE}, ...]}]: per-name arguments
                for entry in value:
                    for sub in entry.values() if isinstance(entry, dict) else []:
                        yield from _args(sub)
            else:
                yield key, value


def declarations(high: dict) -> Iterator[Declared]:
    """Every requisite argument of every state (with its SLS and ID)."""
    wanted = DIRECT | EXTENDING | USING | IGNORED | {"listen_in"}
    for state_id, body in _state_ids(high):
        for module, items in body.items():
            if module.startswith("__"):
                continue
            for key, value in _args(items):
                if key in wanted:
                    yield Declared(body.get("__sls__", ""), state_id, key, value)


def _items(value: Any) -> list[Any]:
    """A requisite's entries: a list, or a single ``{MODULE: X}`` mapping."""
    if isinstance(value, dict):
        return [{key: val} for key, val in value.items()]
    return value if isinstance(value, list) else []


def _direct(decl: Declared, index: Index) -> Iterator[str]:
    for item in _items(decl.value):
        if isinstance(item, str):
            module, target = "id", item
        elif isinstance(item, dict) and item:
            module, target = next(iter(item.items()))
            module = module.split(".", 1)[0]
        else:
            yield f"{decl.key}: {item!r} is not a state reference"
            continue
        if target is None:
            continue
        problem = _shape_problem(decl.key, module, target, index)
        if problem:
            yield problem
        elif problem is None and not index.has(module, target, glob=decl.key != "listen"):
            yield _missing(decl.key, module, target)


def _shape_problem(key: str, module: str, target: Any, index: Index) -> str | None:
    """What is wrong with a target that is no string or an ``sls:`` one ('' if fine);
    None when it is a state reference still to be looked up."""
    if not isinstance(target, str):
        return f"{key}: {module}: {target!r} must be a string"
    if module == "sls":
        problem = index.sls_problem(target)
        return f"{key}: sls: {problem}" if problem else ""
    return None


def _missing(key: str, module: str, target: str) -> str:
    if module == "id":
        return f"{key}: {target}: no state has this ID or name"
    return f"{key}: {module}: {target}: no {module} state has this ID or name"


def _incoming(decl: Declared, high: dict, index: Index) -> Iterator[str]:
    from salt.state import find_name

    for item in _items(decl.value):
        if isinstance(item, str):
            if not index.has("id", item, glob=False):
                yield _missing(decl.key, "id", item)
            continue
        for module, target in item.items() if isinstance(item, dict) else []:
            module = module.split(".", 1)[0]
            problem = _shape_problem(decl.key, module, target, index)
            if problem is not None:
                if problem:
                    yield problem
            elif decl.key == "listen_in":
                if not index.has(module, target, glob=False):
                    yield _missing(decl.key, module, target)
            else:
                found = len(find_name(target, module, high, strict=True))
                if found == 0:
                    yield _missing(decl.key, module, target)
                elif found > 1 and decl.key in EXTENDING:
                    yield (
                        f"{decl.key}: {module}: {target}: {found} states have this name;"
                        " Salt needs exactly one (name it by ID)"
                    )


def check(
    high: dict, compiled: dict, rendered_sls: set[str], locate: Callable[[str], str]
) -> tuple[int, list[Problem]]:
    """Count the requisites of one rendering and find their problems.

    ``high`` is as the SLS files declare it, ``compiled`` after requisite_in
    and excludes (what Salt turns into low chunks).
    """
    index = Index.of(compiled, rendered_sls)
    states = {key: body for key, body in high.items() if not key.startswith("__")}
    problems = []
    count = 0
    for decl in declarations(high):
        count += max(1, len(_items(decl.value)))
        if decl.key in IGNORED:
            messages: Any = [f"{decl.key}: Salt 3008 has no such requisite and ignores it"]
        elif decl.key in DIRECT:
            messages = _direct(decl, index)
        else:
            messages = _incoming(decl, states, index)
        problems.extend(Problem(locate(decl.sls), decl.state_id, m) for m in messages)
    return count, problems
