"""
The hosting accounts' limits as systemd sees them: the drop-ins that put an
account's PHP-FPM in its slice (``user-UID.slice``, where logind puts its SSH
and SFTP sessions) and limit both, and what systemd reports of them.

The slice is named after the account's uid, which exists only once its user
is made: the files are worked out when the state runs, not when the SLS is
rendered (a first run makes the user and then these).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import subprocess
import tempfile

import webarch_limits as limits
import webarch_paths as paths
from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_limits"

#: What ``show`` reports of the account's units.
SLICE_SHOWN = ("CPUQuotaPerSecUSec", "CPUWeight", "MemoryHigh", "MemoryMax", "TasksMax", "IOWeight")
SERVICE_SHOWN = ("Slice", "LimitNPROC", "LimitDATA", "OOMScoreAdjust", "Nice", "ActiveState")


def __virtual__() -> str:
    """Always available (systemd is Debian's init)."""
    return __virtualname__


def slice_name(name: str) -> str:
    """
    The systemd slice of account ``name``: logind's ``user-UID.slice``.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.slice_name alice
    """
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        raise CommandExecutionError(f"no user {name!r} on this host") from None
    return f"user-{uid}.slice"


def files(name: str, slice_properties: dict, service_properties: dict) -> dict[str, str]:
    """
    The drop-ins of account ``name``: path -> text (its slice's and its PHP-FPM's).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.files alice '{TasksMax: 128}' '{LimitNPROC: 128}'
    """
    slice_unit = slice_name(name)
    service = {"Slice": slice_unit, **{k: str(v) for k, v in service_properties.items()}}
    return {
        limits.DROPIN % slice_unit: limits.unit_text(
            "Slice", {k: str(v) for k, v in slice_properties.items()}, f"the limits of {name}"
        ),
        limits.DROPIN % paths.fpm_unit(name): limits.unit_text(
            "Service", service, f"{name}'s PHP-FPM in its slice, under its limits"
        ),
    }


def differing(wanted: dict[str, str]) -> list[str]:
    """
    The paths of ``wanted`` (path -> text) whose file holds something else.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.differing '{/etc/x.conf: "text"}'
    """
    found = []
    for path, text in sorted(wanted.items()):
        try:
            with open(path, encoding="utf-8") as handle:
                same = handle.read() == text
        except FileNotFoundError:
            same = False
        if not same:
            found.append(path)
    return found


def write(wanted: dict[str, str], reload: bool = True) -> list[str]:
    """
    Write the files of ``wanted`` that differ (atomically, root 0644) and, unless
    ``reload`` is false, reload systemd if any did; the paths written.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.write '{/etc/systemd/system/x.d/50-webarch-limits.conf: "..."}'
    """
    written = differing(wanted)
    for path in written:
        directory = os.path.dirname(path)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".webarch-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(wanted[path])
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    if written and reload:
        _systemctl("daemon-reload")
    return written


def slice_dropins(name: str) -> list[str]:
    """
    The slice drop-ins written for account ``name``: by its uid while its user
    exists, else by the name in their first line (a user removed by hand).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.slice_dropins alice
    """
    try:
        return [limits.DROPIN % slice_name(name)]
    except CommandExecutionError:
        pass
    heading = limits.unit_text("Slice", {}, f"the limits of {name}").splitlines()[0] + "\n"
    found = []
    for path in sorted(glob.glob(limits.DROPIN % "user-*.slice")):
        with open(path, encoding="utf-8") as handle:
            if handle.readline() == heading:
                found.append(path)
    return found


def remove(name: str) -> list[str]:
    """
    Remove account ``name``'s slice drop-in (its PHP-FPM's goes with its unit's
    directory) and reload systemd if there was one; the paths removed.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.remove alice
    """
    removed = [path for path in slice_dropins(name) if os.path.exists(path)]
    for path in removed:
        os.unlink(path)
        with contextlib.suppress(OSError):  # other drop-ins of the slice's: kept
            os.rmdir(os.path.dirname(path))
    if removed:
        _systemctl("daemon-reload")
    return removed


def need_reload(accounts: list[str]) -> bool:
    """
    Whether systemd must reload to see the files of these accounts' units (their
    slices, PHP-FPM services and sockets) as they are on disk now: true after any
    change to them, by this run, an interrupted one or a hand.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.need_reload '[alice, bob]'
    """
    units = []
    for name in accounts:
        unit = paths.fpm_unit(name)
        units += [unit, unit.removesuffix(".service") + ".socket"]
        with contextlib.suppress(CommandExecutionError):  # no user yet: no slice
            units.append(slice_name(name))
    if not units:
        return False
    out = _systemctl("show", "--property=NeedDaemonReload", *units)
    return "NeedDaemonReload=yes" in out.split()


def show(name: str) -> dict[str, dict[str, str]]:
    """
    What systemd reports of account ``name``'s slice and PHP-FPM service.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.show alice
    """
    units = {slice_name(name): SLICE_SHOWN, paths.fpm_unit(name): SERVICE_SHOWN}
    found = {}
    for unit, shown in units.items():
        out = _systemctl("show", unit, "--property=" + ",".join(shown))
        found[unit] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return found


def php_running(name: str) -> bool:
    """
    Whether account ``name``'s PHP-FPM runs.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.php_running alice
    """
    unit = paths.fpm_unit(name)
    done = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
    return done.returncode == 0


def restart_php(name: str) -> str:
    """
    Restart account ``name``'s PHP-FPM (under new limits); the unit restarted.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_limits.restart_php alice
    """
    unit = paths.fpm_unit(name)
    _systemctl("restart", unit)
    return unit


def _systemctl(*args: str) -> str:
    """systemctl's output; raises CommandExecutionError on failure."""
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CommandExecutionError(f"systemctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout
