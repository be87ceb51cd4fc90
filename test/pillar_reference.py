"""
Write the README's pillar reference from the model's key tables.

Each pillar block's keys, with their kinds, defaults and documentation, are
``webarch_check.Key`` tables next to their validators in ``_utils/``.  This
renders them as reStructuredText between the markers in README.rst::

    python test/pillar_reference.py           # print the generated text
    python test/pillar_reference.py --write   # rewrite README.rst
    python test/pillar_reference.py --check   # exit 1 with a diff if README.rst is stale

``make lint`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "_utils"))

import webarch_apps as apps  # noqa: E402
import webarch_check as check  # noqa: E402
import webarch_db as db  # noqa: E402
import webarch_mail as mail  # noqa: E402
import webarch_model as model  # noqa: E402
import webarch_php as php  # noqa: E402
import webarch_quota as quota  # noqa: E402
import webarch_stats_model as stats  # noqa: E402
import webarch_updates as updates  # noqa: E402
import webarch_web as web  # noqa: E402

README = REPO / "README.rst"
WIDTH = 79
#: Inline literals, kept on one line (a space in them is not a place to wrap).
LITERAL_RE = re.compile(r"``.+?``")
NO_BREAK = "\x00"
START = ".. pillar-reference-start"
END = ".. pillar-reference-end"


class Block(NamedTuple):
    """One pillar block: its section title, where it sits, its key table."""

    title: str
    #: The pillar path below ``webarch:``; upper-case parts stand for any name.
    path: tuple[str, ...]
    table: check.KeyTable
    #: How the title names the place, when not the path itself.
    where: str = ""


ACCOUNT = ("accounts", "USERNAME")
SITE = (*ACCOUNT, "sites", "SITE")

BLOCKS = (
    Block("Server-wide", (), model.SERVER_KEYS, "``webarch:``"),
    Block("MariaDB server", ("mariadb",), db.MARIADB_KEYS),
    Block("Outgoing mail", ("mail",), mail.MAIL_KEYS),
    Block("Password mails", ("notify",), mail.NOTIFY_KEYS),
    Block("Certificates", ("acme",), web.ACME_KEYS),
    Block("Disk quotas", ("quota",), quota.QUOTA_KEYS),
    Block("Quota limits", ("quota", "defaults"), quota.LIMIT_KEYS),
    Block("Automatic updates", ("updates",), updates.UPDATES_KEYS),
    Block("Matomo instance", ("matomo",), stats.MATOMO_KEYS),
    Block("Matomo release", ("matomo", "archive"), stats.ARCHIVE_KEYS),
    Block("Account", ACCOUNT, model.ACCOUNT_KEYS),
    Block("Account mail", (*ACCOUNT, "mail"), mail.ACCOUNT_MAIL_KEYS),
    Block("Password resets", (*ACCOUNT, "resets"), mail.RESET_KEYS),
    Block("PHP-FPM pool", (*ACCOUNT, "php"), php.PHP_KEYS),
    Block("Database", (*ACCOUNT, "databases", "NAME"), db.DATABASE_KEYS),
    Block(
        "Account quota",
        (*ACCOUNT, "quota"),
        quota.LIMIT_KEYS,
        "``accounts:USERNAME:quota:`` (the keys of ``quota:defaults``, over them)",
    ),
    Block("Site", SITE, web.SITE_KEYS),
    Block(
        "Redirect",
        (*SITE, "redirects", "N"),
        web.REDIRECT_KEYS,
        "each item of ``accounts:USERNAME:sites:SITE:redirects``",
    ),
    Block("Basic auth", (*SITE, "basic_auth"), web.BASIC_AUTH_KEYS),
    Block("Application", (*SITE, "app"), apps.APP_KEYS),
)


def heading(block: Block) -> str:
    """The section title of a block (also the name its links use)."""
    where = block.where or f"``{':'.join(block.path)}:``"
    return f"{block.title}: {where}"


def link_name(block: Block) -> str:
    """The title as plain text, as a reST reference names the section."""
    return heading(block).replace("``", "")


def literal(value: Any) -> str:
    """A default value as YAML would write it, in inline literal markup."""
    if isinstance(value, bool):
        return f"``{str(value).lower()}``"
    return f"``{value}``"


def qualifier(key: check.Key) -> str:
    """What stands in brackets after the key: its kind and its default."""
    default = key.default
    if isinstance(default, check.Derived):
        return f"{key.kind}; {default.text}"
    if default == "":
        return f"{key.kind}; optional"
    if default in ({}, []) or isinstance(default, list):
        return key.kind
    return f"{key.kind}; default {literal(default)}"


def child(block: Block, name: str) -> Block | None:
    """The block that holds the keys of key ``name`` of ``block``, if any."""
    for other in BLOCKS:
        rest = other.path[len(block.path) + 1 :]
        if other.path[: len(block.path) + 1] == (*block.path, name) and all(
            part.isupper() for part in rest
        ):
            return other
    return None


def paragraph(text: str) -> list[str]:
    """``text`` wrapped as the indented body of a definition."""
    glued = LITERAL_RE.sub(lambda m: m[0].replace(" ", NO_BREAK), text)
    lines = textwrap.wrap(
        glued,
        WIDTH,
        initial_indent="   ",
        subsequent_indent="   ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return [line.replace(NO_BREAK, " ") for line in lines]


def entry(block: Block, key: check.Key) -> list[str]:
    """One key as a definition list item."""
    doc = key.doc
    below = child(block, key.name)
    if below is not None:
        doc += f" Its keys: `{link_name(below)}`_."
    lines = [f"``{key.name}`` ({qualifier(key)})", *paragraph(doc)]
    if isinstance(key.default, list) and key.default:
        lines += ["", *paragraph("Default: " + ", ".join(map(literal, key.default)) + ".")]
    return lines


def section(block: Block) -> list[str]:
    """One block as a README section."""
    title = heading(block)
    lines = [title, "-" * len(title), ""]
    for key in block.table.values():
        lines += entry(block, key)
    return [*lines, ""]


def generate() -> str:
    """The text between the markers (without them)."""
    lines = [
        "",
        "..  Generated by test/pillar_reference.py from the key tables in _utils/:",
        "    edit those, then run `python test/pillar_reference.py --write`.",
        "",
    ]
    for block in BLOCKS:
        lines += section(block)
    return "\n".join(lines) + "\n"


def render(readme: str) -> str:
    """``readme`` with the text between the markers generated afresh."""
    head, start, rest = readme.partition(START + "\n")
    _, end, tail = rest.partition(END + "\n")
    if not start or not end:
        raise SystemExit(f"README.rst lacks the lines {START!r} and {END!r}")
    return f"{head}{start}{generate()}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Print, write or check the pillar reference; 1 when --check finds it stale."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the README")
    action.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    parser.add_argument("--readme", type=Path, default=README, help="default: README.rst")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(generate())
        return 0
    current = args.readme.read_text()
    wanted = render(current)
    if args.write:
        if wanted != current:
            args.readme.write_text(wanted)
        return 0
    if wanted == current:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        wanted.splitlines(keepends=True),
        f"{args.readme} (as it is)",
        f"{args.readme} (generated)",
    )
    sys.stdout.writelines(diff)
    print(
        f"{args.readme}: the pillar reference is stale; run python test/pillar_reference.py --write"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
