"""
Generated passwords, mailed to the account exactly once.

.. code-block:: yaml

    webarch-alice-notify-ssh:
      webarch_notify.password_sent:
        - name: alice
        - kind: ssh
        - token: "2026-11-28"
        - marker: /home/alice/.notify_passwd

A password is issued when none was yet, when ``token`` changed, or when the
marker was deleted.  It is then mailed: directly (masterless, or ``via:
direct``) or by firing ``webarch/notify/ACCOUNT/KIND`` to the master, whose
reactor calls ``webarch_notify.send`` on this minion.  The secret is never in
the state's return.
"""

from __future__ import annotations

__virtualname__ = "webarch_notify"


def __virtual__() -> str | tuple[bool, str]:
    """Load only with the webarch_notify execution module."""
    if "webarch_notify.issue" in __salt__:
        return __virtualname__
    return (False, "the webarch_notify execution module is not available")


def _ret(name: str) -> dict:
    return {"name": name, "result": True, "comment": "", "changes": {}}


def _direct(via: str) -> bool:
    """Send from the state run (masterless) rather than through the master's reactor."""
    if via in ("direct", "reactor"):
        return via == "direct"
    return __opts__.get("file_client") == "local" or __opts__.get("master_type") == "disable"


def password_sent(
    name: str, kind: str, token: str = "", marker: str = "", via: str = "auto"
) -> dict:
    """
    Ensure account ``name`` has a ``kind`` (ssh or mariadb) password that was mailed to it.

    name
        The account.
    kind
        ``ssh`` or ``mariadb``.
    token
        The pillar's reset token: a new value asks for a new password.
    marker
        The account-readable record of the last mail; deleting it asks for a new password.
    via
        ``auto`` (direct when masterless, else the reactor), ``direct`` or ``reactor``.
    """
    ret = _ret(name)
    reason = __salt__["webarch_notify.due"](name, kind, token, marker)
    pending = {"account": name, "kind": kind} in __salt__["webarch_notify.pending"]()
    if __opts__["test"]:
        if reason:
            ret["changes"]["password"] = f"would issue a new {kind} password ({reason})"
        if reason or pending:
            ret["changes"]["mail"] = "would be sent"
            ret["result"] = None
            ret["comment"] = f"{name}: a {kind} password would be issued and mailed"
        else:
            ret["comment"] = f"{name}: the {kind} password was mailed; nothing due"
        return ret
    if reason:
        __salt__["webarch_notify.issue"](name, kind, token, marker)
        ret["changes"]["password"] = f"issued a new {kind} password ({reason})"
    elif not pending:
        ret["comment"] = f"{name}: the {kind} password was mailed; nothing due"
        return ret
    if _direct(via):
        try:
            sent = __salt__["webarch_notify.send"](name, kind)
        except Exception as exc:  # the secret stays pending; the next run sends it
            ret["result"] = False
            ret["comment"] = f"{name}: {kind} password pending, not mailed yet: {exc}"
            return ret
        ret["changes"]["mail"] = f"handed to the MTA for {sent.get('to')}"
        ret["comment"] = f"{name}: {kind} password mailed"
    else:
        tag = __salt__["webarch_notify.notify_event"](name, kind)
        ret["changes"]["event"] = tag
        ret["comment"] = f"{name}: {kind} password pending; the master's reactor mails it"
    return ret


def queue_delivered(name: str) -> dict:
    """
    Ensure no notification mail from ``name`` (the sender address) waits in Exim's queue.

    Tries a delivery of each; a message that stays queued (the relay is still
    down) is no change and no failure: Exim keeps retrying it.
    """
    ret = _ret(name)
    ids = __salt__["webarch_notify.queued"](name)
    if not ids:
        ret["comment"] = "no notification mail waits in the queue"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = {"deliver": ids}
        ret["comment"] = f"would try to deliver {len(ids)} queued notification mail(s)"
        return ret
    done = __salt__["webarch_notify.deliver_queued"](name)
    if done["delivered"]:
        ret["changes"] = {"delivered": done["delivered"]}
    left = sorted(set(done["tried"]) - set(done["delivered"]))
    ret["comment"] = f"delivered {len(done['delivered'])}; still queued (Exim retries): {left}"
    return ret
