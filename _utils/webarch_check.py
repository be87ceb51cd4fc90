"""
The account model's checks: the problem list, the validators of plain values
and the type of the key tables (:py:class:`Key`) each concern module keeps
above the validator of its pillar block.

Every validator takes the value, its pillar path (a list of keys) and the
:py:class:`Problems` of the run; it returns the value (normalised) or ``None``
and records what is wrong under the path.  Nothing here knows a pillar block.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, NamedTuple

ABS_PATH_RE = re.compile(r"^(/[A-Za-z0-9_][A-Za-z0-9._-]{0,63})+$")

# Text that is safe inside a double-quoted Apache or PHP-FPM value: printable
# ASCII without quotes, backslashes, ${...} expansion or %{...} formats.
CONFIG_TEXT_RE = re.compile(r"^[\x20-\x7e]*$")

CONFIG_TEXT_FORBIDDEN = frozenset('"\\$%')

URL_RE = re.compile(
    r"^https?://(?P<host>[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/[A-Za-z0-9._~!&'()*+,;=:@/%-]*)?$"
)

DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

EMAIL_LOCAL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?$")

PATH_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")

DISPLAY_NAME_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f:,=\\\"'<>]")

STATES = ("present", "absent")


class ModelError(ValueError):
    """The pillar is invalid; ``problems`` lists every ``path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"webarch pillar is invalid ({len(problems)} problem"
            f"{'' if len(problems) == 1 else 's'}); nothing was changed:\n{lines}"
        )


class UnsupportedRelease(ValueError):
    """The host runs a Debian release webarch does not support (no pillar problem)."""


class Problems:
    """Collects problems, each under its pillar path."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: list[str], message: str) -> None:
        self.items.append(f"{':'.join(path)}: {message}")


def describe(value: Any) -> str:
    """Return a short, safe rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Derived(NamedTuple):
    """A default that is not one constant: ``text`` says what it is, for the reference."""

    text: str


#: The key must be given.
REQUIRED = Derived("required")

#: Left out, the key is off or empty (the validator sees ``None``).
OPTIONAL = Derived("optional")


class Key(NamedTuple):
    """One pillar key of a block: its kind, its default and its documentation.

    ``default`` is the value a validator uses when the key is left out, or a
    :py:class:`Derived` (:py:data:`REQUIRED`, :py:data:`OPTIONAL` or a default
    worked out from other values).  ``kind`` and ``doc`` are reStructuredText
    for the README's pillar reference (``test/pillar_reference.py``).
    (A NamedTuple, not a dataclass: see ``webarch_layout.HostUsers``.)
    """

    name: str
    kind: str
    default: Any
    doc: str


#: A block's keys by name, in the order the reference lists them.
KeyTable = dict[str, Key]


def key_table(*keys: Key) -> KeyTable:
    """Return the table of a pillar block from its keys."""
    return {key.name: key for key in keys}


def defaults(table: KeyTable) -> dict[str, Any]:
    """The constant defaults of a block (fresh copies: validators may keep them)."""
    return {
        name: copy.deepcopy(key.default)
        for name, key in table.items()
        if not isinstance(key.default, Derived)
    }


def with_defaults(data: dict, table: KeyTable) -> dict:
    """``data`` over the constant defaults of its block."""
    return {**defaults(table), **data}


def block(
    value: Any, table: KeyTable, path: list[str], problems: Problems
) -> tuple[dict, Callable[[str], Any]]:
    """A pillar block: ``value`` as a mapping (its unknown keys reported) and a
    getter that falls back on the table's defaults."""
    data = mapping(value, path, problems)
    check_keys(data, table, path, problems)
    return data, with_defaults(data, table).get


def one_of(choices: tuple[str, ...]) -> str:
    """The kind of a key that takes one of ``choices`` (for the reference)."""
    *most, last = [f"``{c}``" for c in choices]
    return f"{', '.join(most)} or {last}" if most else last


def check_keys(data: dict, allowed: dict[str, Any], path: list[str], problems: Problems) -> None:
    """Report every key of ``data`` that the schema does not know."""
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            problems.add([*path, str(key)], f"unknown key (known keys: {known})")


def mapping(value: Any, path: list[str], problems: Problems) -> dict:
    """Return ``value`` as a dict; ``None`` counts as empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping, not {type(value).__name__}")
        return {}
    return value


def string(value: Any, path: list[str], problems: Problems, max_len: int = 253) -> str | None:
    """Return ``value`` if it is a non-empty string of at most ``max_len``."""
    if not isinstance(value, str):
        problems.add(path, f"must be a string, not {type(value).__name__}")
        return None
    if not value:
        problems.add(path, "must not be empty")
        return None
    if len(value) > max_len:
        problems.add(path, f"must be at most {max_len} characters long")
        return None
    return value


def integer(value: Any, path: list[str], problems: Problems, low: int, high: int) -> int | None:
    """Return ``value`` if it is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(path, f"must be an integer, not {describe(value)}")
        return None
    if not low <= value <= high:
        problems.add(path, f"must be between {low} and {high}, not {value}")
        return None
    return value


