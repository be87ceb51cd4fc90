"""
Matomo for webarch: the instance's superuser for people.

webarch drives Matomo with its own superuser (login ``webarch``, password and
token root-only).  People get another one (``matomo:superuser``, default
``admin``): its password is generated, put in place through the API and
mailed once to the server's ``admin_email``, like the accounts' passwords.
A new one is made when none was sent yet, when ``matomo:superuser_reset``
changes, or when the user is missing from Matomo.  Only then: a run that has
nothing to do reads Matomo once (the run's snapshot) and writes nothing.

The password never leaves this module but in the mail handed to ``sendmail``
on standard input: it is not returned, logged or put on a command line.  If
the mail cannot be handed over, nothing is recorded and the next run makes and
mails a new one (the one put in place was never sent, so none is lost).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

import webarch_matomo_api as api
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_matomo_admin"

SENDMAIL = "/usr/sbin/sendmail"
ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
LENGTH = 20


def __virtual__() -> str:
    return __virtualname__


def _settings() -> tuple[dict, dict, dict]:
    """The superuser (or {}), the notification settings, the model."""
    model = __salt__["webarch.config"]()
    local = model["matomo"]["local"] or {}
    return local.get("superuser") or {}, model["notify"], model


def _mask(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _due(wanted: dict, ledger: dict, users: dict) -> str:
    """Why a new superuser password is due ('' when none is)."""
    if not ledger:
        return "first password"
    if ledger.get("login") != wanted["login"]:
        return f"new superuser login {wanted['login']}"
    if ledger.get("reset", "") != wanted["reset"]:
        return "superuser_reset changed"
    if wanted["login"] not in users:
        return f"no Matomo user {wanted['login']}"
    return ""


def due() -> str:
    """
    Why the superuser for people is due a new password ('' when it is not).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_admin.due
    """
    wanted, _, _ = _settings()
    if not wanted:
        return ""
    now = __salt__["webarch_matomo_setup.status"]()
    # Not installed yet (a test=True run on a new server): no user to read.
    users = __salt__["webarch_matomo.users"]() if now["installed"] and now["token"] else {}
    return _due(wanted, api.read_json(paths.MATOMO_SUPERUSER_LEDGER), users)


def _compose(wanted: dict, notify: dict, model: dict, password: str) -> EmailMessage:
    host = model["hostname"] or "localhost"
    msg = EmailMessage()
    msg["From"] = formataddr((notify.get("from_name") or "", notify["from"]))
    msg["To"] = wanted["email"]
    if notify.get("reply_to"):
        msg["Reply-To"] = notify["reply_to"]
    tag = notify.get("subject_tag") or ""
    msg["Subject"] = f"{tag} Your new Matomo superuser password on {host}".strip()
    msg["Date"] = formatdate(time.time(), localtime=False)
    msg["Message-ID"] = make_msgid("webarch-matomo", domain=host)
    msg["Auto-Submitted"] = "auto-generated"
    lines = [
        "Hello,",
        "",
        f"here is the new password of the superuser of the Matomo on {host}:",
        "",
        f"    address:  {model['matomo']['url']}",
        f"    login:    {wanted['login']}",
        f"    password: {password}",
        "",
        "It sees and manages every account's statistics: keep it secret.",
        "This password replaces any earlier one.",
    ]
    if notify.get("signature"):
        lines += ["", "-- ", notify["signature"]]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _sendmail(message: EmailMessage, sender: str, recipient: str) -> None:
    proc = subprocess.run(
        [SENDMAIL, "-oi", "-f", sender, "--", recipient],
        input=message.as_bytes(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        error = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise CommandExecutionError(f"sendmail refused the superuser's mail: {error}")


def _record(entry: dict) -> None:
    directory = os.path.dirname(paths.MATOMO_SUPERUSER_LEDGER)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(entry, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, paths.MATOMO_SUPERUSER_LEDGER)


def password_sent() -> dict[str, Any]:
    """
    Make and mail a new password of the superuser for people, if one is due.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_matomo_admin.password_sent
    """
    wanted, notify, model = _settings()
    reason = due()
    if not reason:
        return {"sent": False, "comment": "nothing due"}
    if not notify.get("from"):
        raise CommandExecutionError("no sender for the superuser's mail: set notify:from")
    users = __salt__["webarch_matomo.users"]()
    confirmation = _read_api_password()
    password = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    login = wanted["login"]
    if login in users:
        __salt__["webarch_matomo.set_user_password"](login, password, confirmation)
    else:
        __salt__["webarch_matomo.add_user"](login, password, wanted["email"])
    if not users.get(login, {}).get("superuser"):
        __salt__["webarch_matomo.set_superuser"](login, confirmation)
    _sendmail(_compose(wanted, notify, model, password), notify["from"], wanted["email"])
    entry = {"login": login, "to": _mask(wanted["email"]), "sent_at": time.time(),
             "reset": wanted["reset"]}  # fmt: skip
    _record(entry)
    return {"sent": True, "comment": f"{reason}: mailed to {entry['to']}"}


def _read_api_password() -> str:
    try:
        with open(paths.MATOMO_PASSWORD_PATH, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise CommandExecutionError(
            f"cannot read {paths.MATOMO_PASSWORD_PATH}: {exc.strerror}"
        ) from None
