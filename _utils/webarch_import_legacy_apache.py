"""
Import from a legacy host: its Apache files read into virtual hosts and directives.

:py:func:`parse_apache` reads one file of ``sites-enabled`` (continuation
lines joined, comments out, ``<IfModule>`` and the like read through) into
its ``<VirtualHost>`` blocks and the directives outside them; a block inside
a virtual host (``<Directory>``, ``<Location>`` ...) is one
:py:class:`Directive` holding its own.  :py:func:`docroots` lists the
document roots the reader must look at.  Used by
:py:mod:`webarch_import_legacy_sites`.
"""

from __future__ import annotations

import shlex
from typing import NamedTuple

from webarch_import_report import ConversionError, Run

SOURCE = "the legacy host"
#: Blocks that only make their content conditional: read through.
TRANSPARENT_BLOCKS = ("ifmodule", "ifdefine", "ifversion", "iffile")


class Directive(NamedTuple):
    """One directive of an Apache file (a block is ``<Name`` with ``inner`` its directives)."""

    file: str
    line: int
    name: str
    args: list[str]
    inner: tuple[Directive, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line} {self.name}{'>' if self.name[0] == '<' else ''}"


class VHost(NamedTuple):
    """One ``<VirtualHost>`` of an Apache file."""

    file: str
    line: int
    port: str
    directives: list[Directive]


# --------------------------------------------------------------------------
# Apache files
# --------------------------------------------------------------------------


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """The file's lines with their number, continuations joined, blanks and comments out."""
    found: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            found.append((start, line))
    if pending.strip():
        found.append((start, pending.strip()))
    return found


def _words(text: str) -> list[str]:
    """Apache's arguments: blank-separated, double quotes grouping."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()


def parse_apache(path: str, text: str, run: Run) -> tuple[list[VHost], list[Directive]]:
    """The virtual hosts of an Apache file and its directives outside them."""
    vhosts: list[VHost] = []
    outside: list[Directive] = []
    # Open blocks: (name, line, directives collected inside).
    stack: list[tuple[str, int, list[Directive], list[str], str]] = []
    current: list[Directive] = outside
    for number, line in _logical_lines(text):
        if line.startswith("</"):
            name = line[2:].rstrip(">").strip().lower()
            if not stack or stack[-1][0] != name:
                run.error([f"{path}:{number}"], f"</{name}> closes no open <{name}> block")
                raise ConversionError(SOURCE, run.problems)
            block, start, inner, args, spelled = stack.pop()
            current = stack[-1][2] if stack else outside
            if block in TRANSPARENT_BLOCKS:
                current.extend(inner)
            elif block == "virtualhost" and not any(s[0] == "virtualhost" for s in stack):
                port = args[0].rpartition(":")[2] if args else ""
                vhosts.append(VHost(path, start, port, inner))
            else:
                current.append(Directive(path, start, f"<{spelled}", args, tuple(inner)))
            continue
        if line.startswith("<"):
            words = _words(line[1:].rstrip(">"))
            name = words[0].lower() if words else ""
            stack.append((name, number, [], words[1:], words[0] if words else ""))
            current = stack[-1][2]
            continue
        words = _words(line)
        current.append(Directive(path, number, words[0], words[1:]))
    if stack:
        run.error([f"{path}:{stack[-1][1]}"], f"<{stack[-1][0]}> is never closed")
        raise ConversionError(SOURCE, run.problems)
    return vhosts, outside


def docroots(vhosts: dict[str, str]) -> list[str]:
    """The ``DocumentRoot`` directories the files of ``vhosts`` name (for the reader)."""
    found: list[str] = []
    for path, text in sorted(vhosts.items()):
        try:
            hosts, _ = parse_apache(path, text, Run(SOURCE))
        except ConversionError:
            continue
        for vhost in hosts:
            for item in vhost.directives:
                if item.name.lower() == "documentroot" and item.args:
                    found.append(clean_dir(item.args[0]))
    return sorted(set(found))


def clean_dir(value: str) -> str:
    return value.rstrip("/") or "/"
