"""
Password notifications for webarch: issue a password, mail it exactly once.

An account with an email address gets a generated password for SSH (when it
may log in with one) and for MariaDB (when ``db_password`` is on), on creation
and on request (a changed ``resets`` token in pillar, or a deleted marker).
The secret goes to a root-only spool; :py:func:`send` mails it through the
local MTA, then deletes it from the spool and records where and when it went
in a root-only ledger and in a marker the account can read (``~/.notify_passwd``,
``~/.notify_mariadb``).

Exactly once: one lock serialises issuing and sending; a secret is issued once
per request and sent once; when the MTA refuses it stays pending (never lost)
until the next run or reaction sends it.  The secret never leaves this module
other than into the mail handed to ``sendmail`` on standard input: it is not
returned, logged, put on the event bus or passed on a command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from typing import Any

import webarch_model
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_notify"

NOTIFY_DIR = paths.NOTIFY_DIR
SENDMAIL = "/usr/sbin/sendmail"
EXIQGREP = "/usr/sbin/exiqgrep"
EXIM = "/usr/sbin/exim4"
KINDS = paths.NOTIFY_KINDS
#: Unambiguous characters only: the password is typed from a mail.
ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PASSWORD_LENGTH = 20
TAG = "webarch/notify"
#: What each kind of password is for (subjects and markers).
WHAT = {"ssh": "SSH and SFTP", "mariadb": "MariaDB", "matomo": "Matomo"}
#: A site's application admin (kind ``app-SITE``, see webarch_apps.notify_kind).
APP_KIND_RE = re.compile(r"^app-[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
APP_NAMES = {"wordpress": "WordPress", "mediawiki": "MediaWiki"}
#: Where an application's admin logs in, below its URL.
APP_LOGIN = {"wordpress": "/wp-login.php", "mediawiki": "/index.php?title=Special:UserLogin"}


def _what(kind: str, account: dict) -> str:
    """What the password of ``kind`` is for (subjects and markers)."""
    if APP_KIND_RE.fullmatch(kind):
        app = account.get("apps", {}).get(kind[4:], {})
        return f"{APP_NAMES.get(app.get('kind', ''), 'application')} admin ({app.get('url', '')})"
    return WHAT[kind]


def __virtual__() -> str:
    return __virtualname__


# --------------------------------------------------------------------------
# Pure helpers (unit-tested without Salt)
# --------------------------------------------------------------------------


def _generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password from :data:`ALPHABET` (about 116 bits for 20 characters)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _mysql_native_hash(password: str) -> str:
    """MariaDB's ``mysql_native_password`` hash (``*`` + SHA1(SHA1(pw)), upper hex)."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def _mask_email(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org`` (for output and markers)."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def _reason_to_issue(entry: dict | None, token: str, marker_exists: bool, spooled: bool) -> str:
    """Why a new password is due for one (account, kind), or '' if none is."""
    if entry is None:
        return "first password"
    if entry.get("token", "") != token:
        return "reset asked for in pillar"
    if entry.get("state") == "sent" and not marker_exists:
        return "reset asked for (marker deleted)"
    if entry.get("state") == "pending" and not spooled:
        return "pending password lost from the spool"
    return ""