def choice(value: Any, path: list[str], problems: Problems, choices: tuple[str, ...]) -> str | None:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        problems.add(path, f"must be one of {', '.join(choices)}, not {describe(value)}")
        return None
    return value


def dns_name_problem(name: str) -> str | None:
    """Return what is wrong with ``name`` as a host name, or ``None``."""
    if not name.isascii():
        return "must be ASCII (write internationalised names in punycode, xn--...)"
    if name != name.lower():
        return "must be lower case"
    if len(name) > 253:
        return "must be at most 253 characters long"
    labels = name.split(".")
    if len(labels) < 2:
        return "must be a fully qualified domain name (at least two labels)"
    for label in labels:
        if not DNS_LABEL_RE.fullmatch(label):
            return f"label {label!r} must be 1-63 letters, digits or inner hyphens"
    if labels[-1].isdigit():
        return "must not end in a numeric label"
    return None


def dns_name(value: Any, path: list[str], problems: Problems) -> str | None:
    """Return ``value`` if it is a valid fully qualified host name."""
    text = string(value, path, problems)
    if text is None:
        return None
    problem = dns_name_problem(text)
    if problem:
        problems.add(path, f"{describe(text)} {problem}")
        return None
    return text


def email(value: Any, path: list[str], problems: Problems) -> str | None:
    """Return ``value`` if it is a plain ``local@domain`` address."""
    text = string(value, path, problems, max_len=254)
    if text is None:
        return None
    local, sep, domain = text.rpartition("@")
    if not sep or not EMAIL_LOCAL_RE.fullmatch(local) or ".." in local or dns_name_problem(domain):
        problems.add(path, f"{describe(text)} is not a valid email address")
        return None
    return text


def display_name(value: Any, path: list[str], problems: Problems) -> str | None:
    """Return ``value`` if it is safe as a GECOS display name."""
    text = string(value, path, problems, max_len=100)
    if text is None:
        return None
    if DISPLAY_NAME_FORBIDDEN_RE.search(text):
        problems.add(
            path,
            "must not contain control characters, quotes, backslashes or : , = < >",
        )
        return None
    return text


def relative_path(value: Any, path: list[str], problems: Problems) -> str | None:
    """Return ``value`` if it is a relative path that cannot climb out."""
    if value is None or value == "":
        return ""
    text = string(value, path, problems, max_len=200)
    if text is None:
        return None
    parts = text.strip("/").split("/") if not text.startswith("/") else None
    if parts is None:
        problems.add(path, f"{describe(text)} must be relative to the site directory")
        return None
    for part in parts:
        if part in (".", "..") or not PATH_PART_RE.fullmatch(part):
            problems.add(
                path,
                f"{describe(text)} must stay inside the site directory: each part "
                "letters, digits, . _ - (no '..', no hidden parts)",
            )
            return None
    return "/".join(parts)


def single_line(value: Any, path: list[str], problems: Problems, max_len: int) -> str | None:
    """Return ``value`` if it is printable text on one line (safe in a mail header)."""
    text = string(value, path, problems, max_len=max_len)
    if text is not None and not text.isprintable():
        problems.add(path, "must be one line of printable text")
        return None
    return text


CONFIG_TEXT_MESSAGE = 'must be printable ASCII without " \\ $ %'


def config_text_ok(text: str) -> bool:
    """Tell whether ``text`` can stand in a double-quoted config value as it is."""
    return bool(CONFIG_TEXT_RE.fullmatch(text)) and not CONFIG_TEXT_FORBIDDEN & set(text)


def url_problem(url: str) -> str | None:
    """Return what is wrong with an http(s) URL, or ``None``."""
    match = URL_RE.fullmatch(url)
    if not match:
        return "must be an http:// or https:// URL"
    host, port = match.group("host"), match.group("port")
    if host != "localhost" and dns_name_problem(host):
        return f"host {host!r} {dns_name_problem(host)}"
    if port is not None and not 1 <= int(port) <= 65535:
        return f"port {port} must be between 1 and 65535"
    return None


def boolean(value: Any, path: list[str], problems: Problems) -> bool | None:
    """Return ``value`` if it is a YAML boolean."""
    if not isinstance(value, bool):
        problems.add(path, f"must be true or false, not {describe(value)}")
        return None
    return value


SIZE_RE = re.compile(r"^([1-9][0-9]{0,6})([KMG])$")

SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size(value: Any, path: list[str], problems: Problems, low: str, high: str) -> str | None:
    """A php.ini size like ``256M`` between ``low`` and ``high``."""
    text = value if isinstance(value, str) else None
    match = SIZE_RE.fullmatch(text) if text else None
    if not match:
        problems.add(path, f"must be a size like 64M or 1G, not {describe(value)}")
        return None
    if not size_bytes(low) <= size_bytes(text) <= size_bytes(high):
        problems.add(path, f"must be between {low} and {high}, not {text}")
        return None
    return text


def size_bytes(size: str) -> int:
    """Bytes in a php.ini size like ``256M``."""
    match = SIZE_RE.fullmatch(size)
    assert match, size
    return int(match.group(1)) * SIZE_UNITS[match.group(2)]
