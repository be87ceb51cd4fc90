"""
Matomo for webarch: the server's instance, and users, websites and access as
the pillar says (thin over ``webarch_matomo_setup`` and ``webarch_matomo``).

.. code-block:: yaml

    webarch-matomo-installed:
      webarch_matomo.installed:
        - name: /home/carol-stats/sites/matomo
        - archive: /var/lib/webarch/matomo/releases/matomo-e1d6a869d3cf.tar.gz
        - sha256: e1d6a869d3cfb1102caddfe4ac2d8fbbb24539ba89df6fc9c10be0ad1924b50f

    webarch-alice-matomo-user:
      webarch_matomo.user_present:
        - name: alice

    webarch-alice-matomo-site-www:
      webarch_matomo.site_present:
        - name: alice/www

    webarch-alice-matomo-access:
      webarch_matomo.access:
        - name: alice

What each user, website and access should be comes from the model (the
pillar): the states name which part of it they keep.  All of them together
read Matomo once per run (one bulk request) and write only what differs, so a
run that changes nothing makes no write.  With ``test=True`` they say what
they would write.  When Matomo is down or answers an error, these states fail
with its answer; nothing else in the run depends on them.
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_matomo"


def __virtual__() -> str | tuple[bool, str]:
    if "webarch_matomo_setup.plan" in __salt__:
        return __virtualname__
    return (False, "the webarch_matomo_setup execution module is not available")


def _ret(name: str) -> dict[str, Any]:
    return {"name": name, "result": True, "comment": "", "changes": {}}


def installed(name: str, archive: str, sha256: str) -> dict[str, Any]:
    """
    Ensure the server's Matomo is unpacked into ``name`` (its docroot) and installed.

    name
        The instance's document root (from the model; for the state's name).
    archive
        The verified local copy of the release archive.
    sha256
        Its SHA-256, checked again before unpacking.

    An installed instance is never installed again; its files are only
    replaced by an upgrade.  Of the release trees upgrades leave beside the
    site, the newest (the previous release, for a rollback) is kept, older
    ones are removed.
    """
    ret = _ret(name)
    try:
        now = __salt__["webarch_matomo_setup.status"]()
        todo = [step for step, done in (("unpack", now["files"]), ("install", now["installed"]),
                                        ("token", now["token"])) if not done]  # fmt: skip
        upgrade = "" if todo else __salt__["webarch_matomo_release.due"](archive, sha256)
        # An upgrade that swaps the files keeps the current ones: all older trees go.
        swap = bool(upgrade) and upgrade != now["version"]
        old = [] if todo else __salt__["webarch_matomo_release.old_releases"](swap=swap)
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if upgrade:
        todo = [f"upgrade to {upgrade}"]
    if not todo and not old:
        ret["comment"] = f"Matomo {now['version']} is installed"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        said = [f"Matomo would be: {', '.join(todo)}"] if todo else []
        if old:
            said.append(f"old releases would be removed: {', '.join(old)}")
        ret["comment"] = "; ".join(said)
        ret["changes"] = {"matomo": todo} if todo else {}
        if old:
            ret["changes"]["removed"] = old
        return ret
    removed: list[str] = []
    try:
        if upgrade:
            removed = __salt__["webarch_matomo_release.upgrade"](archive, sha256).get("removed", [])
        elif old:
            removed = __salt__["webarch_matomo_release.prune"]()["removed"]
        if "unpack" in todo:
            __salt__["webarch_matomo_release.unpack"](archive, sha256)
        if "install" in todo:
            __salt__["webarch_matomo_setup.install"]()
        if todo:
            __salt__["webarch_matomo_setup.token"]()
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    said = []
    if todo:
        after = __salt__["webarch_matomo_setup.status"]()
        ret["changes"] = {"matomo": todo, "version": after["version"]}
        said.append(f"Matomo {after['version']} " + ("upgraded" if upgrade else "installed"))
    if removed:
        ret["changes"]["removed"] = removed
        said.append(f"old releases removed: {', '.join(removed)}")
    ret["comment"] = "; ".join(said) or f"Matomo {now['version']} is installed"
    return ret


def configured(name: str) -> dict[str, Any]:
    """
    Ensure the Matomo settings webarch owns (HTTPS only, trusted hosts, archiving by
    timer, no internet updates) have their values.  ``name``: the instance's docroot.
    """
    ret = _ret(name)
    try:
        differ = __salt__["webarch_matomo_setup.settings"]()
        if not differ:
            ret["comment"] = "Matomo's settings are as they should be"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["changes"] = {"settings": sorted(differ)}
            ret["comment"] = f"would set {', '.join(sorted(differ))}"
            return ret
        __salt__["webarch_matomo_setup.configure"]()
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = {"settings": sorted(differ)}
    ret["comment"] = f"set {', '.join(sorted(differ))}"
    return ret


def superuser_sent(name: str) -> dict[str, Any]:
    """
    Ensure the instance's superuser for people (login ``name``) exists and its password
    was mailed to ``admin_email`` (a new one when ``superuser_reset`` changes).
    """
    ret = _ret(name)
    try:
        reason = __salt__["webarch_matomo_admin.due"]()
        if not reason:
            ret["comment"] = f"the password of Matomo's superuser {name} was mailed"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["changes"] = {"superuser": reason}
            ret["comment"] = f"a new password would be made and mailed: {reason}"
            return ret
        sent = __salt__["webarch_matomo_admin.password_sent"]()
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = {"superuser": reason}
    ret["comment"] = sent["comment"]
    return ret


def _synced(name: str, kind: str, key: str) -> dict[str, Any]:
    """The writes of the run's plan that belong to ``kind`` ``key``, made (or predicted)."""
    ret = _ret(name)
    try:
        planned = __salt__["webarch_matomo_setup.plan"](kind, key)
        if not planned["writes"]:
            ret["comment"] = "Matomo is as it should be"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["changes"] = {"matomo": planned["writes"]}
            ret["comment"] = "; ".join(planned["writes"])
            return ret
        done = __salt__["webarch_matomo_setup.sync"](kind, key)["writes"]
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = {"matomo": done}
    ret["comment"] = "; ".join(done)
    return ret


def user_present(name: str) -> dict[str, Any]:
    """Ensure account ``name`` has its Matomo user (made by its password notification)."""
    return _synced(name, "user", name)


def user_absent(name: str) -> dict[str, Any]:
    """Ensure the Matomo user ``name`` webarch made is gone (its websites' data stay)."""
    return _synced(name, "user", name)


def site_present(name: str) -> dict[str, Any]:
    """Ensure site ``name`` (``ACCOUNT/SITE``) has its Matomo website: name, URLs, time zone."""
    return _synced(name, "site", name)


def site_absent(name: str) -> dict[str, Any]:
    """Ensure the Matomo website of site ``name`` (marked ``matomo: absent``) is deleted."""
    return _synced(name, "site", name)


def access(name: str) -> dict[str, Any]:
    """Ensure Matomo user ``name`` views exactly its own sites' websites, and that the
    account's ``~/.matomo_sites`` lists their ids."""
    ret = _synced(name, "access", name)
    if ret["result"] is False:
        return ret
    try:
        listed = __salt__["webarch_matomo_setup.sites_file"](name, test=__opts__["test"])
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if listed["changed"]:
        ret["changes"]["sites_file"] = listed["path"]
        if __opts__["test"]:
            ret["result"] = None
    return ret


def synced(name: str) -> dict[str, Any]:
    """Ensure whatever else the pillar says of Matomo holds (users of removed accounts
    deleted, access to sites switched off revoked).  ``name``: any."""
    return _synced(name, "all", "")
