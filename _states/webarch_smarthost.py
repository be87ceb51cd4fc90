"""
The login of this host's Exim at its smarthost: Debian's ``/etc/exim4/passwd.client``.

.. code-block:: yaml

    webarch-mail-smarthost-login:
      webarch_smarthost.login:
        - name: /etc/exim4/passwd.client
        - host: mail.coop.example
        - user: web1@coop.example
        - group: Debian-exim

The password is read from the pillar (``webarch:mail:smarthost_password``) when
the state runs.  It is never one of the state's arguments (Salt keeps those in
its highstate cache; with a master, they travel in jobs and events), never in
its return and never logged.  The file is root:``group`` 0640 (Exim reads it as
``Debian-exim``) and replaced atomically.  Without ``user`` it keeps only its
header: no login outlives its pillar.
"""

from __future__ import annotations

import contextlib
import grp
import os
import stat
import tempfile
from typing import Any

import webarch_mail as mail

__virtualname__ = "webarch_smarthost"

#: The owner of the file (a test on an unprivileged machine sets its own uid).
_OWNER = 0
_MODE = 0o640


def __virtual__() -> str:
    """Always available (Debian's exim4 is a package of the formula)."""
    return __virtualname__


def _password() -> Any:
    """The relay password from the pillar (plain: Salt 3008 masks pillar values)."""
    get = __salt__["pillar.get"]
    try:
        return get(mail.PASSWORD_PILLAR, None, unmask=True)
    except TypeError:  # Salt before 3008: nothing is masked
        return get(mail.PASSWORD_PILLAR, None)


def _current(path: str) -> tuple[bytes | None, os.stat_result | None]:
    """The file's content and status, or (None, None) when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return None, None


def _write(path: str, data: bytes, gid: int) -> None:
    """Replace ``path`` by ``data``, root:``gid`` 0640 before a byte is written."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".webarch-")
    try:
        os.fchown(fd, _OWNER, gid)
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def login(name: str, host: str = "", user: str = "", group: str = "Debian-exim") -> dict:
    """
    Ensure ``name`` (passwd.client) holds ``user``'s login at smarthost ``host``, and
    nothing else; without ``user``, no login at all.

    name
        The file: ``/etc/exim4/passwd.client``.
    host
        The smarthost as Exim names it (``dc_smarthost`` without its port).
    user
        The login name; the password is the pillar's ``webarch:mail:smarthost_password``.
    group
        The group that reads the file: Exim's, ``Debian-exim``.
    """
    ret: dict[str, Any] = {"name": name, "result": True, "comment": "", "changes": {}}
    password = None
    if user:
        password = _password()
        problem = mail.password_problem(password)
        if problem:
            ret["result"] = False
            ret["comment"] = f"{mail.PASSWORD_PILLAR}: {problem}"
            return ret
    auth = {"host": host, "user": user} if user else None
    data = ("\n".join(mail.passwd_client_lines(auth, password)) + "\n").encode()
    login_change = f"{user} at {host} (password not shown)" if auth else "none"
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        if __opts__["test"]:  # a first run in test mode: exim4 is not installed yet
            ret["result"] = None
            ret["changes"] = {"login": login_change}
            ret["comment"] = f"{name} would be written once exim4 brings group {group}"
            return ret
        ret["result"] = False
        ret["comment"] = f"{name}: group {group} does not exist (is exim4 installed?)"
        return ret
    content, status = _current(name)
    what = {}
    if content != data:
        what["login"] = login_change
    owner = (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) if status else None
    if owner != (_OWNER, gid, _MODE):
        what["mode"] = f"root:{group} 0640"
    if not what:
        ret["comment"] = f"{name} is up to date"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["changes"] = what
        ret["comment"] = f"{name} would be written"
        return ret
    _write(name, data, gid)
    ret["changes"] = what
    ret["comment"] = f"{name} written"
    return ret
