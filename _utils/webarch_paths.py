"""
Every host path, name and pattern that more than one part of webarch uses.

The account model publishes these to the SLS files; the execution and state
modules and the programs webarch installs (``webarch-mail-log`` ...) import
them from here.  Nothing else in the formula spells them out.

Plain Python, standard library only: Salt imports this module from its synced
utils directory (``_utils``), the programs from ``/usr/local/lib/webarch``
where the formula installs a copy.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------

#: A hosting account's Unix user name (and its group's).
USERNAME_PATTERN = r"[a-z][a-z0-9-]{1,30}"
USERNAME_RE = re.compile(rf"^{USERNAME_PATTERN}$")
#: Every present account is in this group: sshd chroots its members.
ACCOUNT_GROUP = "webarch"
#: The web server's user: reads the sites through their group.
WEB_USER = "www-data"

HOME_BASE = "/home"
#: Where an account sees its nightly snapshots (relative to its home): the
#: mount point of ``BACKUP_STORE/USERNAME`` (webarch_backup).
BACKUP_MOUNT_DIR = "backups/files"
CHROOT_BASE = "/chroots"
ARCHIVE_DIR = "/var/backups/webarch"

#: webarch's own state (root 0700).
STATE_DIR = "/var/lib/webarch"
#: The Unix accounts webarch created or took over.  A host user not listed
#: here is never touched by webarch.
REGISTRY_PATH = f"{STATE_DIR}/managed-accounts"
REGISTRY_HEADER = "# Accounts created or taken over by webarch (managed by Salt)."
#: Accounts moved away from this server (webarch.orch.move): one file each,
#: named after the account, its first line saying where to and when.  A
#: present account with such a file is refused until its pillar says absent.
MOVED_DIR = f"{STATE_DIR}/moved"
#: What webarch did of each site's application (root 0600 JSON per site).
APPS_DIR = f"{STATE_DIR}/apps"

#: Map files the model writes for the programs (one line per entry).
CONFIG_DIR = "/etc/webarch"
LOG_MAP_PATH = f"{CONFIG_DIR}/log-map"
LOG_MAP_HEADER = "# Managed by Salt (webarch): site name -> account, for webarch-log-split."
MAIL_ACCOUNTS_PATH = f"{CONFIG_DIR}/mail-accounts"
MAIL_ACCOUNTS_HEADER = "# Managed by Salt (webarch): ACCOUNT HOME, for webarch-mail-gate and -log."
#: The accounts' outbound network rules (nftables table inet webarch) and their unit.
FIREWALL_CONF = f"{CONFIG_DIR}/nftables.conf"
FIREWALL_UNIT = "webarch-firewall"
#: The accounts' cron jobs, for webarch-cron (JSON, root 0600).
CRON_CONFIG_PATH = f"{CONFIG_DIR}/cron.json"
DB_DUMP_MAP_PATH = f"{CONFIG_DIR}/db-dumps"
DB_DUMP_MAP_HEADER = (
    "# Managed by Salt (webarch): ACCOUNT DATABASE, dumped nightly by webarch-db-dump."
)

#: Where the formula installs its programs.
PROGRAM_DIR = "/usr/local/sbin"

# --------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------

#: MariaDB: reached through its socket only (seen at the same path in each chroot).
MARIADB_SOCKET_DIR = "/run/mysqld"
MARIADB_SOCKET = f"{MARIADB_SOCKET_DIR}/mysqld.sock"
MARIADB_CONF = "/etc/mysql/mariadb.conf.d/90-webarch.cnf"

#: Mail: accounts hand mail to Exim through one socket (a gate that runs
#: ``exim4 -bs`` as the connecting account), seen at the same path in each chroot.
MAIL_GATE_DIR = "/run/webarch-mail"
MAIL_SOCKET = f"{MAIL_GATE_DIR}/submit.sock"
MAIL_LIMITS_PATH = "/etc/exim4/webarch-mail-limits"

#: Password notifications: where a password waits until it is mailed, and
#: the marker (in the account's home) that says where it went, per kind.
NOTIFY_DIR = f"{STATE_DIR}/notify"
NOTIFY_SPOOL_DIR = f"{NOTIFY_DIR}/spool"
NOTIFY_MARKERS = {"ssh": ".notify_passwd", "mariadb": ".notify_mariadb", "matomo": ".notify_matomo"}
NOTIFY_KINDS = tuple(NOTIFY_MARKERS)

#: Apache: webarch's server-wide conf, its port-80 site, the certificate of
#: names no site has, the sites' basic-auth files, its drop-in for the unit.
APACHE_DIR = "/etc/apache2"
APACHE_AUTH_DIR = f"{APACHE_DIR}/webarch-auth"
APACHE_CONF = f"{APACHE_DIR}/conf-available/webarch.conf"
APACHE_HTTP_SITE = f"{APACHE_DIR}/sites-available/000-webarch.conf"
APACHE_DEFAULT_CERT = f"{APACHE_DIR}/webarch-default.crt"
APACHE_DEFAULT_KEY = f"{APACHE_DIR}/webarch-default.key"
#: The accounts' site files as Salt renders them, before webarch-apache-sites
#: checks them all at once and puts them in sites-available (root's only).
APACHE_STAGING_DIR = f"{CONFIG_DIR}/apache-sites"
#: Its last install's refused files and why (JSON, root's).
APACHE_SITES_VERDICTS = "/run/webarch-apache-sites.json"
#: The accounts' own logs (~/logs/*), rotated daily.
LOGROTATE_CONF = "/etc/logrotate.d/webarch"

#: sshd: its config is webarch's; the accounts' keys are root's files.
SSHD_CONFIG = "/etc/ssh/sshd_config"
SSH_AUTHORIZED_KEYS_DIR = "/etc/ssh/authorized_keys"

#: PHP-FPM: the pools' sockets (names keyed, see webarch_php.pool_socket) and
#: the socket of the pool no one can reach.
PHP_RUN_DIR = "/run/php"
PHP_IDLE_SOCKET = f"{PHP_RUN_DIR}/webarch-idle.sock"

#: Exim (Debian's files, and webarch's own ACL) and the system files it reads.
EXIM_DEBCONF = "/etc/exim4/update-exim4.conf.conf"
EXIM_MACROS = "/etc/exim4/exim4.conf.localmacros"
EXIM_MAIL_ACL = "/etc/exim4/webarch-mail.acl"
EXIM_DEFAULTS = "/etc/default/exim4"
MAILNAME = "/etc/mailname"
EMAIL_ADDRESSES = "/etc/email-addresses"
ALIASES = "/etc/aliases"
#: Makes the mail gate's directory at boot, before the chroots' binds of it.
MAIL_TMPFILES = "/etc/tmpfiles.d/webarch-mail.conf"

#: System V IPC switched off (sysctl).
SYSCTL_CONF = "/etc/sysctl.d/90-webarch.conf"


def home(name: str) -> str:
    """The home of account ``name``."""
    return f"{HOME_BASE}/{name}"


def chroot(name: str, base: str = CHROOT_BASE) -> str:
    """The chroot of account ``name`` under ``base`` (the pillar's chroot_base)."""
    return f"{base}/{name}"


def apache_site(name: str) -> str:
    """The Apache site (a2ensite name) holding account ``name``'s virtual hosts."""
    return f"webarch-{name}"


def apache_site_file(name: str) -> str:
    """The file of account ``name``'s Apache site."""
    return f"{APACHE_DIR}/sites-available/{apache_site(name)}.conf"


def authorized_keys(name: str) -> str:
    """The root-owned file of account ``name``'s SSH keys (sshd's AuthorizedKeysFile)."""
    return f"{SSH_AUTHORIZED_KEYS_DIR}/{name}"


def fpm_dir(php_version: str) -> str:
    """PHP-FPM's configuration directory on that PHP version."""
    return f"/etc/php/{php_version}/fpm"


#: Each account's PHP-FPM: its own master (``webarch-php@ACCOUNT.service``)
#: reading its own file here.
FPM_CONF_DIR = "/etc/webarch/php-fpm"
FPM_UNIT = "webarch-php@"


def fpm_pool_file(name: str) -> str:
    """The PHP-FPM configuration (main and pool) of account ``name``."""
    return f"{FPM_CONF_DIR}/{name}.conf"


def fpm_old_pool_file(php_version: str, name: str) -> str:
    """Where the pool of account ``name`` was when one php-fpm ran every pool."""
    return f"{fpm_dir(php_version)}/pool.d/webarch-{name}.conf"


def fpm_unit(name: str) -> str:
    """The service running account ``name``'s PHP-FPM."""
    return f"{FPM_UNIT}{name}.service"


def account_log(name: str, log: str) -> str:
    """The log ``log`` (e.g. ``php-error.log``) in account ``name``'s ~/logs."""
    return f"{home(name)}/logs/{log}"


def notify_spool(name: str, kind: str) -> str:
    """Where a generated password of account ``name`` waits until it is mailed."""
    return f"{NOTIFY_SPOOL_DIR}/{name}.{kind}"


def published() -> dict[str, str]:
    """Every path and name above, by its lower-case name: the model's ``paths``."""
    return {
        name.lower(): value
        for name, value in globals().items()
        if name.isupper() and isinstance(value, str) and not name.endswith(("_HEADER", "_PATTERN"))
    }


# --------------------------------------------------------------------------
# Programs and units
# --------------------------------------------------------------------------

#: The helper modules of the Python programs (webarch_progs.py and a copy of
#: this file), root 0644.  Each program puts it first on sys.path, spelled out
#: (it cannot import it from here): test_program_contract checks they agree.
PROGRAM_LIB_DIR = "/usr/local/lib/webarch"
#: Where the formula's systemd units and drop-ins go.
SYSTEMD_DIR = "/etc/systemd/system"
#: The chroots' bind mounts live in a mount namespace of their own (not PID
#: 1's: systemd slows down with thousands of mounts), pinned by
#: webarch-chroots.service at CHROOT_NS (an nsfs bind inside CHROOT_NS_DIR, a
#: private bind mount) and mounted from CHROOT_FSTAB.  sshd runs in it
#: (webarch_mountns).
CHROOT_NS_UNIT = "webarch-chroots"
CHROOT_NS_DIR = "/run/webarch/ns"
CHROOT_NS = f"{CHROOT_NS_DIR}/chroots"
CHROOT_FSTAB = f"{CONFIG_DIR}/chroots.fstab"
#: webarch's drop-in for Debian's apache2.service.
APACHE_UNIT_DROPIN = f"{SYSTEMD_DIR}/apache2.service.d/webarch.conf"
#: Programs an account may run by name in its chroot (first on the chroots' PATH;
#: the chroots see the host's /usr).
ACCOUNT_PROGRAM_DIR = "/usr/local/bin"
#: webarch-htaccess-check --report: its systemd unit (service and timer) and its
#: memo of the .htaccess files already reported (JSON, root 0600).
HTACCESS_REPORT_UNIT = "webarch-htaccess-report"
HTACCESS_REPORT_MEMO = f"{STATE_DIR}/htaccess-report.json"
#: mod_md's MDMessageCmd (webarch-md-message, run as the web server's user)
#: leaves its stamp here; webarch-md-reload.path watches it.
MD_STAMP_DIR = "/var/lib/webarch-md"

# --------------------------------------------------------------------------
# Matomo
# --------------------------------------------------------------------------

#: webarch's own Matomo state (root 0700): the API token and the map of
#: site keys (ACCOUNT/SITE) to Matomo idsites.
MATOMO_STATE_DIR = f"{STATE_DIR}/matomo"
#: The API token the formula uses (root 0600; never on a command line).
MATOMO_TOKEN_PATH = f"{MATOMO_STATE_DIR}/token"
#: JSON: {"sites": {"ACCOUNT/SITE": idsite}, "users": [logins webarch created]}.
MATOMO_IDS_PATH = f"{MATOMO_STATE_DIR}/ids.json"
#: The password of webarch's own Matomo superuser (root 0600): Matomo asks for
#: it to change another user's password.
MATOMO_PASSWORD_PATH = f"{MATOMO_STATE_DIR}/password"
#: JSON: to whom and when the superuser's password was mailed (root 0600).
MATOMO_SUPERUSER_LEDGER = f"{MATOMO_STATE_DIR}/superuser.json"
#: JSON: how to reach the local instance (its pool socket, host name, script).
MATOMO_INSTANCE_PATH = f"{MATOMO_STATE_DIR}/instance.json"
#: JSON: the release the instance runs ({"sha256", "version"}).
MATOMO_RELEASE_PATH = f"{MATOMO_STATE_DIR}/release.json"
#: Where release archives are kept once verified, before unpacking.
MATOMO_RELEASES_DIR = f"{MATOMO_STATE_DIR}/releases"
#: Per account: the file (root-owned, readable by the account) listing its
#: sites' Matomo ids for the tracking code.
MATOMO_SITES_FILE = ".matomo_sites"


def matomo_archive_unit(name: str) -> str:
    """The systemd unit (service and timer) running core:archive for ``name``'s instance."""
    return f"webarch-matomo-archive-{name}"
