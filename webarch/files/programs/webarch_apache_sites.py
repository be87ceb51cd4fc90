#!/usr/bin/python3
# Managed by Salt (webarch): do not edit by hand.
"""Put the accounts' Apache site files in place after one check of the whole config.

Usage: webarch-apache-sites current|install|refused

Salt writes each account's site file to a staging directory (root's only);
this program puts the staged files that differ from the live ones (in
sites-available) in place, all of them checked together with one
``apache2 -t``, on a scratch copy of /etc/apache2 holding every staged file
(enabled): the live configuration is never the one checked.

``current``: exit status 0 when every staged file is live, 1 otherwise.

``install``: when the check passes, every pending file goes live (written
beside it, then renamed).  When it fails, the files Apache's message names are
refused and the others checked again; when it names none, each file is
checked alone against the live configuration (a file that fails alone is
refused); when the live configuration fails without any of them, or none fails
alone, all are refused.  Refused files keep their live version (or none).
Prints what it did, then one line for Salt's ``stateful`` cmd.run:
``changed=yes|no comment="..."``.  Exit status 0 (refusals are told by
``refused``), 2 when something else went wrong.

``refused``: every staged file still not live (refused by the last install),
with its account and Apache's message, on stderr; exit status 1 if there is
one, else 0.

Environment (for tests): WEBARCH_APACHE_DIR (/etc/apache2),
WEBARCH_APACHE_STAGING (/etc/webarch/apache-sites), WEBARCH_APACHE_BIN
(/usr/sbin/apache2), WEBARCH_APACHE_VERDICTS (where install keeps its
reasons: /run/webarch-apache-sites.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Where webarch installs the helper modules (webarch_paths.PROGRAM_LIB_DIR).
LIB_DIR = "/usr/local/lib/webarch"
if LIB_DIR not in sys.path:
    sys.path.insert(0, LIB_DIR)

import webarch_paths as paths  # noqa: E402

APACHE_DIR = Path(os.environ.get("WEBARCH_APACHE_DIR", paths.APACHE_DIR))
STAGING = Path(os.environ.get("WEBARCH_APACHE_STAGING", paths.APACHE_STAGING_DIR))
APACHE_BIN = os.environ.get("WEBARCH_APACHE_BIN", "/usr/sbin/apache2")
VERDICTS = Path(os.environ.get("WEBARCH_APACHE_VERDICTS", paths.APACHE_SITES_VERDICTS))

#: The lines of Apache's message kept as a refusal's reason.
REASON_LINES = 12

#: A site file named in Apache's message (its path in the scratch copy).
NAMED_RE = re.compile(r"sites-(?:enabled|available)/([^\s:/'\"]+\.conf)")


def digest(data: bytes) -> str:
    """The SHA-256 of ``data``, hex."""
    return hashlib.sha256(data).hexdigest()


def pending() -> dict[str, bytes]:
    """Staged files (name -> content) whose live copy is missing or differs."""
    found: dict[str, bytes] = {}
    for staged in sorted(STAGING.glob("*.conf")):
        content = staged.read_bytes()
        live = APACHE_DIR / "sites-available" / staged.name
        try:
            same = live.read_bytes() == content
        except FileNotFoundError:
            same = False
        if not same:
            found[staged.name] = content
    return found


def check(candidates: dict[str, bytes]) -> tuple[bool, str]:
    """``apache2 -t`` of the live configuration with ``candidates`` in place and enabled."""
    scratch = Path(tempfile.mkdtemp(prefix="webarch-apache-check."))
    try:
        for entry in APACHE_DIR.iterdir():
            if entry.name == "md":
                # mod_md's store (every certificate and key): linked, not copied.
                (scratch / "md").symlink_to(entry)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, scratch / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, scratch / entry.name, follow_symlinks=False)
        for name, content in candidates.items():
            (scratch / "sites-available" / name).write_bytes(content)
            enabled = scratch / "sites-enabled" / name
            enabled.unlink(missing_ok=True)
            enabled.symlink_to(f"../sites-available/{name}")
        script = '. "$1/envvars"; exec "$2" -d "$3" -f "$3/apache2.conf" -t'
        env = {**os.environ, "APACHE_CONFDIR": str(scratch)}
        args = ["sh", "-c", script, "sh", str(APACHE_DIR), APACHE_BIN, str(scratch)]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        output = (proc.stderr + proc.stdout).replace(str(scratch), str(APACHE_DIR))
        return proc.returncode == 0, output.strip()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def reason(output: str) -> str:
    """The first lines of Apache's message (its last line is often "Syntax OK" or empty)."""
    return "\n".join(output.splitlines()[:REASON_LINES]) or "apache2 -t failed"