def _compose(
    account: dict, kind: str, password: str, settings: dict, hostname: str, now: float
) -> EmailMessage:
    """Write the notification mail; every name and URL comes from configuration."""
    tag = settings.get("subject_tag") or ""
    host = settings.get("ssh_host") or hostname
    name = account["name"]
    what = _what(kind, account)
    msg = EmailMessage()
    msg["From"] = formataddr((settings.get("from_name") or "", settings["from"]))
    msg["To"] = formataddr((account.get("fullname") or name, account["email"]))
    if settings.get("reply_to"):
        msg["Reply-To"] = settings["reply_to"]
    msg["Subject"] = f"{tag} Your new {what} password on {host}".strip()
    msg["Date"] = formatdate(now, localtime=False)
    msg["Message-ID"] = make_msgid("webarch-notify", domain=hostname)
    msg["Auto-Submitted"] = "auto-generated"
    lines = [f"Hello {account.get('fullname') or name},", ""]
    if kind == "ssh":
        lines += [
            f"here is the new password of your hosting account for SSH and SFTP logins on {host}:",
            "",
            f"    host:     {host}",
            f"    user:     {name}",
            f"    password: {password}",
            "",
            f"For example: ssh {name}@{host}",
        ]
    elif kind == "matomo":
        lines += [
            "here is the new password of your Matomo login, where you see the",
            "visitor statistics of your sites:",
            "",
            f"    address:  {account['matomo_url'] or '(your hosting provider will tell you)'}",
            f"    login:    {name}",
            f"    password: {password}",
            "",
            f"The ids of your sites for the tracking code are in ~/{paths.MATOMO_SITES_FILE}.",
        ]
    elif APP_KIND_RE.fullmatch(kind):
        app = account["apps"][kind[4:]]
        lines += [
            f"here is the new password of the admin user of {app['url']}:",
            "",
            f"    address:  {app['url']}{APP_LOGIN[app['kind']]}",
            f"    login:    {name}",
            f"    password: {password}",
        ]
    else:
        lines += [
            f"here is the new password of your MariaDB user on {host}:",
            "",
            f"    user:     {name}",
            f"    password: {password}",
            f"    server:   localhost (socket {paths.MARIADB_SOCKET})",
            "",
            "Your applications on this server need no password: they log in as your",
            "account through the socket.  The password is for tools that ask for one.",
        ]
    lines += ["", "This password replaces any earlier one.  Keep it secret."]
    if settings.get("help_url"):
        lines += ["", f"Help: {settings['help_url']}"]
    if settings.get("signature"):
        lines += ["", "-- ", settings["signature"]]
    msg.set_content("\n".join(lines) + "\n")
    return msg


# --------------------------------------------------------------------------
# Spool, ledger, lock
# --------------------------------------------------------------------------


def _dir(create: bool = False) -> str:
    """webarch's notification directory (root 0700); made only when writing."""
    if create:
        os.makedirs(paths.NOTIFY_SPOOL_DIR, mode=0o700, exist_ok=True)
        os.chmod(NOTIFY_DIR, 0o700)
    return NOTIFY_DIR


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Hold the one lock of issuing and sending."""
    with open(f"{_dir(create=True)}/lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ledger_path() -> str:
    return f"{_dir()}/ledger.json"


def _read_ledger() -> dict:
    try:
        with open(_ledger_path(), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (root 0600) atomically."""
    partial = f"{path}.new"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def _write_ledger(ledger: dict) -> None:
    _write_private(_ledger_path(), json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def _spool_path(account: str, kind: str) -> str:
    known = kind in KINDS or APP_KIND_RE.fullmatch(kind)
    if not known or "/" in account or account.startswith("."):
        raise CommandExecutionError(f"no such notification: {account!r} {kind!r}")
    return paths.notify_spool(account, kind)


def _fresh_pillar() -> dict:
    """This minion's pillar compiled now (a reactor's job would see the pillar of the
    minion's start otherwise), with plain values."""
    try:
        compiled = __salt__["pillar.items"](unmask=True)
    except TypeError:  # Salt before 3008: nothing is masked
        compiled = __salt__["pillar.items"]()
    return compiled.get("webarch", {})


def _account(name: str, pillar: dict | None = None) -> tuple[dict, dict, dict]:
    """The account, its notification kind and the server's settings, from the model
    of ``pillar`` (default: this minion's pillar compiled now)."""
    model = __salt__["webarch.config"](pillar=_fresh_pillar() if pillar is None else pillar)
    account = model["accounts"].get(name)
    if account is None or account["state"] != "present":
        raise CommandExecutionError(f"{name!r} is not a present webarch account")
    return account, model["notify"], model


# --------------------------------------------------------------------------
# Putting the password in place
# --------------------------------------------------------------------------


def _set_ssh_password(name: str, password: str) -> None:
    """chpasswd with the password on standard input (never on a command line)."""
    proc = subprocess.run(
        ["chpasswd"], input=f"{name}:{password}\n", capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CommandExecutionError(f"chpasswd failed for {name}: {proc.stderr.strip()}")


def _set_mariadb_password(name: str, password: str) -> None:
    """unix_socket first (applications keep needing no password), the password second."""
    __salt__["webarch_mariadb.set_password_hash"](name, "localhost", _mysql_native_hash(password))


def _put_in_place(name: str, kind: str, password: str) -> None:
    if kind == "ssh":
        _set_ssh_password(name, password)
    elif APP_KIND_RE.fullmatch(kind):
        __salt__["webarch_app.set_password"](name, kind[4:], password)
    elif kind == "matomo":
        email = _account(name)[0]["email"]
        __salt__["webarch_matomo_setup.set_password"](name, password, email)
    else:
        _set_mariadb_password(name, password)


def _marker_text(kind: str, entry: dict) -> str:
    what = "SSH password" if kind == "ssh" else f"{WHAT.get(kind, 'application admin')} password"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry["sent_at"]))
    return (
        f"Your {what} was sent to {entry['to']} on {when}.\n"
        "Ask your hosting provider for a new one if you did not get it.\n"
    )


