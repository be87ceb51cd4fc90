"""
States for per-account chroots, thin over the ``webarch_chroot`` execution module.

.. code-block:: yaml

    webarch-alice-chroot:
      webarch_chroot.present:
        - name: alice
        - path: /chroots/alice
        - home: /home/alice

The bind mounts themselves are Salt ``mount.mounted`` states (see
``webarch/chroot.sls``).
"""

from __future__ import annotations

import pwd

__virtualname__ = "webarch_chroot"


def __virtual__() -> str:
    return __virtualname__


def _ret(name: str) -> dict:
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def _user_exists(name: str) -> bool:
    """Whether the Unix user ``name`` exists (Salt's user.info also lists every
    group of the host to find the user's: at 1,000 accounts 30 ms a call)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def present(
    name: str, path: str, home: str, web_user: str = "www-data", files: dict | None = None
) -> dict:
    """
    Ensure the chroot skeleton of account ``name`` exists at ``path`` and is exact.

    name
        The account (Unix user) the chroot belongs to.
    path
        The chroot's root, e.g. ``/chroots/alice``.
    home
        The account's home; its mount point inside the chroot has the same path.
    web_user
        The web server's user, listed in the chroot's passwd and group.
    files
        Extra root-owned files under the chroot's etc/: ``{"etc/msmtprc": text}``.
    """
    ret = _ret(name)
    if not _user_exists(name):
        # Only in test mode can the account's user still be missing here.
        ret["result"] = None if __opts__["test"] else False
        ret["changes"] = {"create": [path]} if __opts__["test"] else {}
        ret["comment"] = f"User {name} does not exist (yet): chroot {path} not built"
        return ret
    plan = __salt__["webarch_chroot.plan"](name, path, home, web_user, files)
    if not plan:
        ret["comment"] = f"Chroot {path} is in the wanted state"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = plan
        ret["comment"] = f"Chroot {path} would be built or repaired"
        return ret
    ret["changes"] = __salt__["webarch_chroot.apply"](name, path, home, web_user, files)
    ret["comment"] = f"Chroot {path} built or repaired"
    return ret


def absent(name: str, path: str) -> dict:
    """
    Ensure the chroot at ``path`` is gone; fails while anything is still mounted in it.

    Unmount first (the formula's ``mount.unmounted`` states do).

    name
        The account the chroot belonged to.
    path
        The chroot's root.
    """
    ret = _ret(name)
    mounted = __salt__["webarch_chroot.mounts"](path)
    if mounted:
        ret["result"] = False
        ret["comment"] = f"Refusing to remove {path}: still mounted: {', '.join(mounted)}"
        return ret
    if not __salt__["file.directory_exists"](path):
        ret["comment"] = f"Chroot {path} is already absent"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"removed": path}
        ret["comment"] = f"Chroot {path} would be removed"
        return ret
    __salt__["webarch_chroot.remove"](path)
    ret["changes"] = {"removed": path}
    ret["comment"] = f"Chroot {path} removed"
    return ret
