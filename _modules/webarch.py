"""
webarch: the Salt functions of the account model.

The model itself (``build_model``: merge the defaults, validate the whole
pillar, normalise) is plain Python in the formula's ``_utils`` (one module per
concern, see ``webarch_model``).  This module gives it the pillar, the host's
users and the Debian release, keeps the result for the run, and turns a list
of problems into one error: an SLS file rendering from :py:func:`config` then
fails before anything changes on the host.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
from collections.abc import Callable
from typing import Any

import webarch_apps
import webarch_check as check
import webarch_hardening
import webarch_layout as layout
import webarch_model
import webarch_paths as paths
import webarch_php
import webarch_updates
import webarch_web
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch"


def __virtual__() -> str:
    return __virtualname__


def _read_registry(path: str = paths.REGISTRY_PATH) -> frozenset[str]:
    """Return the account names recorded as managed by webarch."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _host_users() -> layout.HostUsers:
    """Return a snapshot of this host's users, groups and webarch registry."""
    return layout.HostUsers(
        users={p.pw_name: p.pw_uid for p in pwd.getpwall()},
        groups={g.gr_name: g.gr_gid for g in grp.getgrall()},
        managed=_read_registry(),
        socket_key=_machine_id(),
        moved=_moved(),
    )


def _moved(directory: str = paths.MOVED_DIR) -> tuple[tuple[str, str], ...]:
    """The accounts moved away from this host (webarch.orch.move) and where to."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return ()
    found = []
    for name in names:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as handle:
            found.append((name, handle.readline().strip()[:200]))
    return tuple(found)


def _machine_id(path: str = "/etc/machine-id") -> str:
    """This host's machine id (root's, never copied into a chroot), or '' without one."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def _pillar_data(pillar: dict | None) -> Any:
    """The ``webarch`` pillar with plain values.

    Salt 3008 masks pillar values that ``pillar.get`` returns outside templates
    (``**********``); the model needs them (e.g. when the reactor has
    ``webarch_notify.send`` read the account's address).
    """
    if pillar is not None:
        return pillar
    if webarch_model.FRESH_PILLAR_CONTEXT in __context__:
        # A job of the minion daemon (the reactor's mail of a password) set the
        # pillar compiled now: the daemon's own is from its start.
        return __context__[webarch_model.FRESH_PILLAR_CONTEXT]
    get: Callable[..., Any] = __salt__["pillar.get"]
    try:
        return get("webarch", {}, unmask=True)
    except TypeError:  # Salt before 3008: nothing is masked
        return get("webarch", {})


#: Where config() keeps the model it built last, with the inputs it was built from.
MODEL_CONTEXT_KEY = "webarch.model"


def config(pillar: dict | None = None) -> dict:
    """
    Return the whole validated, normalised webarch model.

    Raises an error listing every problem (with its pillar path) when the
    pillar is invalid, so an SLS rendering from it fails before anything
    changes on the host.

    pillar
        Use this dict instead of the ``webarch`` pillar (for checking a
        proposed pillar).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.config
    """
    only = None
    if pillar is None:
        only = __salt__["pillar.get"]("webarch_only", None, unmask=True)
    inputs = (_pillar_data(pillar), _host_users(), __grains__["osmajorrelease"], only)
    # Every SLS file imports map.jinja, so a run asks for the model once per
    # file: build it once for the same pillar and host.  The model is read-only.
    key = json.dumps(inputs, sort_keys=True, default=repr)
    cached = __context__.get(MODEL_CONTEXT_KEY)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        model = webarch_model.build_model(*inputs)
    except (check.ModelError, check.UnsupportedRelease) as exc:
        raise CommandExecutionError(str(exc)) from None
    __context__[MODEL_CONTEXT_KEY] = (key, model)
    return model


