"""
What a state run would find first, checked without running anything.

``state.show_sls`` renders the SLS files only: the Jinja templates a
``file.managed`` state names are rendered when the state runs, and a source
that does not exist or a state function that is not there fails only then.
Here each ``file.managed`` with a ``source`` (or ``template`` and
``contents``) goes through the same execution functions the state calls
(``file.source_list``, ``file.get_managed``; the template renderer for
``contents``) with its own context, and each state function is looked up in Salt's loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from formula_check.problems import Problem

#: The formula's own files (other sources come from the pillar).
FORMULA_FILES = "salt://webarch/"
#: Lines of a template error shown (Salt adds the template's source around it).
ERROR_LINES = 12


def shorten(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    if len(lines) > ERROR_LINES:
        lines = [*lines[:ERROR_LINES], "..."]
    return "\n".join(lines)


def _render_source(functions: Any, chunk: dict, saltenv: str) -> str:
    """Cache (and render) a file.managed source as the state would; '' when fine."""
    source, source_hash = functions["file.source_list"](
        chunk["source"], chunk.get("source_hash", ""), saltenv
    )
    sfn, _sum, comment = functions["file.get_managed"](
        chunk["name"],
        chunk.get("template"),
        source,
        source_hash,
        chunk.get("source_hash_name"),
        chunk.get("user"),
        chunk.get("group"),
        chunk.get("mode"),
        chunk.get("attrs"),
        saltenv,
        chunk.get("context") or {},
        chunk.get("defaults"),
        chunk.get("skip_verify", False),
    )
    if chunk.get("template") and sfn and os.path.isfile(sfn) and not comment:
        os.unlink(sfn)  # the rendered copy, a temporary file
    return f"{source}: {comment}" if comment else ""


def _render_contents(state: Any, chunk: dict, saltenv: str) -> str:
    """Render ``template`` + ``contents`` as file.apply_template_on_contents does; '' when fine."""
    import salt.utils.templates

    contents = chunk["contents"]
    if isinstance(contents, list):
        contents = "\n".join(str(line) for line in contents)
    context = dict(chunk.get("defaults") or {})
    context.update(chunk.get("context") or {})
    data = salt.utils.templates.TEMPLATE_REGISTRY[chunk["template"]](
        contents,
        from_str=True,
        to_str=True,
        context=context,
        saltenv=saltenv,
        grains=state.opts["grains"],
        pillar=state.opts["pillar"],
        salt=state.functions,
        opts=state.opts,
    )
    return "" if data["result"] else f"contents: {data['data']}"


def check_files(
    state: Any, chunks: list[dict], locate: Callable[[str], str]
) -> tuple[int, list[Problem]]:
    """Render every file.managed source and template; return how many, and the problems."""
    checked = 0
    problems = []
    for chunk in chunks:
        if (chunk["state"], chunk["fun"]) != ("file", "managed"):
            continue
        saltenv = chunk.get("__env__", "base")
        source = chunk.get("source")
        if source and not str(source).startswith(FORMULA_FILES):
            continue  # the pillar's own file (Matomo's release archive): not the formula's
        try:
            if source:
                message = _render_source(state.functions, chunk, saltenv)
            elif chunk.get("template") and chunk.get("contents") is not None:
                message = _render_contents(state, chunk, saltenv)
            else:
                continue
        except Exception as exc:  # what the state would report as its comment
            message = f"{chunk.get('source') or 'contents'}: {type(exc).__name__}: {exc}"
        checked += 1
        if message:
            problems.append(Problem(locate(chunk["__sls__"]), chunk["__id__"], shorten(message)))
    return checked, problems


def check_functions(
    states: Any, chunks: list[dict], locate: Callable[[str], str], reasons: dict[str, str | None]
) -> tuple[set[str], list[Problem]]:
    """Each state function exists; return those that exist but do not load on this machine.

    ``reasons`` caches the loader's answer per function across renderings (a
    miss makes Salt's loader import every state module to look for it).
    """
    unusable: set[str] = set()
    problems = []
    for chunk in chunks:
        fun = f"{chunk['state']}.{chunk['fun']}"
        if fun not in reasons:
            reasons[fun] = _missing(states, fun)
        reason = reasons[fun]
        if reason is None:
            continue
        if "__virtual__ returned False" in reason:
            unusable.add(fun)  # e.g. apache_* without apache2ctl: there on a web host
        else:
            problems.append(Problem(locate(chunk["__sls__"]), chunk["__id__"], reason))
    return unusable, problems


def _missing(states: Any, fun: str) -> str | None:
    try:
        states[fun]
    except KeyError:
        return str(states.missing_fun_string(fun))
    return None
