"""
Automatic security updates (``webarch:updates``).

Debian's unattended-upgrades installs the updates of the security suite
(``CODENAME-security``, label ``Debian-Security``) and nothing else: the
formula's apt file clears the origins Debian's ``50unattended-upgrades``
allows (point releases too) and allows only that one.  needrestart, run by
apt after each upgrade, restarts the services still running the replaced
libraries.  What cannot be restarted without a reboot (the kernel, the C
library, systemd itself) leaves ``/run/reboot-required``: the formula's timer
mails the admin once for each new one, through the host's Exim.
"""

from __future__ import annotations

from typing import Any

import webarch_check as check
import webarch_paths as paths
from webarch_check import Derived, Key

#: The formula's apt file: read after Debian's 20auto-upgrades and 50unattended-upgrades.
APT_CONF = "/etc/apt/apt.conf.d/52webarch-updates"
#: needrestart's drop-in directory (Perl, read after needrestart.conf).
NEEDRESTART_CONF = "/etc/needrestart/conf.d/webarch.conf"
#: The only origin unattended-upgrades takes updates from (Debian 12 and 13).
SECURITY_ORIGIN = "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"
#: Left by the packages whose update needs a reboot (and the list of them).
REBOOT_FLAG = "/run/reboot-required"
REBOOT_PKGS = "/run/reboot-required.pkgs"
#: The program, its service and its timer that mail the admin about it.
REBOOT_PROGRAM = "webarch-reboot-mail"
REBOOT_UNIT = "webarch-reboot-mail"
REBOOT_STATE_DIR = "/var/lib/webarch-reboot-mail"
PACKAGES = ("unattended-upgrades", "needrestart")

#: ``webarch:updates``.
UPDATES_KEYS = check.key_table(
    Key(
        "enabled",
        "true or false",
        True,
        "Install the updates of Debian's security suite every day "
        "(unattended-upgrades; nothing from the point releases or elsewhere). ``false`` "
        "turns the automatic updates, the restarts and the reboot mail off.",
    ),
    Key(
        "restart_services",
        "true or false",
        True,
        "After an update, restart the services that still run replaced libraries "
        "(needrestart). ``false``: needrestart only lists them.",
    ),
    Key(
        "reboot_mail",
        "true or false",
        True,
        "Mail ``mail_to`` once when an update needs a reboot "
        f"(``{REBOOT_FLAG}``); the host is never rebooted by itself. Without an "
        "address (no ``admin_email``, no ``mail_to``) the default is off.",
    ),
    Key(
        "mail_to",
        "email address",
        Derived("default: ``admin_email``"),
        "Where the reboot mail and the reports of failed updates go.",
    ),
)


def settings(value: Any, admin_email: str | None, problems: check.Problems) -> dict:
    """``webarch:updates``, validated; ``mail_to`` defaults to the admin's address."""
    path = ["webarch", "updates"]
    data, get = check.block(value, UPDATES_KEYS, path, problems)
    enabled = bool(check.boolean(get("enabled"), [*path, "enabled"], problems))
    restart = bool(check.boolean(get("restart_services"), [*path, "restart_services"], problems))
    reboot_mail = bool(check.boolean(get("reboot_mail"), [*path, "reboot_mail"], problems))
    mail_to = (
        check.email(data["mail_to"], [*path, "mail_to"], problems)
        if "mail_to" in data
        else admin_email
    )
    # Asked for without an address: a problem; left at its default: off.
    if enabled and data.get("reboot_mail") is True and "mail_to" not in data and not admin_email:
        problems.add(
            [*path, "reboot_mail"],
            "needs an address: set webarch:admin_email or webarch:updates:mail_to "
            "(or reboot_mail: false)",
        )
    return {
        "enabled": enabled,
        "restart_services": enabled and restart,
        "reboot_mail": enabled and reboot_mail and mail_to is not None,
        "mail_to": mail_to,
    }


def apt_text(data: dict) -> str:
    """The formula's apt file: security updates only, or none."""
    lines = ["// Managed by Salt (webarch): automatic updates, see README (Security updates)."]
    if not data["enabled"]:
        return "\n".join([*lines, 'APT::Periodic::Unattended-Upgrade "0";']) + "\n"
    lines += [
        'APT::Periodic::Update-Package-Lists "1";',
        'APT::Periodic::Unattended-Upgrade "1";',
        'APT::Periodic::AutocleanInterval "7";',
        "// Only Debian's security suite (Debian's own list also has the point releases).",
        "#clear Unattended-Upgrade::Origins-Pattern;",
        "Unattended-Upgrade::Origins-Pattern {",
        f'  "{SECURITY_ORIGIN}";',
        "};",
        "// Services are restarted by needrestart; a reboot is mailed, never done.",
        'Unattended-Upgrade::Automatic-Reboot "false";',
    ]
    if data["mail_to"]:
        lines += [
            f'Unattended-Upgrade::Mail "{data["mail_to"]}";',
            'Unattended-Upgrade::MailReport "only-on-error";',
        ]
    return "\n".join(lines) + "\n"


def needrestart_text() -> str:
    """needrestart's drop-in: restart the affected services without asking."""
    return (
        "# Managed by Salt (webarch): restart the services that run replaced libraries\n"
        "# after each update (a = automatically), see README (Security updates).\n"
        "$nrconf{restart} = 'a';\n"
    )


def updates(
    value: Any, admin_email: str | None, sender: str | None, problems: check.Problems
) -> dict:
    """What updates.sls writes: the settings, the apt file, needrestart's and the timer's."""
    data = settings(value, admin_email, problems)
    return {
        **data,
        "packages": list(PACKAGES),
        "apt_conf": APT_CONF,
        "apt_text": apt_text(data),
        "needrestart_conf": NEEDRESTART_CONF,
        "needrestart_text": needrestart_text(),
        "reboot": {
            "program": f"{paths.PROGRAM_DIR}/{REBOOT_PROGRAM}",
            "unit": REBOOT_UNIT,
            "state_dir": REBOOT_STATE_DIR,
            "flag": REBOOT_FLAG,
            "pkgs": REBOOT_PKGS,
            "sender": sender or data["mail_to"],
        },
    }