def _write_marker(path: str, account: str, kind: str, entry: dict) -> None:
    """The account-readable record (root:ACCOUNT 0640) of where the password went."""
    partial = f"{path}.webarch-new"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(_marker_text(kind, entry))
    os.chown(partial, 0, grp.getgrnam(account).gr_gid)
    os.chmod(partial, 0o640)
    os.replace(partial, path)


# --------------------------------------------------------------------------
# Salt functions
# --------------------------------------------------------------------------


def due(name: str, kind: str, token: str = "", marker: str = "") -> str:
    """
    Tell why account ``name`` is due a new ``kind`` password ('' when it is not).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.due alice ssh
    """
    entry = _read_ledger().get(name, {}).get(kind)
    return _reason_to_issue(
        entry,
        token,
        bool(marker) and os.path.exists(marker),
        os.path.exists(_spool_path(name, kind)),
    )


def issue(name: str, kind: str, token: str = "", marker: str = "") -> dict:
    """
    Issue a new ``kind`` password for ``name`` if one is due; keep it pending for mail.

    Returns ``{}`` when none was due, else ``{"issued": reason}``.  The password
    is spooled (root 0600) before it is put in place, so a crash never leaves a
    password in force that nobody can send.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.issue alice ssh token=2026-11-28
    """
    with _locked():
        ledger = _read_ledger()
        entry = ledger.get(name, {}).get(kind)
        spool = _spool_path(name, kind)
        marker_exists = bool(marker) and os.path.exists(marker)
        reason = _reason_to_issue(entry, token, marker_exists, os.path.exists(spool))
        if not reason:
            return {}
        # Spool, then ledger, then the password itself: interrupted anywhere,
        # the next run finds it pending and send() puts it in place again.
        password = _generate_password()
        _write_private(spool, password)
        serial = (entry or {}).get("serial", 0) + 1
        ledger.setdefault(name, {})[kind] = {
            "state": "pending",
            "token": token,
            "serial": serial,
            "issued_at": time.time(),
            "reason": reason,
            "marker": marker,
        }
        _write_ledger(ledger)
        if marker_exists:
            os.unlink(marker)  # the old record no longer holds
        _put_in_place(name, kind, password)
        return {"issued": reason}


def pending() -> list[dict]:
    """
    List the notifications issued but not yet handed to the MTA.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.pending
    """
    ledger = _read_ledger()
    return [
        {"account": name, "kind": kind}
        for name, kinds in sorted(ledger.items())
        for kind, entry in sorted(kinds.items())
        if entry.get("state") == "pending"
    ]


def status(name: str | None = None) -> dict:
    """
    Return the ledger (never a secret): state, when issued and sent, to whom.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.status alice
    """
    ledger = _read_ledger()
    return ledger if name is None else ledger.get(name, {})


