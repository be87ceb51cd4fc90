"""
The server-wide settings of the webarch pillar (``webarch:`` without the accounts).

``SERVER_KEYS`` documents them (the pillar reference is built from it) and
:py:func:`server_settings` validates and defaults them; each concern module
(``webarch_db``, ``webarch_mail``, ``webarch_web`` ...) checks its own block.
Split out of ``webarch_model``, which puts the server and the accounts together.
"""

from __future__ import annotations

import webarch_backup as backup
import webarch_check as check
import webarch_db as db
import webarch_fail2ban as fail2ban
import webarch_layout as layout
import webarch_limits as limits
import webarch_mail as mail
import webarch_net as net
import webarch_paths as paths
import webarch_php as php
import webarch_quota as quota
import webarch_updates as updates
import webarch_web as web
from webarch_check import OPTIONAL, Key

#: ``webarch:``: the server-wide settings (and the accounts).
SERVER_KEYS = check.key_table(
    Key("hostname", "host name", OPTIONAL, "The server's fully qualified name."),
    Key("admin_email", "email address", OPTIONAL, "Where the server's own notices go."),
    Key(
        "reserved_usernames",
        "list of usernames",
        [],
        "Usernames no account may take, on top of the built-in list of system and role "
        "names (``root``, ``www-data``, ``mysql``, ``postmaster``, ``webmaster``, ...).",
    ),
    Key(
        "chroot_base",
        "absolute path",
        paths.CHROOT_BASE,
        "Where the accounts' chroots are built, one per account at "
        "``CHROOT_BASE/USERNAME``. Not inside ``/home``, ``/usr``, ``/etc``, ``/run``, "
        "``/tmp`` and the like.",
    ),
    Key(
        "archive_dir",
        "absolute path",
        paths.ARCHIVE_DIR,
        "Where the homes of removed accounts are archived (root only, 0700; each "
        "archive 0600), and the dumps of dropped databases (``ARCHIVE_DIR/databases``). "
        "Not inside ``chroot_base``, nor the other way round.",
    ),
    Key(
        "log_retention_days",
        "integer 1-3650",
        14,
        "How many days the accounts' own logs in ``~/logs`` are kept (rotated daily).",
    ),
    Key(
        "sysv_ipc",
        "true or false",
        False,
        "System V IPC is one namespace for the whole host (chroots do not separate it): "
        "by default no shared memory segment or message queue can be made "
        "(``kernel.shmall = 0``, ``kernel.msgmni = 0`` in "
        "``/etc/sysctl.d/90-webarch.conf``), so no account can leave one that others "
        "read. ``true`` leaves the kernel's defaults (for software that needs them). "
        "The PHP-FPM pools never have SysV IPC functions.",
    ),
    Key("mariadb", "mapping", {}, "The MariaDB server. See `MariaDB`_."),
    Key("mail", "mapping", {}, "Mail from the accounts. See `Mail`_."),
    Key(
        "outbound",
        "mapping",
        {},
        "The accounts' outbound connections: SMTP only through the host's Exim, the "
        "rest open unless denied. See `Outbound network`_.",
    ),
    Key(
        "notify",
        "mapping",
        {},
        "The mails that bring accounts their generated passwords; every text comes "
        "from here, never from a request. See `Password notifications`_.",
    ),
    Key("acme", "mapping", {}, "Certificates for every site through Apache's mod_md."),
    Key(
        "waf",
        check.one_of(web.WAF_MODES),
        "off",
        "The web application firewall of every site that sets no ``waf`` of its own. "
        "See `Web application firewall`_.",
    ),
    Key("quota", "mapping", {}, "Disk quotas of the accounts. See `Quotas`_."),
    Key(
        "backup",
        "mapping",
        {},
        "Nightly snapshots of the accounts' homes, read-only in their chroots. See `Backups`_.",
    ),
    Key(
        "limits",
        "mapping",
        {},
        "Every account's share of the machine: CPU, memory, processes, I/O. See `Limits`_.",
    ),
    Key(
        "fail2ban",
        "mapping",
        {},
        "Bans of addresses that keep failing to log in (SSH, basic auth, WordPress, "
        "Matomo). See `Brute-force bans`_.",
    ),
    Key(
        "updates",
        "mapping",
        {},
        "Automatic security updates, restarts of the affected services and a mail "
        "when a reboot is due. See `Security updates`_.",
    ),
    Key(
        "matomo",
        "mapping",
        {},
        "The server's Matomo (web analytics) and its users and websites. See `Matomo`_.",
    ),
    Key(
        "accounts",
        "mapping",
        {},
        "Hosting accounts keyed by username: 2 to 31 characters, a lower-case letter, "
        "then lower-case letters, digits and hyphens. The username names the Unix user, "
        "its group and its home ``/home/USERNAME``.",
    ),
)


def server_settings(pillar: dict, problems: check.Problems, osmajorrelease: int = 12) -> dict:
    """Validate and default the server-wide settings."""
    base = ["webarch"]
    get = check.with_defaults(pillar, SERVER_KEYS).get
    hostname = get("hostname")
    admin_email = get("admin_email")
    reserved = get("reserved_usernames")
    if not isinstance(reserved, list) or not all(isinstance(r, str) for r in reserved):
        problems.add([*base, "reserved_usernames"], "must be a list of strings")
        reserved = []
    valid_admin = admin_email if isinstance(admin_email, str) and "@" in admin_email else None
    notify = mail.notify_settings(get("notify"), hostname, valid_admin, problems)
    return {
        "hostname": check.dns_name(hostname, [*base, "hostname"], problems)
        if hostname is not None
        else None,
        "admin_email": check.email(admin_email, [*base, "admin_email"], problems)
        if admin_email is not None
        else None,
        "reserved_usernames": sorted(set(reserved)),
        "chroot_base": layout.server_path(
            pillar, "chroot_base", SERVER_KEYS["chroot_base"].default, problems
        ),
        "archive_dir": layout.server_path(
            pillar, "archive_dir", SERVER_KEYS["archive_dir"].default, problems
        ),
        "web_user": paths.WEB_USER,
        "log_retention_days": check.integer(
            get("log_retention_days"), [*base, "log_retention_days"], problems, 1, 3650
        ),
        "sysctls": {}
        if check.boolean(get("sysv_ipc"), [*base, "sysv_ipc"], problems)
        else dict(layout.SYSV_IPC_OFF),
        "php_version": php.php_version(osmajorrelease),
        "mariadb": db.mariadb_settings(get("mariadb"), problems),
        "outbound": net.server_outbound(get("outbound"), problems),
        "limits": limits.server_limits(get("limits"), problems),
        "fail2ban": fail2ban.fail2ban(get("fail2ban"), problems),
        "mail": {
            **mail.mail_settings(get("mail"), problems),
            "daemon": mail.exim_queue_only(osmajorrelease),
        },
        "notify": notify,
        "updates": updates.updates(get("updates"), valid_admin, notify["from"], problems),
        "quota": quota.quota_settings(get("quota"), pillar.get("accounts"), problems),
        "backup": backup.backup_settings(
            get("backup"),
            {
                "chroot_base": pillar.get("chroot_base", SERVER_KEYS["chroot_base"].default),
                "archive_dir": pillar.get("archive_dir", SERVER_KEYS["archive_dir"].default),
            },
            problems,
        ),
        "waf": web.waf_mode(get("waf"), [*base, "waf"], problems),
        "acme": web.acme(
            get("acme"),
            admin_email if isinstance(admin_email, str) and "@" in admin_email else None,
            problems,
        ),
    }
