"""
The account model: mail from the chroots (Exim, msmtp) and password notifications.
"""

from __future__ import annotations

import re
from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import OPTIONAL, Derived, Key

SMARTHOST_RE = re.compile(r"^(?P<host>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?:::(?P<port>[0-9]{1,5}))?$")

NOTIFY_VIA = ("auto", "reactor", "direct")

RESET_TOKEN_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,64}$")


#: ``webarch:mail``: mail from the accounts (PHP's ``mail()``, ``sendmail`` in
#: their shells) through this server's Exim, which listens on no port.
MAIL_KEYS = check.key_table(
    Key(
        "smarthost",
        "``HOST`` or ``HOST::PORT``",
        OPTIONAL,
        "Relay all mail through this host (Debian's ``dc_smarthost`` form, e.g. "
        "``mx.example.org::587``). Left out, Exim delivers to each domain's MX itself.",
    ),
    Key(
        "rate_limit",
        "integer 1-100000",
        OPTIONAL,
        "Messages per hour per account: the default of each account's "
        "``mail:rate_limit``. Left out: no limit.",
    ),
)


def mail_settings(value: Any, problems: check.Problems) -> dict:
    """Server-wide mail: Exim's smarthost (or direct delivery) and the default send limit."""
    path = ["webarch", "mail"]
    _, get = check.block(value, MAIL_KEYS, path, problems)
    smarthost = get("smarthost")
    if smarthost is not None:
        smarthost = _smarthost(smarthost, [*path, "smarthost"], problems)
    rate_limit = get("rate_limit")
    if rate_limit is not None:
        rate_limit = check.integer(rate_limit, [*path, "rate_limit"], problems, 1, 100000)
    return {
        "smarthost": smarthost,
        "rate_limit": rate_limit,
        "socket": paths.MAIL_SOCKET,
        "gate_dir": paths.MAIL_GATE_DIR,
        "accounts_path": paths.MAIL_ACCOUNTS_PATH,
        "limits_path": paths.MAIL_LIMITS_PATH,
    }


def exim_queue_only(osmajorrelease: int) -> dict:
    """The /etc/default/exim4 line that runs Exim's daemon without an SMTP listener."""
    if osmajorrelease <= 12:
        return {"pattern": "^QUEUERUNNER=.*$", "line": "QUEUERUNNER='queueonly'"}
    # Debian 13's exim4.service runs `exim4 $EXIMSERVICE` (default -bdf -q30m).
    return {"pattern": "^EXIMSERVICE=.*$", "line": "EXIMSERVICE='-q30m'"}


def _smarthost(value: Any, path: list[str], problems: check.Problems) -> str | None:
    """Return ``host`` or ``host::port`` (Debian's dc_smarthost form) if valid."""
    text = check.string(value, path, problems)
    match = SMARTHOST_RE.fullmatch(text) if text else None
    if text is None:
        return None
    host = match["host"] if match else ""
    port = int(match["port"]) if match and match["port"] else 25
    host_ok = (
        host.startswith("[") or re.fullmatch(r"[0-9.]+", host) or not check.dns_name_problem(host)
    )
    if not match or not host_ok or not 1 <= port <= 65535:
        problems.add(
            path, f"{check.describe(text)} must be HOST or HOST::PORT (e.g. mx.example.org::587)"
        )
        return None
    return text


#: ``webarch:notify``: the mails that bring accounts their generated passwords.
NOTIFY_KEYS = check.key_table(
    Key(
        "from",
        "email address",
        Derived("default ``admin_email``"),
        "The envelope sender and ``From:`` address of the mails.",
    ),
    Key("from_name", "display name", OPTIONAL, "The name shown with the ``From:`` address."),
    Key("reply_to", "email address", OPTIONAL, "A ``Reply-To:`` address."),
    Key(
        "subject_tag",
        "one line, at most 60 characters",
        "",
        "Put before each subject, e.g. ``[Coop Hosting]``.",
    ),
    Key("signature", "text, at most 2000 characters", "", "Put at the end of each mail."),
    Key(
        "ssh_host",
        "host name",
        Derived("default ``hostname``"),
        "The host name the mails give for SSH logins.",
    ),
    Key("help_url", "URL", OPTIONAL, "A help page, given at the end of each mail."),
    Key(
        "via",
        check.one_of(NOTIFY_VIA),
        "auto",
        "Who sends the mails: ``auto``, the state run when masterless and the "
        "master's reactor otherwise; ``direct``, always the state run; ``reactor``, "
        "always the reactor (install ``webarch/files/salt-master/webarch-reactor.conf`` "
        "in ``/etc/salt/master.d/``).",
    ),
)


def notify_settings(value: Any, hostname: Any, admin_email: Any, problems: check.Problems) -> dict:
    """How password notifications are written and sent (never from a request)."""
    path = ["webarch", "notify"]
    data, get = check.block(value, NOTIFY_KEYS, path, problems)
    host = hostname if isinstance(hostname, str) else None
    sender = get("from")
    signature = get("signature")
    if (
        not isinstance(signature, str)
        or len(signature) > 2000
        or not all(line.isprintable() for line in signature.splitlines())
    ):
        problems.add([*path, "signature"], "must be printable text of at most 2000 characters")
        signature = ""
    help_url = get("help_url")
    if help_url is not None and (not isinstance(help_url, str) or check.url_problem(help_url)):
        problems.add([*path, "help_url"], f"{check.describe(help_url)} must be an http(s) URL")
        help_url = None
    return {
        "from": check.email(sender, [*path, "from"], problems)
        if sender is not None
        else admin_email,
        "from_name": check.display_name(data["from_name"], [*path, "from_name"], problems)
        if "from_name" in data
        else None,
        "reply_to": check.email(data["reply_to"], [*path, "reply_to"], problems)
        if "reply_to" in data
        else None,
        "subject_tag": check.single_line(data["subject_tag"], [*path, "subject_tag"], problems, 60)
        if "subject_tag" in data
        else get("subject_tag"),
        "signature": signature,
        "ssh_host": check.dns_name(data["ssh_host"], [*path, "ssh_host"], problems)
        if "ssh_host" in data
        else host,
        "help_url": help_url,
        "via": check.choice(get("via"), [*path, "via"], problems, NOTIFY_VIA),
    }