def _sendmail(message: EmailMessage, sender: str, recipient: str) -> None:
    """Hand ``message`` to the local MTA (on standard input; envelope from the settings)."""
    proc = subprocess.run(
        [SENDMAIL, "-oi", "-f", sender, "--", recipient],
        input=message.as_bytes(),
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[:300]
        raise CommandExecutionError(f"the MTA refused the mail (exit {proc.returncode}): {detail}")


def send(account: str, kind: str) -> dict:
    """
    Mail the pending ``kind`` password of ``account`` through the local MTA, once.

    Called by the reactor (on the minion the event came from) or, masterless, by
    the state run.  The account and kind only select what to send: the address,
    texts and names come from this minion's pillar.  Returns what was done,
    never the secret.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.send alice ssh
    """
    with _locked():
        ledger = _read_ledger()
        entry = ledger.get(account, {}).get(kind)
        spool = _spool_path(account, kind)
        if not entry or entry.get("state") != "pending":
            return {"sent": False, "comment": f"nothing pending for {account} {kind}"}
        pillar = _fresh_pillar()
        data, settings, model = _account(account, pillar)
        if not data["email"] or kind not in data["notify"]["kinds"]:
            raise CommandExecutionError(f"{account} gets no {kind} notifications")
        if not settings.get("from"):
            raise CommandExecutionError("webarch:notify:from (or admin_email) is not set")
        with open(spool, encoding="utf-8") as handle:
            password = handle.read().strip()
        # The password mailed is the one in force (also after an interrupted issue()).
        # What puts it in place (an application's module) reads the model too: of
        # the pillar compiled now, not the daemon's own, from its start, which
        # knows no site added since (a reactor's job).
        __context__[webarch_model.FRESH_PILLAR_CONTEXT] = pillar
        try:
            _put_in_place(account, kind, password)
        finally:
            __context__.pop(webarch_model.FRESH_PILLAR_CONTEXT, None)
        now = time.time()
        data = {**data, "matomo_url": model["matomo"]["url"]}
        message = _compose(data, kind, password, settings, model["hostname"] or "localhost", now)
        _sendmail(message, settings["from"], data["email"])
        entry.update(
            state="sent",
            sent_at=now,
            to=_mask_email(data["email"]),
            message_id=str(message["Message-ID"]),
        )
        _write_ledger(ledger)
        os.unlink(spool)
        marker = data["notify"]["kinds"][kind]["marker"]
        _write_marker(marker, account, kind, entry)
        return {"sent": True, "to": entry["to"], "at": now}


def notify_event(account: str, kind: str) -> str:
    """
    Fire ``webarch/notify/ACCOUNT/KIND`` to the master (account and kind only).

    CLI Example:

    .. code-block:: bash

        salt-call webarch_notify.notify_event alice ssh
    """
    tag = f"{TAG}/{account}/{kind}"
    if not __salt__["event.fire_master"]({"account": account, "kind": kind}, tag):
        raise CommandExecutionError(f"could not fire {tag} to the master")
    return tag


def queued(sender: str) -> list[str]:
    """
    Ids of messages from ``sender`` (the notification address) in Exim's queue.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.queued hostmaster@example.org
    """
    proc = subprocess.run(
        [EXIQGREP, "-i", "-f", f"^<?{re.escape(sender)}>?$"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.split() if proc.returncode == 0 else []


def deliver_queued(sender: str) -> dict[str, Any]:
    """
    Try now to deliver the notification mail Exim still holds (e.g. the relay was down).

    Returns the ids tried and those that left the queue.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_notify.deliver_queued hostmaster@example.org
    """
    ids = queued(sender)
    if not ids:
        return {"tried": [], "delivered": []}
    subprocess.run([EXIM, "-M", *ids], capture_output=True, check=False, timeout=300)
    left = set(queued(sender))
    return {"tried": ids, "delivered": [i for i in ids if i not in left]}
