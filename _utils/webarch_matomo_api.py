"""
Matomo for webarch: the pure parts of the API client (``webarch_matomo``):
form fields, answers, error texts without secrets.
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
import urllib.parse
from typing import Any

#: The most of an answer kept in an error message.
SNIPPET = 300


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without any of ``secrets`` in it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            text = text.replace(urllib.parse.quote_plus(secret), "***")
    return text


def snippet(body: bytes) -> str:
    """What a non-JSON answer says, in one short line (HTML tags dropped)."""
    text = body.decode("utf-8", "replace")
    text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    text = " ".join(text.split())
    return text[:SNIPPET] + ("..." if len(text) > SNIPPET else "")


def matomo_error(answer: Any) -> str | None:
    """Matomo's message when ``answer`` is its ``{"result": "error"}``."""
    if isinstance(answer, dict) and answer.get("result") == "error":
        return str(answer.get("message", "unknown error"))
    return None


def form(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Matomo's form fields for ``params``."""
    form: list[tuple[str, str]] = []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            form += [(f"{name}[]", str(v)) for v in value]
        elif isinstance(value, bool):
            form.append((name, "1" if value else "0"))
        else:
            form.append((name, str(value)))
    return form


def value(answer: Any) -> Any:
    """A scalar answer: Matomo's JSON wraps it as ``{"value": ...}``."""
    if isinstance(answer, dict) and "value" in answer:
        return answer["value"]
    return answer


def rows(answer: Any) -> list[Any]:
    """A list answer (PHP arrays keyed by id come as JSON objects)."""
    if isinstance(answer, dict):
        return list(answer.values())
    return list(answer or [])


def urls(urls: list[str] | str) -> list[str]:
    """URLs given as a list or a comma-separated string (CLI)."""
    if isinstance(urls, str):
        urls = urls.split(",")
    found = [u.strip() for u in urls if u and u.strip()]
    if not found:
        raise ValueError("a Matomo website needs at least one URL")
    return found


def ids(id_sites: list[int] | str | int) -> list[int]:
    """Site ids given as a list, a comma-separated string or one int."""
    if isinstance(id_sites, int):
        return [id_sites]
    if isinstance(id_sites, str):
        id_sites = [s for s in id_sites.split(",") if s.strip()]
    return sorted({int(i) for i in id_sites})


def parse_ini(text: str) -> dict[str, dict[str, Any]]:
    """Matomo's ``config.ini.php`` as ``{section: {key: value or [values]}}``."""
    sections: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key.endswith("[]"):
            current.setdefault(key[:-2], []).append(value)
        else:
            current[key] = value
    return sections


def read_json(path: str) -> dict[str, Any]:
    """The JSON object in ``path``, or {} (no file, not JSON)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_token(path: str) -> str:
    """The token in ``path``, a file no one but its owner may read (ValueError: why not)."""
    try:
        with open(path, encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            token = handle.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the Matomo token {path}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise ValueError(f"the Matomo token {path} is readable by others: chmod 600")
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"the Matomo token {path} is empty or malformed")
    return token