#: ``webarch:accounts:USERNAME:mail``: the account's own mail.
ACCOUNT_MAIL_KEYS = check.key_table(
    Key(
        "sender",
        "email address",
        Derived("default ``USERNAME@hostname``"),
        "The envelope sender of all the account's mail, whatever the sending program "
        "says; a ``From:`` header that differs gets a ``Sender:`` header naming the account.",
    ),
    Key(
        "rate_limit",
        "integer 1-100000",
        Derived("default: the server's ``mail:rate_limit``"),
        "Messages per hour the account may send.",
    ),
)


def account_mail(name: str, data: dict, server: dict, problems: check.Problems) -> dict:
    """An account's mail: its fixed envelope sender, send limit, msmtp config and log."""
    path = ["webarch", "accounts", name, "mail"]
    mail = check.mapping(data.get("mail"), path, problems)
    check.check_keys(mail, ACCOUNT_MAIL_KEYS, path, problems)
    default = f"{name}@{server['hostname'] or 'localhost'}"
    sender = (
        check.email(mail["sender"], [*path, "sender"], problems) if "sender" in mail else default
    )
    rate_limit = server["mail"]["rate_limit"]
    if "rate_limit" in mail:
        rate_limit = check.integer(mail["rate_limit"], [*path, "rate_limit"], problems, 1, 100000)
    return {
        "sender": sender,
        "rate_limit": rate_limit,
        "log": f"{paths.HOME_BASE}/{name}/logs/mail.log",
        "msmtprc": {
            "path": f"{server['chroot_base'] or paths.CHROOT_BASE}/{name}/etc/msmtprc",
            "lines": [
                "# Managed by Salt (webarch): sendmail (msmtp) hands mail to the host's Exim.",
                "# The envelope sender is fixed by the host for this account.",
                "defaults",
                "auth off",
                "tls off",
                "syslog off",
                "",
                "account default",
                f"socket {paths.MAIL_SOCKET}",
                "host localhost",
                f"domain {server['hostname'] or 'localhost'}",
                f"from {sender}",
                "allow_from_override off",
                "set_from_header auto",
            ],
        },
    }


#: ``webarch:accounts:USERNAME:resets``: a new value asks for a new password.
RESET_KEYS = check.key_table(
    Key(
        "ssh",
        "token",
        "",
        "Any short token (a date, a counter: 1 to 64 letters, digits and ``. _ : + -``). "
        "A new value asks for a new SSH password, generated and mailed once.",
    ),
    Key("mariadb", "token", "", "Likewise for a new MariaDB password."),
    Key("matomo", "token", "", "Likewise for a new Matomo password."),
)


def account_notify(
    name: str, data: dict, email: str | None, ssh_password: bool | None, problems: check.Problems
) -> dict:
    """Which passwords webarch generates and mails for the account, and their reset tokens.

    ``data`` is the account's pillar with the defaults of its keys filled in.
    """
    path = ["webarch", "accounts", name]
    db_password = check.boolean(data["db_password"], [*path, "db_password"], problems)
    _, get = check.block(data.get("resets"), RESET_KEYS, [*path, "resets"], problems)
    tokens = {}
    for kind in paths.NOTIFY_MARKERS:
        token = get(kind)
        if isinstance(token, int) and not isinstance(token, bool):
            token = str(token)
        if token != "" and (not isinstance(token, str) or not RESET_TOKEN_RE.fullmatch(token)):
            problems.add(
                [*path, "resets", kind],
                f"{check.describe(token)} must be 1-64 letters, digits or . _ : + - (e.g. a date)",
            )
            token = ""
        tokens[kind] = token
    if db_password and not email:
        problems.add(
            [*path, "db_password"], "needs the account's email: the password is sent there"
        )
    # Matomo's kind is added by the Matomo model (it knows who gets a user).
    enabled = {"ssh": bool(ssh_password and email), "mariadb": bool(db_password and email)}
    home = f"{paths.HOME_BASE}/{name}"
    return {
        "email": email,
        "db_password": bool(db_password),
        "kinds": {
            kind: {"token": tokens[kind], "marker": f"{home}/{marker}"}
            for kind, marker in paths.NOTIFY_MARKERS.items()
            if enabled.get(kind)
        },
        "tokens": tokens,
        # Passwords still waiting to be mailed: deleted with the account.
        "spool": [f"{paths.NOTIFY_SPOOL_DIR}/{name}.{kind}" for kind in paths.NOTIFY_MARKERS],
    }


def mail_accounts(present: list[dict]) -> dict:
    """The server-wide mail files: the gate's accounts, senders, aliases, send limits."""
    return {
        "lines": [paths.MAIL_ACCOUNTS_HEADER] + [f"{a['name']} {a['home']}" for a in present],
        "senders": {a["name"]: a["mail"]["sender"] for a in present},
        # Mail to ACCOUNT@hostname (bounces of its mail among it) goes to
        # its holder: Exim cannot deliver into the root-owned homes.
        "aliases": {a["name"]: a["email"] or "postmaster" for a in present},
        "limits": [
            f"{a['name']}: {a['mail']['rate_limit']}" for a in present if a["mail"]["rate_limit"]
        ],
    }
