"""
The chroots' bind mounts, in their own mount namespace (``webarch_mountns``).

.. code-block:: yaml

    webarch-alice-mount-usr:
      webarch_mount.mounted:
        - name: /chroots/alice/usr
        - device: /usr
        - fstype: none
        - opts: [bind, ro, nosuid, nodev, slave]
        - base: /chroots

The mounts are made in the namespace pinned by webarch-chroots.service (which
must be running) and persisted in /etc/webarch/chroots.fstab, which that
service mounts at boot.  The namespace's mount table and the fstab are parsed
once per run (Salt's ``mount.mounted`` re-reads them and its own mount cache
for every state: O(accounts^2)):

* a mount that is there with the wanted flags and whose exact fstab line is
  there returns at once (a ``slave`` mount that is still shared is made a
  slave: a bind made before webarch asked for ``slave``);
* a missing mount is mounted, a mount with other flags is mounted again, a
  missing or different fstab line is written;
* the old layout (before the namespace: the mount in the host's namespace and
  its line in /etc/fstab) is migrated: once the namespace has the mount, the
  line leaves /etc/fstab and the host's mount is unmounted (lazily: what a
  process still holds open stays valid until it lets go).

``unmounted`` undoes all of it (an account's removal).
"""

from __future__ import annotations

import os
from typing import Any

import webarch_mountns as mountns
import webarch_paths as paths

__virtualname__ = "webarch_mount"

#: Options that show in mountinfo and must match.
FLAGS = ("ro", "nosuid", "nodev", "noexec")
_NS = "webarch_mount.ns:"
_HOST = "webarch_mount.host:"
_FSTAB = "webarch_mount.fstab:"
_PINNED = "webarch_mount.pinned"


def __virtual__() -> str:
    return __virtualname__


def _ns(base: str) -> dict[str, mountns.Mount]:
    """The namespace's mounts on the chroot base, parsed once per run."""
    key = _NS + base
    if key not in __context__:
        __context__[key] = mountns.under_base(mountns.ns_mounts(), base)
    return __context__[key]


def _host(base: str) -> dict[str, mountns.Mount]:
    """The host namespace's mounts on the chroot base's bind (the old layout's)."""
    key = _HOST + base
    if key not in __context__:
        __context__[key] = mountns.under_base(mountns.host_mounts(), base)
    return __context__[key]


def _pinned() -> bool:
    """Whether the chroots' namespace is there (checked once per run)."""
    if _PINNED not in __context__:
        __context__[_PINNED] = mountns.pinned(mountns.host_mounts())
    return __context__[_PINNED]


def _fstab(config: str) -> list[tuple[str, ...]]:
    """The entries of ``config``, parsed once per run (kept up to date by this module)."""
    key = _FSTAB + config
    if key not in __context__:
        __context__[key] = mountns.read_fstab(config)
    return __context__[key]


def _fstab_entry(device: str, name: str, fstype: str, opts: list[str]) -> tuple[str, ...]:
    """The six fields of the fstab line webarch wants for a mount."""
    return (device, name, fstype, ",".join(opts), "0", "0")


def _flags_right(active: mountns.Mount, fstype: str, opts: list[str]) -> bool:
    """Whether a mount has the file system type and flags ``opts`` ask for."""
    if fstype not in ("none", active.fstype):
        return False
    wanted = [o for o in opts if o in FLAGS or o.startswith("hidepid=")]
    if any(o not in active.options for o in wanted):
        return False
    return "ro" in opts or "ro" not in active.options


def _run(argv: list[str]) -> str | None:
    """Run ``argv``; its error output if it failed, else None."""
    out = __salt__["cmd.run_all"](argv, python_shell=False)
    return None if out["retcode"] == 0 else (out["stderr"].strip() or f"exit {out['retcode']}")


def _write_fstab(config: str, name: str, entry: tuple[str, ...] | None) -> None:
    """Put ``entry`` as the line of mount point ``name`` in ``config`` (None: drop it)."""
    entries = _fstab(config)
    line = "{}\t\t{}\t{}\t{}\t{} {}\n".format(*entry) if entry else ""
    others = [e for e in entries if e[1] != name]
    if entry and len(others) == len(entries):
        # A new mount point (an account's first run): appended.
        os.makedirs(os.path.dirname(config), mode=0o755, exist_ok=True)
        with open(config, "a+", encoding="utf-8") as handle:
            handle.seek(0, 2)
            if handle.tell():
                handle.seek(handle.tell() - 1)
                if handle.read(1) != "\n":
                    line = "\n" + line
            handle.write(line)
        entries.append(entry)
        return
    with open(config, encoding="utf-8") as handle:
        lines = handle.read().splitlines(keepends=True)
    kept, placed = [], False
    for text in lines:
        fields = text.split()
        ours = len(fields) >= 2 and not fields[0].startswith("#")
        if ours and mountns.unescape(fields[1]) == name:
            if line and not placed:
                kept.append(line)
                placed = True
            continue
        kept.append(text)
    temp = f"{config}.webarch-new"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.writelines(kept)
    os.chmod(temp, 0o644)
    os.replace(temp, config)
    __context__[_FSTAB + config] = [*others, entry] if entry else others


