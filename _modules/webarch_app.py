"""
webarch_app: a site's application (WordPress, MediaWiki), whichever it is.

The sites' ``app`` blocks (``_utils/webarch_apps.py``) name the application by
the site's type; this module hands each call to the module of that type
(``webarch_wordpress``, ``webarch_mediawiki``), which share one interface:
``status``, ``install`` and ``set_password``.
"""

from __future__ import annotations

from typing import Any

from salt.exceptions import CommandExecutionError

__virtualname__ = "webarch_app"

#: The execution module of each application.
MODULES = {"wordpress": "webarch_wordpress", "mediawiki": "webarch_mediawiki"}


def __virtual__() -> str:
    return __virtualname__


def _module(account: str, site: str) -> str:
    """The module of ``account``'s site ``site``'s application."""
    model = __salt__["webarch.config"]()
    app = model["accounts"].get(account, {}).get("apps", {}).get(site)
    if app is None:
        raise CommandExecutionError(f"{account}'s site {site!r} has no application (app block)")
    return MODULES[app["kind"]]


def status(account: str, site: str) -> dict[str, Any]:
    """
    What there is of the site's application: empty, copied, configured, installed
    or foreign (the document root holds something else), and its version.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_app.status alice www
    """
    return __salt__[f"{_module(account, site)}.status"](account, site)


def install(account: str, site: str) -> dict[str, Any]:
    """
    Install the site's application into its empty document root (or finish an
    interrupted install); never over an existing install.

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_app.install alice www
    """
    return __salt__[f"{_module(account, site)}.install"](account, site)


def set_password(account: str, site: str, password: str) -> None:
    """
    Set the application's admin password (the notification path calls this; the
    password is never put on a command line or logged).

    CLI Example:

    .. code-block:: bash

        salt '*' webarch_app.set_password alice www 'a long random password'
    """
    __salt__[f"{_module(account, site)}.set_password"](account, site, password)
