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

#: TLS towards the smarthost: required with its certificate checked, required with
#: any certificate, or Exim's default (STARTTLS when offered, else in clear).
SMARTHOST_TLS = ("required", "unverified", "opportunistic")

#: Debian's credentials of this host's Exim as an SMTP client (exim4_passwd_client(5)):
#: root:Debian-exim 0640, read by Exim's transport at each delivery.
PASSWD_CLIENT = "/etc/exim4/passwd.client"
PASSWD_CLIENT_GROUP = "Debian-exim"
#: Where the relay password is, in the pillar: only the state that writes
#: passwd.client reads it, when it runs (never the model, the SLS or its arguments).
PASSWORD_PILLAR = "webarch:mail:smarthost_password"
#: Debian's split configuration (conf.d/): webarch's macros, included first, and an
#: addition to Debian's ``remote_smtp_smarthost`` transport (the file sorts right after
#: ``30_exim4-config_remote_smtp_smarthost``, so its lines are options of that transport).
EXIM_MAIN_INCLUDE = "/etc/exim4/conf.d/main/000_webarch"
EXIM_SMARTHOST_ADDITION = (
    "/etc/exim4/conf.d/transport/30_exim4-config_remote_smtp_smarthost_webarch"
)

#: A login name or password Exim can send (AUTH PLAIN/LOGIN) and passwd.client hold.
LOGIN_TEXT_RE = re.compile(r"^[\x21-\x7e]{1,256}$")

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
        "smarthost_user",
        "login name",
        OPTIONAL,
        "Log in to the smarthost as this user (SMTP AUTH PLAIN or LOGIN, only over "
        "TLS) before any mail is sent: mail the smarthost does not take this login for "
        "stays queued. Needs ``smarthost_password``.",
    ),
    Key(
        "smarthost_password",
        "password: printable ASCII, no spaces",
        OPTIONAL,
        "The password of ``smarthost_user``. It is written to "
        "``/etc/exim4/passwd.client`` (root:Debian-exim 0640) and nowhere else: not in "
        "state output, logs or Salt's caches.",
    ),
    Key(
        "smarthost_tls",
        check.one_of(SMARTHOST_TLS),
        Derived("default ``required`` with ``smarthost_user``, else ``opportunistic``"),
        "``required``: mail leaves only over TLS (STARTTLS) and only if the "
        "smarthost's certificate is valid for its name (the system's CAs); "
        "``unverified``: over TLS too, whatever the certificate (a relay with a "
        "self-signed certificate on the co-op's own network); ``opportunistic``: "
        "TLS when the smarthost offers it, else in clear (Exim's default; not with a "
        "password).",
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
    """Server-wide mail: Exim's smarthost (or direct delivery), its login and TLS, and
    the default send limit.  The relay password is checked but not kept."""
    path = ["webarch", "mail"]
    data, get = check.block(value, MAIL_KEYS, path, problems)
    smarthost = get("smarthost")
    if smarthost is not None:
        smarthost = _smarthost(smarthost, [*path, "smarthost"], problems)
    rate_limit = get("rate_limit")
    if rate_limit is not None:
        rate_limit = check.integer(rate_limit, [*path, "rate_limit"], problems, 1, 100000)
    auth = _smarthost_auth(data, smarthost, path, problems)
    tls = _smarthost_tls(data, smarthost, auth, path, problems)
    return {
        "smarthost": smarthost,
        "smarthost_auth": auth,
        "smarthost_tls": tls,
        "exim_macros": exim_macros(tls),
        "exim_main_include": {
            "path": EXIM_MAIN_INCLUDE,
            "lines": [
                "# Managed by Salt (webarch): do not edit by hand.",
                "# webarch's macros (Debian's split configuration reads no localmacros file).",
                f".include {paths.EXIM_MACROS}",
            ],
        },
        "exim_smarthost_addition": {
            "path": EXIM_SMARTHOST_ADDITION,
            "lines": EXIM_SMARTHOST_ADDITION_LINES,
        },
        "passwd_client": {"path": PASSWD_CLIENT, "group": PASSWD_CLIENT_GROUP},
        "rate_limit": rate_limit,
        "socket": paths.MAIL_SOCKET,
        "gate_dir": paths.MAIL_GATE_DIR,
        "accounts_path": paths.MAIL_ACCOUNTS_PATH,
        "limits_path": paths.MAIL_LIMITS_PATH,
    }


#: Appended to Debian's ``remote_smtp_smarthost`` transport (see EXIM_SMARTHOST_ADDITION):
#: a smarthost with credentials in passwd.client (the list Debian gives
#: ``hosts_try_auth``) must take them, or the mail stays queued.  With only
#: ``hosts_try_auth``, Exim sends unauthenticated after a refused login, and the
#: smarthost's refusal of that mail bounces it.
EXIM_SMARTHOST_ADDITION_LINES = [
    "# Managed by Salt (webarch): do not edit by hand.",
    "# update-exim4.conf puts this file right after 30_exim4-config_remote_smtp_smarthost:",
    "# these are options of Debian's remote_smtp_smarthost transport.",
    "  hosts_require_auth = <; ${if exists{CONFDIR/passwd.client} \\",
    "        {${lookup{$host}nwildlsearch{CONFDIR/passwd.client}{$host_address}}}{}}",
]


def exim_macros(tls: str | None) -> list[str]:
    """The lines of webarch's Exim macros file (``exim4.conf.localmacros``)."""
    lines = [
        "# Managed by Salt (webarch): do not edit by hand.",
        "# Local callers that are not trusted (the hosting accounts) cannot",
        "# choose their envelope sender: Exim uses their login, rewritten by",
        "# /etc/email-addresses to the account's configured address.",
        "MAIN_FORCE_SENDER = yes",
        "# Per-account hourly send limits.",
        f"MAIN_ACL_CHECK_MAIL = {paths.EXIM_MAIL_ACL}",
    ]
    if tls in ("required", "unverified"):
        lines += [
            "# Mail to the smarthost leaves over TLS only (else it stays queued).",
            "REMOTE_SMTP_SMARTHOST_HOSTS_REQUIRE_TLS = *",
        ]
    if tls == "required":
        lines += [
            "# ... and only if its certificate is valid for its name (the system's CAs).",
            "REMOTE_SMTP_SMARTHOST_TLS_VERIFY_HOSTS = *",
        ]
    elif tls == "unverified":
        lines += [
            "# ... whatever its certificate (tried, not required).",
            "REMOTE_SMTP_SMARTHOST_TLS_VERIFY_HOSTS =",
        ]
    return lines


def _smarthost_auth(
    data: dict, smarthost: str | None, path: list[str], problems: check.Problems
) -> dict | None:
    """The smarthost login (``host`` as passwd.client names it, ``user``), or None.

    The password is checked here (never quoted in a problem) but not returned: the
    state that writes passwd.client reads it from the pillar itself.
    """
    user, password = data.get("smarthost_user"), data.get("smarthost_password")
    if user is None and password is None:
        return None
    bad = False
    if user is None:
        problems.add([*path, "smarthost_user"], "must be given with smarthost_password")
        bad = True
    elif not isinstance(user, str) or not LOGIN_TEXT_RE.fullmatch(user) or ":" in user:
        problems.add(
            [*path, "smarthost_user"],
            f"{check.describe(user)} must be 1-256 printable ASCII characters, "
            "without spaces or ':'",
        )
        bad = True
    problem = password_problem(password)
    if problem:
        problems.add([*path, "smarthost_password"], problem)
        bad = True
    host = smarthost.split("::")[0] if smarthost else None
    if "smarthost" not in data:
        problems.add([*path, "smarthost_user"], "needs webarch:mail:smarthost")
        bad = True
    elif host is None:  # the smarthost's own problem is reported
        bad = True
    elif host.startswith("["):
        problems.add(
            [*path, "smarthost_user"],
            "needs a smarthost named by host name or IPv4 address (not [IPv6])",
        )
        bad = True
    return None if bad else {"host": host, "user": user}


def password_problem(password: Any) -> str | None:
    """What is wrong with a relay password (never quoting it), or None."""
    if password is None:
        return "must be given with smarthost_user"
    if not isinstance(password, str):
        return f"must be a string, not {type(password).__name__} (quote it in YAML)"
    if not LOGIN_TEXT_RE.fullmatch(password):
        return "must be 1-256 printable ASCII characters without spaces (not shown here)"
    return None


def _smarthost_tls(
    data: dict, smarthost: str | None, auth: dict | None, path: list[str], problems: check.Problems
) -> str | None:
    """How Exim uses TLS towards the smarthost (None without a smarthost)."""
    login = auth is not None or "smarthost_user" in data or "smarthost_password" in data
    if "smarthost_tls" not in data:
        return None if smarthost is None else "required" if login else "opportunistic"
    tls = check.choice(data["smarthost_tls"], [*path, "smarthost_tls"], problems, SMARTHOST_TLS)
    if tls is not None and "smarthost" not in data:
        problems.add([*path, "smarthost_tls"], "needs webarch:mail:smarthost")
        return None
    if tls == "opportunistic" and login:
        problems.add(
            [*path, "smarthost_tls"],
            "opportunistic cannot go with smarthost_user: Exim sends the password only "
            "over TLS (use required or unverified)",
        )
        return None
    return tls if smarthost is not None else None


def passwd_client_lines(auth: dict | None, password: str | None) -> list[str]:
    """The lines of passwd.client: a header, and the smarthost's login if there is one."""
    lines = [
        "# Managed by Salt (webarch): do not edit by hand.",
        "# The login of this host's Exim at its smarthost (webarch:mail:smarthost_user and",
        "# smarthost_password), see exim4_passwd_client(5).  HOST:USER:PASSWORD",
    ]
    if auth is not None and password is not None:
        lines.append(f"{auth['host']}:{auth['user']}:{password}")
    return lines


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


def mail_accounts(present: list[dict], active: list[dict]) -> dict:
    """The server-wide mail files: the gate's accounts (the ``active`` ones:
    a suspended account's mail is refused), senders, aliases, send limits."""
    return {
        "lines": [paths.MAIL_ACCOUNTS_HEADER] + [f"{a['name']} {a['home']}" for a in active],
        "senders": {a["name"]: a["mail"]["sender"] for a in present},
        # Mail to ACCOUNT@hostname (bounces of its mail among it) goes to
        # its holder: Exim cannot deliver into the root-owned homes.
        "aliases": {a["name"]: a["email"] or "postmaster" for a in present},
        "limits": [
            f"{a['name']}: {a['mail']['rate_limit']}" for a in present if a["mail"]["rate_limit"]
        ],
    }
