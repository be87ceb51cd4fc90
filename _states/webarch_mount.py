"""
``mount.mounted`` with a fast path for mounts that are already right.

.. code-block:: yaml

    webarch-alice-mount-usr:
      webarch_mount.mounted:
        - name: /chroots/alice/usr
        - device: /usr
        - fstype: none
        - opts: [bind, ro, nosuid, nodev, slave]
        - persist: true

Salt's ``mount.mounted`` re-reads and re-parses, for every state, the mount
table, /etc/fstab and its own YAML mount cache (which lists every mount Salt
ever made) and rewrites that cache: with seven mounts per account a run costs
O(accounts^2) (the benchmarks measured 1.1 s per account at 50 accounts, most
of it in that cache).  Here /proc/self/mountinfo and /etc/fstab are parsed
once per run:

* a mount that is active with the wanted flags and whose exact fstab line is
  there returns at once (a ``slave`` mount that is still shared is made a
  slave: a bind made before webarch asked for ``slave``);
* a mount point with nothing mounted and no fstab line (an account's first
  run) is mounted with ``mount -o OPTS`` and its fstab line appended;
* anything else (a different mount or fstab line there) goes to
  ``mount.mounted`` unchanged, and the parsed tables are dropped, since it may
  change them.
"""

from __future__ import annotations

from typing import Any

__virtualname__ = "webarch_mount"

#: Options that show in /proc/self/mountinfo and must match.
FLAGS = ("ro", "nosuid", "nodev", "noexec")
_ACTIVE = "webarch_mount.active"
_FSTAB = "webarch_mount.fstab:"


def __virtual__() -> str:
    return __virtualname__


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def _mountinfo() -> dict[str, tuple[str, set[str]]]:
    """Mount point -> (file system type, options and propagation), parsed once per run.

    Propagation shows as ``shared:N`` / ``master:N`` among the options.
    """
    if _ACTIVE not in __context__:
        active: dict[str, tuple[str, set[str]]] = {}
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                sep = fields.index("-")
                options = set(fields[5].split(",")) | set(fields[sep + 3].split(","))
                options |= set(fields[6:sep])
                active[_unescape(fields[4])] = (fields[sep + 1], options)
        __context__[_ACTIVE] = active
    return __context__[_ACTIVE]


def _fstab_names(config: str) -> set[str]:
    """The mount points that have a line in ``config``."""
    return {fields[1] for fields in _fstab(config) if len(fields) > 1}


def _shared(name: str) -> bool:
    """Whether the mount at ``name`` still shares mount events (a peer group)."""
    active = _mountinfo().get(name)
    return active is not None and any(o.startswith("shared:") for o in active[1])


def _fstab(config: str) -> set[tuple[str, ...]]:
    """The entries of ``config`` (first six fields), parsed once per run."""
    key = _FSTAB + config
    if key not in __context__:
        lines: set[tuple[str, ...]] = set()
        try:
            with open(config, encoding="utf-8") as handle:
                for line in handle:
                    fields = line.split()
                    if fields and not fields[0].startswith("#"):
                        lines.add(tuple(fields[:6]))
        except FileNotFoundError:
            pass
        __context__[key] = lines
    return __context__[key]


def is_right(name: str, device: str, fstype: str, opts: list[str], config: str) -> bool:
    """Whether ``name`` is mounted with the wanted flags and has its exact fstab line."""
    active = _mountinfo().get(name)
    if active is None:
        return False
    kind, have = active
    if fstype not in ("none", kind):
        return False
    wanted = [o for o in opts if o in FLAGS or o.startswith("hidepid=")]
    if any(o not in have for o in wanted):
        return False
    if "ro" not in opts and "ro" in have:
        return False
    return _fstab_entry(device, name, fstype, opts) in _fstab(config)


def _fstab_entry(device: str, name: str, fstype: str, opts: list[str]) -> tuple[str, ...]:
    """The six fields of the fstab line webarch wants for a mount."""
    return (device, name, fstype, ",".join(opts), "0", "0")


def mounted(
    name: str,
    device: str,
    fstype: str,
    opts: list[str] | None = None,
    config: str = "/etc/fstab",
    persist: bool = True,
    **kwargs: Any,
) -> dict:
    """
    Like ``mount.mounted`` (same arguments); returns at once when nothing is to do.

    name
        The mount point.
    device, fstype, opts
        What is mounted there, as for ``mount.mounted``.
    config, persist
        The fstab and whether the mount is written there (the fast path needs both).
    """
    opts = list(opts or ["defaults"])
    if persist and is_right(name, device, fstype, opts, config):
        if "slave" in opts and _shared(name):
            return _make_slave(name)
        return _ret(name, {}, True, f"{name} is mounted as wanted and in {config}")
    if persist and name not in _mountinfo() and name not in _fstab_names(config):
        return _mount_new(name, device, fstype, opts, config)
    for key in [k for k in __context__ if str(k).startswith("webarch_mount.")]:
        __context__.pop(key)
    return __states__["mount.mounted"](
        name=name, device=device, fstype=fstype, opts=opts, config=config, persist=persist, **kwargs
    )


def _ret(name: str, changes: dict, result: bool | None, comment: str) -> dict:
    return {"name": name, "changes": changes, "result": result, "comment": comment}


def _make_slave(name: str) -> dict:
    """Make the mount at ``name`` a slave (it still shares mount events with its source)."""
    changes = {"propagation": "shared -> slave"}
    if __opts__["test"]:
        return _ret(name, changes, None, f"{name} would be made a slave mount")
    out = __salt__["cmd.run_all"](["mount", "--make-slave", name], python_shell=False)
    if out["retcode"] != 0:
        return _ret(name, {}, False, f"mount --make-slave {name} failed: {out['stderr']}")
    __context__.pop(_ACTIVE, None)
    return _ret(name, changes, True, f"{name} is now a slave mount")


def _mount_new(name: str, device: str, fstype: str, opts: list[str], config: str) -> dict:
    """Mount ``device`` on ``name`` (nothing there yet) and append its fstab line."""
    entry = _fstab_entry(device, name, fstype, opts)
    line = "{}\t\t{}\t{}\t{}\t{} {}\n".format(*entry)
    changes = {"mount": True, "persist": "new"}
    if __opts__["test"]:
        return _ret(
            name, changes, None, f"{device} would be mounted on {name} and added to {config}"
        )
    cmd = ["mount", "-o", entry[3]]
    if fstype != "none":
        cmd += ["-t", fstype]
    out = __salt__["cmd.run_all"]([*cmd, device, name], python_shell=False)
    if out["retcode"] != 0:
        return _ret(name, {}, False, f"mounting {device} on {name} failed: {out['stderr']}")
    with open(config, "a+", encoding="utf-8") as handle:
        handle.seek(0, 2)
        if handle.tell():
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":
                line = "\n" + line
        handle.write(line)
    wanted = {o for o in opts if o in FLAGS or o.startswith("hidepid=")}
    _mountinfo()[name] = (fstype if fstype != "none" else "", wanted)
    _fstab(config).add(entry)
    return _ret(name, changes, True, f"mounted {device} on {name} and added it to {config}")