def accounts(state: str = "present") -> dict:
    """
    Return the normalised accounts in ``state`` (``present``, ``absent`` or ``all``).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.accounts
        salt '*' webarch.accounts state=all
    """
    everything = config()["accounts"]
    if state == "all":
        return everything
    return {name: a for name, a in everything.items() if a["state"] == state}


def validate(pillar: dict | None = None) -> dict:
    """
    Check the webarch pillar without raising; return ``valid`` and ``problems``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.validate
    """
    try:
        webarch_model.build_model(_pillar_data(pillar), _host_users(), __grains__["osmajorrelease"])
    except check.ModelError as exc:
        return {"valid": False, "problems": exc.problems}
    except check.UnsupportedRelease as exc:
        raise CommandExecutionError(str(exc)) from None
    return {"valid": True, "problems": []}


def hardening() -> dict:
    """
    Return what webarch/hardening.sls writes: login.defs values, the sysctl
    file (its kernel-wide settings commented out in a container, where they
    belong to the machine that runs it), limits, banner.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.hardening
    """
    in_container = __salt__["cmd.retcode"](
        ["systemd-detect-virt", "--container", "--quiet"], ignore_retcode=True
    )
    return webarch_hardening.hardening(in_container == 0)


def app_packages(osmajorrelease: int | None = None) -> list[str]:
    """
    Return every Debian package an application site or a site's web
    application firewall may need on this (or that) release (the state
    installs only those the sites in pillar use).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.app_packages
    """
    major = int(osmajorrelease if osmajorrelease is not None else __grains__["osmajorrelease"])
    found: list[str] = []
    for by_release in webarch_apps.DEBIAN_PACKAGES.values():
        found += [p for p in by_release.get(major, ()) if p not in found]
    # ModSecurity and the Core Rule Set: installed once a site has a WAF.
    return found + [p for p in webarch_web.WAF_PACKAGES if p not in found]


def packages(osmajorrelease: int | None = None) -> list[str]:
    """
    Return the Debian packages the formula installs on this (or that) release.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch.packages
    """
    major = int(osmajorrelease if osmajorrelease is not None else __grains__["osmajorrelease"])
    try:
        php = webarch_php.php_version(major)
    except check.UnsupportedRelease as exc:
        raise CommandExecutionError(str(exc)) from None
    found = [
        # SSH logins into the chroots, and the tools an account's shell offers.
        "openssh-server",
        "bash",
        "nano",
        "rsync",
        "tar",
        "gzip",
        "mariadb-client",
        # Mail: Exim takes the accounts' mail (msmtp is sendmail in the chroots).
        "exim4-daemon-light",
        "msmtp",
        "python3",
        # The accounts' outbound connections (SMTP only through Exim).
        "nftables",
        # logind puts each account's SSH and SFTP sessions in its slice
        # (user-UID.slice), beside its PHP-FPM and cron jobs, under its limits.
        "libpam-systemd",
        # Disk quotas (setquota, quota) where the homes' file system has them;
        # on btrfs, the homes' subvolumes and qgroups.
        "quota",
        "btrfs-progs",
        # Brute-force bans (webarch.fail2ban): sshd's failures come from the
        # journal (python3-systemd), the bans go through nftables.
        "fail2ban",
        "python3-systemd",
        # Databases: MariaDB, reached only through its socket.
        "mariadb-server",
        # The web stack: Apache (event MPM, proxy_fcgi, md) and PHP-FPM; the
        # web server reaches the sites through an ACL on each home.
        "acl",
        "apache2",
        *webarch_php.packages(php),
        # Security updates (webarch.updates): Debian's security suite daily,
        # the affected services restarted, the NEWS of upgrades mailed.
        *webarch_updates.PACKAGES,
        "apt-listchanges",
        # Host hardening (webarch.hardening): package checksums, password
        # strength for passwords people choose, activity history (sar).
        *webarch_hardening.PACKAGES,
    ]
    if major == 12:
        found.append("libapache2-mod-md")  # part of apache2 from Debian 13 on
    return found