def sort_out(candidates: dict[str, bytes]) -> dict[str, str]:
    """Check ``candidates`` together; return the refused ones (name -> reason)."""
    refused: dict[str, str] = {}
    left = dict(candidates)
    while left:
        ok, output = check(left)
        if ok:
            break
        named = set(NAMED_RE.findall(output)) & set(left)
        if named:
            for name in named:
                refused[name] = reason(output)
                del left[name]
            continue
        base_ok, base_output = check({})
        if not base_ok:
            why = "the configuration fails its check without any new site file:\n"
            refused.update(dict.fromkeys(left, why + reason(base_output)))
            break
        alone = {name: check({name: content}) for name, content in left.items()}
        failing = {name: reason(out) for name, (good, out) in alone.items() if not good}
        if not failing:
            why = "these files pass alone and fail together:\n"
            refused.update(dict.fromkeys(left, why + reason(output)))
            break
        refused.update(failing)
        left = {name: content for name, content in left.items() if name not in failing}
    return refused


def put_live(name: str, content: bytes) -> None:
    """Write ``content`` as sites-available/NAME (root 0644), replacing it at once."""
    live = APACHE_DIR / "sites-available" / name
    tmp = live.with_name(f".{name}.webarch-new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, live)


def install() -> int:
    """Check every pending file at once and put the ones that pass in place."""
    candidates = pending()
    refused = sort_out(candidates) if candidates else {}
    installed = [name for name in candidates if name not in refused]
    for name in installed:
        put_live(name, candidates[name])
        print(f"installed {APACHE_DIR}/sites-available/{name}")
    for name, why in refused.items():
        print(f"refused {APACHE_DIR}/sites-available/{name}: {why.splitlines()[0]}")
    verdicts = {
        name: {"sha256": digest(candidates[name]), "reason": why} for name, why in refused.items()
    }
    VERDICTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = VERDICTS.with_name(VERDICTS.name + ".new")
    tmp.write_text(json.dumps(verdicts, indent=1))
    os.replace(tmp, VERDICTS)
    changed = "yes" if installed else "no"
    comment = f"{len(installed)} site files put in place after one check, {len(refused)} refused"
    print(f'changed={changed} comment="{comment}"')
    return 0


def report_refused() -> int:
    """Say which staged files are not live, and why; 1 if there is one."""
    left = pending()
    if not left:
        return 0
    try:
        verdicts = json.loads(VERDICTS.read_text())
    except (OSError, ValueError):
        verdicts = {}
    for name, content in left.items():
        account = name.removeprefix("webarch-").removesuffix(".conf")
        verdict = verdicts.get(name, {})
        why = verdict.get("reason") if verdict.get("sha256") == digest(content) else None
        print(
            f"{APACHE_DIR}/sites-available/{name} (account {account}) kept as it was:"
            f" its new version fails Apache's configuration check:\n"
            f"{why or 'not checked yet (webarch-apache-sites install)'}",
            file=sys.stderr,
        )
    return 1


def main(argv: list[str]) -> int:
    """Dispatch ``current``, ``install`` or ``refused``."""
    if len(argv) != 2 or argv[1] not in ("current", "install", "refused"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if argv[1] == "current":
        return 1 if pending() else 0
    if argv[1] == "install":
        return install()
    return report_refused()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except OSError as error:
        print(f"webarch-apache-sites: {error}", file=sys.stderr)
        sys.exit(2)