def _ret(name: str, changes: dict, result: bool | None, comment: str) -> dict:
    return {"name": name, "changes": changes, "result": result, "comment": comment}


def _release_host(name: str, base: str, changes: dict, errors: list[str]) -> None:
    """Drop the old layout's /etc/fstab line and host mount of ``name``."""
    if any(e[1] == name for e in _fstab(mountns.HOST_FSTAB)):
        changes["host_fstab"] = "removed"
        if not __opts__["test"]:
            _write_fstab(mountns.HOST_FSTAB, name, None)
    if name in _host(base):
        changes["host_mount"] = "unmounted"
        if not __opts__["test"]:
            error = _run(["umount", "-l", name])
            if error:
                errors.append(f"umount -l {name} (host): {error}")
            __context__.pop(_HOST + base, None)


def mounted(
    name: str,
    device: str,
    fstype: str,
    opts: list[str] | None = None,
    config: str = mountns.FSTAB,
    base: str = paths.CHROOT_BASE,
    **kwargs: Any,
) -> dict:
    """
    Ensure ``device`` is mounted on ``name`` in the chroots' namespace and in ``config``.

    name
        The mount point, below ``base``.
    device, fstype, opts
        What is mounted there, as in an fstab line (``opts`` a list).
    config
        The fstab of the namespace's mounts (webarch-chroots.service mounts it at boot).
    base
        The chroot base (the namespace's private bind mount).
    """
    opts = list(opts or ["defaults"])
    entry = _fstab_entry(device, name, fstype, opts)
    if not _pinned() and not __opts__["test"]:
        return _ret(name, {}, False, f"{mountns.NS} is missing: webarch-chroots.service not run")
    active = _ns(base).get(name)
    changes: dict[str, Any] = {}
    errors: list[str] = []
    if active is None or not _flags_right(active, fstype, opts):
        changes["mount"] = True if active is None else "mounted again with the wanted options"
        if not __opts__["test"]:
            if active is not None:
                error = _run(mountns.in_namespace(["umount", "-R", name]))
                if error:
                    errors.append(f"umount -R {name}: {error}")
            error = _run(mountns.in_namespace(mountns.mount_command(*entry[:4])))
            if error:
                return _ret(name, {}, False, f"mounting {device} on {name} failed: {error}")
            __context__.pop(_NS + base, None)
    elif "slave" in opts and active.shared:
        changes["propagation"] = "shared -> slave"
        if not __opts__["test"]:
            error = _run(mountns.in_namespace(["mount", "--make-slave", name]))
            if error:
                return _ret(name, {}, False, f"mount --make-slave {name} failed: {error}")
            __context__.pop(_NS + base, None)
    if entry not in _fstab(config):
        changes["persist"] = "new" if all(e[1] != name for e in _fstab(config)) else "changed"
        if not __opts__["test"]:
            _write_fstab(config, name, entry)
    _release_host(name, base, changes, errors)
    if errors:
        return _ret(name, changes, False, "; ".join(errors))
    if not changes:
        return _ret(name, {}, True, f"{name} is mounted as wanted and in {config}")
    if __opts__["test"]:
        return _ret(name, changes, None, f"{name} would be mounted or persisted")
    return _ret(name, changes, True, f"{name} mounted in {mountns.NS} and in {config}")


def unmounted(
    name: str, config: str = mountns.FSTAB, base: str = paths.CHROOT_BASE, **kwargs: Any
) -> dict:
    """
    Ensure nothing is mounted on ``name`` (namespace and host) and no fstab line has it.

    name
        The mount point.
    config
        The fstab of the namespace's mounts.
    base
        The chroot base.
    """
    changes: dict[str, Any] = {}
    errors: list[str] = []
    if name in _ns(base):
        changes["umount"] = True
        if not __opts__["test"]:
            error = _run(mountns.in_namespace(["umount", name]))
            if error and _run(mountns.in_namespace(["umount", "-l", name])):
                errors.append(f"umount {name}: {error}")
            __context__.pop(_NS + base, None)
    if any(e[1] == name for e in _fstab(config)):
        changes["persist"] = "removed"
        if not __opts__["test"]:
            _write_fstab(config, name, None)
    _release_host(name, base, changes, errors)
    if errors:
        return _ret(name, changes, False, "; ".join(errors))
    if not changes:
        return _ret(name, {}, True, f"{name} is not mounted")
    if __opts__["test"]:
        return _ret(name, changes, None, f"{name} would be unmounted")
    return _ret(name, changes, True, f"{name} unmounted and dropped from {config}")
