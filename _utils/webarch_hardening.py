"""
The host's own hardening (``webarch/hardening.sls``), what an auditor's tool
(lynis) asks of a shared hosting server and that does not get in the
accounts' way: no pillar keys, the values are fixed here.

- ``/etc/login.defs``: password aging floor, SHA-crypt rounds, umask 027;
- no core dumps (limits, systemd-coredump, the shells' ``ulimit``);
- idle root shells logged out (``TMOUT``, read-only);
- kernel and network settings (``/etc/sysctl.d/80-webarch-hardening.conf``);
  in a container the kernel-wide ones belong to the machine that runs it and
  are written commented out (applying them there would change that machine);
- USB and FireWire storage and rarely used network protocols not loadable;
- a legal banner in ``/etc/issue`` and ``/etc/issue.net``.
"""

from __future__ import annotations

#: Package checksums (debsums), password strength where people choose one
#: (pam_pwquality; the generated ones pass), the host's activity history (sar).
PACKAGES = ("debsums", "libpam-pwquality", "sysstat")
SYSSTAT_DEFAULT = "/etc/default/sysstat"
#: debsums weekly: Debian's cron job where cron runs, the formula's timer elsewhere.
DEBSUMS_DEFAULT = "/etc/default/debsums"
DEBSUMS_UNIT = "webarch-debsums"

LOGIN_DEFS = "/etc/login.defs"
#: login.defs keys and values.  No PASS_MAX_DAYS: an expired password would
#: lock the accounts' key logins too (PAM's account phase).
LOGIN_DEFS_VALUES = {
    "PASS_MIN_DAYS": "1",
    "SHA_CRYPT_MIN_ROUNDS": "5000",
    "SHA_CRYPT_MAX_ROUNDS": "100000",
    "UMASK": "027",
}

SYSCTL_FILE = "/etc/sysctl.d/80-webarch-hardening.conf"
#: Per network namespace: applied in a container too.
SYSCTL_NET = {
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.conf.default.accept_redirects": "0",
    "net.ipv6.conf.all.accept_redirects": "0",
    "net.ipv6.conf.default.accept_redirects": "0",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.accept_source_route": "0",
    "net.ipv4.conf.all.log_martians": "1",
    "net.ipv4.conf.default.log_martians": "1",
    "net.ipv4.conf.all.rp_filter": "1",
}
#: Kernel-wide: the host's own (a container leaves them to the machine that runs it).
SYSCTL_KERNEL = {
    "dev.tty.ldisc_autoload": "0",
    "fs.protected_fifos": "2",
    "fs.protected_regular": "2",
    "fs.protected_symlinks": "1",
    "fs.protected_hardlinks": "1",
    "fs.suid_dumpable": "0",
    "kernel.core_uses_pid": "1",
    "kernel.ctrl-alt-del": "0",
    "kernel.kptr_restrict": "2",
    "kernel.perf_event_paranoid": "3",
    "kernel.unprivileged_bpf_disabled": "1",
}

LIMITS_FILE = "/etc/security/limits.d/80-webarch-core.conf"
COREDUMP_FILE = "/etc/systemd/coredump.conf.d/80-webarch.conf"
PROFILE_FILE = "/etc/profile.d/80-webarch-hardening.sh"
#: Seconds an interactive shell on the host may sit idle.
SHELL_TIMEOUT = 900
MODPROBE_FILE = "/etc/modprobe.d/80-webarch-hardening.conf"
#: Storage a visitor at the machine could plug in, and network protocols no
#: web server speaks.
MODULES_OFF = ("usb-storage", "firewire-core", "firewire-ohci", "dccp", "sctp", "rds", "tipc")
BANNER = (
    "Authorized access only. This system hosts the sites of the co-op's members;\n"
    "connections and activity are logged and monitored, subject to the co-op's\n"
    "policy and the law. Disconnect now if you are not permitted to use it.\n"
)
BANNER_FILES = ("/etc/issue", "/etc/issue.net")

HEADER = "# Managed by Salt (webarch): host hardening, see docs/security.rst."


def sysctl_text(in_container: bool) -> str:
    """The sysctl file; in a container the kernel-wide keys are commented out."""
    lines = [HEADER, "# Per network namespace."]
    lines += [f"{key} = {value}" for key, value in SYSCTL_NET.items()]
    lines.append("# Kernel-wide.")
    if in_container:
        lines.append("# In a container these belong to the machine that runs it: set them there.")
    prefix = "# " if in_container else ""
    lines += [f"{prefix}{key} = {value}" for key, value in SYSCTL_KERNEL.items()]
    return "\n".join(lines) + "\n"


def applied_sysctls(in_container: bool) -> dict[str, str]:
    """The settings this host applies."""
    return dict(SYSCTL_NET) if in_container else {**SYSCTL_NET, **SYSCTL_KERNEL}


def hardening(in_container: bool) -> dict:
    """What hardening.sls writes."""
    return {
        "login_defs": LOGIN_DEFS,
        "login_defs_values": dict(LOGIN_DEFS_VALUES),
        "sysctl_file": SYSCTL_FILE,
        "sysctl_text": sysctl_text(in_container),
        "sysctls": applied_sysctls(in_container),
        "limits_file": LIMITS_FILE,
        "limits_text": f"{HEADER}\n* soft core 0\n* hard core 0\n",
        "coredump_file": COREDUMP_FILE,
        "coredump_text": f"{HEADER}\n[Coredump]\nStorage=none\nProcessSizeMax=0\n",
        "profile_file": PROFILE_FILE,
        "profile_text": (
            f"{HEADER}\n# No core dumps; idle interactive shells end after "
            f"{SHELL_TIMEOUT // 60} minutes.\nulimit -c 0\n"
            f"TMOUT={SHELL_TIMEOUT}\nreadonly TMOUT\nexport TMOUT\n"
        ),
        "modprobe_file": MODPROBE_FILE,
        "modprobe_text": "\n".join([HEADER, *(f"install {name} /bin/true" for name in MODULES_OFF)])
        + "\n",
        "sysstat_default": SYSSTAT_DEFAULT,
        "debsums_default": DEBSUMS_DEFAULT,
        "debsums_unit": DEBSUMS_UNIT,
        "banner_files": list(BANNER_FILES),
        "banner": BANNER,
    }
